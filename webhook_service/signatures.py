"""Webhook signature verification: one job, done with the svix library.

Svix signs ``{id}.{timestamp}.{raw body}``; only the raw bytes prove anything, so the
body is verified before it is parsed. The verifier raises more than its own error
type on malformed headers or bodies, and every one of them means "reject".
"""

from __future__ import annotations

from collections.abc import Mapping

from svix.webhooks import Webhook, WebhookVerificationError


class SignatureError(Exception):
    """The delivery is not provably from Clerk. The message is safe to show the sender."""


class WebhookVerifier:
    def __init__(self, signing_secret: str) -> None:
        self._webhook = Webhook(signing_secret)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """Check the signature and timestamp; return the delivery id (``svix-id``)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        delivery_id = lowered.get("svix-id") or lowered.get("webhook-id")
        try:
            self._webhook.verify(body, lowered)
        except WebhookVerificationError as exc:
            raise SignatureError(str(exc) or "invalid signature") from exc
        except Exception as exc:  # binascii.Error, ValueError, UnicodeDecodeError, ...
            raise SignatureError("malformed signature headers or body") from exc
        if not delivery_id:
            raise SignatureError("missing delivery id header")
        return delivery_id
