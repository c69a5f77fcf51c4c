"""The application factory."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from pymongo.database import Database
from werkzeug.exceptions import HTTPException

from .cli import register_commands
from .config import Config
from .dev.commands import DEV_COMMANDS
from .routes import health, sync, webhooks
from .services import EXTENSION, build_services

MAX_BODY_BYTES = 1024 * 1024
log = logging.getLogger("webhook_service")


def create_app(config: Config | None = None, *, db: Database[Any] | None = None) -> Flask:
    """Build the app. ``config`` defaults to the environment; ``db`` lets tests inject one."""
    config = config or Config.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions[EXTENSION] = build_services(config, db)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(sync.bp)
    app.register_blueprint(health.bp)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)

    register_commands(app)
    for command in DEV_COMMANDS:
        app.cli.add_command(command)
    return app


def _http_error(exc: HTTPException) -> tuple[Any, int]:
    """Every HTTP error as a short JSON body, never an HTML page."""
    return jsonify(error=(exc.name or "error").lower(), detail=exc.description), exc.code or 500


def _unexpected_error(exc: Exception) -> tuple[Any, int]:
    log.exception("unhandled error")
    return jsonify(error="internal error"), 500
