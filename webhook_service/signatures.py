"""Webhook signature verification: one job, done with the svix library.

Svix signs ``{id}.{timestamp}.{raw body}``; only the raw bytes prove anything, so the
body is verified before it is parsed. The verifier raises more than its own error
type on malformed headers or bodies, and every one of them means "reject".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from svix.webhooks import Webhook, WebhookVerificationError

if TYPE_CHECKING:
    from werkzeug.datastructures import Headers


class SignatureError(Exception):
    """The delivery is not provably from Clerk. The message is safe to show the sender."""


class WebhookVerifier:
    def __init__(self, signing_secret: str) -> None:
        self._webhook = Webhook(signing_secret)

    def verify(self, body: bytes, headers: Mapping[str, str] | Headers) -> str:
        """Check the signature and timestamp; return the delivery id (``svix-id``).

        svix lowercases the header names itself, so they are handed over as they came.
        """
        delivery_id = _header(headers, "svix-id") or _header(headers, "webhook-id")
        try:
            self._webhook.verify(body, headers)  # type: ignore[arg-type]  # any Mapping works
        except WebhookVerificationError as exc:
            raise SignatureError(str(exc) or "invalid signature") from exc
        except Exception as exc:  # binascii.Error, ValueError, UnicodeDecodeError, ...
            raise SignatureError("malformed signature headers or body") from exc
        if not delivery_id:
            raise SignatureError("missing delivery id header")
        return delivery_id


def _header(headers: Mapping[str, str] | Headers, name: str) -> str | None:
    """A header by its lowercase name, from werkzeug's case-insensitive headers or a dict."""
    value = headers.get(name)
    if value is None and not hasattr(headers, "getlist"):
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value
