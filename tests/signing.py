"""Sign deliveries exactly as Svix does, for tests and tools."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from svix.webhooks import Webhook

TEST_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def signed_headers(
    body: str, *, secret: str = TEST_SECRET, msg_id: str | None = None, at: datetime | None = None
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex[:27]}"
    at = at or datetime.now(UTC)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(int(at.timestamp())),
        "svix-signature": Webhook(secret).sign(msg_id, at, body),
        "content-type": "application/json",
    }


def signed_delivery(event: dict[str, Any], **kwargs: Any) -> tuple[str, dict[str, str]]:
    body = json.dumps(event)
    return body, signed_headers(body, **kwargs)
