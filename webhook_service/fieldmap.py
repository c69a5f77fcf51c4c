"""The field map: which fields of the app's ``users`` documents come from Clerk, and how.

An app declares it in a TOML file (``USER_FIELDS_FILE``); without one the built-in map,
``user_fields.toml`` beside this module, is xClone's. It is read and checked once, at
start: a bad entry is a FieldMapError naming it, so a typo stops the service instead of
quietly writing the wrong documents. Plain data, no I/O beyond reading the file.

Clerk's metadata is JSON the user can write (``unsafe_metadata`` is set from the
browser), and BSON cannot hold every JSON value as it is. ``storable`` is the one rule
for such values: a value BSON holds as it is is stored as it is; any other (a key with
``.`` or a leading ``$``, nesting deeper than MAX_DEPTH, an integer beyond 64 bits) is
stored whole as its JSON text, a string. Nothing is dropped and no delivery fails on it.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import Enum
from functools import cached_property
from importlib.resources import files
from pathlib import Path
from typing import Any

DERIVED = ("$primary_email", "$primary_phone", "$username", "$full_name")
TYPES = ("string", "boolean", "integer", "number", "datetime", "object", "array")
# The service's own fields on every user document; a map may not name them.
BOOKKEEPING_FIELDS = (
    "_id",
    "usernameLower",
    "usernameSource",
    "clerkUpdatedAt",
    "lastDeliveryId",
    "clerkSyncedAt",
    "reconcileRun",
    "createdAt",
    "updatedAt",
)
MAX_DEPTH = 20
_INT64 = (-(2**63), 2**63 - 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ENTRY_KEYS = frozenset(("from", "type", "default", "insert_only", "nullable"))
_TOP_KEYS = frozenset(("identity", "references", "fields"))
_PATH = re.compile(r"^[^.$\s][^.\s]*(\.[^.\s]+)*$")


class FieldMapError(ValueError):
    """A field map entry the service cannot follow; the message names the entry."""


class Missing(Enum):
    """No value: the path is absent or null, or holds a type the field does not take."""

    VALUE = "missing"


MISSING = Missing.VALUE


@dataclass(frozen=True)
class FieldSpec:
    """One target field: where its value comes from, and what it becomes."""

    target: str
    source: str | None  # a dotted path into Clerk's User object, a "$derived" name, or None (app-owned)
    type: str | None = None  # None: any JSON value, stored by the ``storable`` rule
    default: Any = MISSING
    insert_only: bool = False
    nullable: bool = False  # no value and no default: store null rather than no field

    @cached_property
    def path(self) -> tuple[str, ...]:
        return () if self.source is None or self.source.startswith("$") else tuple(self.source.split("."))

    @cached_property
    def derived(self) -> str | None:
        """The ``$name`` of a derived value, else None."""
        return self.source if self.source is not None and self.source.startswith("$") else None

    def when_missing(self) -> Any:
        """The field's value when Clerk has none (MISSING: the document has no such field)."""
        if self.default is not MISSING:
            return fresh_default(self.default)
        return None if self.nullable else MISSING


