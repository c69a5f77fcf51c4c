"""Leak checks shared by the reliability suites (convergence, webhook fuzzing, token fuzzing).

``watch(secrets)`` captures every log record of the ``webhook_service`` logger tree while
it is open (the handler sits on that logger itself, because ``configure_logging`` turns
propagation off, and the tree is lowered to DEBUG so INFO lines are seen too). Each
response the test makes is handed to ``Hygiene.saw``. ``Hygiene.assert_clean`` then fails
if any captured log line (message, ``extra`` fields and formatted traceback) or any
response (body and headers) contains a registered secret: the webhook signing secret and
its base64 key, the Clerk secret key, session tokens. Payload bodies are checked per
request against the log lines emitted while that request ran and against its response.
No response body may contain a Python traceback (``Traceback`` / ``File "``).

Values shorter than ``MIN_SECRET_LEN`` are not registered: a short garbage token or a
``{}`` body would match innocent text and prove nothing.

``summary_line(config, text)`` prints a figure now (visible with ``-s``) and again in a
"reliability figures" section at the end of the pytest run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

LOGGER = "webhook_service"
MIN_SECRET_LEN = 16
TRACEBACK_MARKERS = ("Traceback", 'File "')

_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}


def signing_secret_forms(secret: str) -> list[str]:
    """The ``whsec_`` secret and the base64 key inside it: neither may leak."""
    return [secret, secret.removeprefix("whsec_")]


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self._formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self._formatter.format(record)
        except Exception as exc:  # a record that cannot be formatted is itself a finding
            text = f"UNFORMATTABLE {record.name} {record.msg!r} {record.args!r}: {exc!r}"
        extras = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD_ATTRS)
        self.lines.append(f"{text} {extras}" if extras else text)


class Hygiene:
    """What one suite logged and answered, and the secrets none of it may contain."""

    def __init__(self, capture: _Capture, secrets: Iterable[str]) -> None:
        self._capture = capture
        self.secrets: set[str] = set()
        self.bodies: list[str] = []
        self._checked_lines = 0
        self.add_secrets(secrets)

    @property
    def log_lines(self) -> list[str]:
        return self._capture.lines

    def add_secret(self, value: str | bytes | None) -> None:
        text = _text(value)
        if text is not None and len(text) >= MIN_SECRET_LEN:
            self.secrets.add(text)

    def add_secrets(self, values: Iterable[str | bytes | None]) -> None:
        for value in values:
            self.add_secret(value)

    def saw(self, response: Any, *, payload: str | bytes | None = None) -> None:
        """Record one response; fail at once on a traceback or on ``payload`` showing up
        in the response or in a log line written since the previous call."""
        body = response.get_data(as_text=True)
        seen = f"{response.status} {dict(response.headers)} {body}"
        self.bodies.append(seen)
        for marker in TRACEBACK_MARKERS:
            assert marker not in body, f"a traceback reached the client: {body[:500]!r}"
        new_lines = self._capture.lines[self._checked_lines :]
        self._checked_lines = len(self._capture.lines)
        text = _text(payload)
        if text is not None and len(text) >= MIN_SECRET_LEN:
            for where in (seen, *new_lines):
                assert text not in where, f"a whole payload body leaked into: {where[:300]!r}"

    def leaks(self) -> list[tuple[str, str]]:
        """(secret, where) for every registered secret found in a log line or a response."""
        found = []
        for where in (*self._capture.lines, *self.bodies):
            for secret in self.secrets:
                if secret in where:
                    found.append((secret[:12] + "...", where[:300]))
        return found

    def assert_clean(self) -> None:
        leaks = self.leaks()
        assert not leaks, f"{len(leaks)} secret leak(s), first: {leaks[0]!r}"
        for body in self.bodies:
            for marker in TRACEBACK_MARKERS:
                assert marker not in body, f"a traceback reached the client: {body[:500]!r}"


@contextmanager
def watch(secrets: Iterable[str | bytes | None] = ()) -> Iterator[Hygiene]:
    """Capture the ``webhook_service`` logs for the block; call ``assert_clean()`` at the end."""
    logger = logging.getLogger(LOGGER)
    capture = _Capture()
    previous_level = logger.level
    logger.addHandler(capture)
    logger.setLevel(logging.DEBUG)
    try:
        yield Hygiene(capture, secrets)
    finally:
        logger.removeHandler(capture)
        logger.setLevel(previous_level)


def _text(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


# -- figures for docs/reliability.md's table ----------------------------------------------

_PLUGIN_NAME = "reliability-figures"


class _Figures:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.lines:
            terminalreporter.section("reliability figures")
            for line in self.lines:
                terminalreporter.write_line(line)


def summary_line(config: Any, text: str) -> None:
    """Print ``text`` now and list it again at the end of the run."""
    print(text)
    plugin = config.pluginmanager.get_plugin(_PLUGIN_NAME)
    if plugin is None:
        plugin = _Figures()
        config.pluginmanager.register(plugin, _PLUGIN_NAME)
    plugin.lines.append(text)
