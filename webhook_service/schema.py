"""Which indexes the service needs, and how they fit beside the ones an app already has.

The service runs on a collection another app (xClone's mongoose model) already owns,
with its own indexes under its own names. What matters is what an index does, never
what it is called: an existing index that gives the service what it relies on is
reused; one that contradicts the service's rules is a conflict, reported with the
fix. Plain data in, plain data out: the store reads the indexes and carries out the plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .cascade import CascadeRule

USERS = "users"
TOMBSTONES = "deleted_users"
ORG_TOMBSTONES = "deleted_organizations"
MEMBERSHIP_TOMBSTONES = "deleted_memberships"
EVENTS = "events"
WATCH = "watch"  # the watcher's lease and where each resource's last pass stopped
# Collections only the service writes: no cascade rule may name them.
SERVICE_COLLECTIONS = (TOMBSTONES, ORG_TOMBSTONES, MEMBERSHIP_TOMBSTONES, EVENTS, WATCH)
MIGRATE_COMMAND = "flask --app wsgi init-db --migrate"
INIT_COMMAND = "flask --app wsgi init-db"


@dataclass(frozen=True)
class IndexSpec:
    """An index the service wants. ``required`` ones are what correctness rests on:
    without them the service is not ready. The rest only make queries fast."""

    collection: str
    name: str
    keys: tuple[tuple[str, int], ...]
    purpose: str
    unique: bool = False
    partial: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)
    ttl_seconds: int | None = None
    required: bool = False

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.keys)

    def options(self) -> dict[str, Any]:
        """Keyword arguments for ``create_index`` (``background`` is never set: MongoDB
        ignores it when it compares indexes, SecantusDB does not)."""
        options: dict[str, Any] = {"name": self.name}
        if self.unique:
            options["unique"] = True
        if self.partial is not None:
            options["partialFilterExpression"] = dict(self.partial)
        if self.ttl_seconds is not None:
            options["expireAfterSeconds"] = self.ttl_seconds
        return options

    def describe(self) -> str:
        kind = "unique " if self.unique else ""
        ttl = f", expires after {self.ttl_seconds}s" if self.ttl_seconds is not None else ""
        return f"{kind}{describe_keys(self.keys)}{ttl}"


EVENT_INDEXES: tuple[IndexSpec, ...] = (
    IndexSpec(
        EVENTS,
        "expiresAt_ttl",
        (("expiresAt", 1),),
        "expires event records and their personal data",
        ttl_seconds=0,
        required=True,
    ),
    IndexSpec(EVENTS, "receivedAt", (("receivedAt", -1),), "listing recent deliveries"),
    IndexSpec(EVENTS, "outcome", (("outcome", 1), ("receivedAt", -1)), "listing deliveries by outcome"),
    IndexSpec(
        EVENTS,
        "userId",
        (("userId", 1), ("receivedAt", -1)),
        "finding a user's deliveries, and erasing them when the user is deleted",
        required=True,
    ),
)
ORG_EVENT_INDEX = IndexSpec(
    EVENTS,
    "orgId",
    (("orgId", 1), ("receivedAt", -1)),
    "finding an organization's deliveries, and erasing them when it is deleted",
    required=True,
)


def key_index(collection: str, name: str, keys: tuple[str, ...], purpose: str) -> IndexSpec:
    """A unique index a resource's writes are ordered by: required, so it may be hinted."""
    return IndexSpec(collection, name, tuple((k, 1) for k in keys), purpose, unique=True, required=True)


