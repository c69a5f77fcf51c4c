"""The text log format: the same line logging's own Formatter writes, however it is made."""

from __future__ import annotations

import io
import logging

import pytest

from webhook_service.logs import configure_logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@pytest.fixture
def text_handler():
    root = logging.getLogger("webhook_service")
    saved = (root.handlers[:], root.level, root.propagate)
    configure_logging("text")
    handler = root.handlers[0]
    yield handler
    root.handlers[:], root.level, root.propagate = saved


def _record(created: float) -> logging.LogRecord:
    record = logging.LogRecord(
        "webhook_service.deliveries", logging.INFO, __file__, 1, "applied %s", ("user.updated",), None
    )
    record.created = created
    record.msecs = (created - int(created)) * 1000
    return record


@pytest.mark.parametrize(
    "moments",
    [
        [1_765_000_000.004, 1_765_000_000.999, 1_765_000_001.5, 1_765_000_000.25],
        [0.0, 59.999, 60.0, 86_399.5],
    ],
)
def test_a_text_line_is_what_loggings_own_formatter_writes(text_handler, moments):
    reference = logging.Formatter(FORMAT)
    for created in moments:
        record = _record(created)
        assert text_handler.formatter.format(record) == reference.format(record)


def test_the_line_reaches_stderr_with_time_level_logger_and_message(text_handler):
    stream = io.StringIO()
    text_handler.setStream(stream)
    logging.getLogger("webhook_service.deliveries").info("applied %s", "user.updated")
    line = stream.getvalue()
    assert line.endswith(" INFO webhook_service.deliveries: applied user.updated\n")
    assert line[:4].isdigit() and line[19] == "," and line[20:23].isdigit()
