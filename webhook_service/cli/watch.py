"""``watch``: the watcher's pass, run by hand or by cron."""

from __future__ import annotations

import time

import click
from flask.cli import with_appcontext

from ..clerk_api import ClerkUnavailable
from ..services import current_services
from ..store.errors import StoreUnavailable
from ..watch.watcher import LeaseLost
from .common import fail


@click.command("watch")
@click.option(
    "--once", is_flag=True, help="Run one pass, print what it found, and exit (for cron or debugging)."
)
@with_appcontext
def watch_command(once: bool) -> None:
    """Notice missed deliveries and repair them: what the service runs by itself every
    WATCH_INTERVAL_S, one instance at a time (a lease in the database).

    With --once, one pass; without it, passes in the foreground until interrupted (a watcher
    process of its own, where the service's workers should not run one). Either way it
    runs only while no other instance holds the lease.
    """
    services = current_services()
    if services.watcher is None:
        fail(f"the watcher is off: {services.config.watch_off_reason or 'nothing to watch'}")
    watcher = services.watcher
    if not once:
        click.echo(f"watching every {services.config.watch_interval_s:g} s; Ctrl-C stops")
        watcher.start()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
        finally:
            watcher.stop()
        return
    try:
        report = watcher.run_once()
    except (ClerkUnavailable, StoreUnavailable, LeaseLost) as exc:
        fail(f"watch pass failed: {exc}. The next pass tries again.")
    if report is None:
        held = watcher.lease.current() or {}
        click.echo(f"another watcher holds the lease ({held.get('holder')}, until {held.get('expiresAt')}):")
        click.echo("nothing to do here; it runs the passes")
        return
    watcher.lease.release()
    for resource in report.resources:
        for repair in resource.repairs:
            click.echo(repair.line())
    click.echo(f"watched: {report.summary()}")
