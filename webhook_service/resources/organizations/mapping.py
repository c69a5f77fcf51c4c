"""What a Clerk Organization becomes in the app's organizations collection, as the
organization map (``ORGANIZATION_FIELDS_FILE``) declares it. Plain functions over plain data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...cascade import CascadeRule, parse_cascade_rules
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
from ...values import UNKNOWN


def members_count(organization: Mapping[str, Any]) -> Any:
    """``members_count``, which Clerk sends in some payloads and in API answers only when
    asked for: a payload without it says nothing, and a stored count stays."""
    return organization.get("members_count", UNKNOWN)


# The values an organization map may name as ``$name``.
DERIVED = {"$members_count": Derived(members_count)}
TOP_KEYS = ("collection", "identity", "cascade", "fields", "memberships")


@dataclass(frozen=True)
class OrganizationMap:
    """Where organizations go, what they hold, and what deleting one reaches."""

    collection: str
    fields: FieldMap
    cascade: tuple[CascadeRule, ...] = ()

    @property
    def identity(self) -> str:
        return self.fields.identity[0]


def parse_organization_map(
    data: Mapping[str, Any], *, owned: tuple[str, ...], kept: tuple[str, ...]
) -> OrganizationMap:
    """The organization part of the file; ``owned`` are collections the service keeps for
    itself, ``kept`` the ones it mirrors into (a cascade rule may not delete there)."""
    check_keys(data, TOP_KEYS)
    collection = collection_name(data.get("collection", "organizations"), "collection", (*owned, *kept))
    identity = field_name(data.get("identity", "clerkOrgId"), "identity")
    rules = data.get("cascade", [])
    if not isinstance(rules, list):
        raise FieldMapError("cascade must be a list of rules collection.field:action")
    try:
        cascade = parse_cascade_rules(rules, owned=owned, kept=(*kept, collection))
    except ValueError as exc:
        raise FieldMapError(f"cascade: {exc}") from None
    specs = parse_fields(data.get("fields"), "fields", DERIVED, identity=(identity,))
    return OrganizationMap(collection, FieldMap((identity,), (), specs), cascade)


def map_organization(organization: Mapping[str, Any], fields: FieldMap) -> Record:
    """Map a Clerk Organization object (webhook ``data`` or Backend API) through the map."""
    values, absent = fields.values_of(organization)
    return Record(organization["id"], int(organization["updated_at"]), values, absent)
