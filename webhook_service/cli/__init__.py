"""Operator commands, registered on the app: ``flask --app wsgi <command>``.

Each command is thin: read options, call one function, print rows and a one-line
summary, and exit non-zero with one clear line on failure. One module per area:
``indexes`` (init-db), ``reconcile``, ``watch``, ``eventlog`` (events, replay).
"""

from __future__ import annotations

from flask import Flask

from .eventlog import events_command, replay_command
from .indexes import init_db
from .reconcile import reconcile_command
from .watch import watch_command

COMMANDS = (init_db, reconcile_command, watch_command, events_command, replay_command)


def register_commands(app: Flask) -> None:
    for command in COMMANDS:
        app.cli.add_command(command)
