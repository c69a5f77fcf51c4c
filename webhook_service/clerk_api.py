"""Clerk's Backend API, read as raw JSON, with every wait bounded: one object by path,
and paged lists of any resource.

The SDK (clerk-backend-api) is kept where it serves: verifying session tokens
(``tokens.py``). Its resource APIs are left alone because they make the service fragile:
they parse every answer into closed enums, so a verification kind or status that Clerk
adds turns a 200 into an exception, and they cannot page with ``starting_after``, the
cursor Clerk's spec asks for on large user lists. Here an object is the JSON Clerk sent,
mapped by the same field map as a webhook's ``data``. Lists come in two shapes, both
read here: a bare array (``/v1/users``) and ``{"data": [...], "total_count": N}``
(organizations, memberships).

Each request has a timeout and an explicit retry budget (5xx and connection errors;
429 too where the caller asks, honouring ``Retry-After`` up to a cap). A caller that
makes many requests (reconcile) also paces them, since Clerk's rate limit is shared by
the whole app.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

PAGE_SIZE = 500  # the most Clerk returns per page


class ClerkUnavailable(Exception):
    """Clerk's API failed, timed out, refused or rate-limited us; retrying later is right."""

    def __init__(self, message: str, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s  # what Clerk's Retry-After asked for, if it said


class ClerkNotFound(Exception):
    """Clerk has no such object (a 404)."""


@dataclass(frozen=True)
class Page:
    """One page of a list, and the list's total where Clerk says it."""

    items: list[Any]
    total_count: int | None = None

    def total(self, path: str) -> int:
        """``total_count``, which the ``{data, total_count}`` lists carry."""
        if self.total_count is None:
            raise ClerkUnavailable(f"Clerk API sent a {path} list without total_count")
        return self.total_count


class ClerkAPI:
    def __init__(
        self,
        secret_key: str,
        server_url: str,
        *,
        timeout_ms: int = 3000,
        retry_budget_ms: int = 5000,
        retry_statuses: tuple[str, ...] = ("5XX",),
        max_retry_after_s: float = 1.0,
        max_rps: float = 0.0,
        on_status: Callable[[int | str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = httpx.Client(
            base_url=server_url.rstrip("/"),
            headers={"Authorization": f"Bearer {secret_key}", "Accept": "application/json"},
            timeout=timeout_ms / 1000,
        )
        self._budget_s = retry_budget_ms / 1000
        self._retry_429 = "429" in retry_statuses
        self._retry_5xx = "5XX" in retry_statuses
        self._max_retry_after_s = max_retry_after_s
        self._on_status = on_status or (lambda status: None)
        self._sleep = sleep
        self._clock = clock
        self._gap_s = 1.0 / max_rps if max_rps > 0 else 0.0
        self._next_at = 0.0
        self.requests_sent = 0

    def get(self, path: str) -> dict[str, Any]:
        """One object, e.g. ``/users/user_123``, as Clerk's JSON; ClerkNotFound on a 404."""
        response = self._get(path)
        if response.status_code == 404:
            raise ClerkNotFound(f"Clerk has no {path}")
        obj = _json(response)
        if not isinstance(obj, dict):
            raise ClerkUnavailable(f"Clerk API sent a {path} that is not a JSON object", response.status_code)
        return obj

    def page(self, path: str, params: dict[str, Any]) -> Page:
        """One page of a list, in either of Clerk's shapes; ClerkNotFound on a 404 (the
        organization a list belongs to is gone, say)."""
        response = self._get(path, params)
        if response.status_code == 404:
            raise ClerkNotFound(f"Clerk has no {path}")
        body = _json(response)
        if isinstance(body, list):
            return Page(body)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise ClerkUnavailable(
                f"Clerk API sent a {path} list that is neither an array nor {{data: [...]}}"
            )
        total = body.get("total_count")
        return Page(data, total if isinstance(total, int) and not isinstance(total, bool) else None)

    def iter_pages(
        self, path: str, params: dict[str, Any], *, cursor: bool = False, page_size: int = PAGE_SIZE
    ) -> Iterator[list[Any]]:
        """Every object of a list, a page at a time, in the order ``params`` asks for.

        With ``cursor`` it walks ``starting_after`` the last id of the previous page and
        never sends an ``offset`` (Clerk's user list slows down and times out at large
        offsets; the cursor needs a ``created_at`` order). Otherwise it pages by offset,
        which lists without a cursor (organizations, memberships) offer. Either way the
        walk ends at a page shorter than ``page_size``.
        """
        params = dict(params, limit=page_size)
        offset = 0
        while True:
            page = self.page(path, params).items
            if page:
                yield page
            if len(page) < page_size:
                return
            if cursor:
                last = page[-1].get("id") if isinstance(page[-1], dict) else None
                if not isinstance(last, str):
                    raise ClerkUnavailable(f"Clerk API sent a {path} page whose last object has no id")
                params = dict(params, starting_after=last)
            else:
                offset += len(page)
                params = dict(params, offset=offset)

    def count(self, path: str) -> int:
        """``total_count`` of ``/users/count`` and the like."""
        body = _json(self._get(path))
        total = body.get("total_count") if isinstance(body, dict) else None
        if not isinstance(total, int) or isinstance(total, bool):
            raise ClerkUnavailable(f"Clerk API sent a {path} without an integer total_count")
        return total

    def close(self) -> None:
        self._client.close()

    # -- transport -------------------------------------------------------------------

    def _get(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        """GET with retries inside the budget. Returns a 2xx or a 404; raises otherwise."""
        deadline = time.monotonic() + self._budget_s
        backoff = 0.2
        while True:
            self._pace()
            self.requests_sent += 1
            try:
                response = self._client.get(path, params=params)
            except httpx.HTTPError as exc:
                failure = ClerkUnavailable(f"Clerk API unreachable: {type(exc).__name__}")
                wait = backoff
            else:
                self._on_status(response.status_code)
                status = response.status_code
                if status < 400 or status == 404:
                    return response
                failure = _refusal(response)
                if not (status == 429 and self._retry_429 or status >= 500 and self._retry_5xx):
                    raise failure
                wait = backoff
                if status == 429 and failure.retry_after_s is not None:
                    wait = min(failure.retry_after_s, self._max_retry_after_s)
            if time.monotonic() + wait > deadline:
                raise failure
            self._sleep(wait + random.uniform(0, 0.1))
            backoff = min(backoff * 2, 2.0)

    def _pace(self) -> None:
        """Space requests at least ``1 / max_rps`` apart: Clerk's limit is the whole app's."""
        now = self._clock()
        if now < self._next_at:
            self._sleep(self._next_at - now)
            now = self._next_at
        self._next_at = now + self._gap_s


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ClerkUnavailable(
            f"Clerk API sent a body that is not JSON (HTTP {response.status_code})", response.status_code
        ) from None


def _refusal(response: httpx.Response) -> ClerkUnavailable:
    """A non-2xx answer as an error that says what failed, naming the parameter of a 422."""
    status = response.status_code
    message = f"Clerk API answered {status}"
    try:
        error = response.json()["errors"][0]
        detail = error.get("long_message") or error.get("message")
        param = (error.get("meta") or {}).get("param_name")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        detail = param = None
    if param:
        message += f": parameter {param!r} rejected"
    if detail:
        message += f" ({detail})"
    return ClerkUnavailable(message, status, _seconds(response.headers.get("retry-after")))


def _seconds(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the caller falls back to its own backoff
