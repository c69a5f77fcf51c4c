"""Bring mirrored collections into agreement with Clerk, one resource after another.

For each resource it pages through Clerk's list (500 at a time), writes each page's
creates and updates in one bulk write under the webhook ordering rule, then removes local
records Clerk no longer has, exactly as a deletion event would, a batch at a time, after
Clerk confirms each absence by id: absence from a listing alone is no proof (an object
created or deleted while the list is walked can shift what a page holds). Memory stays
bounded: one page is held at a time, and records seen are stamped in the database rather
than kept in a set (except in a dry run, which writes nothing and so keeps the keys in
memory).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, Protocol

from ..bookkeeping import RECONCILE_RUN
from ..events import Outcome
from .batched import BatchedMirror
from .records import Plan, Record, plan_version


class ReconcileRefused(Exception):
    """Clerk listed none of a resource while local records exist; deleting them all needs --force."""


class Source(Protocol):
    """How one resource is read from Clerk for reconcile."""

    noun: str  # "users", "organizations", ...
    confirm_batch: int  # keys one ``existing`` call confirms at most

    def pages(self) -> Iterator[list[Any]]:
        """Every object Clerk has, a page at a time."""

    def record(self, obj: Any) -> Record | str:
        """The object as the app's document holds it, or why it cannot be stored."""

    def existing(self, keys: list[str]) -> set[str]:
        """Which of these keys Clerk still has, asked by id."""


@dataclass(frozen=True)
class Target:
    store: BatchedMirror
    source: Source


@dataclass
class PagePlan:
    """What to write of one page Clerk listed, by ``plan_version``."""

    keys: list[str]  # every storable record's
    local: dict[str, int]  # the stored versions of those
    todo: list[tuple[Plan, Record]]  # the records to create or update
    unchanged: int
    skipped: list[tuple[str, str]]  # (id or "?", why it cannot be stored)


def plan_page(store: BatchedMirror, source: Source, page: list[Any], refresh: bool = False) -> PagePlan:
    """Map a page and decide each record against the stored versions and deletions, in two
    reads: reconcile's page, and the watcher's. One odd object never aborts a page."""
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    for obj in page:
        mapped = source.record(obj)
        if isinstance(mapped, Record):
            records.append(mapped)
        else:
            obj_id = obj.get("id") if isinstance(obj, dict) else None
            skipped.append((obj_id if isinstance(obj_id, str) and obj_id else "?", mapped))
    keys = [r.key for r in records]
    local = store.versions(keys) if records else {}
    held = store.held_back(records) if records else {}
    todo: list[tuple[Plan, Record]] = [
        (plan, record)
        for record in records
        if (plan := plan_version(record.version, local.get(record.key), record.key in held, refresh))
        is not Plan.KEEP
    ]
    return PagePlan(keys, local, todo, len(records) - len(todo), skipped)


@dataclass
class ResourceReport:
    noun: str
    seen: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    pages: int = 0
    would_delete: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id or "?", why)

    def summary(self, dry_run: bool) -> str:
        verb = "would be " if dry_run else ""
        skipped = f", skipped {len(self.skipped)}" if self.skipped else ""
        return (
            f"{self.seen} Clerk {self.noun} in {self.pages} pages: {verb}created {self.created}, "
            f"{verb}updated {self.updated}, unchanged {self.unchanged}, {verb}deleted {self.deleted}{skipped}"
        )


@dataclass
class ReconcileReport:
    dry_run: bool = False
    resources: list[ResourceReport] = field(default_factory=list)
    clerk_requests: int = 0
    elapsed_s: float = 0.0

    @property
    def current(self) -> ResourceReport:
        """The resource being reconciled (the last one started)."""
        return self.resources[-1]

    def summary(self) -> str:
        parts = [r.summary(self.dry_run) for r in self.resources]
        return "; ".join([*parts, self.request_rate()])

    def request_rate(self) -> str:
        """How hard the run leaned on Clerk's rate limit, which the live app shares (a rate
        over less than a second would say little, so it is left out)."""
        plural = "" if self.clerk_requests == 1 else "s"
        text = f"{self.clerk_requests} Clerk request{plural} in {self.elapsed_s:.1f} s"
        if self.elapsed_s >= 1:
            text += f" ({self.clerk_requests / self.elapsed_s:.1f}/s)"
        return text


