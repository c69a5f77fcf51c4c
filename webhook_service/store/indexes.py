"""Reading the indexes a database has, and carrying out ``schema.plan_indexes``.

Nothing that exists is changed here except by ``migrate``, which an operator runs on
purpose (``init-db --migrate``). Error messages name the index and what went wrong,
never a key value: a duplicate-key message quotes data, such as an email address.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database
from pymongo.errors import OperationFailure, PyMongoError

from ..domain import CascadeRule
from ..fieldmap import FieldMap, builtin_field_map
from ..schema import (
    EVENTS,
    INIT_COMMAND,
    TOMBSTONES,
    USERS,
    Conflict,
    ExistingIndex,
    IndexPlan,
    IndexSpec,
    cascade_indexes,
    plan_indexes,
    service_indexes,
)
from .errors import StoreUnavailable

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


def read_indexes(db: Database[Any], collections: Iterable[str] = ()) -> list[ExistingIndex]:
    names = dict.fromkeys((USERS, TOMBSTONES, EVENTS, *collections))
    return [ExistingIndex.from_info(name, info) for name in names for info in db[name].list_indexes()]


def plan_for(
    db: Database[Any], cascade: tuple[CascadeRule, ...] = (), fields: FieldMap | None = None
) -> IndexPlan:
    """The plan for the indexes the field map (the built-in one by default) needs, and with
    ``cascade`` for the ones its ``DELETE_CASCADE`` rules need on the app's collections too."""
    fields = fields or builtin_field_map()
    service = service_indexes(fields)
    existing = read_indexes(db, (rule.collection for rule in cascade))
    return plan_indexes(existing, fields, service + cascade_indexes(cascade, service))


def ensure_indexes(
    db: Database[Any],
    *,
    create: bool = True,
    cascade: tuple[CascadeRule, ...] = (),
    fields: FieldMap | None = None,
) -> IndexReport:
    """Create every missing index; raise IndexUnavailable if a required one cannot be had.

    The service itself calls this without ``cascade``: an index on an app's large
    collection is built when an operator runs ``init-db``, never inside a request."""
    report = IndexReport(plan_for(db, cascade, fields))
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
        report.plan = plan_for(db, cascade, fields)  # another process created an index meanwhile: plan again
    for spec, reason in report.failed:
        message = f"could not create index {spec.collection}.{spec.name} ({spec.describe()}): {reason}"
        if spec.required:
            raise IndexUnavailable(message)
        log.warning(message)
    return report


def migrate(
    db: Database[Any],
    say: Callable[[str], None],
    cascade: tuple[CascadeRule, ...] = (),
    fields: FieldMap | None = None,
) -> IndexReport:
    """Replace each conflicting index with what the service needs, then create what is
    missing. Safe to rerun (the plan is read afresh) and while the service runs: between
    the drop and the create, writes go through; only lookups lack the index."""
    for conflict in plan_for(db, cascade, fields).conflicts:
        _replace(db, conflict, say)
    return ensure_indexes(db, cascade=cascade, fields=fields)


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


def warn_about_conflicts(
    db: Database[Any], cascade: tuple[CascadeRule, ...] = (), fields: FieldMap | None = None
) -> IndexPlan | None:
    """At start: one warning line per conflicting index and per missing cascade index,
    then the service goes on."""
    try:
        plan = plan_for(db, cascade, fields)
    except PyMongoError as exc:
        log.warning("could not check the indexes at start (%s); workers check again", type(exc).__name__)
        return None
    for conflict in plan.conflicts:
        log.warning(conflict.warning())
    for spec in plan.create:
        if spec.collection not in (USERS, TOMBSTONES, EVENTS):
            log.warning(
                "index %s.%s (%s) is missing: every user deletion scans %s for DELETE_CASCADE. "
                "Fix: %s (creates it; non-unique, safe beside the app's own)",
                spec.collection,
                spec.name,
                spec.describe(),
                spec.collection,
                INIT_COMMAND,
            )
    return plan
