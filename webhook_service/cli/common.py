"""What every operator command shares."""

from __future__ import annotations

from typing import NoReturn

import click


def fail(message: str) -> NoReturn:
    """Exit 1 with one line, ``Error: <message>``."""
    raise click.ClickException(message)
