"""Faults injected into production-started services while they work.

- the database is killed in the middle of a storm, then restarted on the same storage:
  nothing is acknowledged while it is down, readiness says so, nothing is lost;
- Clerk's API fails, hangs or rate-limits during POST /api/users/sync: the route
  answers 502/503 promptly and writes nothing, then syncs once Clerk is back;
- a gunicorn worker is SIGKILLed with a delivery in flight: the client never sees a
  2xx, and Svix's redelivery applies the event;
- workers are SIGKILLed at random moments of a storm on both instances: every
  acknowledged delivery is in the database and the end state equals Clerk's.

Storm sizes: ``FAULT_DELIVERIES`` (default 1500 sends per storm, duplicates included).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from pymongo import MongoClient

from tests.support.fake_clerk import FakeClerkAPI, make_clerk_user, make_deleted_data, make_webhook_event
from tests.support.helpers import USER_DOC_FIELDS, database_down, wait_until_ready
from tests.support.processes import GunicornService
from tests.support.signing import signed_headers
from tests.support.storm import (
    WEBHOOK,
    Storm,
    assert_converged,
    assert_only_retryable_failures,
    compare_with_clerk,
    events_for,
    storm_history,
)
from tests.support.tokens_util import bearer, instance_keys, mint_token

pytestmark = pytest.mark.slow

FAULT_DELIVERIES = int(os.environ.get("FAULT_DELIVERIES", "1500"))
SYNC = "/api/users/sync"
OUTAGE_S = 3.0  # the database stays down at least this long
PRODUCT_BOUND_S = 10.0  # a sync answer, even with Clerk failing, comes well inside this


def needs_restartable(mongo_server) -> None:
    if not mongo_server.can_restart:
        pytest.skip("TEST_MONGODB_URI is set: the test cannot stop and restart that server")


def fresh_uri(mongo_server, prefix: str) -> str:
    return mongo_server.uri(f"{prefix}_{uuid.uuid4().hex[:10]}")


def deliver_until_acknowledged(url: str, body: str, svix_id: str, attempts: int = 60) -> httpx.Response:
    """Svix's retry: the same svix-id, signed afresh, until a 2xx (bounded)."""
    last: object = None
    for _ in range(attempts):
        try:
            response = httpx.post(
                url + WEBHOOK, content=body, headers=signed_headers(body, msg_id=svix_id), timeout=15.0
            )
            if response.is_success:
                return response
            last = response.status_code
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.2)
    raise AssertionError(f"delivery {svix_id} never acknowledged; last answer {last}")


def user_doc(uri: str, clerk_id: str) -> dict | None:
    with MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
        return client.get_default_database().users.find_one({"clerkId": clerk_id})


def wait_ready(service: GunicornService, timeout_s: float = 20.0) -> None:
    if not wait_until_ready(service.url, timeout_s):
        raise AssertionError(f"{service.url} not ready again:\n{service.logs()[-3000:]}")


# -- the database dies mid-storm ---------------------------------------------------------------


