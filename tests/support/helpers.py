"""Plain helpers shared by several test files (the fixtures are in conftest.py).

Clerk-shaped data (``clerk_user``, ``newer``, ids), delivering a signed webhook through a
Flask test client, the usual assertions on a user document and on a CLI error, a legacy
(pre-service) user document, the test database server going away for a while, and
waiting for a started server's readiness probe.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from click.testing import Result
from prometheus_client import make_wsgi_app
from pymongo import MongoClient
from werkzeug.test import Client

from tests.support.fake_clerk import FakeClerkAPI, clerk_id, make_clerk_user, make_webhook_event
from tests.support.signing import signed_delivery
from tests.support.stores import xclone_user
from tests.support.tokens_util import bearer, mint_token
from webhook_service import metrics

WEBHOOK = "/api/webhooks/clerk"
SYNC = "/api/users/sync"
T0 = 1_735_000_000_000  # a Clerk updated_at in ms


# -- Clerk-shaped data ------------------------------------------------------------------


def new_id() -> str:
    """A fresh Clerk user id."""
    return clerk_id("user")


def msg_id() -> str:
    """A fresh svix-id (delivery id)."""
    return f"msg_{uuid.uuid4().hex[:27]}"


def clerk_user(user_id: str, version: int, **kwargs: Any) -> dict[str, Any]:
    """A complete Clerk User whose ``updated_at`` is ``T0 + version``."""
    kwargs.setdefault("created_at", T0)
    return make_clerk_user(user_id, updated_at=T0 + version, **kwargs)


def newer(user: dict[str, Any], ms: int, **changes: Any) -> dict[str, Any]:
    """The same Clerk user, edited ``ms`` later (earlier if negative)."""
    return dict(user, updated_at=user["updated_at"] + ms, **changes)


def legacy_user_doc(user_id: str, follower: Any) -> dict[str, Any]:
    """A ``users`` document as written before this service: no version, no bookkeeping."""
    return {
        "clerkId": user_id,
        "email": "old@example.com",
        "firstName": "Old",
        "lastName": "Name",
        "username": "oldname",
        "profilePicture": "",
        "bio": "legacy bio",
        "bannerImage": "",
        "location": "Paris",
        "followers": [follower],
        "following": [],
    }


# -- the webhook route -------------------------------------------------------------------


def deliver(client, event_type: str, data: dict[str, Any]) -> str:
    """Post a correctly signed delivery; return the outcome the service answered."""
    body, headers = signed_delivery(make_webhook_event(event_type, data))
    response = client.post(WEBHOOK, data=body, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["outcome"]


# -- assertions ------------------------------------------------------------------------------

# Every field of a user document the service writes, and nothing else (reconcile adds
# ``reconcileRun``): no bookkeeping is left behind on a document.
USER_DOC_FIELDS = frozenset(
    ("_id", "clerkId", "email", "firstName", "lastName", "username", "profilePicture", "banned", "locked")
    + ("usernameLower", "usernameSource", "clerkUpdatedAt", "lastDeliveryId", "updatedAt", "createdAt")
    + ("bannerImage", "bio", "location", "followers", "following")
)


def assert_matches_clerk(doc: dict[str, Any] | None, data: dict[str, Any]) -> None:
    """The Clerk-owned fields of ``doc`` equal what ``data`` (a Clerk User) maps to."""
    assert doc is not None, f"no document for {data['id']}"
    expected = xclone_user(data)
    assert expected.username is not None and expected.username_source is not None
    assert doc["clerkId"] == expected.clerk_id
    for name in ("email", "firstName", "lastName", "profilePicture", "banned", "locked"):
        assert doc[name] == expected.values[name], name
    assert doc["username"] == expected.username
    assert doc["usernameLower"] == expected.username.lower()
    assert doc["usernameSource"] == expected.username_source.value
    assert doc["clerkUpdatedAt"] == data["updated_at"]


def one_line_error(result: Result) -> str:
    """A CLI run that failed through click (no traceback) with exactly one ``Error:`` line;
    returns that line."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    return errors[0]


# -- the test database server ---------------------------------------------------------------


@contextmanager
def fresh_database(mongo_server, prefix: str = "t") -> Iterator[str]:
    """The URI of a new database on the test server; the database is dropped on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        yield mongo_server.uri(name)
    finally:
        try:
            with MongoClient(mongo_server.uri("admin"), serverSelectionTimeoutMS=2000) as client:
                client.drop_database(name)
        except Exception:
            pass  # the server may have been stopped by the test


@contextmanager
def database_down(mongo_server) -> Iterator[None]:
    """The server process is gone: a request waits in server selection, then fails.
    The server is session-scoped, so it is always brought back."""
    mongo_server.kill()
    try:
        yield
    finally:
        mongo_server.start()


# -- POST /api/users/sync ----------------------------------------------------------------


def post_sync(client, user_id: str | None = None, *, token: str | None = None, headers=None):
    """POST /api/users/sync with a valid token for ``user_id`` unless told otherwise."""
    if headers is None:
        headers = {"Authorization": bearer(token or mint_token(sub=user_id))}
    response = client.post(SYNC, headers=headers)
    assert "Traceback" not in response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    return response


def user_requests(fake_clerk: FakeClerkAPI, user_id: str) -> list:
    """The requests the fake received for this one user (``GET /v1/users/{id}``)."""
    return [r for r in fake_clerk.requests if r.path == f"/v1/users/{user_id}"]


# -- servers -----------------------------------------------------------------------------


def wait_until_ready(
    url: str, timeout_s: float, *, request_timeout_s: float = 5.0, alive: Callable[[], bool] = lambda: True
) -> bool:
    """Poll ``url + "/readyz"`` until it answers 200 (True), or until ``timeout_s`` passed
    or ``alive()`` turned false (False)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        try:
            if httpx.get(url + "/readyz", timeout=request_timeout_s).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def metrics_text() -> str:
    """A scrape of the metrics listener's app (what ``metrics.serve`` answers), in process."""
    response = Client(make_wsgi_app(metrics.registry())).get("/metrics")
    assert response.status_code == 200
    return response.get_data(as_text=True)


# -- faults, as MongoDB's driver tests make them -------------------------------------------

SERVICE_APP_NAME = "clerk-webhook-service"  # the service's client appname (store/mongo.py)


@contextmanager
def fail_point(uri: str, mode: Any, **data: Any) -> Iterator[None]:
    """``configureFailPoint failCommand`` for the service's own connections only (by
    appName), switched off again on the way out."""
    with MongoClient(uri, serverSelectionTimeoutMS=3000) as client:
        data = {"appName": SERVICE_APP_NAME, **data}
        client.admin.command({"configureFailPoint": "failCommand", "mode": mode, "data": data})
        try:
            yield
        finally:
            client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
