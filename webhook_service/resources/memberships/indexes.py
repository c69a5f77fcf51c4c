"""The indexes the memberships map needs, and what the app's own may not do there."""

from __future__ import annotations

from ...bookkeeping import MEMBERSHIP_KEY
from ...schema import CollectionRules, IndexSpec
from .mapping import MembershipMap


def membership_indexes(memberships: MembershipMap) -> tuple[IndexSpec, ...]:
    collection, org, user = memberships.collection, memberships.organization, memberships.user
    return (
        IndexSpec(
            collection,
            f"{MEMBERSHIP_KEY}_unique",
            ((MEMBERSHIP_KEY, 1),),
            "one document per organization and user; orders writes",
            unique=True,
            required=True,
        ),
        IndexSpec(
            collection,
            f"{org}_{user}_unique",
            ((org, 1), (user, 1)),
            "the app's own identity of a membership; finding an organization's memberships",
            unique=True,
            required=True,
        ),
        IndexSpec(
            collection, user, ((user, 1),), "finding a user's memberships (sync, and a deleted user's)"
        ),
    )


def membership_rules(memberships: MembershipMap) -> CollectionRules:
    kept = ((MEMBERSHIP_KEY,), (memberships.organization, memberships.user))
    return CollectionRules(memberships.collection, "membership", kept, memberships.fields.written_fields)
