"""The indexes the user map needs on ``users``, and what the app's own may not do there."""

from __future__ import annotations

from ...bookkeeping import USERNAME_LOWER
from ...fieldmap import FieldMap
from ...schema import USERS, CollectionRules, IndexSpec, key_index
from .mapping import USERNAME

# Fields that Clerk lets two users share at once, or lack: an app's unique index on one
# refuses users Clerk has, and an address or number moving between two users whose
# events arrive out of order.
_CONTACTS = {"$primary_email": "an email address (phone or web3 sign-in)", "$primary_phone": "a phone number"}


def user_indexes(fields: FieldMap) -> tuple[IndexSpec, ...]:
    [identity] = fields.identity
    specs = [
        key_index(USERS, f"{identity}_unique", (identity,), "one document per Clerk user; orders writes")
    ]
    if fields.target_of(USERNAME) is not None:
        specs.append(
            IndexSpec(
                USERS,
                "usernameLower_unique",
                ((USERNAME_LOWER, 1),),
                "usernames unique regardless of case",
                unique=True,
                partial={USERNAME_LOWER: {"$type": "string"}},
                required=True,
            )
        )
    if (email := fields.target_of("$primary_email")) is not None:
        specs.append(IndexSpec(USERS, email, ((email, 1),), "lookups by email"))
    for name in fields.references:
        specs.append(
            IndexSpec(USERS, name, ((name, 1),), "removing a deleted user from the lists that hold it")
        )
    return tuple(specs)


def user_rules(fields: FieldMap) -> CollectionRules:
    kept = [fields.identity, (USERNAME_LOWER,)]
    if (username := fields.target_of(USERNAME)) is not None:
        kept.append((username,))
    contacts = {target: what for source, what in _CONTACTS.items() if (target := fields.target_of(source))}
    return CollectionRules(USERS, "user", tuple(kept), fields.written_fields, contacts)
