"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from ..store import ping

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process is alive. Deliberately does not touch the database."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """Ready only when the database answers a ping within about two seconds."""
    if ping(current_app.extensions["webhook_service"].db, timeout_s=2.0):
        return jsonify(status="ready")
    return jsonify(status="unavailable", error="database did not answer"), 503
