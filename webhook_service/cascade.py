"""``DELETE_CASCADE``'s grammar: what a deletion does to the app's other collections.

A rule ``collection.field:action`` matches the documents whose ``field`` holds the
deleted record's ``_id`` (ObjectId) or Clerk id (string): ``delete`` removes them,
``pull`` removes the reference from an array, ``unset`` sets the field to null. The
users' rules come from ``DELETE_CASCADE``; an organization map's ``cascade`` uses the
same grammar. Plain data, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

CASCADE_ACTIONS = ("delete", "pull", "unset")
_NAME_PART = re.compile(r"^[^$\s.]+$")


@dataclass(frozen=True)
class CascadeRule:
    """One rule: what a deletion does to another collection's documents whose ``field``
    holds the deleted record's ``_id`` or Clerk id."""

    collection: str
    field: str
    action: str  # "delete", "pull" or "unset"


def parse_cascade_rules(
    text: str | Iterable[str], *, owned: tuple[str, ...] = (), kept: tuple[str, ...] = ()
) -> tuple[CascadeRule, ...]:
    """``posts.user:delete,posts.likes:pull`` (or a list of rules) as rules; ValueError
    names a bad one. ``owned`` are collections the service keeps itself, which no rule may
    name; ``kept`` is the collection of the records being deleted, whose documents a rule
    may pull or unset but not delete.

    The collection is what comes before the first dot (collection names with dots are
    not supported); the field may be a dotted path.
    """
    rules = []
    raws = text.split(",") if isinstance(text, str) else list(text)
    for raw in (part.strip() if isinstance(part, str) else part for part in raws):
        if not isinstance(raw, str):
            raise ValueError(f"rule {raw!r} must be a string collection.field:action")
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
        if collection in owned or collection == "system":
            raise ValueError(f"rule {raw!r} names a collection the service owns")
        rule = CascadeRule(collection, path, action)
        refuse_deleting_kept(rule, kept)
        rules.append(rule)
    return tuple(rules)


def refuse_deleting_kept(rule: CascadeRule, kept: Collection[str]) -> None:
    """ValueError for a rule that would delete documents of a collection Clerk keeps (whose
    records the service mirrors): those may be pulled from or unset, not deleted."""
    if rule.collection in kept and rule.action == "delete":
        raise ValueError(
            f"rule '{rule.collection}.{rule.field}:delete' would delete {rule.collection} Clerk keeps; "
            f"use pull or unset on {rule.collection}"
        )
