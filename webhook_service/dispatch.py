"""The registry of Clerk event types: for each, the resource that applies it, how its
``data`` is checked and its subject named, how it is applied, and what of its body the
event log keeps. Adding an event type is one entry here.

A type not in the table, or whose resource the app has not declared (organizations
without ``ORGANIZATION_FIELDS_FILE``), is acknowledged and ignored: Clerk sends many
types (sessions, emails, invitations) that change nothing the service keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .events import Event, Outcome, Subject
from .resources.memberships import handlers as memberships
from .resources.memberships.store import MembershipStore
from .resources.organizations import handlers as organizations
from .resources.organizations.store import OrganizationStore
from .resources.users import handlers as users
from .resources.users.store import UserStore


def keep_whole(event: Event, subject: Subject, body: bytes) -> str:
    """The body as it came, for replay (the event log's retention and erasure apply)."""
    return body_text(body)


def body_text(body: bytes) -> str:
    """A delivery's body as the event log keeps it, undecodable bytes replaced."""
    return body.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class EventType:
    """How the service handles one Clerk event type."""

    resource: str  # the ``Stores`` attribute that applies it
    subject: Callable[[Event], Subject]  # checks ``data``, names the subject; raises MalformedEvent
    apply: Callable[[Any, Event, Subject, str | None], Outcome]
    keep: Callable[[Event, Subject, bytes], str] = keep_whole  # what the event log keeps

    @property
    def redacted(self) -> bool:
        """Whether the log keeps a redacted stub (a deletion's), which erasure leaves alone."""
        return self.keep is not keep_whole


EVENT_TYPES: Mapping[str, EventType] = {
    "user.created": EventType("users", users.changed_user, users.upsert_user),
    "user.updated": EventType("users", users.changed_user, users.upsert_user),
    "user.deleted": EventType("users", users.deleted_user, users.delete_user, users.deletion_stub),
    "organization.created": EventType(
        "organizations", organizations.changed_organization, organizations.upsert_organization
    ),
    "organization.updated": EventType(
        "organizations", organizations.changed_organization, organizations.upsert_organization
    ),
    "organization.deleted": EventType(
        "organizations",
        organizations.deleted_organization,
        organizations.delete_organization,
        organizations.deletion_stub,
    ),
    "organizationMembership.created": EventType(
        "memberships", memberships.changed_membership, memberships.upsert_membership
    ),
    "organizationMembership.updated": EventType(
        "memberships", memberships.changed_membership, memberships.upsert_membership
    ),
    "organizationMembership.deleted": EventType(
        "memberships",
        memberships.deleted_membership,
        memberships.delete_membership,
        memberships.deletion_stub,
    ),
}
REDACTED_TYPES = frozenset(name for name, entry in EVENT_TYPES.items() if entry.redacted)


@dataclass(frozen=True)
class Stores:
    """The resources this app mirrors; one the app has not declared is None."""

    users: UserStore
    organizations: OrganizationStore | None = None
    memberships: MembershipStore | None = None


def route(stores: Stores, event_type: str) -> tuple[EventType, Any] | None:
    """The entry for ``event_type`` and the store that applies it, or None: ignore it."""
    entry = EVENT_TYPES.get(event_type)
    if entry is None:
        return None
    store = getattr(stores, entry.resource)
    return None if store is None else (entry, store)
