"""Primary stepdowns and lost replies, as a replica set gives them, during a delivery storm.

Made the way MongoDB's own driver tests make them, on the test server:
``replSetStepDown`` with ``force`` (a secondary for a few seconds: writes fail with "not
primary"), and ``configureFailPoint failCommand`` on the service's connections only:
``closeConnection`` (the reply never comes), ``writeConcernError`` (the write ran, the reply
says it is not majority-durable: what the client of a lost reply faces) and
``blockConnection`` past ``DB_TIMEOUT_MS`` (a hung primary).

Each storm (tests/reliability/test_storm.Storm: duplicates, shuffled, retried until a 2xx like Svix)
runs against the service as production starts it, with xClone's DELETE_CASCADE rules, so
every write path meets the fault: the user upsert (``update``), the tombstone
(``findAndModify``), the follow lists and cascade pulls (``update``), the document and
cascade deletions (``delete``) and the event log's batches (``insert``). Each ends with:
no 2xx for a write that was not majority-acknowledged, no 5xx but 503, every user as
Clerk has it, no acknowledged delivery lost, and one event record per delivery, neither
missing nor doubled.

Where pymongo's retryable writes retry for us (a closed connection on a single-document
write or an insert batch), the storm shows the retry harmless: the filter the retry runs
is the one the first attempt would have, and the event log's record is keyed by delivery.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from tests.support.helpers import fail_point
from tests.support.processes import GunicornService
from tests.support.storm import (
    Storm,
    assert_converged,
    assert_only_retryable_failures,
    compare_with_clerk,
    events_for,
    storm_history,
)

pytestmark = pytest.mark.slow

DELIVERIES = int(os.environ.get("STEPDOWN_DELIVERIES", "200"))
DB_TIMEOUT_MS = 1500
XCLONE_CASCADE = (
    "posts.user:delete,comments.user:delete,notifications.from:delete,notifications.to:delete,"
    "posts.likes:pull,comments.likes:pull"
)
WRITE_CONCERN_ERROR = {
    "code": 64,
    "codeName": "WriteConcernFailed",
    "errmsg": "waiting for replication timed out",
    "errInfo": {"wtimeout": True},
}
# name: (failCommand mode, data). Each acts on about a tenth of the storm's commands.
FAULTS: dict[str, tuple[Any, dict[str, Any]]] = {
    "close-update": ({"times": 25}, {"failCommands": ["update"], "closeConnection": True}),
    "close-findAndModify": ({"times": 8}, {"failCommands": ["findAndModify"], "closeConnection": True}),
    "close-delete": ({"times": 15}, {"failCommands": ["delete"], "closeConnection": True}),
    "close-insert": ({"times": 3}, {"failCommands": ["insert"], "closeConnection": True}),
    "wce-update": ({"times": 25}, {"failCommands": ["update"], "writeConcernError": WRITE_CONCERN_ERROR}),
    "wce-findAndModify": (
        {"times": 8},
        {"failCommands": ["findAndModify"], "writeConcernError": WRITE_CONCERN_ERROR},
    ),
    "wce-delete": ({"times": 15}, {"failCommands": ["delete"], "writeConcernError": WRITE_CONCERN_ERROR}),
    "wce-insert": ({"times": 3}, {"failCommands": ["insert"], "writeConcernError": WRITE_CONCERN_ERROR}),
    "block-update": (
        {"times": 4},
        {"failCommands": ["update"], "blockConnection": True, "blockTimeMS": DB_TIMEOUT_MS + 1000},
    ),
}


def event_records(uri: str, delivery_ids: set[str], timeout_s: float = 15.0) -> dict[str, int]:
    """Event records per delivery id, once the service's background writer has caught up."""
    deadline = time.monotonic() + timeout_s
    with MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
        events = client.get_default_database().events
        while True:
            found = [d["_id"] for d in events.find({"_id": {"$in": list(delivery_ids)}}, {"_id": 1})]
            if len(set(found)) == len(delivery_ids) or time.monotonic() > deadline:
                return {i: found.count(i) for i in delivery_ids}
            time.sleep(0.2)