def reconcile(
    targets: list[Target],
    requests_sent: Callable[[], int],
    *,
    dry_run: bool = False,
    force: bool = False,
    refresh: bool = False,
    on_page: Callable[[ReconcileReport], None] | None = None,
) -> ReconcileReport:
    """Run one reconcile pass over ``targets``, in order. Safe to rerun, and safe while
    webhooks arrive. ``refresh`` rewrites every stored record with the current field map,
    not only those Clerk changed. ``requests_sent`` counts the Clerk client's requests."""
    report = ReconcileReport(dry_run=dry_run)
    started = time.monotonic()
    requests_before = requests_sent()

    def count_requests() -> None:
        report.clerk_requests = requests_sent() - requests_before
        report.elapsed_s = time.monotonic() - started

    for target in targets:
        resource = ResourceReport(target.source.noun)
        report.resources.append(resource)
        run = ResourcePass(target, resource, dry_run, refresh)
        for page in target.source.pages():
            run.apply_page(page)
            resource.pages += 1
            count_requests()
            if on_page is not None:
                on_page(report)
        run.delete_missing(force)
        count_requests()
    return report


class ResourcePass:
    """One resource's pass: its pages, then its deletions."""

    def __init__(self, target: Target, report: ResourceReport, dry_run: bool, refresh: bool) -> None:
        self.store = target.store
        self.source = target.source
        self.report = report
        self.dry_run = dry_run
        self.refresh = refresh
        self.run_id = uuid.uuid4().hex
        self.started_ms = int(time.time() * 1000)
        self.seen: set[str] | None = set() if dry_run else None

    def apply_page(self, page: list[Any]) -> None:
        store, report = self.store, self.report
        planned = plan_page(store, self.source, page, self.refresh)
        report.skipped.extend(planned.skipped)
        report.unchanged += planned.unchanged
        keys, todo = planned.keys, planned.todo
        report.seen += len(keys)
        if self.seen is not None:
            self.seen.update(keys)
            for plan, _ in todo:
                report.created += plan is Plan.CREATE
                report.updated += plan is Plan.UPDATE
            return
        # Records not stored locally are inserted (one command); the rest are guarded upserts.
        creating = [i for i, (plan, _) in enumerate(todo) if plan is Plan.CREATE]
        updating = [i for i, (plan, _) in enumerate(todo) if plan is not Plan.CREATE]
        outcomes = [Outcome.APPLIED] * len(todo)
        stamped: set[str] = set()  # inserted with this run's stamp already
        inserted = store.insert_new([todo[i][1] for i in creating], {RECONCILE_RUN: self.run_id})
        for i, (outcome, fresh) in zip(creating, inserted, strict=True):
            outcomes[i] = outcome
            if fresh:
                stamped.add(todo[i][1].key)
        for i, outcome in zip(
            updating, store.upsert_many_if_newer([todo[i][1] for i in updating]), strict=True
        ):
            outcomes[i] = outcome
        for (plan, _), outcome in zip(todo, outcomes, strict=True):
            if outcome is not Outcome.APPLIED:
                report.unchanged += 1
            elif plan is Plan.CREATE:
                report.created += 1
            else:
                report.updated += 1
        store.mark_seen([k for k in keys if k not in stamped], self.run_id)

    def delete_missing(self, force: bool) -> None:
        """Delete local records Clerk did not list, after Clerk confirms each one is gone."""
        report = self.report
        run_id = None if self.seen is not None else self.run_id
        unseen = self.store.iter_unseen(run_id, self.started_ms, self.seen)
        first = next(unseen, None)
        if first is None:
            return
        if report.seen == 0 and not force:
            raise ReconcileRefused(
                f"Clerk returned zero {report.noun} while local {report.noun} exist; refusing to delete "
                "them (check CLERK_SECRET_KEY points at the right instance, or pass --force)"
            )
        delete_confirmed_gone(self.store, self.source, chain([first], unseen), report, dry_run=self.dry_run)


def delete_confirmed_gone(
    store: BatchedMirror,
    source: Source,
    keys: Iterable[str],
    report: ResourceReport,
    *,
    dry_run: bool = False,
) -> list[str]:
    """The deletion phase, for reconcile and the watcher: of ``keys`` (local records),
    delete those Clerk confirms gone when asked by id, a batch confirmed by one lookup
    deleted together in a few commands. Returns the keys deleted (or, dry, that would be)."""
    batch: list[str] = []
    deleted: list[str] = []

    def flush() -> None:
        still_there = source.existing(batch)
        gone = [key for key in batch if key not in still_there]
        if dry_run:
            report.would_delete.extend(gone)
        else:
            store.delete_many(gone)
        report.deleted += len(gone)  # counted once done, so a stopped run's "so far" is true
        deleted.extend(gone)
        batch.clear()

    for key in keys:
        batch.append(key)
        if len(batch) >= source.confirm_batch:
            flush()
    if batch:
        flush()
    return deleted
