"""``POST /api/users/sync``: the mobile app pulls its own profile fresh after sign-in."""

from __future__ import annotations

import logging
import math
from typing import Any

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from ..clerk_api import ClerkUnavailable
from ..services import Services, current_services
from ..store.errors import StoreUnavailable
from ..sync import SyncedUserGone
from ..tokens import TokenError, VerifierUnavailable

bp = Blueprint("sync", __name__)
log = logging.getLogger("webhook_service.sync")

# Every 5xx carries Retry-After so the app knows when to come back: Clerk's own value
# when it rate-limited us (capped), else a short backoff.
RETRY_AFTER_DEFAULT_S = 5
RETRY_AFTER_MAX_S = 60
RETRY_AFTER_UNCONFIGURED_S = 300


@bp.post("/api/users/sync")
def sync_current_user() -> ResponseReturnValue:
    services = current_services()
    status, body, retry_after = _sync(services)
    services.metrics.sync(status)
    response = jsonify(body)
    if status >= 500:
        response.headers["Retry-After"] = str(retry_after or RETRY_AFTER_DEFAULT_S)
    return response, status


def _sync(services: Services) -> tuple[int, dict[str, Any], int | None]:
    if services.sync is None:
        detail = "CLERK_SECRET_KEY is not set"
        return 503, {"error": "sync not configured", "detail": detail}, RETRY_AFTER_UNCONFIGURED_S
    try:
        clerk_id = services.tokens.verify(request.headers.get("Authorization"))
    except TokenError as exc:
        return 401, {"error": "unauthorized", "detail": str(exc)}, None
    except VerifierUnavailable as exc:
        return 503, {"error": "token verification unavailable", "detail": str(exc)}, None
    try:
        result = services.sync.sync(clerk_id)
    except SyncedUserGone:
        log.info("sync user=%s outcome=deleted", clerk_id)
        return 404, {"error": "user not found", "detail": "Clerk has no such user"}, None
    except ClerkUnavailable as exc:
        log.warning("sync user=%s clerk api failed: %s", clerk_id, exc)
        status = 503 if exc.status in (None, 429) else 502
        return status, {"error": "Clerk API unavailable", "detail": str(exc)}, _clerk_retry_after(exc)
    except StoreUnavailable as exc:
        services.metrics.db_error()
        return 503, {"error": "database unavailable", "detail": str(exc)}, None
    outcome = "created" if result.created else "refreshed" if result.pulled else "recent"
    log.info("sync user=%s outcome=%s", clerk_id, outcome)
    return (201 if result.created else 200), result.user, None


def _clerk_retry_after(exc: ClerkUnavailable) -> int | None:
    if exc.retry_after_s is None:
        return None
    return min(max(math.ceil(exc.retry_after_s), 1), RETRY_AFTER_MAX_S)
