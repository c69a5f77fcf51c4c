"""One lost reply at a time, on each caller: a webhook, the sync route and reconcile.

``failCommand`` on the service's connections (tests/support/helpers.fail_point): a closed
connection before the command runs, which pymongo's retryable writes retry once by
themselves, and a ``writeConcernError`` after it ran, which reaches the service: the write
landed but is not majority-durable, so the caller is told to retry (503, or a reconcile
that stops), and the retry is harmless. tests/reliability/test_stepdowns.py makes the same faults in
bulk, during storms.
"""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import MongoClient, WriteConcern, monitoring

from tests.conftest import make_config
from tests.support.fake_clerk import make_clerk_user, make_users, make_webhook_event
from tests.support.helpers import SERVICE_APP_NAME, WEBHOOK, fail_point, post_sync
from tests.support.signing import signed_delivery
from tests.support.stores import xclone_user
from webhook_service.app import create_app

WRITE_CONCERN_ERROR = {
    "code": 64,
    "codeName": "WriteConcernFailed",
    "errmsg": "waiting for replication timed out",
}


class Updates(monitoring.CommandListener):
    """The transaction number of each ``update`` command a client started."""

    def __init__(self) -> None:
        self.txn_numbers: list[Any] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "update":
            self.txn_numbers.append(event.command.get("txnNumber"))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def app(build_app):
    return build_app(clerk_retry_budget_ms=0)


def test_a_closed_connection_on_the_upsert_is_retried_by_pymongo_and_applies_once(mongo_uri) -> None:
    """The retry carries the first attempt's transaction number, and the filter it runs is
    the one the first would have: one document, one event record, one attempt."""
    listener = Updates()
    client: MongoClient[Any] = MongoClient(
        mongo_uri, appname=SERVICE_APP_NAME, event_listeners=[listener], tz_aware=True
    )
    app = create_app(make_config(mongo_uri), db=client.get_database(write_concern=WriteConcern(w="majority")))
    user = make_clerk_user(seed="lost-reply-retried")
    body, headers = signed_delivery(make_webhook_event("user.created", user))
    try:
        with fail_point(mongo_uri, {"times": 1}, failCommands=["update"], closeConnection=True):
            response = app.test_client().post(WEBHOOK, data=body, headers=headers)

        assert response.status_code == 200 and response.get_json() == {"outcome": "applied"}
        assert len(listener.txn_numbers) == 2, "pymongo did not retry the closed write"
        assert listener.txn_numbers[0] == listener.txn_numbers[1] is not None
        db = app.extensions["webhook_service"].db
        assert db.users.count_documents({"clerkId": user["id"]}) == 1
        app.extensions["webhook_service"].events.flush()
        assert db.events.find_one({"_id": headers["svix-id"]})["attempts"] == 1
    finally:
        app.extensions["webhook_service"].events.close()
        client.close()


def test_a_write_concern_error_on_a_delivery_is_503_and_its_redelivery_is_a_duplicate(
    app, client, db, mongo_uri
) -> None:
    user = make_clerk_user(seed="lost-reply-wce", first_name="Grace")
    body, headers = signed_delivery(make_webhook_event("user.created", user))

    with fail_point(mongo_uri, {"times": 1}, failCommands=["update"], writeConcernError=WRITE_CONCERN_ERROR):
        refused = client.post(WEBHOOK, data=body, headers=headers)
    redelivered = client.post(WEBHOOK, data=body, headers=headers)

    assert refused.status_code == 503 and refused.get_json()["error"] == "database unavailable"
    assert redelivered.status_code == 200 and redelivered.get_json() == {"outcome": "duplicate"}
    assert db.users.find_one({"clerkId": user["id"]})["firstName"] == "Grace"


def test_a_sync_whose_write_is_not_durable_is_503_then_syncs(app, client, db, fake_clerk, mongo_uri):
    user = fake_clerk.add_user(make_clerk_user(seed="lost-reply-sync", first_name="Alan"))

    with fail_point(mongo_uri, {"times": 1}, failCommands=["update"], writeConcernError=WRITE_CONCERN_ERROR):
        refused = post_sync(client, user["id"])
    retried = post_sync(client, user["id"])

    assert refused.status_code == 503 and "Retry-After" in refused.headers
    assert retried.status_code in (200, 201) and retried.get_json()["firstName"] == "Alan"
    assert db.users.count_documents({"clerkId": user["id"]}) == 1


def test_reconcile_through_lost_replies_stops_on_an_undurable_page_and_a_rerun_converges(
    app, db, fake_clerk, mongo_uri
) -> None:
    users = make_users(40, seed="lost-reply-reconcile")
    fake_clerk.users = users
    store = app.extensions["webhook_service"].stores.users
    store.insert_new([xclone_user(u) for u in users[:20]], {})  # half known locally, older
    fake_clerk.users = [dict(u, updated_at=u["updated_at"] + 1000, first_name="Renamed") for u in users]
    runner = app.test_cli_runner()

    with fail_point(mongo_uri, {"times": 1}, failCommands=["insert"], writeConcernError=WRITE_CONCERN_ERROR):
        stopped = runner.invoke(args=["reconcile", "--max-rps", "0"])
    with fail_point(mongo_uri, {"times": 1}, failCommands=["update"], closeConnection=True):
        rerun = runner.invoke(args=["reconcile", "--max-rps", "0"])

    assert stopped.exit_code == 1
    assert "reconcile stopped: bulk insert not acknowledged by a majority" in stopped.output
    assert "Rerunning is safe" in stopped.output
    assert rerun.exit_code == 0, rerun.output
    assert db.users.count_documents({}) == 40
    assert {d["firstName"] for d in db.users.find()} == {"Renamed"}
