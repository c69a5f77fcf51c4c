"""The watcher with deliveries switched off: two production-started instances (gunicorn,
two workers each, the watcher started in every worker after the fork) on one database,
the fake Clerk as Clerk's API, and no webhook sent at all.

Users created, updated and deleted in Clerk reach the database within two intervals; a
newer local version is never overwritten and a deleted user never recreated; the two
instances make one watcher's requests; Clerk's 429 and 5xx are survived; and a graceful
stop hands the lease over at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from tests.support.fake_clerk import FakeClerkAPI, make_clerk_user, make_deleted_data, make_webhook_event
from tests.support.helpers import WEBHOOK
from tests.support.processes import GunicornService
from tests.support.signing import signed_delivery

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

INTERVAL_S = 2.0
SLACK_S = 3.0  # a pass's own time, and two busy processes on two cores


def past(seconds: float) -> int:
    """A Clerk time: changes made while the services run are made now (``past(0)``), and
    were made before their first pass otherwise."""
    return int((time.time() - seconds) * 1000)


@pytest.fixture
def clerk() -> Iterator[FakeClerkAPI]:
    with FakeClerkAPI() as fake:
        yield fake


@pytest.fixture
def two(mongo_server, clerk) -> Iterator[tuple[GunicornService, GunicornService, Any]]:
    uri = mongo_server.uri(f"watch_{uuid.uuid4().hex[:10]}")
    settings = dict(
        clerk_secret_key=clerk.secret_key,
        clerk_api_url=clerk.url,
        env={"WATCH_INTERVAL_S": str(INTERVAL_S), "WATCH_MAX_RPS": "0"},
    )
    with (
        GunicornService(uri, **settings) as one,
        GunicornService(uri, **settings) as other,
        MongoClient(uri, serverSelectionTimeoutMS=5000) as client,
    ):
        yield one, other, client.get_default_database()


def within(seconds: float, done: Callable[[], bool]) -> float:
    """Poll ``done`` until it holds; the seconds it took (fails after ``seconds``)."""
    began = time.monotonic()
    while not done():
        assert time.monotonic() - began < seconds, f"not within {seconds:.0f} s"
        time.sleep(0.1)
    return time.monotonic() - began


def doc(db, user_id: str) -> dict[str, Any] | None:
    return db.users.find_one({"clerkId": user_id})


def test_changes_in_clerk_reach_the_database_within_two_intervals_with_no_delivery(two, clerk):
    one, other, db = two
    people = [
        clerk.add_user(make_clerk_user(f"user_2e2e{i}", created_at=past(600), updated_at=past(0)))
        for i in range(3)
    ]
    within(3 * INTERVAL_S + SLACK_S, lambda: db.users.count_documents({}) == 3)  # the first passes

    fresh = clerk.add_user(make_clerk_user("user_2e2enew", created_at=past(0), updated_at=past(0)))
    clerk.add_user(dict(people[0], first_name="Changed", updated_at=past(0)))
    clerk.remove_user(people[1]["id"])
    took = within(
        2 * INTERVAL_S + SLACK_S,
        lambda: (
            doc(db, fresh["id"]) is not None
            and doc(db, people[0]["id"])["firstName"] == "Changed"
            and doc(db, people[1]["id"]) is None
        ),
    )
    print(f"\nwatcher: created, updated and deleted in Clerk, right in the database after {took:.1f} s")
    assert db.deleted_users.find_one({"_id": people[1]["id"]}) is not None
    logs = one.logs() + other.logs()
    assert f"watch repaired user {fresh['id']}: missed its creation" in logs
    assert f"watch repaired user {people[1]['id']}: missed its deletion (Clerk no longer has it)" in logs
    assert "the watcher is on: a pass every 2 s" in logs


def test_two_instances_make_one_watchers_requests_and_a_quiet_pass_costs_two(two, clerk):
    one, other, db = two
    clerk.add_user(make_clerk_user("user_2quiet", created_at=past(600), updated_at=past(0)))
    within(3 * INTERVAL_S + SLACK_S, lambda: db.users.count_documents({}) == 1)
    clerk.clear_requests()
    window = 5 * INTERVAL_S
    time.sleep(window)
    counts = clerk.request_count("/v1/users/count")
    pages = clerk.request_count("/v1/users") - counts
    print(f"\nwatcher: {counts} passes in {window:.0f} s by two instances, four workers")
    assert 2 <= counts <= window / INTERVAL_S + 1  # one watcher's passes, not four's
    assert pages == counts  # a quiet pass: one page and one count


def test_a_newer_local_version_and_a_deletion_stand(two, clerk):
    one, other, db = two
    older = clerk.add_user(
        make_clerk_user("user_2kept", created_at=past(600), updated_at=past(0), first_name="Old")
    )
    gone = clerk.add_user(make_clerk_user("user_2gone", created_at=past(600), updated_at=past(0)))
    for event_type, data in (
        ("user.created", dict(older, first_name="Newer", updated_at=older["updated_at"] + 30_000)),
        ("user.deleted", make_deleted_data(gone["id"])),
    ):
        body, headers = signed_delivery(make_webhook_event(event_type, data))
        assert httpx.post(one.url + WEBHOOK, content=body, headers=headers, timeout=10).status_code == 200
    time.sleep(2 * INTERVAL_S + SLACK_S)  # passes ran, Clerk still lists both as they were
    assert doc(db, older["id"])["firstName"] == "Newer"
    assert doc(db, gone["id"]) is None


def test_clerks_429_and_5xx_are_survived(two, clerk):
    one, other, db = two
    clerk.fail_next(2, 503, path_prefix="/v1/users")
    clerk.fail_next(1, 429, retry_after=0.5, path_prefix="/v1/users")
    missed = clerk.add_user(make_clerk_user("user_2fault", created_at=past(600), updated_at=past(0)))
    within(3 * INTERVAL_S + SLACK_S, lambda: doc(db, missed["id"]) is not None)
    assert {r.path for r in clerk.requests} >= {"/v1/users", "/v1/users/count"}


def test_a_graceful_stop_hands_the_lease_over_at_once(two, clerk):
    one, other, db = two
    within(3 * INTERVAL_S + SLACK_S, lambda: db["watch"].find_one({"_id": "lease"}) is not None)
    holder = db["watch"].find_one({"_id": "lease"})["holder"]
    pid = int(holder.split(":")[1])
    stopping, staying = (one, other) if pid in one.worker_pids() else (other, one)
    assert pid in stopping.worker_pids()
    stopping.stop()
    # Released at stop, not left to lapse (its lease lasts three intervals): the other takes it
    # on its next tick.
    took = within(INTERVAL_S + SLACK_S, lambda: _held_by(db, staying))
    print(f"\nwatcher: the lease changed hands {took:.1f} s after a graceful stop")


def _held_by(db, service: GunicornService) -> bool:
    lease = db["watch"].find_one({"_id": "lease"})
    return lease is not None and int(lease["holder"].split(":")[1]) in service.worker_pids()
