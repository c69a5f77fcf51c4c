"""The mirror's plain data: what a resource declares (``MirrorSpec``), one version of a
Clerk object as the app's document holds it (``Record``), and reconcile's decision for it.

A resource declares what differs: its collection and key field, its tombstones, the app's
own unique identity when that is not the key (a membership's organization and user), the
tombstones of records it belongs to (a membership's organization and user: while either is
deleted, it is too), and whether a deletion is dated (a member can leave and rejoin; a
user or an organization never comes back). No I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from ..events import Outcome
from ..fieldmap import FieldMap


@dataclass(slots=True)
class Record:
    """The fields a Clerk object maps to, with its key and the version they came from.

    ``key`` is what the mirror's unique key field holds (a Clerk id, or a membership's
    organization and user ids joined); ``version`` is Clerk's ``updated_at`` in ms;
    ``absent`` are mapped fields Clerk has no value for (and no default covers): the
    document is left without them.
    """

    key: str
    version: int
    values: Mapping[str, Any]
    absent: tuple[str, ...] = ()


@dataclass(slots=True)
class UpsertResult:
    outcome: Outcome
    created: bool = False


@dataclass(frozen=True)
class Parent:
    """A record this one belongs to: while its tombstone exists, this record is deleted too."""

    tombstones: str
    field: str  # the field of this record's document that holds the parent's Clerk id


@dataclass(frozen=True)
class MirrorSpec:
    kind: str  # "user", "organization", "membership"
    collection: str
    key: str  # the field holding the record's key, unique
    tombstones: str
    fields: FieldMap
    natural: tuple[str, ...] = ()  # the app's own unique identity, when it is not the key
    parents: tuple[Parent, ...] = ()
    dated_deletions: bool = False  # a deletion holds back only versions up to its date


class Arbiter(Protocol):
    """Settles a clash on a unique value the resource keeps itself (users' usernames)."""

    def claims(self, key_pattern: Mapping[str, Any]) -> bool:
        """Whether the index that refused the write is one this arbiter settles."""

    def settle(self, key_pattern: Mapping[str, Any], record: Record) -> Record | None:
        """The record to try next, or None when the record's own document holds the value
        (the filter refused the write: the mirror classifies why)."""


class Plan(StrEnum):
    """What reconcile does with one record Clerk listed."""

    CREATE = "create"
    UPDATE = "update"
    KEEP = "keep"


def plan_version(
    clerk_version: int, local_version: int | None, deleted_locally: bool, refresh: bool = False
) -> Plan:
    """Reconcile's per-record decision; the write itself is still guarded in the database.

    A local version at least as new as Clerk's is kept (a webhook may have landed
    after Clerk listed the page). A remembered deletion is never undone. A refresh also
    rewrites the version it already has, so a changed field map reaches every record; a
    newer local version is still kept.
    """
    if deleted_locally:
        return Plan.KEEP
    if local_version is None:
        return Plan.CREATE
    if clerk_version > local_version or refresh and clerk_version == local_version:
        return Plan.UPDATE
    return Plan.KEEP
