"""A field map's grammar: which fields of the app's documents come from Clerk, and how.

An app declares a map per resource in TOML (``USER_FIELDS_FILE``, and the organization
map's ``[fields]`` and ``[memberships.fields]``). Each entry is a dotted path into Clerk's
object, a ``$name`` the resource derives (its table of derived values, ``Derived``), or
an app-owned field with a default. Read and checked once, at start: a bad entry is a
FieldMapError naming it, so a typo stops the service instead of quietly writing the
wrong documents. Plain data, no I/O beyond reading the file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from functools import cached_property
from pathlib import Path
from typing import Any

from .bookkeeping import BOOKKEEPING_FIELDS, RECONCILE_RUN, RESERVED_FIELDS, SYNCED_AT, TIMESTAMPS
from .values import COERCE, MISSING, TYPES, UNKNOWN, coerce, fresh_default, may_be_json_text, storable

_ENTRY_KEYS = frozenset(("from", "type", "default", "insert_only", "nullable"))
_PATH = re.compile(r"^[^.$\s][^.\s]*(\.[^.\s]+)*$")


class FieldMapError(ValueError):
    """A field map entry the service cannot follow; the message names the entry."""


@dataclass(frozen=True)
class Derived:
    """A value a resource computes from Clerk's object, named ``$name`` in its map."""

    read: Callable[[Mapping[str, Any]], Any] | None  # None: the resource writes it itself
    once: bool = False  # may be mapped to one field only
    bare: bool = False  # always has a value: takes no type, default or nullable


@dataclass(frozen=True)
class FieldSpec:
    """One target field: where its value comes from, and what it becomes."""

    target: str
    source: str | None  # a dotted path into Clerk's object, a "$derived" name, or None (app-owned)
    type: str | None = None  # None: any JSON value, stored by the ``storable`` rule
    default: Any = MISSING
    insert_only: bool = False
    nullable: bool = False  # no value and no default: store null rather than no field
    derive: Callable[[Mapping[str, Any]], Any] | None = field(default=None, compare=False, repr=False)

    @cached_property
    def path(self) -> tuple[str, ...]:
        return () if self.source is None or self.source.startswith("$") else tuple(self.source.split("."))

    @cached_property
    def reader(self) -> Callable[[Mapping[str, Any]], Any]:
        """The raw value in Clerk's object (None when the path is absent), compiled once:
        the derived value's function, or a path's lookups."""
        if self.derive is not None:
            return self.derive
        path = self.path
        if len(path) == 1:
            [key] = path
            return lambda obj: obj.get(key)

        def at_path(obj: Mapping[str, Any]) -> Any:
            value: Any = obj
            for key in path:
                if not isinstance(value, dict):
                    return None
                value = value.get(key)
            return value

        return at_path

    @cached_property
    def extract(self) -> Callable[[Mapping[str, Any]], Any]:
        """The field's value for Clerk's object, compiled once: read, converted to the
        field's type, else the default (or null, or MISSING); UNKNOWN passes through."""
        read, convert, when_missing = self.reader, COERCE[self.type], self.when_missing

        def extract(obj: Mapping[str, Any]) -> Any:
            raw = read(obj)
            if raw is None:
                return when_missing()
            if raw is UNKNOWN:
                return UNKNOWN
            value = convert(raw)
            return when_missing() if value is MISSING else value

        return extract

    def when_missing(self) -> Any:
        """The field's value when Clerk has none (MISSING: the document has no such field)."""
        if self.default is not MISSING:
            return fresh_default(self.default) if isinstance(self.default, (list, dict)) else self.default
        return None if self.nullable else MISSING