@dataclass(frozen=True)
class CollectionRules:
    """What the service needs of the app's own unique indexes on a collection it writes.

    ``unique`` are the field sets the service keeps unique itself: an index whose key
    holds one of them is unique by implication and harmless. ``contacts`` are fields whose
    values Clerk lets two records share or lack (an email address, a phone number), with
    what they are, for the conflict's wording.
    """

    collection: str
    noun: str
    unique: tuple[tuple[str, ...], ...]
    written: frozenset[str]
    contacts: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceSchema:
    """Every index the service wants, and the rules for the collections it writes."""

    wanted: tuple[IndexSpec, ...]
    rules: tuple[CollectionRules, ...]

    @property
    def collections(self) -> tuple[str, ...]:
        names = (
            *SERVICE_COLLECTIONS,
            *(r.collection for r in self.rules),
            *(s.collection for s in self.wanted),
        )
        return tuple(dict.fromkeys(names))

    @property
    def own(self) -> frozenset[str]:
        """The collections the service mirrors into or keeps itself (the rest are the app's)."""
        return frozenset((*SERVICE_COLLECTIONS, *(r.collection for r in self.rules)))


def cascade_indexes(
    rules: Iterable[CascadeRule],
    service: Iterable[IndexSpec] = (),
    *,
    deleted: str = "user",
    source: str = "DELETE_CASCADE",
) -> tuple[IndexSpec, ...]:
    """One index per field a cascade rule matches, on the app's collection: without it
    every deletion scans that collection, and its cost grows with it. Additive and
    non-unique, so safe to create beside the app's own. Named as mongoose names an index on
    the field (``user_1``), so the app's own declaration of it is a no-op."""
    # A wanted index whose key starts with the field serves the rule's lookups already.
    wanted = {(spec.collection, spec.fields[:1]) for spec in service}
    specs: dict[tuple[str, tuple[str, ...]], IndexSpec] = {}
    for rule in rules:
        key = (rule.collection, (rule.field,))
        if key in wanted or key in specs:
            continue
        purpose = f"finding what a deleted {deleted} leaves in {rule.collection} ({source})"
        specs[key] = IndexSpec(rule.collection, f"{rule.field}_1", ((rule.field, 1),), purpose)
    return tuple(specs.values())


@dataclass(frozen=True)
class ExistingIndex:
    """An index as ``listIndexes`` reports it, reduced to what the plan compares."""

    collection: str
    name: str
    keys: tuple[tuple[str, Any], ...]
    unique: bool = False
    sparse: bool = False
    partial: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)
    ttl_seconds: int | None = None
    collation: bool = False

    @classmethod
    def from_info(cls, collection: str, info: Mapping[str, Any]) -> ExistingIndex:
        ttl = info.get("expireAfterSeconds")
        return cls(
            collection=collection,
            name=str(info["name"]),
            keys=tuple((str(k), v) for k, v in dict(info["key"]).items()),
            unique=bool(info.get("unique")),
            sparse=bool(info.get("sparse")),
            partial=_plain(info.get("partialFilterExpression")),
            ttl_seconds=None if ttl is None else int(ttl),
            collation=info.get("collation") is not None,
        )

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.keys)

    def describe(self) -> str:
        options = [o for o, on in (("unique", self.unique), ("sparse", self.sparse)) if on]
        if self.partial is not None:
            options.append("partial")
        ttl = f", expires after {self.ttl_seconds}s" if self.ttl_seconds is not None else ""
        return " ".join(options + [describe_keys(self.keys)]) + ttl


@dataclass(frozen=True)
class Conflict:
    """An existing index that contradicts the service's rules, and what replaces it."""

    index: ExistingIndex
    breaks: str
    replacement: IndexSpec

    def warning(self) -> str:
        return (
            f"index {self.index.collection}.{self.index.name} ({self.index.describe()}) conflicts with "
            f"the service: it {self.breaks}. Fix: {MIGRATE_COMMAND} (replaces it with "
            f"{'the' if self.replacement.unique else 'a non-unique'} index {self.replacement.name} "
            f"on {self.replacement.describe().removeprefix('unique ')})"
        )


@dataclass
class IndexPlan:
    reused: list[tuple[IndexSpec, ExistingIndex]] = field(default_factory=list)
    create: list[IndexSpec] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)


def describe_keys(keys: Iterable[tuple[str, Any]]) -> str:
    return ", ".join(k if v == 1 else f"{k} {v}" for k, v in keys)


