"""One watcher pass over one resource: what Clerk changed since the last pass, repaired
through the versioned mirror; and missed deletions, found by comparing counts.

**Changes.** Clerk lists users newest change first (``order_by=-updated_at``); the pass
reads back to where the last one stopped, with an overlap, and writes every user whose
local copy is missing or older through the same guarded bulk upsert reconcile uses: a
newer local version is kept, a deletion is never undone, app-owned and insert-only fields
are left alone. Changes younger than the grace period are left for the next pass, so a
webhook merely on its way is not counted as missed. Organizations and memberships cannot
be listed by change, only by creation (``-created_at``): for them a pass sees creations,
not later changes (reconcile covers those).

**Deletions.** Clerk has no list of deleted users. After the listing, Clerk's count
against the local count (documents that hold a Clerk id) tells whether deletions were
missed. More local records than Clerk has on two passes in a row starts a walk over the
local keys, confirming each absence with Clerk by id, and deleting through the resource's
deletion path (cascade included): reconcile's deletion phase. A mismatch a walk does not
explain (nothing, or not enough, was gone) waits out a backoff before the next walk, unless
it grows; it stays in the drift gauge.

A quiet pass costs two Clerk requests for users (one short page, one count) and one per
organization resource (the page carries ``total_count``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from pymongo.database import Database

from ..clerk_api import Page
from ..events import Outcome
from ..mirror.batched import BatchedMirror
from ..mirror.reconcile import ResourceReport, Source, delete_confirmed_gone, plan_page
from ..mirror.records import Plan
from ..schema import WATCH
from ..store.errors import unavailable_on_error

log = logging.getLogger("webhook_service.watch")

FIRST_LOOKBACK_MS = 3_600_000  # a first pass looks back an hour; reconcile covers the rest
OVERLAP_MS = 10_000  # each pass lists this far behind the last one's end (clock skew)
FIRST_PAGE = 10  # a quiet pass reads this many objects; a busy one goes on 100 at a time
PAGE = 100
MAX_OFFSET = 10_000  # deeper than this, a listing is reconcile's job
WALK_BACKOFF = timedelta(hours=1)
MAX_WALK_BACKOFF = timedelta(hours=24)


class Watched(Source, Protocol):
    """How one resource is read from Clerk for the watcher: reconcile's source, and a list
    newest first."""

    newest_by: str  # the field the newest-first list is ordered by

    def newest(self, offset: int, limit: int) -> Page:
        """One page of the newest-first list, from ``offset``."""

    def total(self, newest: Page) -> int:
        """How many Clerk has (``newest`` is the first page, which may say)."""


@dataclass
class ResourceState:
    """What one pass leaves for the next, kept in the database: the lease's next holder
    carries on where this one stopped."""

    since: int | None = None  # the Clerk time back to which the last pass listed
    streak: int = 0  # passes in a row that counted more local records than Clerk has
    residual: int = 0  # what the last walk left unexplained
    walks: int = 0  # unexplained walks in a row (the backoff doubles)
    walk_after: datetime | None = None
    drift: int | None = None  # the last pass's (its log line says when it changes)


@dataclass(frozen=True)
class Repair:
    resource: str
    kind: str  # "created", "updated" or "deleted"
    key: str
    clerk_version: int | None = None
    local_version: int | None = None

    def line(self) -> str:
        """The one log line: which record, and what delivery was missed."""
        what = f"watch repaired {self.resource} {self.key}: missed"
        if self.kind == "deleted":
            return f"{what} its deletion (Clerk no longer has it)"
        if self.kind == "created":
            return f"{what} its creation (Clerk version {self.clerk_version})"
        return f"{what} an update (local version {self.local_version}, Clerk's {self.clerk_version})"


@dataclass
class ResourceWatch:
    noun: str  # "users", ... as the summary says them
    kind: str  # "user", ... as the metrics and the log lines name one
    listed: int = 0
    deferred: int = 0
    repairs: list[Repair] = field(default_factory=list)
    clerk_total: int = 0
    local_total: int = 0
    walked: bool = False
    drift_changed: bool = False

    @property
    def drift(self) -> int:
        return self.local_total - self.clerk_total

    def summary(self) -> str:
        kinds = {
            kind: sum(r.kind == kind for r in self.repairs) for kind in ("created", "updated", "deleted")
        }
        repaired = ", ".join(f"{kind} {n}" for kind, n in kinds.items())
        walk = ", walked the local ones" if self.walked else ""
        behind = "; run reconcile for the ones the app lacks" if self.drift < 0 else ""
        return (
            f"{self.noun}: {self.listed} listed as changed ({self.deferred} left for the grace period), "
            f"repaired: {repaired}; Clerk has {self.clerk_total}, locally {self.local_total} "
            f"(drift {self.drift:+d}){walk}{behind}"
        )


class WatchState:
    """Each resource's ``ResourceState``, in the ``watch`` collection (one document each)."""

    def __init__(self, db: Database[Any]) -> None:
        self.collection = db[WATCH]

    def load(self, noun: str) -> ResourceState:
        with unavailable_on_error():
            doc = self.collection.find_one({"_id": f"state:{noun}"}) or {}
        return ResourceState(
            since=doc.get("since"),
            streak=doc.get("streak", 0),
            residual=doc.get("residual", 0),
            walks=doc.get("walks", 0),
            walk_after=doc.get("walkAfter"),
            drift=doc.get("drift"),
        )

    def save(self, noun: str, state: ResourceState) -> None:
        values = {
            "since": state.since,
            "streak": state.streak,
            "residual": state.residual,
            "walks": state.walks,
            "walkAfter": state.walk_after,
            "drift": state.drift,
        }
        with unavailable_on_error():
            self.collection.update_one({"_id": f"state:{noun}"}, {"$set": values}, upsert=True)


