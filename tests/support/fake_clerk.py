"""Clerk's Backend API for the tests: the package's LocalClerk plus fault injection.

``webhook_service.dev.local_clerk.LocalClerk`` is the server ``make run`` uses (users,
paging, filters, JWKS, bearer auth). ``FakeClerkAPI`` adds what only tests need: it
records every request, and it can answer with queued failures, delays, a "down"
switch, and 504s past an offset limit (as Clerk's large offsets time out). The payload
builders live in ``webhook_service.dev.sample_events`` and are re-exported here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from werkzeug.wrappers import Request, Response

from webhook_service.dev.local_clerk import LocalClerk, json_response, rsa_jwk
from webhook_service.dev.sample_events import (
    AUTO,
    DEFAULT_INSTANCE_ID,
    DEFAULT_SECRET_KEY,
    clerk_error_body,
    clerk_id,
    make_clerk_user,
    make_deleted_data,
    make_users,
    make_webhook_event,
)

__all__ = [
    "AUTO",
    "DEFAULT_INSTANCE_ID",
    "DEFAULT_SECRET_KEY",
    "FakeClerkAPI",
    "RecordedRequest",
    "clerk_error_body",
    "clerk_id",
    "make_clerk_user",
    "make_deleted_data",
    "make_users",
    "make_webhook_event",
    "rsa_jwk",
]


class RecordedRequest(NamedTuple):
    """One received request.

    ``query`` keeps the first value per name; ``headers`` keys are lowercase;
    ``received_at`` is ``time.monotonic()`` when it arrived.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    received_at: float = 0.0


@dataclass
class _Fault:
    remaining: int
    status: int
    body: Any
    headers: dict[str, str]
    path_prefix: str | None


@dataclass
class _Delay:
    remaining: int
    seconds: float
    path_prefix: str | None


_DEFAULT_FAULT_TEXT = {
    429: ("too_many_requests", "Too Many Requests", "Too many requests, please try again later."),
    503: ("service_unavailable", "Service unavailable", "The service is temporarily unavailable."),
}


def _fault_body(status: int) -> dict[str, Any]:
    code, message, long_message = _DEFAULT_FAULT_TEXT.get(
        status,
        (
            "internal_clerk_error",
            "Oops, an unexpected error occurred",
            "There was an internal error on our servers. We've been notified and are working on fixing it.",
        )
        if status >= 500
        else ("request_failed", "Request failed", f"The request failed with status {status}."),
    )
    return clerk_error_body(code, message, long_message)


class FakeClerkAPI(LocalClerk):
    """LocalClerk that records requests and can fail, stall or go down on demand.

    ``fake.url`` has no ``/v1`` suffix; ``fake.users`` maps id -> user dict (call
    :meth:`invalidate` after mutating a user's sort fields in place).
    """

    def __init__(
        self,
        *,
        secret_key: str = DEFAULT_SECRET_KEY,
        users: Iterable[dict[str, Any]] | Mapping[str, dict[str, Any]] | None = None,
        jwks_public_key_pem: str | bytes | None = None,
        jwks_kid: str = DEFAULT_INSTANCE_ID,
        max_offset: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(
            secret_key=secret_key,
            users=users,
            jwks_public_key_pem=jwks_public_key_pem,
            jwks_kid=jwks_kid,
            host=host,
            port=port,
        )
        self.max_offset = max_offset  # offsets past this answer 504, as Clerk's time out
        self.requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._delays: list[_Delay] = []
        self._down = False
        self._fault_lock = threading.Lock()

    # -- fault injection -----------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        *,
        retry_after: float | None = None,
        path_prefix: str | None = None,
    ) -> None:
        """Answer the next ``n`` requests (matching ``path_prefix``, e.g. ``/v1/users``) with ``status``.

        ``body`` defaults to a Clerk error body; dicts/lists are sent as JSON,
        str/bytes verbatim as text/plain.  A 429 carries ``Retry-After: 1``
        unless ``retry_after`` (seconds) says otherwise (``0`` is allowed).
        """
        if n <= 0:
            return
        hdrs = dict(headers or {})
        if retry_after is None and status == 429:
            retry_after = 1
        if retry_after is not None:
            hdrs.setdefault("Retry-After", f"{retry_after:g}")
        with self._fault_lock:
            self._faults.append(_Fault(n, status, body, hdrs, path_prefix))

    def delay_next(self, n: int, seconds: float, *, path_prefix: str | None = None) -> None:
        """Make the next ``n`` matching responses sleep ``seconds`` first."""
        if n <= 0:
            return
        with self._fault_lock:
            self._delays.append(_Delay(n, seconds, path_prefix))

    def set_down(self, down: bool = True) -> None:
        """While down, every request gets a 503 Clerk error."""
        with self._fault_lock:
            self._down = down

    def reset_faults(self) -> None:
        """Clear queued failures and delays and bring the fake back up."""
        with self._fault_lock:
            self._faults.clear()
            self._delays.clear()
            self._down = False

    def clear_requests(self) -> None:
        """Forget recorded requests."""
        with self._fault_lock:
            self.requests.clear()

    def request_count(self, path_prefix: str = "") -> int:
        """Number of recorded requests whose path starts with ``path_prefix``."""
        with self._fault_lock:
            return sum(1 for r in self.requests if r.path.startswith(path_prefix))

    # -- HTTP ------------------------------------------------------------------

    def handle(self, req: Request) -> Response:
        path = req.path
        if req.method not in ("GET", "HEAD"):
            req.get_data()  # drain the body so the keep-alive connection stays usable
        with self._fault_lock:
            self.requests.append(
                RecordedRequest(
                    req.method,
                    path,
                    req.args.to_dict(flat=True),
                    {k.lower(): v for k, v in req.headers.items()},
                    time.monotonic(),
                )
            )
            delay = _take(self._delays, path)
            down = self._down
        if delay is not None:
            self._stopping.wait(delay.seconds)
        if down:
            return json_response(503, _fault_body(503))
        with self._fault_lock:
            fault = _take(self._faults, path)
        if fault is not None:
            body = fault.body if fault.body is not None else _fault_body(fault.status)
            if isinstance(body, (str, bytes)):
                return Response(body, status=fault.status, headers=fault.headers, mimetype="text/plain")
            return json_response(fault.status, body, fault.headers)
        return super().handle(req)

    def list_users(self, req: Request) -> Response:
        offset = req.args.get("offset", "0")
        if self.max_offset is not None and offset.isdigit() and int(offset) > self.max_offset:
            return json_response(504, _fault_body(504))  # Clerk: large offsets eventually time out
        return super().list_users(req)


def _take(queue: list[Any], path: str) -> Any:
    """Pop one use of the first entry in ``queue`` whose prefix matches ``path`` (caller holds the lock)."""
    for i, entry in enumerate(queue):
        if entry.path_prefix is None or path.startswith(entry.path_prefix):
            entry.remaining -= 1
            if entry.remaining <= 0:
                del queue[i]
            return entry
    return None