@dataclass(frozen=True)
class FieldMap:
    """A checked map for one resource. Everything derived from it is computed once, on
    first use: the map is compiled at start, not on every delivery."""

    identity: tuple[str, ...]  # the fields that hold the record's Clerk identity
    references: tuple[str, ...]
    fields: tuple[FieldSpec, ...]

    @cached_property
    def sourced(self) -> tuple[FieldSpec, ...]:
        """The fields read from Clerk's object, not those the resource writes itself."""
        return tuple(f for f in self.fields if f.path or f.derive is not None)

    @cached_property
    def app_owned(self) -> dict[str, Any]:
        """Fields the service sets only when it creates a document, with their defaults."""
        return {f.target: f.default for f in self.fields if f.source is None}

    @cached_property
    def insert_only(self) -> frozenset[str]:
        return frozenset(f.target for f in self.fields if f.insert_only)

    @cached_property
    def json_text_fields(self) -> frozenset[str]:
        """Sourced fields whose value may be stored as JSON text (``values.storable``)."""
        return frozenset(f.target for f in self.sourced if may_be_json_text(f.type))

    def target_of(self, derived: str) -> str | None:
        """The field a ``$name`` is mapped to (the first, if several)."""
        return self._targets.get(derived)

    @cached_property
    def _targets(self) -> dict[str, str]:
        targets: dict[str, str] = {}
        for spec in self.fields:
            if spec.source is not None:
                targets.setdefault(spec.source, spec.target)
        return targets

    @cached_property
    def written_fields(self) -> frozenset[str]:
        """Every field the service writes on a document."""
        own = (*self.identity, *self.references, *(f.target for f in self.fields), *BOOKKEEPING_FIELDS)
        return frozenset(own) - {"_id", SYNCED_AT, RECONCILE_RUN}

    @cached_property
    def public_fields(self) -> tuple[str, ...]:
        """The document as the service shows it (sync's answer), in the map's order."""
        return tuple(dict.fromkeys((*self.identity, *(f.target for f in self.fields), *TIMESTAMPS)))

    @cached_property
    def service_timestamps(self) -> frozenset[str]:
        """``createdAt`` and ``updatedAt``, each unless the map takes it over."""
        return frozenset(TIMESTAMPS) - {f.target for f in self.fields}

    @cached_property
    def _extractors(self) -> tuple[tuple[str, Callable[[Mapping[str, Any]], Any]], ...]:
        return tuple((spec.target, spec.extract) for spec in self.sourced)

    def values_of(self, obj: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
        """The sourced fields' values for Clerk's ``obj``, and the fields it has no value
        for (and no default covers): the document is left without those."""
        values: dict[str, Any] = {}
        absent: list[str] = []
        for target, extract in self._extractors:
            value = extract(obj)
            if value is MISSING:
                absent.append(target)
            elif value is not UNKNOWN:
                values[target] = value
        return values, tuple(absent)

    def insert_only_candidates(self) -> tuple[str, ...]:
        """Fields ``INSERT_ONLY_FIELDS`` may name: profile text copied from a path of Clerk's
        object, which an app lets its users edit. Not derived values (the username rule, the
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


def read_toml(path: str | Path) -> dict[str, Any]:
    """A map file's table; FieldMapError names the file and what is wrong."""
    source = Path(path)
    try:
        return tomllib.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FieldMapError(f"{source}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise FieldMapError(f"{source}: not TOML: {exc}") from None


def check_keys(table: Mapping[str, Any], known: tuple[str, ...], where: str = "") -> None:
    if unknown := sorted(set(table) - set(known)):
        raise FieldMapError(f"{where}unknown key {unknown[0]!r} (known: {', '.join(known)})")


def field_name(name: Any, where: str) -> str:
    """A target field's name: a plain top-level field that is not one of the service's own."""
    if not isinstance(name, str) or not name:
        raise FieldMapError(f"{where}: a field name must be a non-empty string")
    if "." in name or name.startswith("$"):
        raise FieldMapError(f"{where}: field name {name!r} may not contain '.' or start with '$'")
    if name in RESERVED_FIELDS:
        raise FieldMapError(f"{where}: {name!r} is one of the service's own fields")
    return name


def collection_name(name: Any, where: str, taken: tuple[str, ...] = ()) -> str:
    """A collection the map names: a plain name, not one the service keeps for itself."""
    if not isinstance(name, str):
        raise FieldMapError(f"{where}: {name!r} is not a collection name")
    if not name or "$" in name or "\0" in name or name.startswith(("system.", ".")):
        raise FieldMapError(f"{where}: {name!r} is not a collection name")
    if name in taken:
        raise FieldMapError(f"{where}: {name!r} is a collection the service already keeps")
    return name


def parse_fields(
    table: Any, where: str, derived: Mapping[str, Derived], identity: tuple[str, ...] = ()
) -> tuple[FieldSpec, ...]:
    """A ``[fields]`` table as specs; ``derived`` is the resource's table of ``$names``."""
    if not isinstance(table, dict) or not table:
        raise FieldMapError(f"[{where}] must be a table with at least one field")
    specs = tuple(
        _entry(field_name(name, f"{where}.{name}"), raw, where, derived) for name, raw in table.items()
    )
    for spec in specs:
        if spec.target in identity:
            article = "the" if len(identity) == 1 else "an"
            message = f"is {article} identity field, which the service writes itself"
            raise FieldMapError(f"{where}.{spec.target}: {message}")
    for name, rule in derived.items():
        targets = [s.target for s in specs if s.source == name]
        if rule.once and len(targets) > 1:
            raise FieldMapError(f"{where}.{targets[1]}: {name} is mapped twice (also to {targets[0]})")
    return specs


def _entry(target: str, raw: Any, table: str, derived: Mapping[str, Derived]) -> FieldSpec:
    where = f"{table}.{target}"
    entry = {"from": raw} if isinstance(raw, str) else raw
    if not isinstance(entry, dict):
        raise FieldMapError(f"{where}: must be a string (a path or $name) or a table")
    if unknown := sorted(set(entry) - _ENTRY_KEYS):
        raise FieldMapError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_ENTRY_KEYS))})")
    source, kind = entry.get("from"), entry.get("type")
    if source is not None and not isinstance(source, str):
        raise FieldMapError(f"{where}: 'from' must be a string")
    rule = None
    if isinstance(source, str):
        if source.startswith("$"):
            rule = derived.get(source)
            if rule is None:
                known = ", ".join(derived) or "none for this resource"
                raise FieldMapError(f"{where}: unknown source {source!r} (known: {known})")
        elif not _PATH.match(source):
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
    if (
        rule is not None
        and rule.bare
        and (default is not MISSING or kind is not None or entry.get("nullable"))
    ):
        raise FieldMapError(f"{where}: {source} always has a value; it takes no type, default or nullable")
    if default is not MISSING:
        _check_default(where, kind, default)
    return FieldSpec(
        target,
        source,
        kind,
        default,
        insert_only=bool(entry.get("insert_only", False)),
        nullable=bool(entry.get("nullable", False)),
        derive=rule.read if rule is not None else None,
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
