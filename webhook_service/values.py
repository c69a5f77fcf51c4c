"""How a JSON value from Clerk becomes a BSON value in the app's documents.

Clerk's metadata is JSON the user can write (``unsafe_metadata`` is set from the
browser), and BSON cannot hold every JSON value as it is. ``storable`` is the one rule
for such values: a value BSON holds as it is is stored as it is; any other (a key with
``.`` or a leading ``$``, nesting deeper than MAX_DEPTH, an integer beyond 64 bits) is
stored whole as its JSON text, a string. Nothing is dropped and no delivery fails on it,
and ``json.loads`` gives the original back. Plain functions, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

TYPES = ("string", "boolean", "integer", "number", "datetime", "object", "array")
MAX_DEPTH = 20
INT64 = (-(2**63), 2**63 - 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_JSON_TEXT_STARTS = frozenset("{[")  # an object or a list


class Missing(Enum):
    """No value: the path is absent or null, or holds a type the field does not take."""

    VALUE = "missing"


MISSING = Missing.VALUE


class Unknown(Enum):
    """Clerk did not say: the stored value, if any, stays (an optional key, such as an
    organization's ``members_count``, that a payload may leave out)."""

    VALUE = "unknown"


UNKNOWN = Unknown.VALUE


def coerce(kind: str | None, value: Any) -> Any:
    """``value`` as a field of type ``kind`` holds it, or MISSING if it is another type."""
    return MISSING if value is None else COERCE[kind](value)


def _any(value: Any) -> Any:
    return storable(value)


def _string(value: Any) -> Any:
    return value if isinstance(value, str) else MISSING


def _boolean(value: Any) -> Any:
    return value if isinstance(value, bool) else MISSING


def _number_kind(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> Any:
    return (
        value if _number_kind(value) and isinstance(value, int) and INT64[0] <= value <= INT64[1] else MISSING
    )


def _number(value: Any) -> Any:
    fits = _number_kind(value) and (isinstance(value, float) or INT64[0] <= value <= INT64[1])
    return value if fits else MISSING


def _datetime_of(value: Any) -> Any:
    return _datetime(value) if _number_kind(value) else MISSING


def _object(value: Any) -> Any:
    return storable(value) if isinstance(value, dict) else MISSING


def _array(value: Any) -> Any:
    return storable(value) if isinstance(value, list) else MISSING


# Each type's conversion of a value that is not None, looked up once per field at start.
COERCE: dict[str | None, Callable[[Any], Any]] = {
    None: _any,
    "string": _string,
    "boolean": _boolean,
    "integer": _integer,
    "number": _number,
    "datetime": _datetime_of,
    "object": _object,
    "array": _array,
}


def may_be_json_text(kind: str | None) -> bool:
    """Whether a field of this type can hold a value stored by the JSON-text rule."""
    return kind in (None, "object", "array")


def from_storable(value: Any) -> Any:
    """The JSON value a field of a JSON-capable type holds: an object or a list that
    ``storable`` wrote as JSON text, decoded; anything else as it is. A string is decoded
    only when it is exactly the text the rule writes for an object or a list BSON cannot
    hold, so a plain string stays a string. (A bare number beyond 64 bits stays its text:
    nothing tells it from a string of digits.)"""
    if not isinstance(value, str) or not value or value[0] not in _JSON_TEXT_STARTS:
        return value
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError):
        return value
    return decoded if not _plain(decoded, 0) and storable(decoded) == value else value


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
        return INT64[0] <= value <= INT64[1]
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


def fresh_default(value: Any) -> Any:
    """A copy of a default, so no two documents' writes share a list or a table."""
    if isinstance(value, list):
        return [fresh_default(v) for v in value]
    if isinstance(value, dict):
        return {k: fresh_default(v) for k, v in value.items()}
    return value
