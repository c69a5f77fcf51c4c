"""DELETE_CASCADE on the test database server: a deleted user's posts, comments, likes and
notifications go, and nothing of anyone else's; each rule is one command; an interrupted
cascade is finished by the retry of the deletion; init-db plans the indexes the rules need.

The rules' parsing is tested in tests/unit/test_delete_cascade.py, the start-up warning
under gunicorn in tests/e2e/test_delete_cascade.py, and a worker killed mid-cascade in
tests/reliability/test_delete_cascade.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from bson import ObjectId
from pymongo import MongoClient, monitoring
from pymongo.errors import AutoReconnect

from tests.support.fake_clerk import make_clerk_user, make_deleted_data
from tests.support.helpers import clerk_user, deliver, msg_id, new_id
from tests.support.stores import user_store, xclone_user
from tests.support.xclone import XCLONE_CASCADE, seed_app_data
from webhook_service.config import delete_cascade_rules
from webhook_service.events import Outcome
from webhook_service.resources.users.store import UserStore
from webhook_service.store.erasure import Eraser
from webhook_service.store.errors import StoreUnavailable


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
    return make_app(delete_cascade=delete_cascade_rules(XCLONE_CASCADE + ",bookmarks.owner:unset"))


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


# -- the store itself, on xClone-like data ---------------------------------------------------


class CommandLog(monitoring.CommandListener):
    """The write and read commands a client sent, as (command, collection)."""

    NAMES = frozenset(("find", "findAndModify", "update", "delete", "insert", "aggregate"))

    def __init__(self) -> None:
        self.commands: list[tuple[str, str]] = []

    def started(self, event) -> None:
        if event.command_name in self.NAMES:
            self.commands.append((event.command_name, event.command[event.command_name]))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


@pytest.fixture
def commands() -> CommandLog:
    return CommandLog()


@pytest.fixture
def store(mongo_uri, commands):
    client = MongoClient(mongo_uri, event_listeners=[commands])
    yield user_store(client.get_default_database(), cascade=delete_cascade_rules(XCLONE_CASCADE))
    client.close()


def store_xclone(store: UserStore) -> dict[str, Any]:
    """Users A and B stored through the store, following each other, and xClone's content:
    posts by each, comments by each on the other's post, likes (A's next to B's own),
    notifications both ways and B to itself, and one notification naming A by Clerk id."""
    ids = {"a": new_id(), "b": new_id()}
    for clerk in ids.values():
        written = store.upsert_if_newer(xclone_user(clerk_user(clerk, 1)), msg_id())
        assert written.outcome is Outcome.APPLIED
    a, b = (store.get(ids[k])["_id"] for k in ("a", "b"))
    store.documents.update_one({"_id": b}, {"$set": {"followers": [a], "following": [a]}})
    db = store.db
    post_a = db.posts.insert_one({"user": a, "content": "by A", "likes": [b]}).inserted_id
    post_b = db.posts.insert_one({"user": b, "content": "by B", "likes": [a, b]}).inserted_id
    db.comments.insert_many([
        {"user": a, "post": post_b, "content": "A on B", "likes": [b, a]},
        {"user": b, "post": post_a, "content": "B on A", "likes": [a, b]},
    ])
    db.notifications.insert_many([
        {"from": a, "to": b, "type": "like", "post": post_b},
        {"from": b, "to": a, "type": "comment", "post": post_a},
        {"from": b, "to": b, "type": "self"},
        {"from": ids["a"], "to": b, "type": "legacy"},  # A by Clerk id, not ObjectId
    ])
    return {"a": a, "b": b, "a_id": ids["a"], "b_id": ids["b"], "post_a": post_a, "post_b": post_b}


def content(db) -> dict[str, list[dict[str, Any]]]:
    return {
        "posts": list(db.posts.find({}, {"_id": 0}).sort("content", 1)),
        "comments": list(db.comments.find({}, {"_id": 0}).sort("content", 1)),
        "notifications": list(db.notifications.find({}, {"_id": 0}).sort("type", 1)),
    }


def expected_after_deleting_a(data: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    b = data["b"]
    return {
        "posts": [{"user": b, "content": "by B", "likes": [b]}],
        "comments": [{"user": b, "post": data["post_a"], "content": "B on A", "likes": [b]}],
        "notifications": [{"from": b, "to": b, "type": "self"}],
    }


def assert_a_fully_deleted(store: UserStore, data: dict[str, Any]) -> None:
    assert content(store.db) == expected_after_deleting_a(data)
    assert store.get(data["a_id"]) is None
    b_doc = store.get(data["b_id"])
    assert (b_doc["followers"], b_doc["following"]) == ([], [])
    assert store.tombstones.find_one({"_id": data["a_id"]})["objectIds"] == [data["a"]]


def test_store_delete_removes_exactly_a_s_content_and_leaves_b_s(store):
    data = store_xclone(store)

    assert store.delete(data["a_id"], msg_id()) is Outcome.DELETED

    assert_a_fully_deleted(store, data)
    assert store.db.posts.count_documents({}) == 1
    assert store.db.comments.count_documents({}) == 1
    assert store.db.notifications.count_documents({}) == 1


def test_each_rule_is_one_command_and_the_user_document_goes_last(store, commands):
    data = store_xclone(store)
    for _ in range(3):  # more documents per rule: still one command per rule
        store.db.posts.insert_one({"user": data["a"], "content": "more by A", "likes": []})
    commands.commands.clear()

    assert store.delete(data["a_id"], msg_id()) is Outcome.DELETED

    assert commands.commands == [
        ("find", "users"),
        ("findAndModify", "deleted_users"),
        ("update", "users"),  # followers, on its index
        ("update", "users"),  # following, on its index
        ("delete", "posts"),
        ("delete", "comments"),
        ("delete", "notifications"),
        ("delete", "notifications"),
        ("update", "posts"),
        ("update", "comments"),
        ("update", "events"),  # the event log's payloads
        ("delete", "users"),
    ]
    assert_a_fully_deleted(store, data)


def test_a_repeated_store_delete_is_a_duplicate_that_sends_no_write(store, commands):
    data = store_xclone(store)
    assert store.delete(data["a_id"], msg_id()) is Outcome.DELETED
    after = content(store.db)
    commands.commands.clear()

    assert store.delete(data["a_id"], msg_id()) is Outcome.DUPLICATE

    assert commands.commands == [("find", "users"), ("findAndModify", "deleted_users")]
    assert content(store.db) == after


def test_unset_sets_the_field_to_null_by_object_id_and_by_clerk_id(mongo_uri):
    client = MongoClient(mongo_uri)
    store = user_store(client.get_default_database(), cascade=delete_cascade_rules("users.referrer:unset"))
    a, b, c = new_id(), new_id(), new_id()
    for clerk in (a, b, c):
        store.upsert_if_newer(xclone_user(clerk_user(clerk, 1)), msg_id())
    a_oid = store.get(a)["_id"]
    store.documents.update_one({"clerkId": b}, {"$set": {"referrer": a_oid}})
    store.documents.update_one({"clerkId": c}, {"$set": {"referrer": a}})
    other = ObjectId()
    store.documents.update_one({"clerkId": a}, {"$set": {"referrer": other}})

    assert store.delete(a, msg_id()) is Outcome.DELETED

    assert store.get(b)["referrer"] is None and "referrer" in store.get(b)
    assert store.get(c)["referrer"] is None
    assert store.get(a) is None
    client.close()


class DiesOnThirdRule(Eraser):
    """A deletion whose worker dies (the database goes away) at the third rule, once."""

    died = False

    def _apply_cascade_rule(self, rule, references) -> None:
        if rule == self.erasure.cascade[2] and not self.died:
            self.died = True
            raise AutoReconnect("connection lost mid-cascade")
        super()._apply_cascade_rule(rule, references)


def test_a_cascade_interrupted_at_the_third_rule_is_finished_by_the_retry(store):
    data = store_xclone(store)
    dying = user_store(store.db, cascade=store.cascade)
    dying._eraser = DiesOnThirdRule(store.db, dying._eraser.erasure)
    first_msg = msg_id()

    with pytest.raises(StoreUnavailable):
        dying.delete(data["a_id"], first_msg)

    # Tombstone, follow lists and the first two rules done; the rest not; the document kept.
    assert store.get(data["a_id"]) is not None
    assert store.is_deleted(data["a_id"])
    assert store.db.posts.count_documents({"user": data["a"]}) == 0
    assert store.db.comments.count_documents({"user": data["a"]}) == 0
    assert store.db.notifications.count_documents({"from": data["a"]}) == 1
    assert store.db.posts.count_documents({"likes": data["a"]}) == 1

    assert dying.delete(data["a_id"], first_msg) is Outcome.DELETED  # Svix's redelivery

    assert_a_fully_deleted(store, data)
    assert store.tombstones.find_one({"_id": data["a_id"]})["deliveryId"] == first_msg
    assert dying.delete(data["a_id"], first_msg) is Outcome.DUPLICATE
    assert_a_fully_deleted(store, data)


def test_a_store_delete_before_create_cascades_by_clerk_id(store):
    data = store_xclone(store)
    never_stored = new_id()
    store.db.notifications.insert_one({"from": never_stored, "to": data["b"], "type": "orphan"})
    store.db.posts.insert_one(
        {"user": data["b"], "content": "liked by ghost", "likes": [never_stored, data["b"]]}
    )
    before = content(store.db)

    assert store.delete(never_stored, msg_id()) is Outcome.DELETED

    after = content(store.db)
    assert [n for n in before["notifications"] if n["type"] != "orphan"] == after["notifications"]
    liked = next(p for p in after["posts"] if p["content"] == "liked by ghost")
    assert liked["likes"] == [data["b"]]
    assert len(after["posts"]) == len(before["posts"]) and after["comments"] == before["comments"]


def test_a_deleted_user_brought_back_by_a_killed_insert_is_cascaded_on_the_retry(store):
    """The deletion ran first; the creation's insert landed but its worker died before the
    tombstone check, and the app meanwhile stored content by the ghost document."""
    data = store_xclone(store)
    gone = new_id()
    assert store.delete(gone, msg_id()) is Outcome.DELETED
    created, created_msg = clerk_user(gone, 1), msg_id()
    ghost = store.documents.insert_one(store._document(xclone_user(created), created_msg)).inserted_id
    store.db.posts.insert_one({"user": ghost, "content": "by the ghost", "likes": [data["b"]]})
    store.db.posts.update_one({"_id": data["post_b"]}, {"$push": {"likes": ghost}})
    store.documents.update_one({"_id": data["b"]}, {"$push": {"followers": ghost}})
    before = content(store.db)

    assert store.upsert_if_newer(xclone_user(created), created_msg).outcome is Outcome.STALE

    assert store.get(gone) is None
    after = content(store.db)
    assert [p for p in after["posts"] if p["content"] != "by B"] == [
        p for p in before["posts"] if p["content"] not in ("by B", "by the ghost")
    ]
    assert next(p for p in after["posts"] if p["content"] == "by B")["likes"] == [data["a"], data["b"]]
    assert store.get(data["b_id"])["followers"] == [data["a"]]
    assert after["comments"] == before["comments"] and after["notifications"] == before["notifications"]


# -- the indexes the rules need ---------------------------------------------------------

CASCADE_FIELDS = {
    "posts": {"user", "likes"},
    "comments": {"user", "likes"},
    "notifications": {"from", "to"},
    "bookmarks": {"owner"},
}


def single_field_indexes(db, collection: str) -> set[str]:
    return {
        info["key"][0][0]
        for name, info in db[collection].index_information().items()
        if name != "_id_" and not info.get("unique")
    }


def test_init_db_plans_an_index_for_every_cascade_field_and_check_reports_the_missing(app, db):
    db.posts.create_index([("user", 1), ("createdAt", -1)], name="user_feed")  # the app's own
    runner = app.test_cli_runner()

    checked = runner.invoke(args=["init-db", "--check"])
    assert checked.exit_code == 1
    assert "reused    posts.user_feed (user, createdAt -1): finding what a deleted user leaves in posts" in (
        checked.output
    )
    for collection, fields in CASCADE_FIELDS.items():
        for field in fields - ({"user"} if collection == "posts" else set()):
            assert f"missing   {collection}.{field}_1 ({field}): finding what a deleted user leaves" in (
                checked.output
            ), checked.output
    assert "user_1" not in db.comments.index_information(), "--check created an index"

    created = runner.invoke(args=["init-db"])
    assert created.exit_code == 0, created.output
    for collection, fields in CASCADE_FIELDS.items():
        assert single_field_indexes(db, collection) >= fields, collection
    assert set(db.posts.index_information()) == {"_id_", "user_feed", "likes_1"}
    assert runner.invoke(args=["init-db", "--check"]).exit_code == 0
