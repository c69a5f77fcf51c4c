"""``POST /api/webhooks/clerk``: route -> verify -> handle -> respond."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import RequestEntityTooLarge

from ..services import current_services
from ..signatures import SignatureError

bp = Blueprint("webhooks", __name__)
log = logging.getLogger("webhook_service.delivery")


@bp.post("/api/webhooks/clerk")
def receive_clerk_event() -> ResponseReturnValue:
    services = current_services()
    body = request.get_data(cache=False)  # over MAX_CONTENT_LENGTH: 413 before any work
    if _streamed_past_limit(body):
        raise RequestEntityTooLarge()
    try:
        delivery_id = services.verifier.verify(body, request.headers)
    except SignatureError as exc:
        services.metrics.signature_rejected()
        log.info(
            "delivery rejected: %s",
            exc,
            extra={"svix_id": request.headers.get("svix-id"), "outcome": "rejected", "status": 400},
        )
        return jsonify(error="invalid signature", detail=str(exc)), 400
    result = services.deliveries.handle(delivery_id, body)
    if result.status >= 400:
        title = result.title or _ERRORS.get(result.status, "error")
        return jsonify(error=title, detail=result.error), result.status
    return jsonify(outcome=result.outcome.value), result.status


def _streamed_past_limit(body: bytes) -> bool:
    """A body sent without Content-Length (chunked, as gunicorn passes it through) is
    cut at MAX_CONTENT_LENGTH by werkzeug instead of refused; refuse it here."""
    if request.content_length is not None:
        return False
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit is None or len(body) < limit:
        return False
    return bool(request.environ["wsgi.input"].read(1))


_ERRORS = {400: "malformed event", 500: "internal error", 503: "database unavailable"}
