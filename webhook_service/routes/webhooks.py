"""``POST /api/webhooks/clerk``: route -> verify -> handle -> respond."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import RequestEntityTooLarge

from ..deliveries import STATUS, Failure
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
        return jsonify(error=Failure.SIGNATURE.value, detail=str(exc)), STATUS[Failure.SIGNATURE]
    result = services.deliveries.handle(delivery_id, body)
    if result.failure is not None:
        return jsonify(error=result.failure.value, detail=result.error), result.status
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
