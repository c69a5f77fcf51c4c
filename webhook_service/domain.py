"""Pure decision logic: what a Clerk event means for the local ``users`` collection.

Nothing here touches Flask, pymongo or the network, so every rule can be tested
on plain data: how an event is parsed, what a Clerk user maps to, which username
a user gets, and who wins when two users claim the same username.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .fieldmap import MISSING, FieldMap, builtin_field_map, coerce

USER_EVENT_TYPES = frozenset({"user.created", "user.updated", "user.deleted"})
USERNAME_MAX = 30
MAX_INT64 = 2**63 - 1
_NOT_USERNAME_CHARS = re.compile(r"[^a-z0-9_]+")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class MalformedEvent(ValueError):
    """A correctly signed body that is not a usable Clerk event."""


class Outcome(StrEnum):
    """What handling a delivery did. The values appear in logs, metrics and the event log."""

    APPLIED = "applied"
    STALE = "stale"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    DELETED = "deleted"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass(frozen=True)
class CascadeRule:
    """One ``DELETE_CASCADE`` rule: what a user's deletion does to another collection's
    documents whose ``field`` holds the user's ``_id`` or Clerk id."""

    collection: str
    field: str
    action: str  # "delete", "pull" or "unset"


CASCADE_ACTIONS = ("delete", "pull", "unset")
_SERVICE_COLLECTIONS = ("deleted_users", "events")
_NAME_PART = re.compile(r"^[^$\s.]+$")


def parse_cascade_rules(text: str) -> tuple[CascadeRule, ...]:
    """``posts.user:delete,posts.likes:pull`` as rules; ValueError names a bad one.

    The collection is what comes before the first dot (collection names with dots are
    not supported); the field may be a dotted path.
    """
    rules = []
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        target, _, action = raw.rpartition(":")
        collection, _, path = target.partition(".")
        if not target or action not in CASCADE_ACTIONS:
            actions = ", ".join(CASCADE_ACTIONS)
            raise ValueError(f"rule {raw!r} must be collection.field:action, action one of {actions}")
        names = [collection, *path.split(".")]
        if not path or not all(_NAME_PART.match(name) for name in names):
            raise ValueError(f"rule {raw!r} must name a collection and a field, without '$' or spaces")
        # "system.profile.x" splits as collection "system": refused, as every system.* is.
        if collection in _SERVICE_COLLECTIONS or collection == "system":
            raise ValueError(f"rule {raw!r} names a collection the service owns")
        if collection == "users" and action == "delete":
            raise ValueError(f"rule {raw!r} would delete other users; use pull or unset on users")
        rules.append(CascadeRule(collection, path, action))
    return tuple(rules)


class UsernameSource(StrEnum):
    """Where a local username came from; Clerk's own usernames outrank derived ones."""

    CLERK = "clerk"
    EMAIL = "email"
    FALLBACK = "fallback"


@dataclass(frozen=True)
class Event:
    """A parsed Clerk webhook envelope."""

    type: str
    data: Mapping[str, Any]

    @property
    def user_id(self) -> str | None:
        return self.data["id"] if self.type.startswith("user.") else None


@dataclass(frozen=True)
class LocalUser:
    """The Clerk-sourced fields of a local user document, as the field map names them,
    plus the version they came from. ``absent`` are mapped fields Clerk has no value for
    (and no default covers): the document is left without them."""

    clerk_id: str
    clerk_updated_at: int
    values: Mapping[str, Any]
    absent: tuple[str, ...] = ()
    username: str | None = None
    username_source: UsernameSource | None = None


