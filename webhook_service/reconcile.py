"""Bring the local ``users`` collection into agreement with Clerk.

Pages through Clerk's user list (500 at a time), writes each page's creates and
updates in one bulk write under the webhook ordering rule, then removes local users
Clerk no longer has, exactly as ``user.deleted`` would, a batch at a time. Memory stays
bounded: one page is held at a time, and users seen are stamped in the database rather
than kept in a set (except in a dry run, which writes nothing and so keeps the ids in
memory).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .clerk_api import EXISTING_IDS_CHUNK, ClerkAPI
from .domain import Outcome, Plan, map_clerk_user, plan_user, unmappable_reason
from .store import UserStore

# Users confirmed gone with one Clerk lookup, then deleted together in a few commands.
DELETION_BATCH = EXISTING_IDS_CHUNK


class ReconcileRefused(Exception):
    """Clerk listed no users while local users exist; deleting them all needs --force."""


@dataclass
class ReconcileReport:
    seen: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    pages: int = 0
    dry_run: bool = False
    would_delete: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id or "?", why)
    clerk_requests: int = 0
    elapsed_s: float = 0.0

    def summary(self) -> str:
        verb = "would be " if self.dry_run else ""
        skipped = f", skipped {len(self.skipped)}" if self.skipped else ""
        return (
            f"{self.seen} Clerk users in {self.pages} pages: {verb}created {self.created}, "
            f"{verb}updated {self.updated}, unchanged {self.unchanged}, {verb}deleted {self.deleted}{skipped}"
            f"; {self.request_rate()}"
        )

    def request_rate(self) -> str:
        """How hard the run leaned on Clerk's rate limit, which the live app shares (a rate
        over less than a second would say little, so it is left out)."""
        plural = "" if self.clerk_requests == 1 else "s"
        text = f"{self.clerk_requests} Clerk request{plural} in {self.elapsed_s:.1f} s"
        if self.elapsed_s >= 1:
            text += f" ({self.clerk_requests / self.elapsed_s:.1f}/s)"
        return text


def reconcile(
    store: UserStore,
    clerk: ClerkAPI,
    *,
    dry_run: bool = False,
    force: bool = False,
    refresh: bool = False,
    on_page: Callable[[ReconcileReport], None] | None = None,
) -> ReconcileReport:
    """Run one reconcile pass. Safe to rerun, and safe while webhooks arrive. ``refresh``
    rewrites every stored user with the current field map, not only those Clerk changed."""
    report = ReconcileReport(dry_run=dry_run)
    run_id = uuid.uuid4().hex
    started_ms = int(time.time() * 1000)
    started = time.monotonic()
    requests_before = clerk.requests_sent

    def count_requests() -> None:
        report.clerk_requests = clerk.requests_sent - requests_before
        report.elapsed_s = time.monotonic() - started

    seen: set[str] | None = set() if dry_run else None
    for page in clerk.iter_user_pages():
        _apply_page(store, page, report, run_id, seen, refresh)
        report.pages += 1
        count_requests()
        if on_page is not None:
            on_page(report)
    _delete_missing(store, clerk, report, run_id, started_ms, seen, force)
    count_requests()
    return report


def _apply_page(
    store: UserStore,
    page: list[Any],
    report: ReconcileReport,
    run_id: str,
    seen: set[str] | None,
    refresh: bool,
) -> None:
    users = []
    for raw in page:
        reason = unmappable_reason(raw)
        if reason is None:
            users.append(map_clerk_user(raw, store.fields))
        else:  # one odd user never aborts a page
            user_id = raw.get("id") if isinstance(raw, dict) else None
            report.skipped.append((user_id if isinstance(user_id, str) and user_id else "?", reason))
    ids = [u.clerk_id for u in users]
    local = store.versions(ids)
    deleted = store.deleted_among(ids)
    todo = []
    for user in users:
        plan = plan_user(user.clerk_updated_at, local.get(user.clerk_id), user.clerk_id in deleted, refresh)
        if plan is Plan.KEEP:
            report.unchanged += 1
        else:
            todo.append((plan, user))
    report.seen += len(users)
    if seen is not None:
        seen.update(ids)
        for plan, _ in todo:
            report.created += plan is Plan.CREATE
            report.updated += plan is Plan.UPDATE
        return
    # Users not stored locally are inserted (one command); the rest are guarded upserts.
    creating = [i for i, (plan, _) in enumerate(todo) if plan is Plan.CREATE]
    updating = [i for i, (plan, _) in enumerate(todo) if plan is not Plan.CREATE]
    outcomes = [Outcome.APPLIED] * len(todo)
    stamped: set[str] = set()  # inserted with this run's stamp already
    inserted = store.insert_new([todo[i][1] for i in creating], {"reconcileRun": run_id})
    for i, (outcome, fresh) in zip(creating, inserted, strict=True):
        outcomes[i] = outcome
        if fresh:
            stamped.add(todo[i][1].clerk_id)
    for i, outcome in zip(updating, store.upsert_many_if_newer([todo[i][1] for i in updating]), strict=True):
        outcomes[i] = outcome
    for (plan, _), outcome in zip(todo, outcomes, strict=True):
        if outcome is not Outcome.APPLIED:
            report.unchanged += 1
        elif plan is Plan.CREATE:
            report.created += 1
        else:
            report.updated += 1
    store.mark_seen([i for i in ids if i not in stamped], run_id)


def _delete_missing(
    store: UserStore,
    clerk: ClerkAPI,
    report: ReconcileReport,
    run_id: str,
    started_ms: int,
    seen: set[str] | None,
    force: bool,
) -> None:
    """Delete local users Clerk did not list, after Clerk confirms each one is gone.

    Offset paging can skip a user when another is deleted mid-run, so absence from
    the listing alone is not proof; a batched lookup by id is.
    """
    batch: list[str] = []

    def flush() -> None:
        still_there = clerk.existing_ids(batch)
        gone = [clerk_id for clerk_id in batch if clerk_id not in still_there]
        if report.dry_run:
            report.would_delete.extend(gone)
        else:
            store.delete_many(gone)
        report.deleted += len(gone)  # counted once done, so a stopped run's "so far" is true
        batch.clear()

    for clerk_id in store.iter_unseen(None if seen is not None else run_id, started_ms, seen):
        if report.seen == 0 and not force:
            raise ReconcileRefused(
                "Clerk returned zero users while local users exist; refusing to delete them "
                "(check CLERK_SECRET_KEY points at the right instance, or pass --force)"
            )
        batch.append(clerk_id)
        if len(batch) >= DELETION_BATCH:
            flush()
    if batch:
        flush()
