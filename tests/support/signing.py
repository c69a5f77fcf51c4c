"""Sign deliveries exactly as Svix does, with the tests' secret."""

from __future__ import annotations

from typing import Any

from webhook_service.dev import sample_events

TEST_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def signed_headers(body: str, *, secret: str = TEST_SECRET, **kwargs: Any) -> dict[str, str]:
    return sample_events.signed_headers(body, secret, **kwargs)


def signed_delivery(
    event: dict[str, Any], *, secret: str = TEST_SECRET, **kwargs: Any
) -> tuple[str, dict[str, str]]:
    return sample_events.signed_delivery(event, secret, **kwargs)