@pytest.mark.timeout(240)
def test_database_killed_mid_storm_acknowledges_nothing_and_loses_nothing(mongo_server):
    needs_restartable(mongo_server)
    uri = fresh_uri(mongo_server, "dbkill")
    history, deliveries = storm_history(events_for(FAULT_DELIVERIES), seed=2)
    probes: list[tuple[str, str, int]] = []
    with GunicornService(uri, workers=2, db_timeout_ms=1500) as one, GunicornService(
        uri, workers=2, db_timeout_ms=1500
    ) as two:
        storm = Storm(deliveries, [one.url, two.url], max_attempts=200).start()
        try:
            storm.wait_started(len(deliveries) // 3)
            mongo_server.kill()
            down_since = time.monotonic()
            with httpx.Client(timeout=15.0) as http:
                for service in (one, two):
                    for path in ("/readyz", "/healthz"):
                        probes.append((service.url, path, http.get(service.url + path).status_code))
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_since)))
            down_until = time.monotonic()
        finally:
            mongo_server.start()  # same port and storage path: the data is still there
        storm.join()
        for service in (one, two):
            wait_ready(service)

        during = [a for a in storm.attempts if a.started >= down_since and a.ended <= down_until]
        acknowledged_while_down = [a for a in during if a.ok]
        problems, lost = compare_with_clerk(
            "db-kill",
            history,
            storm,
            uri,
            faults=1,
            outage_s=round(down_until - down_since, 1),
            attempts_while_down=len(during),
            **{"2xx_while_down": len(acknowledged_while_down)},
        )
        assert during, "no delivery was attempted while the database was down"
        assert not acknowledged_while_down, acknowledged_while_down[:5]
        for url, path, status in probes:
            expected = 503 if path == "/readyz" else 200
            assert status == expected, f"{url}{path} answered {status} while the database was down"
        assert_only_retryable_failures(storm)
        assert_converged(storm, problems)
        assert not lost, lost[:20]


# -- Clerk's API fails during sync ------------------------------------------------------------


def _fail(fake: FakeClerkAPI) -> None:
    fake.fail_next(10_000, 500, path_prefix="/v1/users")


def _rate_limit(fake: FakeClerkAPI) -> None:
    fake.fail_next(10_000, 429, retry_after=1, path_prefix="/v1/users")


def _hang(fake: FakeClerkAPI) -> None:
    fake.delay_next(10_000, 3.0, path_prefix="/v1/users")  # past CLERK_TIMEOUT_MS on every try


def _down(fake: FakeClerkAPI) -> None:
    fake.set_down(True)


CLERK_FAULTS = {"500": _fail, "429": _rate_limit, "timeout": _hang, "down": _down}


@pytest.mark.timeout(120)
def test_sync_answers_promptly_and_writes_nothing_while_clerk_fails(mongo_server):
    uri = fresh_uri(mongo_server, "syncfault")
    user = make_clerk_user(seed="sync-faults", email="ken.thompson@example.com", username="ken")
    keys = instance_keys()
    answers: list[tuple[str, int, float]] = []
    with FakeClerkAPI(users=[user]) as fake, GunicornService(
        uri,
        workers=1,
        clerk_secret_key=fake.secret_key,
        clerk_api_url=fake.url,
        clerk_jwt_key=keys.public_pem,
        env={"CLERK_TIMEOUT_MS": "500", "CLERK_RETRY_BUDGET_MS": "1000"},
    ) as service, httpx.Client(base_url=service.url, timeout=30.0) as http:

        def sync() -> httpx.Response:
            return http.post(SYNC, headers={"Authorization": bearer(mint_token(keys, sub=user["id"]))})

        for name, inject in CLERK_FAULTS.items():
            fake.reset_faults()
            inject(fake)
            for _ in range(2):
                calls_before = fake.request_count(f"/v1/users/{user['id']}")
                started = time.monotonic()
                response = sync()
                elapsed = time.monotonic() - started
                answers.append((name, response.status_code, round(elapsed, 2)))
                assert response.status_code in (502, 503), (name, response.status_code, response.text)
                assert response.json()["error"] == "Clerk API unavailable", (name, response.text)
                assert fake.request_count(f"/v1/users/{user['id']}") > calls_before, name
                assert elapsed < PRODUCT_BOUND_S, (name, elapsed)
                assert user_doc(uri, user["id"]) is None, f"sync wrote a user while Clerk failed ({name})"
        fake.reset_faults()
        created = sync()
        refreshed = sync()

    print(f"\nsync-faults: faults={len(CLERK_FAULTS)} answers={answers}")
    assert created.status_code == 201, created.text
    assert refreshed.status_code == 200, refreshed.text
    doc = user_doc(uri, user["id"])
    assert doc is not None
    expected = {
        "clerkId": user["id"],
        "email": "ken.thompson@example.com",
        "firstName": user["first_name"],
        "lastName": user["last_name"],
        "username": "ken",
        "profilePicture": user["image_url"],
        "clerkUpdatedAt": user["updated_at"],
    }
    assert {k: doc.get(k) for k in expected} == expected
    assert {k: refreshed.json()[k] for k in ("clerkId", "email", "username")} == {
        "clerkId": user["id"],
        "email": "ken.thompson@example.com",
        "username": "ken",
    }


