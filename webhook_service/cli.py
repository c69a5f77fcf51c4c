"""Operator commands, registered on the app: ``flask --app wsgi <command>``."""

from __future__ import annotations

import click
from flask import Flask, current_app

from .store import ensure_indexes


def register_commands(app: Flask) -> None:
    app.cli.add_command(init_db)


@click.command("init-db")
def init_db() -> None:
    """Create the indexes the service relies on (the service also does this at start)."""
    ensure_indexes(current_app.extensions["webhook_service"].db)
    click.echo("indexes ready")
