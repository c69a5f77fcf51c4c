"""The indexes the memberships map needs, and what the app's own may not do there."""

from __future__ import annotations

from ...bookkeeping import MEMBERSHIP_KEY
from ...schema import CollectionRules, IndexSpec, key_index
from .mapping import MembershipMap


def membership_indexes(memberships: MembershipMap) -> tuple[IndexSpec, ...]:
    collection, org, user = memberships.collection, memberships.organization, memberships.user
    key = "one document per organization and user; orders writes"
    own = "the app's own identity of a membership; finding an organization's memberships"
    return (
        key_index(collection, f"{MEMBERSHIP_KEY}_unique", (MEMBERSHIP_KEY,), key),
        key_index(collection, f"{org}_{user}_unique", (org, user), own),
        IndexSpec(
            collection, user, ((user, 1),), "finding a user's memberships (sync, and a deleted user's)"
        ),
    )


def membership_rules(memberships: MembershipMap) -> CollectionRules:
    kept = ((MEMBERSHIP_KEY,), (memberships.organization, memberships.user))
    return CollectionRules(memberships.collection, "membership", kept, memberships.fields.written_fields)