@dataclass(frozen=True)
class FieldMap:
    """A checked map. Everything derived from it is computed once, on first use: the map
    is compiled at start, not on every delivery."""

    identity: str
    references: tuple[str, ...]
    fields: tuple[FieldSpec, ...]

    @cached_property
    def sourced(self) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.fields if f.source is not None and f.source != "$username")

    @cached_property
    def app_owned(self) -> dict[str, Any]:
        """Fields the service sets only when it creates a document, with their defaults."""
        return {f.target: f.default for f in self.fields if f.source is None}

    @cached_property
    def insert_only(self) -> frozenset[str]:
        return frozenset(f.target for f in self.fields if f.insert_only)

    def target_of(self, derived: str) -> str | None:
        return next((f.target for f in self.fields if f.source == derived), None)

    @cached_property
    def username(self) -> str | None:
        return self.target_of("$username")

    @cached_property
    def written_fields(self) -> frozenset[str]:
        """Every field the service writes on a user document."""
        own = (self.identity, *self.references, *(f.target for f in self.fields), *BOOKKEEPING_FIELDS)
        return frozenset(own) - {"_id", "clerkSyncedAt", "reconcileRun"}

    @cached_property
    def public_fields(self) -> tuple[str, ...]:
        """The document as sync returns it, in the map's order."""
        return (self.identity, *(f.target for f in self.fields), "createdAt", "updatedAt")

    def insert_only_candidates(self) -> tuple[str, ...]:
        """Fields ``INSERT_ONLY_FIELDS`` may name: profile text copied from a path of Clerk's
        user, which an app lets its users edit. Not derived values (the username rule, the
        contact fields lookups rely on), and not flags such as ``banned``: access state
        stays Clerk's. A map file can still declare ``insert_only`` on any path field."""
        return tuple(f.target for f in self.fields if f.path and f.type in (None, "string"))

    def with_insert_only(self, names: tuple[str, ...]) -> FieldMap:
        """The map with ``names`` insert-only too; ValueError names one it cannot be."""
        allowed = self.insert_only_candidates()
        for name in names:
            if name not in allowed:
                raise ValueError(f"{name!r} is not allowed; allowed: {', '.join(allowed)}")
        if not names:
            return self
        fields = tuple(replace(f, insert_only=True) if f.target in names else f for f in self.fields)
        return replace(self, fields=fields)


def fresh_default(value: Any) -> Any:
    """A copy of a default, so no two documents' writes share a list or a table."""
    if isinstance(value, list):
        return [fresh_default(v) for v in value]
    if isinstance(value, dict):
        return {k: fresh_default(v) for k, v in value.items()}
    return value


def builtin_path() -> Path:
    return Path(str(files("webhook_service").joinpath("user_fields.toml")))


def load_field_map(path: str | Path | None = None) -> FieldMap:
    """The map in ``path``, or the built-in one; FieldMapError names what is wrong."""
    source = Path(path) if path else builtin_path()
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FieldMapError(f"{source}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FieldMapError(f"{source}: not TOML: {exc}") from None
    try:
        return parse_field_map(data)
    except FieldMapError as exc:
        raise FieldMapError(f"{source}: {exc}") from None


_BUILTIN: list[FieldMap] = []


def builtin_field_map() -> FieldMap:
    """xClone's map, read once per process."""
    if not _BUILTIN:
        _BUILTIN.append(load_field_map())
    return _BUILTIN[0]


def parse_field_map(data: Mapping[str, Any]) -> FieldMap:
    if unknown := sorted(set(data) - _TOP_KEYS):
        raise FieldMapError(f"unknown key {unknown[0]!r} (known: identity, references, fields)")
    identity = _target(data.get("identity", "clerkId"), "identity")
    references = data.get("references", [])
    if not isinstance(references, list):
        raise FieldMapError("references must be a list of field names")
    refs = tuple(_target(name, f"references[{i}]") for i, name in enumerate(references))
    table = data.get("fields")
    if not isinstance(table, dict) or not table:
        raise FieldMapError("[fields] must be a table with at least one field")
    specs = tuple(_entry(_target(name, f"fields.{name}"), raw) for name, raw in table.items())
    for spec in specs:
        if spec.target == identity:
            raise FieldMapError(
                f"fields.{spec.target}: is the identity field, which the service writes itself"
            )
    for i, name in enumerate(refs):
        if name == identity:
            raise FieldMapError(f"references[{i}]: {name!r} is the identity field")
    for derived in ("$username",):
        targets = [s.target for s in specs if s.source == derived]
        if len(targets) > 1:
            raise FieldMapError(f"fields.{targets[1]}: {derived} is mapped twice (also to {targets[0]})")
    return FieldMap(identity, refs, specs)


def _target(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise FieldMapError(f"{where}: a field name must be a non-empty string")
    if "." in name or name.startswith("$"):
        raise FieldMapError(f"{where}: field name {name!r} may not contain '.' or start with '$'")
    if name in BOOKKEEPING_FIELDS:
        raise FieldMapError(f"{where}: {name!r} is one of the service's own fields")
    return name


def _entry(target: str, raw: Any) -> FieldSpec:
    where = f"fields.{target}"
    entry = {"from": raw} if isinstance(raw, str) else raw
    if not isinstance(entry, dict):
        raise FieldMapError(f"{where}: must be a string (a path or $name) or a table")
    if unknown := sorted(set(entry) - _ENTRY_KEYS):
        raise FieldMapError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_ENTRY_KEYS))})")
    source, kind = entry.get("from"), entry.get("type")
    if source is not None and not isinstance(source, str):
        raise FieldMapError(f"{where}: 'from' must be a string")
    if isinstance(source, str):
        if source.startswith("$") and source not in DERIVED:
            raise FieldMapError(f"{where}: unknown source {source!r} (known: {', '.join(DERIVED)})")
        if not source.startswith("$") and not _PATH.match(source):
            raise FieldMapError(f"{where}: 'from' {source!r} is not a dotted path")
    if kind is not None and kind not in TYPES:
        raise FieldMapError(f"{where}: unknown type {kind!r} (known: {', '.join(TYPES)})")
    for flag in ("insert_only", "nullable"):
        if not isinstance(entry.get(flag, False), bool):
            raise FieldMapError(f"{where}: {flag} must be true or false")
    default = entry.get("default", MISSING)
    if source is None and default is MISSING:
        raise FieldMapError(f"{where}: needs 'from' (Clerk's value) or 'default' (an app-owned field)")
    if source is None and (kind is not None or entry.get("insert_only")):
        raise FieldMapError(f"{where}: an app-owned field (no 'from') takes only a default")
    if source == "$username" and (default is not MISSING or kind is not None or entry.get("nullable")):
        raise FieldMapError(f"{where}: $username always has a value; it takes no type, default or nullable")
    if default is not MISSING:
        _check_default(where, kind, default)
    return FieldSpec(
        target,
        source,
        kind,
        default,
        insert_only=bool(entry.get("insert_only", False)),
        nullable=bool(entry.get("nullable", False)),
    )