def run_storm(mongo_server, label: str, inject) -> tuple[Storm, str, str]:
    """A storm against one service (2 workers), with ``inject(uri)`` (a context manager)
    in force from a tenth of the way in to nine tenths; returns the storm, the database and
    the logs."""
    uri = mongo_server.uri(f"{label.replace('-', '_')}_{uuid.uuid4().hex[:8]}")
    # Many deletions (a third of the users), so the tombstone and cascade paths meet the fault.
    history, deliveries = storm_history(
        events_for(DELIVERIES), seed=sum(map(ord, label)), delete_percent=5.0, events_per_user=6
    )
    env = {"DELETE_CASCADE": XCLONE_CASCADE}
    with GunicornService(uri, workers=2, db_timeout_ms=DB_TIMEOUT_MS, env=env) as service:
        assert httpx.get(service.url + "/readyz", timeout=10).status_code == 200  # indexes made
        storm = Storm(deliveries, [service.url], threads=8, max_attempts=200).start()
        storm.wait_started(len(deliveries) // 10)
        with inject(uri):
            storm.wait_started(9 * len(deliveries) // 10)
        storm.join()
        problems, lost = compare_with_clerk(label, history, storm, uri)
        records = event_records(uri, {d.msg_id for d in deliveries})
        logs = service.logs()
    assert_converged(storm, problems)
    assert not lost, lost[:20]
    assert_only_retryable_failures(storm)
    assert {n for n in records.values()} == {1}, {i: n for i, n in records.items() if n != 1}
    assert "Traceback" not in logs
    return storm, uri, logs


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_storm_through_lost_replies_and_hung_commands_converges(mongo_server, fault):
    mode, data = FAULTS[fault]

    def inject(uri: str):
        return fail_point(uri, mode, **data)

    storm, _, logs = run_storm(mongo_server, fault, inject)

    refused = [line for line in logs.splitlines() if " status=503 " in line]
    if fault.startswith("wce-") and data["failCommands"] != ["insert"]:
        # The write ran but is not majority-durable: never a 2xx for it, and the retry is a 2xx.
        concern = [line for line in logs.splitlines() if "error=database error: WTimeoutError" in line]
        assert concern and all(" status=503 " in line for line in concern), concern[:3]
        assert len(storm.failures()) >= len(concern)
    if fault.startswith("close-"):
        # pymongo retries a single-document write or an insert batch once; a second closed
        # connection in a row (or a multi-document write) reaches the service: 503, and Svix's
        # retry applies it. tests/reliability/test_lost_replies.py shows the single retry alone.
        met = [line for line in logs.splitlines() if "AutoReconnect" in line]
        reconnects = [line for line in met if "webhook_service.delivery" in line]
        assert all(" status=503 " in line for line in reconnects), reconnects[:5]
        # The event log's writer meets the fault too (a redelivery's record is an upsert, an
        # update): it keeps the batch and tries again, and the one record per delivery above
        # shows the retry landed.
        writer = [line for line in met if "webhook_service.store.events" in line]
        assert all("event log write failed (AutoReconnect); retrying" in line for line in writer), writer[:5]
        assert len(reconnects) + len(writer) == len(met), met[:5]
    if fault == "block-update":
        assert refused, "a hung primary was never answered 503"
        slow = [a for a in storm.attempts if a.status == 503 and a.ended - a.started > 15.0]
        assert not slow, "a 503 came after Svix's 15 s timeout"


@pytest.mark.timeout(120)
def test_a_storm_through_a_primary_stepdown_converges(mongo_server):
    if not mongo_server.can_restart:
        pytest.skip("a stepdown of TEST_MONGODB_URI's server would disturb other users of it")

    def step_down(uri: str):
        class StepDown:
            def __enter__(self) -> None:
                with MongoClient(uri) as client:
                    client.admin.command({"replSetStepDown": 2, "force": True})
                time.sleep(2.5)

            def __exit__(self, *exc: object) -> None:
                pass

        return StepDown()

    storm, _, logs = run_storm(mongo_server, "stepdown", step_down)

    not_primary = [line for line in logs.splitlines() if "error=database error: NotPrimaryError" in line]
    assert not_primary, "no delivery met the stepdown"
    assert all(" status=503 " in line for line in not_primary)
    assert storm.answers().get("503", 0) >= len(not_primary)
