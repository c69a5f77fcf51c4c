"""Operator commands, registered on the app: ``flask --app wsgi <command>``.

Each command is thin: read options, call one function, print rows and a one-line
summary, and exit non-zero with one clear line on failure.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

import click
from flask import Flask
from flask.cli import with_appcontext
from pymongo.errors import PyMongoError

from .catalog import reconcile_targets, service_schema
from .clerk_api import ClerkAPI, ClerkUnavailable
from .events import Outcome
from .mirror.reconcile import ReconcileRefused, ReconcileReport, reconcile
from .schema import MIGRATE_COMMAND
from .services import current_services
from .store.errors import StoreUnavailable
from .store.indexes import ensure_indexes, failure_reason
from .store.indexes import migrate as store_migrate

FC = TypeVar("FC", bound=Callable[..., object])


def register_commands(app: Flask) -> None:
    for command in (init_db, reconcile_command, events_command, replay_command):
        app.cli.add_command(command)


def fail(message: str) -> NoReturn:
    """Exit 1 with one line, ``Error: <message>``."""
    raise click.ClickException(message)


@click.command("init-db")
@click.option("--check", is_flag=True, help="Only report: create and change nothing.")
@click.option(
    "--migrate", is_flag=True, help="Also replace each conflicting index with what the service needs."
)
@with_appcontext
def init_db(check: bool, migrate: bool) -> None:
    """Show the index plan, and create the indexes the service relies on.

    Indexes that already serve the service are reused whatever their name; nothing that
    exists is changed unless --migrate is given. Exits 1 while a conflict remains.
    """
    if check and migrate:
        fail("--check and --migrate exclude each other")
    services = current_services()
    db, schema = services.db, service_schema(services.config.declared)
    try:
        if migrate:
            report = store_migrate(db, schema, click.echo)
        else:
            report = ensure_indexes(db, schema, create=not check)
    except StoreUnavailable as exc:
        fail(str(exc))
    except PyMongoError as exc:
        fail(f"could not read or create the indexes: {failure_reason(exc)}")
    plan = report.plan
    for spec, index in plan.reused:
        click.echo(f"reused    {index.collection}.{index.name} ({index.describe()}): {spec.purpose}")
    failed = {spec.name: reason for spec, reason in report.failed}
    for spec in plan.create:
        verb = "missing " if check else "FAILED  " if spec.name in failed else "created "
        reason = f" ({failed[spec.name]})" if spec.name in failed else ""
        click.echo(f"{verb}  {spec.collection}.{spec.name} ({spec.describe()}): {spec.purpose}{reason}")
    for conflict in plan.conflicts:
        click.echo(f"CONFLICT  {conflict.warning()}")
    summary = f"{len(plan.reused)} reused, {len(plan.create)} {'missing' if check else 'created'}"
    if plan.conflicts:
        names = ", ".join(f"{c.index.collection}.{c.index.name}" for c in plan.conflicts)
        fail(f"{summary}; {len(plan.conflicts)} conflicting: {names}. Run `{MIGRATE_COMMAND}`")
    click.echo(f"indexes ready: {summary}, no conflicts" if not (check and plan.create) else summary)
    if check and plan.create:
        sys.exit(1)


# -- reconcile -------------------------------------------------------------------

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
    clerk = ClerkAPI(
        services.config.clerk_secret_key,
        services.config.clerk_server_url,
        timeout_ms=10_000,
        retry_budget_ms=int(retry_budget * 1000),
        retry_statuses=("429", "5XX"),
        max_retry_after_s=30.0,
        max_rps=max_rps,
        on_status=functools.partial(services.metrics.clerk_call, caller="reconcile"),
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


# -- event log -------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str | None) -> datetime | None:
    """'30m', '2h', '7d', or an ISO 8601 date/time (UTC if no zone is given)."""
    if not value:
        return None
    match = _DURATION.match(value.strip())
    if match:
        return datetime.now(UTC) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter("use e.g. 30m, 2h, 7d or 2026-11-29T10:00") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_OUTCOMES = click.Choice([o.value for o in Outcome])


def _since_option(help: str) -> Callable[[FC], FC]:
    """--since, parsed while click parses options, so a bad value is a usage error (exit 2)."""
    return click.option("--since", callback=lambda _ctx, _param, value: parse_since(value), help=help)


@click.command("events")
@click.option("--status", type=_OUTCOMES, help="Only deliveries with this outcome.")
@click.option("--user", "user_id", help="Only deliveries that name this Clerk user id.")
@click.option("--org", "org_id", help="Only deliveries that name this Clerk organization id.")
@click.option("--type", "event_type", help="Only this event type, e.g. user.updated.")
@_since_option("Only deliveries received since: 30m, 2h, 7d or an ISO date.")
@click.option("--limit", default=50, show_default=True, help="At most this many rows (0: all).")
@with_appcontext
def events_command(
    status: str | None,
    user_id: str | None,
    org_id: str | None,
    event_type: str | None,
    since: datetime | None,
    limit: int,
) -> None:
    """List recent deliveries from the event log, newest first."""
    try:
        rows = current_services().events.find(
            outcome=status, user_id=user_id, org_id=org_id, event_type=event_type, since=since, limit=limit
        )
    except Exception as exc:
        fail(f"could not read the event log: {type(exc).__name__}")
    for row in rows:
        error = f"  error={row['error']}" if row.get("error") else ""
        click.echo(
            f"{row['receivedAt']:%Y-%m-%d %H:%M:%S}  {row['_id']}  {row.get('type') or '-':<20} "
            f"{_named(row):<32} {row.get('outcome'):<9} attempts={row.get('attempts', 1)}{error}"
        )
    click.echo(f"{len(rows)} deliveries")


def _named(row: dict[str, object]) -> str:
    """The user a record names, else its organization, else its subject."""
    named = row.get("userId") or row.get("orgId") or row.get("subjectId")
    return str(named) if named else "-"


@click.command("replay")
@click.argument("svix_id", required=False)
@click.option("--status", type=_OUTCOMES, help="Replay every stored delivery with this outcome.")
@_since_option("Replay every stored delivery received since: 30m, 2h, 7d or an ISO date.")
@click.option("--user", "user_id", help="Replay every stored delivery that names this Clerk user id.")
@click.option("--org", "org_id", help="Replay every stored delivery that names this Clerk organization id.")
@with_appcontext
def replay_command(
    svix_id: str | None, status: str | None, since: datetime | None, user_id: str | None, org_id: str | None
) -> None:
    """Re-process stored deliveries through the live code path (ordering and dedupe hold)."""
    services = current_services()
    if not (svix_id or status or since or user_id or org_id):
        fail("name a svix-id, or pass --status, --since, --user or --org")
    try:
        if svix_id:
            record = services.events.get(svix_id)
            if record is None:
                fail(f"no stored event with svix-id {svix_id}")
            records = [record]
        else:
            records = services.events.find(
                outcome=status, since=since, user_id=user_id, org_id=org_id, limit=0, with_payload=True
            )
    except StoreUnavailable as exc:
        fail(str(exc))
    except click.ClickException:
        raise
    except Exception as exc:
        fail(f"could not read the event log: {type(exc).__name__}")
    counts: dict[str, int] = {}
    for record in records:
        if not record.get("payload"):
            click.echo(f"{record['_id']}  skipped: no payload kept (expired, erased or not needed)")
            counts["skipped"] = counts.get("skipped", 0) + 1
            continue
        result = services.deliveries.handle(record["_id"], record["payload"].encode())
        suffix = f"  error={result.error}" if result.error else ""
        click.echo(f"{record['_id']}  {result.event_type}  {result.outcome.value}{suffix}")
        counts[result.outcome.value] = counts.get(result.outcome.value, 0) + 1
    try:
        services.events.flush()
    except Exception:
        click.echo("warning: the event log could not be updated", err=True)
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing to replay"
    click.echo(f"replayed {len(records)}: {summary}")
    if counts.get(Outcome.FAILED.value):
        sys.exit(1)
