"""``POST /api/webhooks/clerk``: route -> verify -> handle -> respond."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request

from ..signatures import SignatureError

bp = Blueprint("webhooks", __name__)
log = logging.getLogger("webhook_service.delivery")


@bp.post("/api/webhooks/clerk")
def receive_clerk_event():
    services = current_app.extensions["webhook_service"]
    body = request.get_data(cache=False)  # over MAX_CONTENT_LENGTH: 413 before any work
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
        return jsonify(error=_ERRORS.get(result.status, "error"), detail=result.error), result.status
    return jsonify(outcome=result.outcome.value), result.status


_ERRORS = {400: "malformed event", 500: "internal error", 503: "database unavailable"}
