"""Clerk's Backend API, through the official SDK, with every wait bounded.

The SDK's default retry policy keeps trying for up to an hour; here each request has
a timeout and a short, explicit retry budget, so a sync call answers within seconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from clerk_backend_api import Clerk, models
from clerk_backend_api.utils import BackoffStrategy, RetryConfig

PAGE_SIZE = 500  # the most Clerk returns per page
ORIGINAL_RETRY_AFTER = "x-clerk-retry-after"


class ClerkUnavailable(Exception):
    """Clerk's API failed, timed out or rate-limited us; retrying later is right."""

    def __init__(self, message: str, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s  # what Clerk's Retry-After asked for, if it said


class ClerkUserNotFound(Exception):
    """Clerk has no user with that id."""


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
        on_status: Callable[[int | str], None] | None = None,
    ) -> None:
        retries = RetryConfig(
            "backoff",
            BackoffStrategy(200, 2000, 2.0, retry_budget_ms, jitter_ms=100),
            retry_connection_errors=True,
            status_codes_override=list(retry_statuses),
        )

        def on_response(response: httpx.Response) -> None:
            # The SDK sleeps for whatever Retry-After says; cap it so that one answer
            # cannot stall a request past its budget.
            _cap_retry_after(response, max_retry_after_s)
            if on_status is not None:
                on_status(response.status_code)

        self._sdk = Clerk(
            client=httpx.Client(event_hooks={"response": [on_response]}),
            bearer_auth=secret_key,
            server_url=server_url,
            retry_config=retries,
            timeout_ms=timeout_ms,
        )

    def get_user(self, user_id: str) -> dict[str, Any]:
        """The user as Clerk's JSON shape (the same keys a webhook's ``data`` has)."""
        with _translated_errors():
            user = self._sdk.users.get(user_id=user_id)
        return user.model_dump(mode="json", by_alias=True)

    def iter_user_pages(self, page_size: int = PAGE_SIZE) -> Iterator[list[dict[str, Any]]]:
        """Every Clerk user, one page at a time, oldest first so new sign-ups land last."""
        offset = 0
        while True:
            with _translated_errors():
                page = self._sdk.users.list(
                    request={"limit": page_size, "offset": offset, "order_by": "+created_at"}
                )
            if not page:
                return
            yield [u.model_dump(mode="json", by_alias=True) for u in page]
            if len(page) < page_size:
                return
            offset += len(page)

    def existing_ids(self, user_ids: list[str]) -> set[str]:
        """Which of these ids Clerk still has (one list call per 100 ids)."""
        found: set[str] = set()
        for start in range(0, len(user_ids), 100):
            chunk = user_ids[start : start + 100]
            with _translated_errors():
                page = self._sdk.users.list(request={"user_id": chunk, "limit": len(chunk)})
            found.update(u.id for u in page)
        return found


def _seconds(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the caller falls back to its own backoff


def _cap_retry_after(response: httpx.Response, cap_s: float) -> None:
    value = response.headers.get("retry-after")
    if value is None:
        return
    try:
        too_long = float(value) > cap_s
    except ValueError:
        too_long = True  # an HTTP date: treat as "later than we can wait"
    if too_long:
        response.headers[ORIGINAL_RETRY_AFTER] = value  # for the caller's own Retry-After
        response.headers["retry-after"] = str(cap_s)


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Map SDK and transport failures onto the two errors callers act on."""
    try:
        yield
    except models.ClerkBaseError as exc:
        status = getattr(exc, "status_code", None)
        if status == 404:
            raise ClerkUserNotFound("Clerk has no such user") from exc
        headers = getattr(exc, "headers", None) or {}
        retry_after = _seconds(headers.get(ORIGINAL_RETRY_AFTER) or headers.get("retry-after"))
        raise ClerkUnavailable(f"Clerk API answered {status}", status, retry_after) from exc
    except httpx.HTTPError as exc:
        raise ClerkUnavailable(f"Clerk API unreachable: {type(exc).__name__}") from exc
