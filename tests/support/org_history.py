"""Clerk's history of organizations and their members, and the final state it must leave
in the app's collections: the simulator behind the organization storm
(tests/reliability/test_org_storm.py) and its hypothesis twin (tests/reliability/
test_org_convergence.py).

Clerk's side (``generate_org_history``): one clock, ``n_events`` changes. An organization
is created with its creator's membership about 7 ms after it (as Clerk sends the pair);
organizations are renamed and change plan; users join, change role or title, leave and
rejoin (a new ``orgmem_`` id, created after the deletion); an organization or a user is
sometimes deleted, and Clerk may or may not send a ``organizationMembership.deleted`` for
each of their memberships (no source says which). A deletion's envelope ``timestamp`` is
when it happened; its ``data.updated_at`` is the membership's last change.

The expected final state: ``OrgHistory.organizations`` (the live ones, their final object)
and ``OrgHistory.memberships`` (the live ones), and ``org_state_problems`` lists every way
the app's organizations and memberships differ from it, through the example map.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.support.clerk_history import Chooser
from webhook_service.dev.sample_events import make_clerk_user, make_deleted_data, make_webhook_event
from webhook_service.dev.sample_organizations import (
    make_deleted_organization,
    make_membership,
    make_organization,
)

ROLES = ("org:admin", "org:member", "org:billing")
PLANS = ("free", "pro", "enterprise")
TITLES = ("", "Founder", "Engineer", "Designer")


@dataclass(frozen=True)
class OrgEvent:
    """One webhook Clerk sends, with the svix-id Svix gives it (a resend repeats it)."""

    index: int
    msg_id: str
    type: str
    body: str


@dataclass
class OrgHistory:
    events: list[OrgEvent] = field(default_factory=list)
    organizations: dict[str, dict[str, Any]] = field(default_factory=dict)  # live ones
    memberships: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # live ones
    deleted_organizations: set[str] = field(default_factory=set)
    deleted_users: set[str] = field(default_factory=set)
    rejoins: int = 0

    def emit(self, event_type: str, data: Mapping[str, Any], timestamp: int) -> None:
        envelope = make_webhook_event(event_type, data, timestamp)
        msg = f"msg_{uuid.uuid4().hex[:27]}"
        self.events.append(OrgEvent(len(self.events), msg, event_type, json.dumps(envelope)))


def generate_org_history(
    c: Chooser, *, n_orgs: int, n_users: int, n_events: int, t0: int, label: str = "orgs"
) -> OrgHistory:
    history = OrgHistory()
    users = {
        f"user_{label}{i}": make_clerk_user(f"user_{label}{i}", created_at=t0 - 1000) for i in range(n_users)
    }
    names: dict[str, int] = {}
    left: set[tuple[str, str]] = set()
    now = t0
    for _ in range(n_events):
        now += c.integer(1, 40)
        live_users = [u for u in users if u not in history.deleted_users]
        live_orgs = list(history.organizations)
        action = c.choice(
            ("create",) * (3 if len(names) < n_orgs else 0)
            + ("rename", "join", "join", "join", "change", "change", "leave", "leave")
            + ("delete_org", "delete_user")
        )
        if action == "create" and live_users:
            org_id = f"org_{label}{len(names)}"
            names[org_id] = 0
            creator = c.choice(live_users)
            organization = make_organization(
                org_id, name=f"{org_id} v0", created_at=now, updated_at=now, created_by=creator
            )
            history.organizations[org_id] = organization
            history.emit("organization.created", organization, now)
            now += 7  # Clerk sends the creator's membership right behind it
            _join(history, organization, users[creator], now, "org:admin")
        elif action == "rename" and live_orgs:
            org_id = c.choice(live_orgs)
            names[org_id] += 1
            plan = c.choice(PLANS)
            changed = dict(
                history.organizations[org_id],
                name=f"{org_id} v{names[org_id]}",
                public_metadata={"plan": plan},
                updated_at=now,
            )
            history.organizations[org_id] = changed
            history.emit("organization.updated", changed, now)
        elif action == "join" and live_orgs and live_users:
            org_id, user_id = c.choice(live_orgs), c.choice(live_users)
            if (org_id, user_id) not in history.memberships:
                history.rejoins += (org_id, user_id) in left
                _join(history, history.organizations[org_id], users[user_id], now, c.choice(ROLES))
        elif action == "change" and history.memberships:
            key = c.choice(sorted(history.memberships))
            membership = history.memberships[key]
            changed = dict(
                membership,
                role=c.choice(ROLES),
                public_metadata={"title": c.choice(TITLES)},
                updated_at=now,
            )
            history.memberships[key] = changed
            history.emit("organizationMembership.updated", changed, now)
        elif action == "leave" and history.memberships:
            key = c.choice(sorted(history.memberships))
            left.add(key)
            history.emit("organizationMembership.deleted", history.memberships.pop(key), now)
        elif action == "delete_org" and live_orgs and c.chance(3):
            org_id = c.choice(live_orgs)
            del history.organizations[org_id]
            history.deleted_organizations.add(org_id)
            history.emit("organization.deleted", make_deleted_organization(org_id), now)
            _drop_memberships(c, history, lambda key, gone=org_id: key[0] == gone, now)
        elif action == "delete_user" and live_users and c.chance(4):
            user_id = c.choice(live_users)
            history.deleted_users.add(user_id)
            history.emit("user.deleted", make_deleted_data(user_id), now)
            _drop_memberships(c, history, lambda key, gone=user_id: key[1] == gone, now)
    return history


def _join(
    history: OrgHistory, organization: dict[str, Any], user: dict[str, Any], now: int, role: str
) -> None:
    membership = make_membership(organization, user, role=role, created_at=now, public_metadata={"title": ""})
    history.memberships[(organization["id"], user["id"])] = membership
    history.emit("organizationMembership.created", membership, now)


def _drop_memberships(c: Chooser, history: OrgHistory, doomed: Any, now: int) -> None:
    """The memberships a deletion takes with it; Clerk may or may not say so for each."""
    for key in sorted(k for k in history.memberships if doomed(k)):
        membership = history.memberships.pop(key)
        if c.chance(50):
            history.emit("organizationMembership.deleted", membership, now)


def org_state_problems(
    history: OrgHistory, organizations: Iterable[Mapping[str, Any]], memberships: Iterable[Mapping[str, Any]]
) -> list[str]:
    """Every way the stored documents differ from Clerk's final state, through the worked
    example's map (docs/examples/organization-fields.toml), one line each."""
    problems: list[str] = []
    stored_orgs: dict[Any, Mapping[str, Any]] = {d["clerkOrgId"]: d for d in organizations}
    stored_members: dict[Any, Mapping[str, Any]] = {}
    for doc in memberships:
        key = (doc["clerkOrgId"], doc["clerkUserId"])
        if key in stored_members:
            problems.append(f"membership {key} stored twice")
        stored_members[key] = doc
    problems += _differences("organization", history.organizations, stored_orgs, _expected_organization)
    problems += _differences("membership", history.memberships, stored_members, _expected_membership)
    return problems


def _expected_organization(organization: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": organization["name"],
        "slug": organization["slug"],
        "plan": organization["public_metadata"].get("plan", "free"),
        "clerkUpdatedAt": organization["updated_at"],
    }


def _expected_membership(membership: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "role": membership["role"],
        "title": membership["public_metadata"].get("title", ""),
        "clerkUpdatedAt": membership["updated_at"],
    }


def _differences(
    noun: str,
    live: Mapping[Any, Mapping[str, Any]],
    stored: dict[Any, Mapping[str, Any]],
    expected_of: Callable[[Mapping[str, Any]], dict[str, Any]],
) -> list[str]:
    """One line per live record missing or different, and per stored one Clerk no longer has
    (``stored`` is consumed)."""
    problems = []
    for key, record in live.items():
        doc = stored.pop(key, None)
        expected = expected_of(record)
        if doc is None:
            problems.append(f"{noun} {key} missing")
        elif (found := {k: doc.get(k) for k in expected}) != expected:
            problems.append(f"{noun} {key}: {found} != {expected}")
    problems.extend(f"{noun} {key} should not exist" for key in stored)
    return problems
