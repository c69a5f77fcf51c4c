"""The app's memberships: the versioned mirror keyed by organization and user, whose
deletions are dated (a member can leave and rejoin), and which a deleted organization or
user holds back for good."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pymongo.database import Database

from ...bookkeeping import MEMBERSHIP_KEY
from ...mirror.batched import BatchedMirror
from ...mirror.records import MirrorSpec, Parent
from ...mirror.versioned import BULK_TIMEOUT_S
from ...schema import MEMBERSHIP_TOMBSTONES, ORG_TOMBSTONES, TOMBSTONES
from ...store.erasure import Erasure
from ...store.errors import unavailable_on_error
from ...store.indexes import IndexGate
from .mapping import MembershipMap


class MembershipStore(BatchedMirror):
    """Local copies of Clerk memberships, one per organization and user, versioned by the
    membership's ``updated_at``. A ``organizationMembership.deleted`` is dated by its
    envelope's ``timestamp``: it removes the membership as of then, and a rejoin after it
    is stored. While the organization or the user is deleted, no membership of theirs is."""

    def __init__(
        self,
        db: Database[Any],
        memberships: MembershipMap,
        *,
        indexes: IndexGate,
        clock: Callable[[], datetime] | None = None,
        bulk_timeout_s: float = BULK_TIMEOUT_S,
    ) -> None:
        spec = MirrorSpec(
            "membership",
            memberships.collection,
            MEMBERSHIP_KEY,
            MEMBERSHIP_TOMBSTONES,
            memberships.fields,
            natural=(memberships.organization, memberships.user),
            parents=(Parent(ORG_TOMBSTONES, memberships.organization), Parent(TOMBSTONES, memberships.user)),
            dated_deletions=True,
        )
        super().__init__(
            db,
            spec,
            indexes=indexes,
            erasure=Erasure(memberships.collection, MEMBERSHIP_KEY),
            clock=clock,
            bulk_timeout_s=bulk_timeout_s,
        )
        self.memberships = memberships

    def keys_of_user(self, user_id: str) -> list[str]:
        """The keys of the user's memberships stored locally (on the user field's index)."""
        with unavailable_on_error():
            found = self.documents.find({self.memberships.user: user_id}, {MEMBERSHIP_KEY: 1, "_id": 0})
            return [d[MEMBERSHIP_KEY] for d in found if isinstance(d.get(MEMBERSHIP_KEY), str)]
