"""Logging setup: readable lines by default, JSON lines with ``LOG_FORMAT=json``."""

from __future__ import annotations

import logging
import sys
import time

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
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("webhook_service")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


class _TextFormatter(logging.Formatter):
    """logging's own text format, with the date and time formatted once a second: every
    delivery logs a line, and ``time.strftime`` is most of what a line's time costs."""

    _cached: tuple[int, str] = (-1, "")  # (second, its date and time): one assignment, thread-safe

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second, stamp = self._cached
        if second != int(record.created):
            second = int(record.created)
            stamp = time.strftime(self.default_time_format, self.converter(record.created))
            self._cached = (second, stamp)
        return f"{stamp},{int(record.msecs):03d}"  # logging's default_msec_format
