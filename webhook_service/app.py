"""The application factory."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, jsonify
from pymongo.database import Database
from werkzeug.exceptions import HTTPException

from .clerk_api import ClerkAPI
from .config import Config
from .deliveries import DeliveryHandler
from .metrics import Metrics
from .signatures import WebhookVerifier
from .store import EventLog, UserStore, connect
from .sync import UserSync
from .tokens import JwksCache, SessionTokenVerifier

MAX_BODY_BYTES = 1024 * 1024
log = logging.getLogger("webhook_service")


@dataclass
class Services:
    """Everything a request needs, built once per app (and so once per worker)."""

    config: Config
    db: Database[Any]
    store: UserStore
    events: EventLog
    verifier: WebhookVerifier
    tokens: SessionTokenVerifier
    clerk: ClerkAPI | None
    sync: UserSync | None
    metrics: Metrics
    deliveries: DeliveryHandler


def current_services() -> Services:
    """The services of the app handling this request or command (needs an app context)."""
    services: Services = current_app.extensions["webhook_service"]
    return services


def build_services(config: Config, db: Database[Any] | None = None) -> Services:
    db = db if db is not None else connect(config.mongodb_uri, timeout_ms=config.db_timeout_ms)
    metrics = Metrics()
    store = UserStore(db, insert_only_fields=config.insert_only_fields, cascade=config.delete_cascade)
    events = EventLog(db, retention_days=config.event_retention_days)
    clerk = None
    jwks = None
    if config.clerk_secret_key:
        clerk = ClerkAPI(
            config.clerk_secret_key,
            config.clerk_server_url,
            timeout_ms=config.clerk_timeout_ms,
            retry_budget_ms=config.clerk_retry_budget_ms,
            on_status=metrics.clerk_call,
        )
        jwks = JwksCache(config.clerk_api_url, config.clerk_secret_key)
    tokens = SessionTokenVerifier(
        jwt_key=config.clerk_jwt_key,
        authorized_parties=config.authorized_parties,
        require_azp=config.require_azp,
        jwks=jwks,
    )
    return Services(
        config=config,
        db=db,
        store=store,
        events=events,
        verifier=WebhookVerifier(config.webhook_signing_secret),
        tokens=tokens,
        clerk=clerk,
        sync=UserSync(store, clerk, min_interval_s=config.sync_min_interval_s) if clerk else None,
        metrics=metrics,
        deliveries=DeliveryHandler(store, events, metrics),
    )


def create_app(config: Config | None = None, *, db: Database[Any] | None = None) -> Flask:
    """Build the app. ``config`` defaults to the environment; ``db`` lets tests inject one."""
    config = config or Config.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["webhook_service"] = build_services(config, db)

    from .routes import health, sync, webhooks

    app.register_blueprint(webhooks.bp)
    app.register_blueprint(sync.bp)
    app.register_blueprint(health.bp)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)

    from .cli import register_commands

    register_commands(app)
    return app


def _http_error(exc: HTTPException) -> tuple[Any, int]:
    """Every HTTP error as a short JSON body, never an HTML page."""
    return jsonify(error=(exc.name or "error").lower(), detail=exc.description), exc.code or 500


def _unexpected_error(exc: Exception) -> tuple[Any, int]:
    log.exception("unhandled error")
    return jsonify(error="internal error"), 500
