"""``reconcile``: the declared resources brought into agreement with Clerk."""

from __future__ import annotations

import sys
from typing import Any

import click
from flask.cli import with_appcontext

from ..catalog import reconcile_targets
from ..clerk_api import ClerkUnavailable
from ..mirror.reconcile import ReconcileRefused, ReconcileReport, reconcile
from ..services import batch_client, current_services
from ..store.errors import StoreUnavailable
from .common import fail

# A development instance allows 100 requests per 10 s for the whole app; 2/s leaves it 80 %.
DEFAULT_MAX_RPS = 2.0


@click.command("reconcile")
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@click.option("--force", is_flag=True, help="Delete local users even if Clerk returned none.")
@click.option(
    "--retry-budget",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to keep retrying a failing Clerk request before stopping.",
)
@click.option(
    "--max-rps",
    type=click.FloatRange(min=0),
    default=DEFAULT_MAX_RPS,
    show_default=True,
    help="Most Clerk requests per second (0: unpaced). Clerk's limit is shared with the live app.",
)
@click.option(
    "--refresh",
    is_flag=True,
    help="Rewrite every stored user with the current field map, not only those Clerk changed.",
)
@with_appcontext
def reconcile_command(dry_run: bool, force: bool, retry_budget: float, max_rps: float, refresh: bool) -> None:
    """Bring the local users collection into agreement with Clerk.

    Paced to --max-rps, and waits as long as a 429's Retry-After asks (up to 30 s) before
    trying again, so a run never starves the app of Clerk's rate limit. After a change to
    the field map, --refresh brings every stored user to it: it still keeps a newer local
    version, never undoes a deletion, and leaves app-owned and insert-only fields alone.
    """
    services = current_services()
    if not services.config.clerk_secret_key:
        fail("CLERK_SECRET_KEY is not set; reconcile needs Clerk's Backend API")
    clerk = batch_client(
        services.config,
        services.metrics,
        "reconcile",
        retry_budget_ms=int(retry_budget * 1000),
        max_rps=max_rps,
    )
    progress = _Progress()
    report = ReconcileReport(dry_run=dry_run)
    try:
        report = reconcile(
            reconcile_targets(services.stores, clerk),
            lambda: clerk.requests_sent,
            dry_run=dry_run,
            force=force,
            refresh=refresh,
            on_page=progress.update,
        )
    except ReconcileRefused as exc:
        progress.close()
        fail(str(exc))
    except (ClerkUnavailable, StoreUnavailable) as exc:
        progress.close()
        done = progress.last.summary() if progress.last else "nothing done"
        fail(f"reconcile stopped: {exc}. So far: {done}. Rerunning is safe.")
    progress.close()
    for resource in report.resources:
        for key, reason in resource.skipped:
            click.echo(f"skipped {key}: {reason}")
        for key in resource.would_delete:
            click.echo(f"would delete {key}")
    click.echo(("dry run: " if dry_run else "reconciled: ") + report.summary())


class _Progress:
    """A tqdm bar on a terminal; one plain line per page otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.noun = "users"
        self.bar = self._bar()
        self.last: ReconcileReport | None = None

    def _bar(self) -> Any:
        from tqdm import tqdm

        unit = self.noun.removesuffix("s")
        return tqdm(unit=unit, desc=f"reconcile {self.noun}", disable=not self.tty, file=sys.stderr)

    def update(self, report: ReconcileReport) -> None:
        resource = report.current
        if resource.noun != self.noun:  # the next resource: a bar of its own
            self.bar.close()
            self.noun = resource.noun
            self.bar = self._bar()
        self.bar.update(resource.seen - self.bar.n)
        self.last = report
        counts = dict(created=resource.created, updated=resource.updated, unchanged=resource.unchanged)
        if self.tty:
            self.bar.set_postfix(counts)
        else:
            detail = ", ".join(f"{k} {v}" for k, v in counts.items())
            prefix = "" if resource.noun == "users" else f"{resource.noun} "
            click.echo(
                f"{prefix}page {resource.pages}: {resource.seen} {resource.noun} seen, {detail}", err=True
            )

    def close(self) -> None:
        self.bar.close()
