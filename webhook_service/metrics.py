"""Prometheus metrics, correct under several gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set (the gunicorn config sets it), every worker
writes its samples to files there, and one listener of the gunicorn master (``serve``, on
``METRICS_ADDR``, loopback by default) aggregates them on each scrape: the whole service,
never on the public port, which carries only webhooks, sync and the probes.
"""

from __future__ import annotations

import functools
import os
import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
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
    "clerk_api_requests_total",
    "Answers from Clerk's Backend API by HTTP status and by who called (sync or reconcile)",
    ["status", "caller"],
)
# "max" across every worker file, dead ones included: a worker restarted by gunicorn keeps
# its file (mark_process_dead removes only live* files), so the newest delivery of any
# worker since the service started is kept. "livemax" would forget it when that worker
# exits. 0 until the first delivery since the service (not a worker) started.
LAST_DELIVERY = Gauge(
    "clerk_webhook_last_delivery_timestamp_seconds",
    "Unix time of the last verified delivery, any outcome (0: none since the service started)",
    multiprocess_mode="max",
)
# "min" across every process file, dead ones included: about when the service started (the
# gunicorn master imports this module before forking). Lets the "no deliveries" alert count
# from the start while the service has had none. Every process writes 0 for it on its first
# metric update, which would win "min", so each one sets it: here, and in ``Metrics()``,
# which every worker builds in create_app after the fork.
STARTED = Gauge(
    "clerk_webhook_started_timestamp_seconds",
    "Unix time the service started (its earliest process since the metrics directory was made)",
    multiprocess_mode="min",
)
SYNC_REQUESTS = Counter("clerk_user_sync_requests_total", "POST /api/users/sync by status", ["status"])
# The watcher (watch/): what it repaired that a delivery should have done, when its last
# pass succeeded, and how far the local count is from Clerk's.
REPAIRS = Counter(
    "clerk_sync_repairs_total",
    "Records the watcher repaired because no delivery did: kind is created, updated or deleted",
    ["resource", "kind"],
)
WATCH_LAST_SUCCESS = Gauge(
    "clerk_sync_watch_last_success_timestamp_seconds",
    "Unix time of the watcher's last successful pass (0: none since the service started)",
    multiprocess_mode="max",
)
WATCH_INTERVAL = Gauge(
    "clerk_sync_watch_interval_seconds",
    "Seconds between the watcher's passes (WATCH_INTERVAL_S; 0: the watcher is off)",
    multiprocess_mode="max",
)
DRIFT = Gauge(
    "clerk_sync_drift",
    "Local records minus Clerk's count at the last pass; what a deletion walk left unexplained stays here",
    ["resource"],
    multiprocess_mode="mostrecent",
)
STARTED.set(time.time())


# The values of ``caller``: who asked Clerk. Anything else is counted as "other".
CALLERS = frozenset(("sync", "reconcile", "watch"))


class Metrics:
    """The few things the service counts, behind names that read well at call sites."""

    def __init__(self) -> None:
        STARTED.set(time.time())
        self._last_delivery_set = 0.0

    def delivery(self, event_type: str | None, outcome: str, seconds: float) -> None:
        _deliveries(event_type, outcome).inc()
        DURATION.observe(seconds)
        now = time.time()
        if now - self._last_delivery_set >= 1.0:  # the alert counts hours; once a second will do
            LAST_DELIVERY.set(now)
            self._last_delivery_set = now

    def signature_rejected(self) -> None:
        SIGNATURE_REJECTIONS.inc()

    def db_error(self) -> None:
        DB_ERRORS.inc()

    def index_conflict(self, index: str) -> None:
        INDEX_CONFLICTS.labels(index=index[:64]).inc()

    def clerk_call(self, status: int | str, caller: str = "sync") -> None:
        """One answer from Clerk; ``caller`` is ``reconcile`` or ``watch`` from those."""
        CLERK_API_CALLS.labels(status=str(status), caller=caller if caller in CALLERS else "other").inc()

    def sync(self, status: int) -> None:
        SYNC_REQUESTS.labels(status=str(status)).inc()

    def watch_interval(self, seconds: float) -> None:
        WATCH_INTERVAL.set(seconds)

    def repaired(self, resource: str, kind: str) -> None:
        REPAIRS.labels(resource=resource, kind=kind).inc()

    def watch_succeeded(self) -> None:
        WATCH_LAST_SUCCESS.set(time.time())

    def drift(self, resource: str, records: int) -> None:
        DRIFT.labels(resource=resource).set(records)


@functools.lru_cache(maxsize=512)
def _deliveries(event_type: str | None, outcome: str) -> Counter:
    """The labelled child, looked up once: ``labels()`` costs more than ``inc()`` itself."""
    return DELIVERIES.labels(type=_event_label(event_type), outcome=outcome)


def _event_label(event_type: str | None) -> str:
    """Bound the label's cardinality: Clerk's event types, never arbitrary text."""
    if not event_type:
        return "none"
    plain = event_type.replace(".", "").replace("_", "")
    return event_type if len(event_type) <= 64 and plain.isalnum() else "other"


def registry() -> CollectorRegistry:
    """What a scrape reads: every worker's files when multiprocess, else this process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        aggregate = CollectorRegistry()
        multiprocess.MultiProcessCollector(aggregate)  # type: ignore[no-untyped-call]
        return aggregate
    from prometheus_client import REGISTRY

    return REGISTRY


def serve(host: str, port: int) -> None:
    """Serve ``/metrics`` on ``host:port`` from a thread of this process (the gunicorn
    master, once for the whole service). Raises OSError when the address is taken."""
    start_http_server(port, addr=host, registry=registry())
