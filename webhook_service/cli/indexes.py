"""``init-db``: the index plan, carried out."""

from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext
from pymongo.errors import PyMongoError

from ..catalog import service_schema
from ..schema import MIGRATE_COMMAND
from ..services import current_services
from ..store.errors import StoreUnavailable
from ..store.indexes import ensure_indexes, failure_reason
from ..store.indexes import migrate as store_migrate
from .common import fail


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