def _check_default(where: str, kind: str | None, default: Any) -> None:
    if isinstance(default, (date, time)) and not isinstance(default, datetime):
        raise FieldMapError(f"{where}: a default date or time needs a full date-time with offset")
    if isinstance(default, datetime) and default.tzinfo is None:
        raise FieldMapError(f"{where}: a default date-time needs an offset (e.g. Z)")
    if kind is not None:
        accepted = (
            isinstance(default, datetime) if kind == "datetime" else coerce(kind, default) is not MISSING
        )
        if not accepted:
            raise FieldMapError(f"{where}: default {default!r} is not of type {kind}")
    if storable(default) is not default:
        raise FieldMapError(f"{where}: default has a key with '.' or '$', or nests too deeply")


def coerce(kind: str | None, value: Any) -> Any:
    """``value`` as a field of type ``kind`` holds it, or MISSING if it is another type."""
    if value is None:
        return MISSING
    if kind is None:
        return storable(value)
    if kind == "string":
        return value if isinstance(value, str) else MISSING
    if kind == "boolean":
        return value if isinstance(value, bool) else MISSING
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "integer":
        return value if number and isinstance(value, int) and _INT64[0] <= value <= _INT64[1] else MISSING
    if kind == "number":
        return value if number and (isinstance(value, float) or _INT64[0] <= value <= _INT64[1]) else MISSING
    if kind == "datetime":
        return _datetime(value) if number else MISSING
    if kind == "object":
        return storable(value) if isinstance(value, dict) else MISSING
    return storable(value) if isinstance(value, list) else MISSING


def _datetime(milliseconds: float) -> Any:
    """Clerk's Unix milliseconds as a UTC date (BSON keeps milliseconds)."""
    try:
        return _EPOCH + timedelta(milliseconds=int(milliseconds))
    except (OverflowError, ValueError):
        return MISSING


def storable(value: Any) -> Any:
    """``value`` itself if BSON holds it as it is, else its JSON text (see the module doc)."""
    return value if _plain(value, 0) else json.dumps(value, ensure_ascii=False)


def _plain(value: Any, depth: int) -> bool:
    if isinstance(value, bool) or value is None or isinstance(value, (str, float, datetime)):
        return True
    if isinstance(value, int):
        return _INT64[0] <= value <= _INT64[1]
    if depth >= MAX_DEPTH:
        return False
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(
            isinstance(k, str) and k and "." not in k and not k.startswith("$") and _plain(v, depth + 1)
            for k, v in value.items()
        )
    return False
