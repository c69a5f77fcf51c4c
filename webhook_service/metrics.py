"""Prometheus metrics, correct under several gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (the gunicorn config sets it), every worker
writes its samples to files there and ``/metrics`` aggregates them, so a scrape sees
the whole service whichever worker answers it.
"""

from __future__ import annotations

import functools
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

DELIVERIES = Counter(
    "clerk_webhook_deliveries_total", "Verified deliveries by event type and outcome", ["type", "outcome"]
)
DURATION = Histogram(
    "clerk_webhook_handling_seconds",
    "Time to handle a verified delivery",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
SIGNATURE_REJECTIONS = Counter(
    "clerk_webhook_signature_rejections_total", "Deliveries rejected for a bad signature"
)
DB_ERRORS = Counter("clerk_webhook_db_errors_total", "Database operations that failed")
INDEX_CONFLICTS = Counter(
    "clerk_webhook_index_conflicts_total",
    "Writes refused by a unique index the service does not own (fix: init-db --migrate)",
    ["index"],
)
CLERK_API_CALLS = Counter(
    "clerk_api_requests_total", "Calls to Clerk's Backend API by HTTP status", ["status"]
)
SYNC_REQUESTS = Counter("clerk_user_sync_requests_total", "POST /api/users/sync by status", ["status"])


class Metrics:
    """The few things the service counts, behind names that read well at call sites."""

    def delivery(self, event_type: str | None, outcome: str, seconds: float) -> None:
        _deliveries(_event_label(event_type), outcome).inc()
        DURATION.observe(seconds)

    def signature_rejected(self) -> None:
        SIGNATURE_REJECTIONS.inc()

    def db_error(self) -> None:
        DB_ERRORS.inc()

    def index_conflict(self, index: str) -> None:
        INDEX_CONFLICTS.labels(index=index[:64]).inc()

    def clerk_call(self, status: int | str) -> None:
        CLERK_API_CALLS.labels(status=str(status)).inc()

    def sync(self, status: int) -> None:
        SYNC_REQUESTS.labels(status=str(status)).inc()


@functools.lru_cache(maxsize=512)
def _deliveries(event_type: str, outcome: str) -> Counter:
    """The labelled child, looked up once: ``labels()`` costs more than ``inc()`` itself."""
    return DELIVERIES.labels(type=event_type, outcome=outcome)


def _event_label(event_type: str | None) -> str:
    """Bound the label's cardinality: Clerk's event types, never arbitrary text."""
    if not event_type:
        return "none"
    plain = event_type.replace(".", "").replace("_", "")
    return event_type if len(event_type) <= 64 and plain.isalnum() else "other"


def render() -> tuple[bytes, str]:
    """The exposition text for ``/metrics``, aggregated across workers when multiprocess."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
