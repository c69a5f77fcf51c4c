"""Everything a request or command needs, built once per app (and so once per worker).

Routes and commands reach it through ``current_services()``; only ``create_app`` builds it.
Keeping it here, not in ``app.py``, lets the routes and the CLI import it without
importing the module that imports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app
from pymongo.database import Database

from .clerk_api import ClerkAPI
from .config import Config
from .deliveries import DeliveryHandler
from .metrics import Metrics
from .signatures import WebhookVerifier
from .store import EventLog, UserStore, connect
from .sync import UserSync
from .tokens import JwksCache, SessionTokenVerifier

EXTENSION = "webhook_service"


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
    services: Services = current_app.extensions[EXTENSION]
    return services


def build_services(config: Config, db: Database[Any] | None = None) -> Services:
    db = db if db is not None else connect(config.mongodb_uri, timeout_ms=config.db_timeout_ms)
    metrics = Metrics()
    store = UserStore(db, fields=config.user_fields, cascade=config.delete_cascade)
    events = EventLog(db, retention_days=config.event_retention_days, fields=config.user_fields)
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
