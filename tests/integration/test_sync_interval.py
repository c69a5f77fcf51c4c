"""SYNC_MIN_INTERVAL_S: at most one Clerk call per user per interval, counted at the fake.

Clerk's rate limit is shared by the whole app (100 requests per 10 s on a development
instance), so a client that retries, or several screens syncing at once, must not spend
it. Every count below is of the requests the fake Clerk received.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.fake_clerk import make_clerk_user
from tests.support.helpers import newer, post_sync, user_requests
from webhook_service.config import Config, ConfigError

INTERVAL_S = 10
QUICK_SYNCS = 13


@pytest.fixture
def app(build_app):
    return build_app(sync_min_interval_s=INTERVAL_S, clerk_retry_budget_ms=0)


@pytest.fixture
def user(fake_clerk) -> dict[str, Any]:
    return fake_clerk.add_user(
        make_clerk_user(seed="sync-interval", email="ivy@example.com", first_name="Ivy")
    )


def concurrent_syncs(app, user_id: str, n: int) -> list[int]:
    """``n`` syncs of one user at once, each on its own client and thread; their statuses."""

    def one(_: int) -> int:
        return post_sync(app.test_client(), user_id).status_code

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def age_sync_stamp(db, user_id: str, seconds: float) -> None:
    """Move the user's last sync ``seconds`` into the past (as if that time had passed)."""
    stamp = datetime.now(UTC) - timedelta(seconds=seconds)
    db.users.update_one({"clerkId": user_id}, {"$set": {"clerkSyncedAt": stamp}})


def test_thirteen_quick_syncs_of_one_user_cost_one_clerk_call(client, db, fake_clerk, user):
    statuses = [post_sync(client, user["id"]).status_code for _ in range(QUICK_SYNCS)]

    assert statuses == [201] + [200] * (QUICK_SYNCS - 1)
    assert len(user_requests(fake_clerk, user["id"])) == 1
    assert db.users.count_documents({"clerkId": user["id"]}) == 1


def test_within_the_interval_the_stored_document_is_returned(client, db, fake_clerk, user):
    first = post_sync(client, user["id"]).get_json()
    fake_clerk.add_user(newer(user, 1000, first_name="Iris"))

    again = post_sync(client, user["id"])

    assert again.status_code == 200
    assert again.get_json() == first
    assert again.get_json()["firstName"] == "Ivy"
    assert len(user_requests(fake_clerk, user["id"])) == 1


def test_after_the_interval_the_next_sync_pulls_from_clerk_again(client, db, fake_clerk, user):
    post_sync(client, user["id"])
    fake_clerk.add_user(newer(user, 1000, first_name="Iris"))
    age_sync_stamp(db, user["id"], INTERVAL_S + 1)

    again = post_sync(client, user["id"])

    assert again.status_code == 200
    assert again.get_json()["firstName"] == "Iris"
    assert db.users.find_one({"clerkId": user["id"]})["firstName"] == "Iris"
    assert len(user_requests(fake_clerk, user["id"])) == 2


def test_concurrent_first_syncs_in_a_worker_share_one_clerk_call(app, db, fake_clerk, user):
    fake_clerk.delay_next(QUICK_SYNCS, 0.3, path_prefix="/v1/users/")

    statuses = concurrent_syncs(app, user["id"], QUICK_SYNCS)

    assert sorted(statuses) == [200] * statuses.count(200) + [201] * statuses.count(201)
    assert statuses.count(201) >= 1
    assert len(user_requests(fake_clerk, user["id"])) == 1
    assert db.users.count_documents({"clerkId": user["id"]}) == 1


def test_concurrent_syncs_of_a_stored_user_cost_one_call(app, db, fake_clerk, user):
    post_sync(app.test_client(), user["id"])
    age_sync_stamp(db, user["id"], INTERVAL_S + 1)
    fake_clerk.add_user(newer(user, 1000, first_name="Iris"))
    fake_clerk.delay_next(QUICK_SYNCS, 0.3, path_prefix="/v1/users/")

    statuses = concurrent_syncs(app, user["id"], QUICK_SYNCS)

    assert statuses == [200] * QUICK_SYNCS
    assert len(user_requests(fake_clerk, user["id"])) == 2
    assert db.users.find_one({"clerkId": user["id"]})["firstName"] == "Iris"


