"""DELETE_CASCADE: a deleted user's posts, comments, likes and notifications go, and
nothing of anyone else's; each rule is one command; an interrupted cascade is finished
by the retry of the deletion."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import httpx
import pytest
from bson import ObjectId
from pymongo import MongoClient

from tests.fake_clerk import make_clerk_user, make_deleted_data, make_webhook_event
from tests.helpers import WEBHOOK, deliver
from tests.processes import GunicornService
from tests.signing import TEST_SECRET, signed_headers
from webhook_service import Config, ConfigError
from webhook_service.domain import parse_cascade_rules

XCLONE = (
    "posts.user:delete,comments.user:delete,notifications.from:delete,notifications.to:delete,"
    "posts.likes:pull,comments.likes:pull"
)


def seed_app_data(db, a: ObjectId, b: ObjectId, a_clerk_id: str, copies: int = 1) -> None:
    """xClone's other collections: A and B post, comment on each other, like, notify."""
    for _ in range(copies):
        db.posts.insert_many([
            {"user": a, "content": "by A", "likes": [b]},
            {"user": b, "content": "by B", "likes": [a, b]},
        ])
        db.comments.insert_many([
            {"user": a, "content": "A on B", "likes": [b, a]},
            {"user": b, "content": "B on A", "likes": [a]},
        ])
        db.notifications.insert_many([
            {"from": a, "to": b, "type": "like"},
            {"from": b, "to": a, "type": "follow"},
            {"from": b, "to": b, "type": "self"},
        ])
    db.bookmarks.insert_one({"owner": a_clerk_id, "post": "p1"})
    db.bookmarks.insert_one({"owner": "user_other", "post": "p2"})


def two_users(client, db) -> tuple[dict[str, Any], dict[str, Any]]:
    a = make_clerk_user(seed="cascade-a", email="a.cascade@example.com")
    b = make_clerk_user(seed="cascade-b", email="b.cascade@example.com")
    for user in (a, b):
        assert deliver(client, "user.created", user) == "applied"
    return db.users.find_one({"clerkId": a["id"]}), db.users.find_one({"clerkId": b["id"]})


def snapshot(db) -> dict[str, list[dict[str, Any]]]:
    return {
        name: sorted((dict(doc, _id=None) for doc in db[name].find()), key=repr)
        for name in ("posts", "comments", "notifications", "bookmarks")
    }


@pytest.fixture
def app(make_app):
    return make_app(delete_cascade=parse_cascade_rules(XCLONE + ",bookmarks.owner:unset"))


def test_the_cascade_removes_exactly_the_deleted_users_content(client, db):
    a, b = two_users(client, db)
    seed_app_data(db, a["_id"], b["_id"], a["clerkId"])

    assert deliver(client, "user.deleted", make_deleted_data(a["clerkId"])) == "deleted"

    assert snapshot(db) == {
        "posts": [{"_id": None, "user": b["_id"], "content": "by B", "likes": [b["_id"]]}],
        "comments": [{"_id": None, "user": b["_id"], "content": "B on A", "likes": []}],
        "notifications": [{"_id": None, "from": b["_id"], "to": b["_id"], "type": "self"}],
        "bookmarks": sorted(
            [{"_id": None, "owner": None, "post": "p1"}, {"_id": None, "owner": "user_other", "post": "p2"}],
            key=repr,
        ),
    }
    assert db.users.find_one({"clerkId": a["clerkId"]}) is None
    assert db.users.find_one({"clerkId": b["clerkId"]}) is not None


def test_a_repeated_deletion_is_a_duplicate_and_changes_nothing(client, db):
    a, b = two_users(client, db)
    seed_app_data(db, a["_id"], b["_id"], a["clerkId"])
    assert deliver(client, "user.deleted", make_deleted_data(a["clerkId"])) == "deleted"
    after = snapshot(db)

    assert deliver(client, "user.deleted", make_deleted_data(a["clerkId"])) == "duplicate"
    assert snapshot(db) == after


def test_a_deletion_before_the_user_was_ever_stored_cascades_by_clerk_id(client, db):
    db.bookmarks.insert_one({"owner": "user_never_stored", "post": "p9"})

    assert deliver(client, "user.deleted", make_deleted_data("user_never_stored")) == "deleted"

    assert db.bookmarks.find_one({"post": "p9"})["owner"] is None


