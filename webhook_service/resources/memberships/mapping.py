"""What a Clerk OrganizationMembership becomes in the app's memberships collection, as
the organization map's ``[memberships]`` table declares it. Plain functions over plain data.

A membership is one organization and one user: the pair is its identity in the app's
collection (Clerk's own ``orgmem_`` id changes when a member leaves and rejoins). The
service keeps the pair as one key too, ``clerkMembershipKey``, which orders its writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...events import version_reason
from ...fieldmap import (
    Derived,
    FieldMap,
    FieldMapError,
    check_keys,
    collection_name,
    field_name,
    parse_fields,
)
from ...mirror.records import Record

# Clerk's roles before 2023 had no "org:" prefix.
LEGACY_ROLES = {"admin": "org:admin", "basic_member": "org:member"}


def role(membership: Mapping[str, Any]) -> Any:
    """The membership's role key, today's spelling: ``admin`` and ``basic_member`` (2022)
    become ``org:admin`` and ``org:member``; custom roles (``org:<key>``) stay as they are."""
    value = membership.get("role")
    return LEGACY_ROLES.get(value, value) if isinstance(value, str) else value


# The values a memberships map may name as ``$name``.
DERIVED = {"$role": Derived(role)}
TOP_KEYS = ("collection", "organization", "user", "fields")


@dataclass(frozen=True)
class MembershipMap:
    """Where memberships go: the fields holding the organization's and the user's Clerk
    ids (together unique), and what else each document holds."""

    collection: str
    organization: str
    user: str
    fields: FieldMap


def parse_membership_map(data: Any, *, taken: tuple[str, ...]) -> MembershipMap:
    """The ``[memberships]`` table; ``taken`` are collections already kept otherwise."""
    where = "memberships"
    if not isinstance(data, dict):
        raise FieldMapError("[memberships] must be a table")
    check_keys(data, TOP_KEYS, f"{where}: ")
    collection = collection_name(data.get("collection", "memberships"), f"{where}.collection", taken)
    organization = field_name(data.get("organization", "clerkOrgId"), f"{where}.organization")
    user = field_name(data.get("user", "clerkUserId"), f"{where}.user")
    if organization == user:
        raise FieldMapError(f"{where}.user: {user!r} is the organization field too")
    identity = (organization, user)
    specs = parse_fields(data.get("fields"), f"{where}.fields", DERIVED, identity=identity)
    return MembershipMap(collection, organization, user, FieldMap(identity, (), specs))


def membership_key(org_id: str, user_id: str) -> str:
    return f"{org_id}:{user_id}"


def split_key(key: str) -> tuple[str, str]:
    org_id, _, user_id = key.partition(":")
    return org_id, user_id


def member_ids(membership: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The organization's and the user's Clerk ids, None where missing."""
    org = membership.get("organization")
    user = membership.get("public_user_data")
    org_id = org.get("id") if isinstance(org, Mapping) else None
    user_id = user.get("user_id") if isinstance(user, Mapping) else None
    return (
        org_id if isinstance(org_id, str) and org_id else None,
        user_id if isinstance(user_id, str) and user_id else None,
    )


def unstorable_membership(obj: Any) -> str | None:
    """Why a membership from the Backend API cannot be mirrored, or None if it can."""
    if not isinstance(obj, Mapping):
        return "not a JSON object"
    org_id, user_id = member_ids(obj)
    if org_id is None:
        return "no string organization.id"
    if user_id is None:
        return "no string public_user_data.user_id"
    return version_reason(obj)  # the key is the pair's: the membership's own id is not needed


def map_membership(membership: Mapping[str, Any], memberships: MembershipMap) -> Record:
    """Map a Clerk OrganizationMembership (webhook ``data`` or Backend API) through the map.
    It writes the pair's fields itself; the embedded organization is never written."""
    org_id, user_id = member_ids(membership)
    if org_id is None or user_id is None:
        raise ValueError("a membership needs organization.id and public_user_data.user_id")
    values, absent = memberships.fields.values_of(membership)
    values[memberships.organization] = org_id
    values[memberships.user] = user_id
    return Record(membership_key(org_id, user_id), int(membership["updated_at"]), values, absent)
