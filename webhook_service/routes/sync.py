"""``POST /api/users/sync``: the mobile app pulls its own profile fresh after sign-in."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, jsonify, request

from ..clerk_api import ClerkUnavailable
from ..store import StoreUnavailable
from ..sync import SyncedUserGone, sync_user
from ..tokens import TokenError, VerifierUnavailable

bp = Blueprint("sync", __name__)
log = logging.getLogger("webhook_service.sync")


@bp.post("/api/users/sync")
def sync_current_user():
    services = current_app.extensions["webhook_service"]
    status, body = _sync(services)
    services.metrics.sync(status)
    return jsonify(body), status


def _sync(services) -> tuple[int, dict]:
    if services.clerk is None:
        return 503, {"error": "sync not configured", "detail": "CLERK_SECRET_KEY is not set"}
    try:
        clerk_id = services.tokens.verify(request.headers.get("Authorization"))
    except TokenError as exc:
        return 401, {"error": "unauthorized", "detail": str(exc)}
    except VerifierUnavailable as exc:
        return 503, {"error": "token verification unavailable", "detail": str(exc)}
    try:
        result = sync_user(services.store, services.clerk, clerk_id)
    except SyncedUserGone:
        log.info("sync user=%s outcome=deleted", clerk_id)
        return 404, {"error": "user not found", "detail": "Clerk has no such user"}
    except ClerkUnavailable as exc:
        log.warning("sync user=%s clerk api failed: %s", clerk_id, exc)
        status = 503 if exc.status in (None, 429) else 502
        return status, {"error": "Clerk API unavailable", "detail": str(exc)}
    except StoreUnavailable as exc:
        services.metrics.db_error()
        return 503, {"error": "database unavailable", "detail": str(exc)}
    log.info("sync user=%s outcome=%s", clerk_id, "created" if result.created else "refreshed")
    return (201 if result.created else 200), result.user