def watch_resource(
    store: BatchedMirror,
    source: Watched,
    state: ResourceState,
    *,
    now: datetime,
    grace_ms: int,
    renew: Callable[[], None] = lambda: None,
) -> ResourceWatch:
    """One pass over one resource; updates ``state`` for the next. Raises ClerkUnavailable
    or StoreUnavailable (the caller keeps the old state: the next pass repeats this one)."""
    store.indexes.ensure()  # the count and the walk name the key's index
    report = ResourceWatch(source.noun, store.spec.kind)
    now_ms = int(now.timestamp() * 1000)
    cutoff = now_ms - grace_ms
    floor = (state.since if state.since is not None else now_ms - FIRST_LOOKBACK_MS) - OVERLAP_MS
    first, changed = _listing(source, floor, renew)
    ready = [obj for stamp, obj in changed if stamp <= cutoff]
    report.listed, report.deferred = len(changed), len(changed) - len(ready)
    report.repairs.extend(_repair_changes(store, source, ready, report.kind))
    report.clerk_total = source.total(first)
    report.local_total = store.count_stored()
    _check_deletions(store, source, state, report, now, renew)
    report.drift_changed = state.drift != report.drift
    state.since, state.drift = cutoff, report.drift
    return report


def _listing(source: Watched, floor: int, renew: Callable[[], None]) -> tuple[Page, list[tuple[int, Any]]]:
    """The newest-first list down to ``floor``: its first page, and each object with its stamp."""
    changed: list[tuple[int, Any]] = []
    offset, limit = 0, FIRST_PAGE
    first: Page | None = None
    while True:
        page = source.newest(offset, limit)
        first = first or page
        for obj in page.items:
            stamp = obj.get(source.newest_by) if isinstance(obj, dict) else None
            if not isinstance(stamp, int) or isinstance(stamp, bool):
                continue
            if stamp < floor:
                return first, changed
            changed.append((stamp, obj))
        if len(page.items) < limit:
            return first, changed
        offset, limit = offset + len(page.items), PAGE
        if offset >= MAX_OFFSET:
            log.warning(
                "watch: more than %d %s changed since the last pass; the older ones are left to "
                "`flask --app wsgi reconcile`",
                MAX_OFFSET,
                source.noun,
            )
            return first, changed
        renew()


_REPAIRED = {Plan.CREATE: "created", Plan.UPDATE: "updated"}  # the repair's kind, as metrics label it


def _repair_changes(store: BatchedMirror, source: Watched, objects: list[Any], kind: str) -> list[Repair]:
    """Write every listed record whose local copy is missing or older, through the guarded
    bulk upsert, as reconcile decides a page: a record deleted locally is never brought back."""
    planned = plan_page(store, source, objects)
    for obj_id, why in planned.skipped:
        log.warning("watch: %s %s from Clerk cannot be stored: %s", kind, obj_id, why)
    behind = [record for _, record in planned.todo]
    outcomes = store.upsert_many_if_newer(behind)
    return [
        Repair(kind, _REPAIRED[plan], r.key, r.version, planned.local.get(r.key))
        for (plan, r), outcome in zip(planned.todo, outcomes, strict=True)
        if outcome is Outcome.APPLIED
    ]


def _check_deletions(
    store: BatchedMirror,
    source: Watched,
    state: ResourceState,
    report: ResourceWatch,
    now: datetime,
    renew: Callable[[], None],
) -> None:
    """Walk the local records when the counts say deletions were missed (see the module doc)."""
    if report.drift <= 0:
        state.streak, state.residual, state.walks, state.walk_after = 0, 0, 0, None
        return
    state.streak += 1
    due = state.walk_after is None or now >= state.walk_after or report.drift > state.residual
    if state.streak < 2 or not due:
        return
    report.walked = True
    walk = ResourceReport(source.noun)
    started_ms = int(now.timestamp() * 1000)
    keys = _renewing(store.iter_unseen(None, started_ms, None), renew, source.confirm_batch)
    for key in delete_confirmed_gone(store, source, keys, walk):
        report.repairs.append(Repair(report.kind, "deleted", key))
    report.local_total = store.count_stored()
    if report.drift > 0:  # unexplained: not every extra local record was gone from Clerk
        state.walks += 1
        state.residual = report.drift
        state.walk_after = now + min(WALK_BACKOFF * 2 ** (state.walks - 1), MAX_WALK_BACKOFF)
    else:
        state.streak, state.residual, state.walks, state.walk_after = 0, 0, 0, None


def _renewing(keys: Iterable[str], renew: Callable[[], None], every: int) -> Iterator[str]:
    for i, key in enumerate(keys, 1):
        yield key
        if i % every == 0:
            renew()
