"""Reading the indexes a database has, and carrying out ``schema.plan_indexes``.

Nothing that exists is changed here except by ``migrate``, which an operator runs on
purpose (``init-db --migrate``). Error messages name the index and what went wrong,
never a key value: a duplicate-key message quotes data, such as an email address.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from pymongo.database import Database
from pymongo.errors import OperationFailure, PyMongoError

from ..schema import INIT_COMMAND, Conflict, ExistingIndex, IndexPlan, IndexSpec, ServiceSchema, plan_indexes
from .errors import StoreUnavailable, unavailable_on_error

log = logging.getLogger("webhook_service.schema")
_NAME_CLASHES = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict: someone created one meanwhile


class IndexUnavailable(StoreUnavailable):
    """An index the service's correctness rests on does not exist and could not be made."""


@dataclass
class IndexReport:
    """What ``ensure_indexes`` found and did."""

    plan: IndexPlan
    created: list[IndexSpec] = field(default_factory=list)
    failed: list[tuple[IndexSpec, str]] = field(default_factory=list)


def read_indexes(db: Database[Any], collections: Iterable[str]) -> list[ExistingIndex]:
    return [ExistingIndex.from_info(name, info) for name in collections for info in db[name].list_indexes()]


def plan_for(db: Database[Any], schema: ServiceSchema) -> IndexPlan:
    """The plan for the indexes ``schema`` wants, against those the database has."""
    return plan_indexes(read_indexes(db, schema.collections), schema)


def without_app_indexes(schema: ServiceSchema) -> ServiceSchema:
    """The indexes the service makes by itself: on its own collections and the ones it
    mirrors into, never on the app's other collections (the cascade rules' indexes, built
    when an operator runs ``init-db``, never inside a request)."""
    return replace(schema, wanted=tuple(s for s in schema.wanted if s.collection in schema.own))


def ensure_indexes(db: Database[Any], schema: ServiceSchema, *, create: bool = True) -> IndexReport:
    """Create every missing index; raise IndexUnavailable if a required one cannot be had."""
    report = IndexReport(plan_for(db, schema))
    if not create:
        return report
    for attempt in range(2):
        report.failed.clear()
        raced = False
        for spec in report.plan.create:
            try:
                db[spec.collection].create_index(list(spec.keys), **spec.options())
                report.created.append(spec)
            except OperationFailure as exc:
                if exc.code in _NAME_CLASHES and attempt == 0:
                    raced = True
                    break
                report.failed.append((spec, failure_reason(exc)))
        if not raced:
            break
        report.plan = plan_for(db, schema)  # another process created an index meanwhile: plan again
    for spec, reason in report.failed:
        message = f"could not create index {spec.collection}.{spec.name} ({spec.describe()}): {reason}"
        if spec.required:
            raise IndexUnavailable(message)
        log.warning(message)
    return report


def migrate(db: Database[Any], schema: ServiceSchema, say: Callable[[str], None]) -> IndexReport:
    """Replace each conflicting index with what the service needs, then create what is
    missing. Safe to rerun (the plan is read afresh) and while the service runs: between
    the drop and the create, writes go through; only lookups lack the index."""
    for conflict in plan_for(db, schema).conflicts:
        _replace(db, conflict, say)
    return ensure_indexes(db, schema)


def _replace(db: Database[Any], conflict: Conflict, say: Callable[[str], None]) -> None:
    old, new = conflict.index, conflict.replacement
    collection = db[old.collection]
    collection.drop_index(old.name)
    say(f"dropped {old.collection}.{old.name} ({old.describe()})")
    try:
        collection.create_index(list(new.keys), **new.options())
    except OperationFailure as exc:
        if exc.code != 85:
            raise
        say(f"kept the existing index that already serves {new.describe()} on {old.collection}")
        return
    say(f"created {new.collection}.{new.name} ({new.describe()})")


def failure_reason(exc: PyMongoError) -> str:
    """What went wrong, without quoting any data."""
    code = getattr(exc, "code", None)
    if code == 11000:
        return "the collection already holds documents with equal values for it (E11000)"
    details = getattr(exc, "details", None) or {}
    name = details.get("codeName") or type(exc).__name__
    message = str(details.get("errmsg") or exc).split(" dup key:")[0]
    return f"{name}: {message}"[:300]


def warn_about_conflicts(db: Database[Any], schema: ServiceSchema) -> IndexPlan | None:
    """At start: one warning line per conflicting index and per missing cascade index,
    then the service goes on."""
    try:
        plan = plan_for(db, schema)
    except PyMongoError as exc:
        log.warning("could not check the indexes at start (%s); workers check again", type(exc).__name__)
        return None
    for conflict in plan.conflicts:
        log.warning(conflict.warning())
    for spec in plan.create:
        if spec.collection not in schema.own:
            log.warning(
                "index %s.%s (%s) is missing: %s scans the collection on every deletion. "
                "Fix: %s (creates it; non-unique, safe beside the app's own)",
                spec.collection,
                spec.name,
                spec.describe(),
                spec.purpose,
                INIT_COMMAND,
            )
    return plan


class IndexGate:
    """The indexes the service makes by itself, made once per process before the first
    write relies on them, and shared by every store and the event log.

    Done lazily rather than at start, so a worker boots (and answers 503) while the
    database is down instead of crash-looping. A request that waited while another's
    attempt failed fails too, without an attempt of its own: with the database down,
    requests must not queue up behind each other's timeouts.
    """

    def __init__(self, db: Database[Any], schema: ServiceSchema) -> None:
        self.db = db
        self.schema = without_app_indexes(schema)
        self._ready = False
        self._lock = threading.Lock()
        self._failures = 0

    def ensure(self) -> None:
        if self._ready:
            return
        failures_before = self._failures
        with self._lock, unavailable_on_error():
            if self._ready:
                return
            if self._failures != failures_before:
                raise StoreUnavailable("database error: index creation failed just now")
            try:
                ensure_indexes(self.db, self.schema)
            except (PyMongoError, StoreUnavailable):
                self._failures += 1
                raise
            self._ready = True
