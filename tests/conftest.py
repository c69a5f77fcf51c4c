from __future__ import annotations

import uuid

import mongomock
import pytest
from pymongo import MongoClient

from tests.mongo_server import MongoServer
from tests.mongomock_compat import patched_mongomock
from tests.signing import TEST_SECRET
from webhook_service import Config, create_app
from webhook_service.store import UserStore


@pytest.fixture(scope="session")
def mongo_server():
    server = MongoServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def mongo_uri(mongo_server):
    """A fresh database on the real test server, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield mongo_server.uri(name)
    try:
        with MongoClient(mongo_server.uri("admin"), serverSelectionTimeoutMS=2000) as client:
            client.drop_database(name)
    except Exception:
        pass  # the server may have been stopped by the test


def make_config(mongo_uri: str, **overrides) -> Config:
    values = dict(mongodb_uri=mongo_uri, webhook_signing_secret=TEST_SECRET, db_timeout_ms=3000)
    values.update(overrides)
    return Config(**values)


@pytest.fixture
def app(mongo_uri):
    app = create_app(make_config(mongo_uri))
    yield app
    app.extensions["webhook_service"].events.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def db(app):
    """The app's database handle, for asserting on documents."""
    return app.extensions["webhook_service"].db


@pytest.fixture
def mongomock_compat():
    """mongomock with the two shims the store needs (see tests/mongomock_compat.py)."""
    with patched_mongomock():
        yield


@pytest.fixture
def mock_db(mongomock_compat):
    return mongomock.MongoClient().get_database("unit")


@pytest.fixture
def mock_store(mock_db):
    return UserStore(mock_db)
