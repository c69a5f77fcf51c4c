"""The indexes the organization map needs, and what the app's own may not do there."""

from __future__ import annotations

from ...schema import CollectionRules, IndexSpec
from .mapping import OrganizationMap


def organization_indexes(organizations: OrganizationMap) -> tuple[IndexSpec, ...]:
    identity, collection = organizations.identity, organizations.collection
    return (
        IndexSpec(
            collection,
            f"{identity}_unique",
            ((identity, 1),),
            "one document per Clerk organization; orders writes",
            unique=True,
            required=True,
        ),
    )


def organization_rules(organizations: OrganizationMap) -> CollectionRules:
    fields = organizations.fields
    return CollectionRules(
        organizations.collection, "organization", (fields.identity,), fields.written_fields
    )
