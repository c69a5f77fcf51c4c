"""Everything a request or command needs, built once per app (and so once per worker).

Routes and commands reach it through ``current_services()``; only ``create_app`` builds it.
Keeping it here, not in ``app.py``, lets the routes and the CLI import it without
importing the module that imports them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from flask import current_app
from pymongo.database import Database

from .catalog import build_event_log, build_stores, build_watcher, service_schema
from .clerk_api import ClerkAPI
from .config import Config
from .deliveries import DeliveryHandler
from .dispatch import Stores
from .metrics import Metrics
from .resources.memberships.clerk import MembershipSource
from .resources.users.clerk import UserSource
from .signatures import WebhookVerifier
from .store.eventlog import EventLog
from .store.indexes import IndexGate
from .store.mongo import connect
from .sync import UserSync
from .sync.memberships import MembershipRefresh
from .tokens import JwksCache, SessionTokenVerifier
from .watch.watcher import Watcher

EXTENSION = "webhook_service"


@dataclass
class Services:
    """Everything a request needs, built once per app (and so once per worker)."""

    config: Config
    db: Database[Any]
    indexes: IndexGate
    stores: Stores
    events: EventLog
    verifier: WebhookVerifier
    tokens: SessionTokenVerifier
    clerk: ClerkAPI | None
    sync: UserSync | None
    metrics: Metrics
    deliveries: DeliveryHandler
    watcher: Watcher | None = None  # started in each gunicorn worker (gunicorn.conf.py)


def current_services() -> Services:
    """The services of the app handling this request or command (needs an app context)."""
    services: Services = current_app.extensions[EXTENSION]
    return services


def build_services(config: Config, db: Database[Any] | None = None) -> Services:
    db = db if db is not None else connect(config.mongodb_uri, timeout_ms=config.db_timeout_ms)
    metrics = Metrics()
    indexes = IndexGate(db, service_schema(config.declared))
    stores = build_stores(db, config.declared, indexes)
    events = build_event_log(db, indexes, retention_days=config.event_retention_days)
    clerk = None
    jwks = None
    sync = None
    if config.clerk_secret_key:
        clerk = ClerkAPI(
            config.clerk_secret_key,
            config.clerk_server_url,
            timeout_ms=config.clerk_timeout_ms,
            retry_budget_ms=config.clerk_retry_budget_ms,
            on_status=metrics.clerk_call,
        )
        jwks = JwksCache(config.clerk_api_url, config.clerk_secret_key)
        source = UserSource(clerk, config.user_fields)
        memberships = None
        if stores.memberships is not None:
            member_source = MembershipSource(clerk, stores.memberships.memberships)
            memberships = MembershipRefresh(stores.memberships, member_source)
        sync = UserSync(
            stores.users, source, min_interval_s=config.sync_min_interval_s, memberships=memberships
        )
    watcher = None
    if config.watch_off_reason is None:
        watcher = build_watcher(
            db, stores, watch_client(config, metrics), interval_s=config.watch_interval_s, metrics=metrics
        )
    metrics.watch_interval(config.watch_interval_s if watcher is not None else 0)
    tokens = SessionTokenVerifier(
        jwt_key=config.clerk_jwt_key,
        authorized_parties=config.authorized_parties,
        require_azp=config.require_azp,
        jwks=jwks,
    )
    return Services(
        config=config,
        db=db,
        indexes=indexes,
        stores=stores,
        events=events,
        verifier=WebhookVerifier(config.webhook_signing_secret),
        tokens=tokens,
        clerk=clerk,
        sync=sync,
        metrics=metrics,
        deliveries=DeliveryHandler(stores, events, metrics),
        watcher=watcher,
    )


def watch_client(config: Config, metrics: Metrics) -> ClerkAPI:
    """The watcher's own Clerk client: paced to ``WATCH_MAX_RPS``."""
    return batch_client(config, metrics, "watch", retry_budget_ms=30_000, max_rps=config.watch_max_rps)


def batch_client(
    config: Config, metrics: Metrics, caller: str, *, retry_budget_ms: int, max_rps: float
) -> ClerkAPI:
    """A Clerk client for work that walks lists (reconcile, the watcher): paced to
    ``max_rps`` (Clerk's rate limit is the whole app's), waiting out a 429's ``Retry-After``
    (up to 30 s) and retrying 5xx within its budget. Its answers are counted as ``caller``'s."""
    return ClerkAPI(
        config.clerk_secret_key or "",
        config.clerk_server_url,
        timeout_ms=10_000,
        retry_budget_ms=retry_budget_ms,
        retry_statuses=("429", "5XX"),
        max_retry_after_s=30.0,
        max_rps=max_rps,
        on_status=functools.partial(metrics.clerk_call, caller=caller),
    )