@pytest.mark.parametrize(("failure", "answer"), [(503, 502), (429, 503)])
def test_a_failed_sync_does_not_start_the_interval(client, db, fake_clerk, user, failure, answer):
    post_sync(client, user["id"])
    age_sync_stamp(db, user["id"], INTERVAL_S + 1)
    fake_clerk.add_user(newer(user, 1000, first_name="Iris"))
    fake_clerk.fail_next(1, failure, path_prefix="/v1/users/")

    failed = post_sync(client, user["id"])
    retried = post_sync(client, user["id"])

    assert failed.status_code == answer
    assert "Retry-After" in failed.headers
    assert retried.status_code == 200
    assert retried.get_json()["firstName"] == "Iris"
    assert len(user_requests(fake_clerk, user["id"])) == 3


def test_a_failed_first_sync_leaves_nothing_behind(client, db, fake_clerk, user):
    fake_clerk.fail_next(1, 503, path_prefix="/v1/users/")

    assert post_sync(client, user["id"]).status_code == 502
    assert db.users.count_documents({}) == 0
    assert post_sync(client, user["id"]).status_code == 201


def test_a_stamp_from_a_clock_far_ahead_does_not_block_syncs(client, db, fake_clerk, user):
    post_sync(client, user["id"])
    age_sync_stamp(db, user["id"], -3600)  # written by an instance whose clock runs an hour fast
    fake_clerk.add_user(newer(user, 1000, first_name="Iris"))

    assert post_sync(client, user["id"]).get_json()["firstName"] == "Iris"


def test_a_user_deleted_in_clerk_is_404_once_the_interval_has_passed(client, db, fake_clerk, user):
    post_sync(client, user["id"])
    fake_clerk.remove_user(user["id"])
    assert post_sync(client, user["id"]).status_code == 200  # inside the interval: the stored copy
    age_sync_stamp(db, user["id"], INTERVAL_S + 1)

    assert post_sync(client, user["id"]).status_code == 404
    assert db.users.count_documents({"clerkId": user["id"]}) == 0


def test_interval_zero_pulls_every_time(build_app, fake_clerk, user):
    client = build_app(sync_min_interval_s=0).test_client()

    for _ in range(3):
        post_sync(client, user["id"])

    assert len(user_requests(fake_clerk, user["id"])) == 3


def test_the_interval_is_logged_as_a_recent_outcome(client, fake_clerk, user, caplog):
    caplog.set_level("INFO", logger="webhook_service.sync")
    post_sync(client, user["id"])
    post_sync(client, user["id"])

    outcomes = [r.getMessage() for r in caplog.records if r.name == "webhook_service.sync"]
    assert outcomes == [f"sync user={user['id']} outcome=created", f"sync user={user['id']} outcome=recent"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("-1", "SYNC_MIN_INTERVAL_S must be between 0 (off) and 86400 seconds"),
        ("ten", "SYNC_MIN_INTERVAL_S must be a number, got 'ten'"),
        ("100000", "SYNC_MIN_INTERVAL_S must be between 0 (off) and 86400 seconds"),
    ],
)
def test_a_bad_interval_is_a_config_error_naming_it(raw, message):
    env = {
        "MONGODB_URI": "mongodb://127.0.0.1/x",
        "CLERK_WEBHOOK_SIGNING_SECRET": "whsec_" + "A" * 32,
        "SYNC_MIN_INTERVAL_S": raw,
    }
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        Config.from_env(env)


def test_the_default_interval_is_ten_seconds():
    env = {"MONGODB_URI": "mongodb://127.0.0.1/x", "CLERK_WEBHOOK_SIGNING_SECRET": "whsec_" + "A" * 32}
    assert Config.from_env(env).sync_min_interval_s == 10.0


def test_two_instances_syncing_a_stored_user_at_once_cost_one_call(build_app, db, fake_clerk, user):
    """The interval is claimed on the document, so it holds across instances (each app here
    has its own database client and its own in-worker sharing), not only across threads."""
    instances = [build_app(sync_min_interval_s=INTERVAL_S) for _ in range(2)]
    post_sync(instances[0].test_client(), user["id"])
    age_sync_stamp(db, user["id"], INTERVAL_S + 1)
    fake_clerk.add_user(newer(user, 1000, first_name="Iris"))
    fake_clerk.delay_next(QUICK_SYNCS, 0.3, path_prefix="/v1/users/")

    def one(i: int) -> int:
        return post_sync(instances[i % 2].test_client(), user["id"]).status_code

    with ThreadPoolExecutor(max_workers=QUICK_SYNCS) as pool:
        statuses = list(pool.map(one, range(QUICK_SYNCS)))

    assert statuses == [200] * QUICK_SYNCS
    assert len(user_requests(fake_clerk, user["id"])) == 2
    assert db.users.find_one({"clerkId": user["id"]})["firstName"] == "Iris"
