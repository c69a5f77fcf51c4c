"""Logging setup: readable lines by default, JSON lines with ``LOG_FORMAT=json``."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


def configure_logging(log_format: str = "text", level: int = logging.INFO) -> None:
    """One handler on the ``webhook_service`` logger, in the chosen format.

    No format here or in gunicorn's prints the caller's file or line, the thread or the
    multiprocessing process name, so a record does not gather them: the logging HOWTO's
    "Optimization" switches, worth a few µs on every delivery's log line. (gunicorn's
    lines show the pid, so that one stays.)
    """
    logging._srcfile = None  # no sys._getframe() walk per record
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("webhook_service")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
