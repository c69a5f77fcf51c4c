"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from ..services import current_services
from ..store.errors import StoreUnavailable
from ..store.mongo import ping

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process is alive. Deliberately does not touch the database."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Ready when the database answers a ping within about two seconds and the indexes
    the service's correctness rests on exist (made now if they can be)."""
    services = current_services()
    if not ping(services.db, timeout_s=2.0):
        return jsonify(status="unavailable", error="database did not answer"), 503
    try:
        services.indexes.ensure()
    except StoreUnavailable as exc:
        return jsonify(status="unavailable", error="indexes unavailable", detail=str(exc)), 503
    return jsonify(status="ready")
