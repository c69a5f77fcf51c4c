"""What the app mirrors, built from its declarations in one place: the resources' stores,
the indexes they need, and where reconcile reads them in Clerk.

The web app (``services.py``), the operator commands, gunicorn's start-up check, the
tests and the bench all build from here, so they agree on what the service keeps. What
one resource needs of another is wired here too: deleting a user or an organization
deletes its memberships.
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
from .metrics import Metrics
from .mirror.batched import BatchedMirror
from .mirror.reconcile import Target
from .mirror.versioned import BULK_TIMEOUT_S
from .resources.memberships.clerk import MembershipSource
from .resources.memberships.indexes import membership_indexes, membership_rules
from .resources.memberships.mapping import MembershipMap
from .resources.memberships.store import MembershipStore
from .resources.organizations.clerk import OrganizationSource
from .resources.organizations.indexes import organization_indexes, organization_rules
from .resources.organizations.mapping import OrganizationMap
from .resources.organizations.store import OrganizationStore
from .resources.users.clerk import UserSource
from .resources.users.indexes import user_indexes, user_rules
from .resources.users.store import UserStore
from .schema import EVENT_INDEXES, ORG_EVENT_INDEX, ORG_TOMBSTONES, TOMBSTONES, ServiceSchema, cascade_indexes
from .store.eventlog import ORG_FIELD, USER_FIELD, EventLog
from .store.indexes import IndexGate
from .watch.lease import Lease
from .watch.passes import Watched, WatchState
from .watch.watcher import Watcher

ORGANIZATION_CASCADE = "ORGANIZATION_FIELDS_FILE's cascade"


@dataclass(frozen=True)
class Declarations:
    """What the app declares the service keeps: its user map and ``DELETE_CASCADE``, and,
    with ``ORGANIZATION_FIELDS_FILE``, its organizations and their memberships."""

    user_fields: FieldMap
    delete_cascade: tuple[CascadeRule, ...] = ()
    organizations: OrganizationMap | None = None
    memberships: MembershipMap | None = None

    @property
    def user_cascade(self) -> tuple[CascadeRule, ...]:
        """``DELETE_CASCADE``, and a deleted user's memberships."""
        if self.memberships is None:
            return self.delete_cascade
        return (
            *self.delete_cascade,
            CascadeRule(self.memberships.collection, self.memberships.user, "delete"),
        )

    @property
    def organization_cascade(self) -> tuple[CascadeRule, ...]:
        """The organization map's rules, and a deleted organization's memberships."""
        own = self.organizations.cascade if self.organizations is not None else ()
        if self.memberships is None:
            return own
        return (CascadeRule(self.memberships.collection, self.memberships.organization, "delete"), *own)


def service_schema(declared: Declarations) -> ServiceSchema:
    """Every index the declared resources need, the cascade rules' included, and the rules
    for the app's own unique indexes on the collections the service writes."""
    wanted = (*user_indexes(declared.user_fields), *EVENT_INDEXES)
    rules = [user_rules(declared.user_fields)]
    if declared.organizations is not None:
        wanted += (*organization_indexes(declared.organizations), ORG_EVENT_INDEX)
        rules.append(organization_rules(declared.organizations))
    if declared.memberships is not None:
        wanted += membership_indexes(declared.memberships)
        rules.append(membership_rules(declared.memberships))
    wanted += cascade_indexes(declared.delete_cascade, wanted)
    if declared.organizations is not None:
        org_rules = declared.organizations.cascade
        wanted += cascade_indexes(org_rules, wanted, deleted="organization", source=ORGANIZATION_CASCADE)
    return ServiceSchema(wanted, tuple(rules))


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
    options: dict[str, Any] = dict(indexes=indexes, clock=clock, bulk_timeout_s=bulk_timeout_s)
    users = UserStore(
        db, declared.user_fields, cascade=declared.user_cascade, redacted_types=REDACTED_TYPES, **options
    )
    organizations = memberships = None
    if declared.organizations is not None:
        organizations = OrganizationStore(
            db,
            declared.organizations,
            cascade=declared.organization_cascade,
            redacted_types=REDACTED_TYPES,
            **options,
        )
    if declared.memberships is not None:
        memberships = MembershipStore(db, declared.memberships, **options)
    return Stores(users=users, organizations=organizations, memberships=memberships)


def build_event_log(db: Database[Any], indexes: IndexGate, **options: Any) -> EventLog:
    """The event log, erasing what names deleted users and organizations."""
    tombstones = {USER_FIELD: TOMBSTONES, ORG_FIELD: ORG_TOMBSTONES}
    return EventLog(db, indexes=indexes, redacted_types=REDACTED_TYPES, tombstones=tombstones, **options)


def sources(stores: Stores, clerk: ClerkAPI) -> list[tuple[BatchedMirror, Watched]]:
    """Every declared resource's store with its Clerk source, in the order reconcile and the
    watcher walk them: organizations before their memberships."""
    found: list[tuple[BatchedMirror, Watched]] = [(stores.users, UserSource(clerk, stores.users.fields))]
    if stores.organizations is not None:
        found.append((stores.organizations, OrganizationSource(clerk, stores.organizations.organizations)))
    if stores.memberships is not None:
        found.append((stores.memberships, MembershipSource(clerk, stores.memberships.memberships)))
    return found


def build_watcher(
    db: Database[Any], stores: Stores, clerk: ClerkAPI, *, interval_s: float, metrics: Metrics | None = None
) -> Watcher:
    """The watcher over the declared resources, with its lease (three intervals long)."""
    return Watcher(
        sources(stores, clerk),
        Lease(db, ttl_s=3 * interval_s),
        WatchState(db),
        interval_s=interval_s,
        metrics=metrics,
    )


def reconcile_targets(stores: Stores, clerk: ClerkAPI) -> list[Target]:
    """The resources reconcile walks, in order."""
    return [Target(store, source) for store, source in sources(stores, clerk)]
