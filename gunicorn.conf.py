"""gunicorn settings, read automatically from the working directory.

The configuration is checked in the master before any worker forks, so a missing
variable stops the service at once with one line naming it, not a crash loop.
"""

import logging
import os
import sys
import tempfile

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = None
# gunicorn 27's control socket lives at one path per user; two instances on a host
# would fight over it, and this service has no use for it.
control_socket_disable = True

# Metrics from every worker are aggregated through files in this directory.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="clerk-webhook-metrics-")


def on_starting(server):
    from webhook_service.config import Config, ConfigError

    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    # One warning line per index that contradicts the service, and per index a DELETE_CASCADE
    # rule lacks, once for the whole service.
    from webhook_service.catalog import service_schema
    from webhook_service.logs import configure_logging
    from webhook_service.store.indexes import warn_about_conflicts
    from webhook_service.store.mongo import connect

    configure_logging(config.log_format)
    _serve_metrics(config.metrics_addr)
    root = logging.getLogger("webhook_service")
    if not config.clerk_secret_key:
        root.warning(
            "CLERK_SECRET_KEY is not set: POST /api/users/sync will answer 503, and the watcher is off"
        )
    elif config.watch_off_reason is not None:
        root.warning("the watcher is off: %s", config.watch_off_reason)
    else:
        root.info(
            "the watcher is on: a pass every %g s by one worker of one instance (its lease is in the "
            "watch collection)",
            config.watch_interval_s,
        )
    db = connect(config.mongodb_uri, timeout_ms=config.db_timeout_ms)
    warn_about_conflicts(db, service_schema(config.declared))
    db.client.close()


def _serve_metrics(address):
    """One /metrics listener for the whole service, in the master: it aggregates every
    worker's files, and a scrape never waits behind webhook traffic."""
    if address is None:
        return
    from webhook_service import metrics

    host, port = address
    try:
        metrics.serve(host, port)
    except OSError as exc:
        print(
            f"configuration error: METRICS_ADDR {host}:{port} cannot be served ({exc.strerror}); "
            "set METRICS_ADDR to a free host:port, or off",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
    logging.getLogger("webhook_service").info("metrics on http://%s:%d/metrics", host, port)


def post_worker_init(worker):
    """Start the watcher in the worker, after the fork (see webhook_service/watch/watcher.py):
    one thread per worker, of which the lease's holder runs the passes."""
    watcher = _watcher_of(worker)
    if watcher is not None:
        watcher.start()


def worker_exit(server, worker):
    """A graceful stop gives the watcher's lease up at once."""
    watcher = _watcher_of(worker)
    if watcher is not None:
        watcher.stop()


def _watcher_of(worker):
    app = getattr(worker, "wsgi", None)
    services = getattr(app, "extensions", {}).get("webhook_service")
    return getattr(services, "watcher", None)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
