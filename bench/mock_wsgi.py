"""The service and the baseline over mongomock, for gunicorn: the same HTTP stack, no server.

    gunicorn 'bench.mock_wsgi:service()' ...   # create_app(config, db=<mongomock db>)
    gunicorn 'bench.mock_wsgi:baseline()' ...

gunicorn.conf.py does not preload the app, so each worker builds its own in-memory
database: with several workers each sees only the deliveries it handled. The harness
runs one worker here, so every delivery meets the state the ones before it left, as
with a real server. CPU figures then include mongomock's own work, in the worker.
"""

from __future__ import annotations

from contextlib import ExitStack

import mongomock
from flask import Flask

_shims = ExitStack()


def _database():
    from bench.mockdb import indexed_mongomock

    _shims.enter_context(indexed_mongomock())  # for the life of the worker
    return mongomock.MongoClient(tz_aware=True).get_database("bench")


def service() -> Flask:
    from webhook_service.app import create_app
    from webhook_service.config import Config
    from webhook_service.logs import configure_logging

    config = Config.from_env()
    configure_logging(config.log_format)  # as wsgi.py does: the per-delivery log line counts
    return create_app(config, db=_database())


def baseline() -> Flask:
    from bench.baseline_app import create_app

    db = _database()
    # Its upsert by clerkId needs this index, as on a server. The service's other indexes
    # are left out: mongomock checks a partial unique index the baseline's documents
    # lack by a full scan on every write, which no server does.
    db.users.create_index("clerkId", unique=True)
    return create_app(db=db)
