"""``events`` and ``replay``: the event log, read and replayed."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import click
from flask.cli import with_appcontext

from ..events import Outcome
from ..services import current_services
from ..store.errors import StoreUnavailable
from .common import fail

FC = TypeVar("FC", bound=Callable[..., object])


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
