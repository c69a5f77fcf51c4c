"""The indexes the organization map needs, and what the app's own may not do there."""

from __future__ import annotations

from ...schema import CollectionRules, IndexSpec, key_index
from .mapping import OrganizationMap


def organization_indexes(organizations: OrganizationMap) -> tuple[IndexSpec, ...]:
    identity = organizations.identity
    purpose = "one document per Clerk organization; orders writes"
    return (key_index(organizations.collection, f"{identity}_unique", (identity,), purpose),)


def organization_rules(organizations: OrganizationMap) -> CollectionRules:
    fields = organizations.fields
    return CollectionRules(
        organizations.collection, "organization", (fields.identity,), fields.written_fields
    )
