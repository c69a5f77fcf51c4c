from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import mongomock
import pytest
from flask import Flask

from tests.support.fake_clerk import FakeClerkAPI
from tests.support.helpers import fresh_database
from tests.support.mongo_server import MongoServer
from tests.support.mongomock_compat import patched_mongomock
from tests.support.signing import TEST_SECRET
from tests.support.stores import user_store
from tests.support.tokens_util import DEFAULT_AZP, instance_keys
from webhook_service.app import create_app
from webhook_service.config import Config


@pytest.fixture(scope="session")
def mongo_server():
    server = MongoServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def mongo_uri(mongo_server):
    """A fresh database on the real test server, dropped afterwards."""
    with fresh_database(mongo_server) as uri:
        yield uri


@pytest.fixture
def restartable(mongo_server):
    """The test server, for tests that stop it; skipped when it is not ours to stop."""
    if not mongo_server.can_restart:
        pytest.skip("needs a test database server the tests can stop (TEST_MONGODB_URI is set)")
    yield mongo_server
    mongo_server.start()  # a no-op unless a test left it stopped


def make_config(mongo_uri: str, **overrides) -> Config:
    values = dict(mongodb_uri=mongo_uri, webhook_signing_secret=TEST_SECRET, db_timeout_ms=3000)
    values.update(overrides)
    return Config(**values)


@pytest.fixture
def make_app(mongo_uri) -> Iterator[Callable[..., Flask]]:
    """Build apps as production does, from ``make_config(mongo_uri, **overrides)``.

    At teardown each app's event log is closed (flushed) and its database client closed.
    """
    built: list[Flask] = []

    def make(**overrides) -> Flask:
        app = create_app(make_config(mongo_uri, **overrides))
        built.append(app)
        return app

    yield make
    for app in built:
        services = app.extensions["webhook_service"]
        services.events.close()
        services.db.client.close()


@pytest.fixture
def app(make_app):
    """The app with the default test config; a test module overrides this fixture to change it."""
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def db(app):
    """The app's database handle, for asserting on documents."""
    return app.extensions["webhook_service"].db


def clerk_settings(fake: FakeClerkAPI) -> dict[str, Any]:
    """Config values that point an app's sync at ``fake``, with tokens from ``instance_keys()``."""
    return dict(
        clerk_api_url=fake.url,
        clerk_secret_key=fake.secret_key,
        clerk_jwt_key=instance_keys().public_pem,
        authorized_parties=(DEFAULT_AZP,),
        sync_min_interval_s=0,
    )


@pytest.fixture
def fake_clerk() -> Iterator[FakeClerkAPI]:
    """A running FakeClerkAPI whose JWKS serves the public half of ``instance_keys()``."""
    with FakeClerkAPI(jwks_public_key_pem=instance_keys().public_pem) as server:
        yield server


@pytest.fixture
def build_app(make_app, fake_clerk) -> Callable[..., Flask]:
    """Build an app wired to ``fake_clerk``, with small timeouts so failures answer fast.

    Syncs pull from Clerk every time (``sync_min_interval_s=0``) unless a test sets the
    interval; tests/integration/test_sync_interval.py covers it.
    """

    def build(**overrides: Any) -> Flask:
        values: dict[str, Any] = dict(
            clerk_settings(fake_clerk), clerk_timeout_ms=500, clerk_retry_budget_ms=100
        )
        values.update(overrides)
        return make_app(**values)

    return build


@pytest.fixture
def mongomock_compat():
    """mongomock with the two shims the store needs (see tests/support/mongomock_compat.py)."""
    with patched_mongomock():
        yield


@pytest.fixture
def mock_db(mongomock_compat):
    return mongomock.MongoClient().get_database("unit")


@pytest.fixture
def mock_store(mock_db):
    return user_store(mock_db)
