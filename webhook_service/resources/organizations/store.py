"""The app's organizations: the versioned mirror, with what deleting one reaches (its
memberships and the map's cascade rules, the event log's records that name it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pymongo.database import Database

from ...cascade import CascadeRule
from ...mirror.batched import BatchedMirror
from ...mirror.records import MirrorSpec
from ...mirror.versioned import BULK_TIMEOUT_S
from ...schema import ORG_TOMBSTONES
from ...store.erasure import Erasure
from ...store.eventlog import ORG_FIELD
from ...store.indexes import IndexGate
from .mapping import OrganizationMap


class OrganizationStore(BatchedMirror):
    """Local copies of Clerk organizations, versioned by Clerk's ``updated_at``. A deletion
    is final: an organization's id is never reused, so nothing brings it back."""

    def __init__(
        self,
        db: Database[Any],
        organizations: OrganizationMap,
        *,
        indexes: IndexGate,
        cascade: tuple[CascadeRule, ...],
        redacted_types: frozenset[str] = frozenset(),
        clock: Callable[[], datetime] | None = None,
        bulk_timeout_s: float = BULK_TIMEOUT_S,
    ) -> None:
        key, collection = organizations.identity, organizations.collection
        super().__init__(
            db,
            MirrorSpec("organization", collection, key, ORG_TOMBSTONES, organizations.fields),
            indexes=indexes,
            erasure=Erasure(collection, key, (), cascade, ORG_FIELD, redacted_types),
            clock=clock,
            bulk_timeout_s=bulk_timeout_s,
        )
        self.organizations = organizations