# -- a worker dies with a delivery in flight ---------------------------------------------------


@contextmanager
def database_hung(mongo_server) -> Iterator[None]:
    """The server process is frozen (SIGSTOP): a command sent to it waits for an answer.
    It resumes afterwards and may then carry out a write whose sender has died."""
    os.kill(mongo_server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(mongo_server.process.pid, signal.SIGCONT)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stall", [database_down, database_hung], ids=["db-down", "db-hung"])
def test_worker_killed_mid_request_never_acknowledges_and_redelivery_applies(mongo_server, stall):
    needs_restartable(mongo_server)
    uri = fresh_uri(mongo_server, "workerkill")
    user = make_clerk_user(seed=f"worker-kill-{stall.__name__}", email="linus@example.com", username="linus")
    body = json.dumps(make_webhook_event("user.created", user))
    svix_id = f"msg_{uuid.uuid4().hex[:27]}"

    with GunicornService(uri, workers=1, db_timeout_ms=5000) as service:
        warm_up(service)
        [worker] = service.worker_pids()
        with stall(mongo_server):
            sender, outcome = send_in_background(service.url, body, svix_id)
            sender.join(1.0)  # the delivery is now waiting on the database inside the worker
            assert sender.is_alive(), f"the delivery was answered before the kill: {outcome}"
            os.kill(worker, signal.SIGKILL)
            sender.join(15.0)
            service.wait_for_workers(exclude={worker})
        redelivered = deliver_until_acknowledged(service.url, body, svix_id)
        logs = service.logs()

    print(f"\nworker-kill ({stall.__name__}): faults=1 first={outcome} redelivery={redelivered.json()}")
    # The kill cut the request: no HTTP answer at all, so certainly no 2xx.
    assert "status" not in outcome and outcome.get("error"), outcome
    assert f"(pid:{worker}) was sent SIGKILL" in logs
    # A hung database may still carry out the dead worker's write when it resumes: the
    # redelivery is then a duplicate. Either way the user is there, exactly once.
    assert redelivered.json()["outcome"] in ("applied", "duplicate")
    doc = user_doc(uri, user["id"])
    assert doc is not None
    assert (doc["email"], doc["username"], doc["clerkUpdatedAt"]) == (
        "linus@example.com",
        "linus",
        user["updated_at"],
    )
    assert set(doc) == USER_DOC_FIELDS


def warm_up(service: GunicornService, deliveries: int = 8) -> None:
    """Concurrent deliveries so the worker has created its indexes and holds several open
    database connections: a delivery sent afterwards goes straight to its write on an
    idle connection, rather than opening one (a handshake a frozen database never answers)."""
    bodies = [
        json.dumps(make_webhook_event("user.created", make_clerk_user(seed=f"warm-up-{uuid.uuid4()}")))
        for _ in range(deliveries)
    ]
    threads = [
        threading.Thread(target=deliver_until_acknowledged, args=(service.url, body, f"msg_warm_{i}"))
        for i, body in enumerate(bodies)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    time.sleep(1.2)  # the event log's background writer has flushed and given its connection back


def send_in_background(url: str, body: str, svix_id: str) -> tuple[threading.Thread, dict[str, object]]:
    """POST a delivery from a thread; the dict gets ``status`` or ``error`` when it ends."""
    outcome: dict[str, object] = {}

    def send() -> None:
        try:
            response = httpx.post(
                url + WEBHOOK, content=body, headers=signed_headers(body, msg_id=svix_id), timeout=30.0
            )
            outcome["status"] = response.status_code
        except httpx.HTTPError as exc:
            outcome["error"] = type(exc).__name__

    thread = threading.Thread(target=send)
    thread.start()
    return thread, outcome


@pytest.mark.timeout(120)
def test_worker_killed_after_its_insert_landed_does_not_bring_back_a_deleted_user(mongo_server):
    """Svix does not keep order: the deletion is applied first, then the creation comes.
    Its worker dies after sending the insert and before checking for a tombstone; the
    frozen database carries the insert out when it resumes. Svix redelivers the
    creation: the user must stay deleted."""
    needs_restartable(mongo_server)
    uri = fresh_uri(mongo_server, "resurrect")
    user = make_clerk_user(seed="resurrect", email="dennis@example.com")
    created = json.dumps(make_webhook_event("user.created", user))
    deleted = json.dumps(make_webhook_event("user.deleted", make_deleted_data(user["id"])))
    svix_id = f"msg_{uuid.uuid4().hex[:27]}"

    with GunicornService(uri, workers=1, db_timeout_ms=5000) as service:
        first = deliver_until_acknowledged(service.url, deleted, f"msg_{uuid.uuid4().hex[:27]}")
        assert first.json()["outcome"] == "deleted"
        warm_up(service)
        [worker] = service.worker_pids()
        with database_hung(mongo_server):
            sender, outcome = send_in_background(service.url, created, svix_id)
            sender.join(1.0)  # the insert is now sent, its answer awaited
            assert sender.is_alive(), f"the delivery was answered before the kill: {outcome}"
            os.kill(worker, signal.SIGKILL)
            sender.join(15.0)
            service.wait_for_workers(exclude={worker})
        landed = wait_for_doc(uri, user["id"])
        redelivered = deliver_until_acknowledged(service.url, created, svix_id)

    print(f"\nresurrect: faults=1 first={outcome} insert_landed={landed} redelivery={redelivered.json()}")
    assert "status" not in outcome and outcome.get("error"), outcome
    assert landed, "precondition: the resumed database carried out the dead worker's insert"
    assert user_doc(uri, user["id"]) is None, "a deleted user came back"
    with MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
        assert client.get_default_database().deleted_users.find_one({"_id": user["id"]}) is not None


def wait_for_doc(uri: str, clerk_id: str, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if user_doc(uri, clerk_id) is not None:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.timeout(240)
def test_workers_killed_at_random_during_a_storm_lose_no_acknowledged_delivery(mongo_server):
    uri = fresh_uri(mongo_server, "stormkill")
    history, deliveries = storm_history(events_for(FAULT_DELIVERIES), seed=3)
    rng = random.Random(3)
    kills_per_instance = 3
    killed: dict[int, list[int]] = {0: [], 1: []}
    with GunicornService(uri, workers=2) as one, GunicornService(uri, workers=2) as two:
        services = (one, two)
        moments = sorted(
            (int(len(deliveries) * rng.uniform(0.1, 0.9)), instance)
            for instance in (0, 1)
            for _ in range(kills_per_instance)
        )
        storm = Storm(deliveries, [one.url, two.url]).start()
        for moment, instance in moments:
            storm.wait_started(moment)
            service = services[instance]
            victim = rng.choice(service.wait_for_workers(exclude=set(killed[instance])))
            os.kill(victim, signal.SIGKILL)
            killed[instance].append(victim)
        storm.join()
        for instance, service in enumerate(services):
            service.wait_for_workers(exclude=set(killed[instance]))
        logs = [service.logs() for service in services]

        cut = sum(1 for a in storm.attempts if a.status is None)
        problems, lost = compare_with_clerk(
            "worker-kills", history, storm, uri, faults=sum(map(len, killed.values())), cut_requests=cut
        )
        for instance, pids in killed.items():
            for pid in pids:
                assert f"(pid:{pid}) was sent SIGKILL" in logs[instance]
        assert not lost, lost[:20]
        assert_converged(storm, problems)
        assert_only_retryable_failures(storm)