@pytest.mark.parametrize(
    "rule",
    ["posts.user", "posts:delete", "posts.user:drop", ".user:delete", "posts.:delete", "events.x:delete",
     "users.x:delete", "posts.$x:delete", "posts.us er:delete"],
)
def test_a_malformed_rule_is_a_config_error_naming_it(rule):
    env = {
        "MONGODB_URI": "mongodb://localhost/x",
        "CLERK_WEBHOOK_SIGNING_SECRET": TEST_SECRET,
        "DELETE_CASCADE": f"posts.user:delete,{rule}",
    }
    with pytest.raises(ConfigError) as raised:
        Config.from_env(env)
    assert str(raised.value).startswith("DELETE_CASCADE: rule ") and repr(rule) in str(raised.value)


def test_xclones_value_parses_to_six_rules():
    rules = parse_cascade_rules(XCLONE)
    assert (rules[0].collection, rules[0].field, rules[0].action) == ("posts", "user", "delete")
    assert (rules[4].collection, rules[4].field, rules[4].action) == ("posts", "likes", "pull")
    assert len(rules) == 6


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_cascade_interrupted_by_a_killed_worker_is_finished_by_the_redelivery(mongo_server, mongo_uri):
    if not mongo_server.can_restart:
        pytest.skip("freezes the test database server")
    copies = 1500
    a = make_clerk_user(seed="cascade-kill-a", email="a.kill@example.com")
    b = make_clerk_user(seed="cascade-kill-b", email="b.kill@example.com")
    client = MongoClient(mongo_uri)
    db = client.get_default_database()
    with GunicornService(mongo_uri, workers=1, env={"DELETE_CASCADE": XCLONE}) as service:
        for user in (a, b):
            body = json.dumps(make_webhook_event("user.created", user))
            response = httpx.post(service.url + WEBHOOK, content=body, headers=signed_headers(body))
            assert response.status_code == 200
        a_doc, b_doc = (db.users.find_one({"clerkId": u["id"]}) for u in (a, b))
        seed_app_data(db, a_doc["_id"], b_doc["_id"], a["id"], copies=copies)
        deletion = json.dumps(make_webhook_event("user.deleted", make_deleted_data(a["id"])))
        svix_id = "msg_cascade_kill_0000000000000"
        [worker] = service.worker_pids()
        answer: dict[str, Any] = {}

        def send() -> None:
            try:
                answer["status"] = httpx.post(
                    service.url + WEBHOOK, content=deletion, headers=signed_headers(deletion, msg_id=svix_id),
                    timeout=30,
                ).status_code
            except httpx.HTTPError as exc:
                answer["error"] = type(exc).__name__

        sender = threading.Thread(target=send)
        sender.start()
        deadline = time.monotonic() + 20
        while db.posts.count_documents({"user": a_doc["_id"]}) == copies and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(mongo_server.process.pid, signal.SIGSTOP)  # the cascade is under way: freeze it
        try:
            os.kill(worker, signal.SIGKILL)
        finally:
            os.kill(mongo_server.process.pid, signal.SIGCONT)
        sender.join(30)
        service.wait_for_workers(exclude={worker})
        time.sleep(0.5)
        interrupted = db.users.find_one({"clerkId": a["id"]}) is not None
        started = db.posts.count_documents({"user": a_doc["_id"]}) < copies
        left = db.notifications.count_documents({"from": a_doc["_id"]})

        headers = signed_headers(deletion, msg_id=svix_id)
        redelivered = httpx.post(service.url + WEBHOOK, content=deletion, headers=headers, timeout=30)

    assert "status" not in answer, f"the killed worker answered: {answer}"
    assert started and interrupted and left > 0, "precondition: the worker died mid-cascade"
    assert redelivered.status_code == 200 and redelivered.json() == {"outcome": "deleted"}
    assert db.users.find_one({"clerkId": a["id"]}) is None
    references = (("posts", "user"), ("comments", "user"), ("notifications", "from"), ("notifications", "to"))
    for name, field in references:
        assert db[name].count_documents({field: a_doc["_id"]}) == 0, name
    assert db.posts.count_documents({"likes": a_doc["_id"]}) == 0
    assert db.posts.count_documents({"user": b_doc["_id"]}) == copies
    assert db.comments.count_documents({"user": b_doc["_id"]}) == copies
    assert db.notifications.count_documents({"from": b_doc["_id"], "to": b_doc["_id"]}) == copies
    client.close()