def parse_event(body: bytes) -> Event:
    """Parse a verified body, or raise MalformedEvent naming what is wrong."""
    try:
        text = body.decode("utf-8")  # json.loads(bytes) would also accept UTF-16/32
    except UnicodeDecodeError as exc:
        raise MalformedEvent("body is not UTF-8") from exc
    try:
        envelope = json.loads(text)
    except ValueError as exc:
        raise MalformedEvent("body is not JSON") from exc
    except RecursionError as exc:
        raise MalformedEvent("body is nested too deeply") from exc
    if not isinstance(envelope, dict):
        raise MalformedEvent("event is not a JSON object")
    try:
        encodable = not _SURROGATE_ESCAPE.search(text) or _encodable(envelope)
    except RecursionError as exc:  # json.loads had a few stack frames more to spare
        raise MalformedEvent("body is nested too deeply") from exc
    if not encodable:
        raise MalformedEvent("event has a lone UTF-16 surrogate escape")
    event_type = envelope.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise MalformedEvent("event has no string 'type'")
    data = envelope.get("data")
    if not isinstance(data, dict):
        raise MalformedEvent("event has no object 'data'")
    if event_type.startswith("user.") and not (isinstance(data.get("id"), str) and data["id"]):
        raise MalformedEvent("user event has no string 'data.id'")
    if event_type in ("user.created", "user.updated"):
        updated_at = data.get("updated_at")
        if not isinstance(updated_at, int) or isinstance(updated_at, bool) or updated_at < 0:
            raise MalformedEvent("user event has no integer 'data.updated_at'")
        if updated_at > MAX_INT64:  # BSON cannot store it: the write would fail on every retry
            raise MalformedEvent("user event 'data.updated_at' is out of range")
    return Event(type=event_type, data=data)


def redacted_deletion(user_id: str) -> dict[str, Any]:
    """A ``user.deleted`` event's ``data`` with nothing but what identifies the user."""
    return {"deleted": True, "id": user_id, "object": "user"}