def plan_indexes(existing: Iterable[ExistingIndex], schema: ServiceSchema) -> IndexPlan:
    """Reuse what serves, create what is missing (under a free name), report conflicts."""
    existing = list(existing)
    plan = IndexPlan()
    rules = {r.collection: r for r in schema.rules}
    plan.conflicts = [
        c
        for ix in existing
        if ix.collection in rules and (c := _conflict(ix, rules[ix.collection])) is not None
    ]
    conflicting = {(c.index.collection, c.index.name) for c in plan.conflicts}
    for spec in schema.wanted:
        same_collection = [ix for ix in existing if ix.collection == spec.collection]
        serving = next((ix for ix in same_collection if _serves(ix, spec)), None)
        if serving is not None and (spec.collection, serving.name) not in conflicting:
            plan.reused.append((spec, serving))
            continue
        if serving is not None:
            continue  # a conflicting index on the key: --migrate replaces it
        blocker = next((ix for ix in same_collection if _same_identity(ix, spec)), None)
        if blocker is not None:
            plan.conflicts.append(Conflict(blocker, f"blocks the service's {spec.describe()}", spec))
            continue
        plan.create.append(replace(spec, name=_free_name(spec.name, {ix.name for ix in same_collection})))
    return plan


def _serves(index: ExistingIndex, spec: IndexSpec) -> bool:
    """Whether ``index`` gives the service what ``spec`` is for. A required index is named
    by its key pattern in the store's hints, so only that exact pattern serves it."""
    if spec.required and tuple((k, _direction(v)) for k, v in index.keys) != spec.keys:
        return False
    if spec.unique:
        return (
            index.unique
            and index.fields == spec.fields
            and not index.collation
            and (index.partial is None or index.partial == spec.partial or _covers_every_value(index, spec))
        )
    if spec.ttl_seconds is not None:
        return index.fields == spec.fields and index.ttl_seconds == spec.ttl_seconds and index.partial is None
    return index.fields[: len(spec.fields)] == spec.fields and index.partial is None and not index.sparse


def _direction(value: Any) -> Any:
    """A key's direction as a hint spells it (``listIndexes`` may say ``1.0``)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _covers_every_value(index: ExistingIndex, spec: IndexSpec) -> bool:
    """A partial filter that still indexes every document the service writes."""
    if len(spec.fields) != 1:
        return False
    [name] = spec.fields
    return index.partial in ({name: {"$exists": True}}, {name: {"$type": "string"}})


def _same_identity(index: ExistingIndex, spec: IndexSpec) -> bool:
    """MongoDB refuses a second index equal in these (error 85), whatever its name."""
    return (
        tuple(k for k, _ in index.keys) == spec.fields
        and tuple(v for _, v in index.keys) == tuple(v for _, v in spec.keys)
        and index.unique == spec.unique
        and not index.sparse
        and index.partial == (dict(spec.partial) if spec.partial is not None else None)
        and not index.collation
    )


def _conflict(index: ExistingIndex, rules: CollectionRules) -> Conflict | None:
    """A unique index that refuses documents the service must be able to write."""
    if not index.unique or index.name == "_id_":
        return None
    fields, noun = set(index.fields), rules.noun
    # Unique by implication: its key holds a set of fields the service keeps unique itself.
    if any(set(kept) <= fields for kept in rules.unique):
        return None
    replacement = IndexSpec(rules.collection, index.name, tuple((k, v) for k, v in index.keys), "lookups")
    contact = next((what for name, what in rules.contacts.items() if fields == {name}), None)
    written = fields & rules.written
    if contact is not None:
        breaks = (
            f"refuses a second {noun} without {contact}, and one moving from one {noun} to another "
            "when its two events arrive out of order"
        )
    elif written:
        breaks = f"refuses two {noun}s with the same {', '.join(sorted(written))}, which Clerk allows"
    elif index.sparse or index.partial is not None:
        return None  # never indexes the documents the service writes
    else:
        breaks = f"refuses a second {noun} without {', '.join(sorted(fields))}, which the service never sets"
    return Conflict(index, breaks, replacement)


def _free_name(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    return candidate


def _plain(value: Any) -> Any:
    """SON and nested mappings as plain dicts, so filters compare by value."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
