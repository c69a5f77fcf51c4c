"""What the app mirrors, built from its declarations in one place: the resources' stores,
the indexes they need, and where reconcile reads them in Clerk.

The web app (``services.py``), the operator commands, gunicorn's start-up check, the
tests and the bench all build from here, so they agree on what the service keeps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.database import Database

from .cascade import CascadeRule
from .clerk_api import ClerkAPI
from .dispatch import REDACTED_TYPES, Stores
from .fieldmap import FieldMap
from .mirror.reconcile import Target
from .mirror.versioned import BULK_TIMEOUT_S
from .resources.users.clerk import UserSource
from .resources.users.indexes import user_indexes, user_rules
from .resources.users.store import UserStore
from .schema import EVENT_INDEXES, TOMBSTONES, ServiceSchema, cascade_indexes
from .store.eventlog import USER_FIELD, EventLog
from .store.indexes import IndexGate


@dataclass(frozen=True)
class Declarations:
    """What the app declares the service keeps: its user map and ``DELETE_CASCADE``."""

    user_fields: FieldMap
    delete_cascade: tuple[CascadeRule, ...] = ()


def service_schema(declared: Declarations) -> ServiceSchema:
    """Every index the declared resources need, the cascade rules' included, and the rules
    for the app's own unique indexes on the collections the service writes."""
    wanted = (*user_indexes(declared.user_fields), *EVENT_INDEXES)
    wanted += cascade_indexes(declared.delete_cascade, wanted)
    return ServiceSchema(wanted, (user_rules(declared.user_fields),))


def build_stores(
    db: Database[Any],
    declared: Declarations,
    indexes: IndexGate | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
    bulk_timeout_s: float = BULK_TIMEOUT_S,
) -> Stores:
    """The declared resources' stores, sharing ``indexes`` (made here when not given)."""
    indexes = indexes or IndexGate(db, service_schema(declared))
    users = UserStore(
        db,
        declared.user_fields,
        indexes=indexes,
        cascade=declared.delete_cascade,
        redacted_types=REDACTED_TYPES,
        clock=clock,
        bulk_timeout_s=bulk_timeout_s,
    )
    return Stores(users=users)


def build_event_log(db: Database[Any], indexes: IndexGate, **options: Any) -> EventLog:
    """The event log, erasing what names deleted users (and organizations, when kept)."""
    return EventLog(
        db, indexes=indexes, redacted_types=REDACTED_TYPES, tombstones={USER_FIELD: TOMBSTONES}, **options
    )


def reconcile_targets(stores: Stores, clerk: ClerkAPI) -> list[Target]:
    """The resources reconcile walks, in order."""
    return [Target(stores.users, UserSource(clerk, stores.users.fields))]
