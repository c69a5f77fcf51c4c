"""A verified webhook body as an ``Event``, and what handling one can come to.

``parse_event`` checks the envelope Clerk wraps every event in (UTF-8 JSON, an object,
a string ``type``, an object ``data``) and nothing about any one type: what a type
requires of its ``data`` is the registry's business (``dispatch.py``), so a type the
service does not handle is acknowledged whatever its shape. Plain functions, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

MAX_INT64 = 2**63 - 1
# Clerk's docs give an envelope's ``timestamp`` in milliseconds, some of its examples (the
# dashboard's "Send example") in seconds. Any value below this is seconds: in ms it would
# be before March 1973, in seconds it is before the year 5138.
SECONDS_BELOW = 100_000_000_000
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class MalformedEvent(ValueError):
    """A correctly signed body that is not a usable Clerk event; the message says why."""


class Outcome(StrEnum):
    """What handling a delivery did. The values appear in logs, metrics and the event log."""

    APPLIED = "applied"
    STALE = "stale"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    DELETED = "deleted"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass(slots=True)
class Event:
    """A parsed Clerk webhook envelope."""

    type: str
    data: Mapping[str, Any]
    timestamp: Any = None  # the envelope's, as sent: see ``timestamp_ms``

    @property
    def timestamp_ms(self) -> int | None:
        """When Clerk says the event happened, in ms (seconds are converted), or None.

        A value in seconds covers its whole second, so it is read as that second's last
        millisecond: a deletion sent in seconds is then never older than a change made
        in the same second.
        """
        value = self.timestamp
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_INT64:
            return None
        return value * 1000 + 999 if value < SECONDS_BELOW else value


@dataclass(slots=True)
class Subject:
    """What an event is about, as the event log files it: the resource's kind and Clerk id,
    and the user and organization it names (their deletions erase its payload)."""

    kind: str  # "user", "organization" or "membership"
    id: str
    user_id: str | None = None
    org_id: str | None = None


def parse_event(body: bytes) -> Event:
    """Parse a verified body, or raise MalformedEvent naming what is wrong."""
    try:
        text = body.decode("utf-8")  # json.loads(bytes) would also accept UTF-16/32
    except UnicodeDecodeError as exc:
        raise MalformedEvent("body is not UTF-8") from exc
    try:
        envelope = json.loads(text)
    except ValueError as exc:
        raise MalformedEvent("body is not JSON") from exc
    except RecursionError as exc:
        raise MalformedEvent("body is nested too deeply") from exc
    if not isinstance(envelope, dict):
        raise MalformedEvent("event is not a JSON object")
    try:
        # A lone surrogate can only come as a \u escape: most bodies have none to look at.
        encodable = "\\u" not in text or not _SURROGATE_ESCAPE.search(text) or _encodable(envelope)
    except RecursionError as exc:  # json.loads had a few stack frames more to spare
        raise MalformedEvent("body is nested too deeply") from exc
    if not encodable:
        raise MalformedEvent("event has a lone UTF-16 surrogate escape")
    event_type = envelope.get("type")
    if not isinstance(event_type, str) or not event_type:
        raise MalformedEvent("event has no string 'type'")
    data = envelope.get("data")
    if not isinstance(data, dict):
        raise MalformedEvent("event has no object 'data'")
    return Event(type=event_type, data=data, timestamp=envelope.get("timestamp"))


def _encodable(envelope: dict[str, Any]) -> bool:
    """Whether every string survives UTF-8 (and so BSON); valid surrogate pairs do."""
    try:
        json.dumps(envelope, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def required_id(data: Mapping[str, Any], what: str, *path: str) -> str:
    """The non-empty string at ``path`` in ``data``, or MalformedEvent naming it."""
    value: Any = data
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    if not isinstance(value, str) or not value:
        raise MalformedEvent(f"{what} has no string 'data.{'.'.join(path)}'")
    return value


def required_version(data: Mapping[str, Any], what: str) -> int:
    """``data.updated_at``, Clerk's version of the object, or MalformedEvent."""
    updated_at = data.get("updated_at")
    if not isinstance(updated_at, int) or isinstance(updated_at, bool) or updated_at < 0:
        raise MalformedEvent(f"{what} has no integer 'data.updated_at'")
    if updated_at > MAX_INT64:  # BSON cannot store it: the write would fail on every retry
        raise MalformedEvent(f"{what} 'data.updated_at' is out of range")
    return updated_at


def unstorable_reason(obj: Any) -> str | None:
    """Why a Clerk object from the Backend API cannot be mirrored, or None if it can.
    Only what ordering needs is required: a string ``id`` and an integer ``updated_at``."""
    if not isinstance(obj, Mapping):
        return "not a JSON object"
    if not (isinstance(obj.get("id"), str) and obj["id"]):
        return "no string id"
    return version_reason(obj)


def version_reason(obj: Mapping[str, Any]) -> str | None:
    """Why the object's ``updated_at`` cannot order its writes (an integer, in BSON's
    int64 range, is needed), or None if it can."""
    updated_at = obj.get("updated_at")
    if not isinstance(updated_at, int) or isinstance(updated_at, bool) or not 0 <= updated_at <= MAX_INT64:
        return "no integer updated_at"
    return None