def _encodable(envelope: dict[str, Any]) -> bool:
    """Whether every string survives UTF-8 (and so BSON); valid surrogate pairs do."""
    try:
        json.dumps(envelope, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def primary_email(user: Mapping[str, Any]) -> str | None:
    """The address whose id is ``primary_email_address_id``; None for phone or web3 users."""
    primary_id = user.get("primary_email_address_id")
    if not primary_id:
        return None
    addresses = user.get("email_addresses")
    for address in addresses if isinstance(addresses, list) else ():
        if isinstance(address, Mapping) and address.get("id") == primary_id:
            value = address.get("email_address")
            return value if isinstance(value, str) and value else None
    return None


def normalise_username(raw: str) -> str:
    """Lower-case, keep [a-z0-9_], squeeze the rest to one underscore, cap the length."""
    name = _NOT_USERNAME_CHARS.sub("_", raw.lower()).strip("_")
    return name[:USERNAME_MAX].rstrip("_")


def email_username(email: str) -> str:
    """The username derived from an email's local part, without any ``+tag``."""
    local = email.split("@", 1)[0].split("+", 1)[0]
    return normalise_username(local)


def fallback_username(clerk_id: str) -> str:
    """A stable username for users with neither a Clerk username nor an email."""
    return f"user_{_id_suffix(clerk_id, 10)}"


def disambiguated_username(base: str, clerk_id: str) -> str:
    """The deterministic alternative a user gets when ``base`` belongs to someone else."""
    suffix = _id_suffix(clerk_id, 6)
    return f"{base[: USERNAME_MAX - len(suffix) - 1]}_{suffix}"


def _id_suffix(clerk_id: str, length: int) -> str:
    return hashlib.sha256(clerk_id.encode()).hexdigest()[:length]


def choose_username(user: Mapping[str, Any], email: str | None) -> tuple[str, UsernameSource]:
    """Clerk's username when set, else the email's local part, else a fallback from the id."""
    clerk_name = user.get("username")
    if isinstance(clerk_name, str) and clerk_name.strip():
        return clerk_name.strip(), UsernameSource.CLERK
    if email:
        derived = email_username(email)
        if derived:
            return derived, UsernameSource.EMAIL
    return fallback_username(user["id"]), UsernameSource.FALLBACK


def unmappable_reason(user: Any) -> str | None:
    """Why a Clerk User object from the Backend API cannot be stored, or None if it can.
    Only what ordering needs is required: a string ``id`` and an integer ``updated_at``."""
    if not isinstance(user, Mapping):
        return "not a JSON object"
    if not (isinstance(user.get("id"), str) and user["id"]):
        return "no string id"
    updated_at = user.get("updated_at")
    if not isinstance(updated_at, int) or isinstance(updated_at, bool) or not 0 <= updated_at <= MAX_INT64:
        return "no integer updated_at"
    return None


def primary_phone(user: Mapping[str, Any]) -> str | None:
    """The number whose id is ``primary_phone_number_id``; None for users without one."""
    primary_id = user.get("primary_phone_number_id")
    numbers = user.get("phone_numbers")
    for number in numbers if primary_id and isinstance(numbers, list) else ():
        if isinstance(number, Mapping) and number.get("id") == primary_id:
            value = number.get("phone_number")
            return value if isinstance(value, str) and value else None
    return None


def full_name(user: Mapping[str, Any]) -> str | None:
    """First and last name, as Clerk's own ``fullName`` joins them; None when both are blank."""
    parts = [p.strip() for p in (user.get("first_name"), user.get("last_name")) if isinstance(p, str)]
    return " ".join(p for p in parts if p) or None


def _derived(user: Mapping[str, Any], name: str) -> Any:
    if name == "$primary_phone":
        return primary_phone(user)
    return full_name(user)


def _at_path(user: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = user
    for key in path:
        if not isinstance(value, dict | Mapping):
            return None
        value = value.get(key)
    return value


def map_clerk_user(user: Mapping[str, Any], fields: FieldMap | None = None) -> LocalUser:
    """Map a Clerk User object (webhook ``data`` or Backend API) through the field map
    (the built-in one, xClone's, by default)."""
    fields = fields or builtin_field_map()
    values: dict[str, Any] = {}
    absent: list[str] = []
    email: Any = MISSING
    for spec in fields.sourced:
        if spec.derived == "$primary_email":
            raw = email = primary_email(user)
        else:
            raw = _derived(user, spec.derived) if spec.derived else _at_path(user, spec.path)
        value = coerce(spec.type, raw)
        if value is MISSING:
            value = spec.when_missing()
        if value is MISSING:
            absent.append(spec.target)
        else:
            values[spec.target] = value
    username, source = (None, None)
    if fields.username is not None:
        username, source = choose_username(user, primary_email(user) if email is MISSING else email)
    return LocalUser(
        clerk_id=user["id"],
        clerk_updated_at=int(user["updated_at"]),
        values=values,
        absent=tuple(absent),
        username=username,
        username_source=source,
    )


def claim_beats_holder(
    claimant: LocalUser, holder_source: str | None, holder_updated_at: int, holder_clerk_id: str
) -> bool:
    """Decide whether ``claimant`` takes a username that another local user holds.

    Clerk keeps its usernames unique at every instant, so when two versions claim
    the same Clerk username the older one is already out of date: the newer wins.
    A name Clerk set outranks one we derived. Between two derived names the holder
    keeps it, so nobody's handle changes because someone else signed up. The loser
    takes its deterministic disambiguated name until its next event.
    """
    claimant_is_clerk = claimant.username_source is UsernameSource.CLERK
    holder_is_clerk = holder_source == UsernameSource.CLERK.value
    if claimant_is_clerk != holder_is_clerk:
        return claimant_is_clerk
    if not claimant_is_clerk:
        return False
    if claimant.clerk_updated_at != holder_updated_at:
        return claimant.clerk_updated_at > holder_updated_at
    return claimant.clerk_id < holder_clerk_id


class Plan(StrEnum):
    """What reconcile does with one Clerk user."""

    CREATE = "create"
    UPDATE = "update"
    KEEP = "keep"


def plan_user(
    clerk_updated_at: int, local_updated_at: int | None, deleted_locally: bool, refresh: bool = False
) -> Plan:
    """Reconcile's per-user decision; the write itself is still guarded in the database.

    A local version at least as new as Clerk's is kept (a webhook may have landed
    after Clerk listed the page). A remembered deletion is never undone. A refresh also
    rewrites the version it already has, so a changed field map reaches every user; a
    newer local version is still kept.
    """
    if deleted_locally:
        return Plan.KEEP
    if local_updated_at is None:
        return Plan.CREATE
    if clerk_updated_at > local_updated_at or refresh and clerk_updated_at == local_updated_at:
        return Plan.UPDATE
    return Plan.KEEP
