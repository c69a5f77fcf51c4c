"""INSERT_ONLY_FIELDS: Clerk-sourced fields written when the service creates a user
document and never overwritten afterwards, so the app's own edits to them stick.

The webhook tests go through the route as production does; the store tests cover the
other ways a document is created (reconcile's insert, an upsert of a new user).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.helpers import USER_DOC_FIELDS, assert_matches_clerk, clerk_user, deliver, new_id
from tests.support.signing import TEST_SECRET
from tests.support.stores import XCLONE_FIELDS, user_store, xclone_user
from webhook_service.config import Config, ConfigError
from webhook_service.store.mongo import connect

BASE = {"MONGODB_URI": "mongodb://localhost:27017/xclone", "CLERK_WEBHOOK_SIGNING_SECRET": TEST_SECRET}
NAMES = ("firstName", "lastName")


def clerk_version(uid: str, version: int, name: str, email: str, image: str) -> dict[str, Any]:
    return clerk_user(uid, version, first_name=name, last_name=f"{name}son", email=email, image_url=image)


def app_edits_names_then_clerk_updates(client, db) -> tuple[dict[str, Any], dict[str, Any]]:
    """Create a user by webhook, edit its names as the app's updateProfile does, then deliver
    a newer Clerk version with a new name, email and image. Returns that version and the doc."""
    uid = new_id()
    created = clerk_version(uid, 0, "Ada", "ada@example.com", "https://img.clerk.com/a.png")
    assert deliver(client, "user.created", created) == "applied"
    assert_matches_clerk(db.users.find_one({"clerkId": uid}), created)

    db.users.update_one({"clerkId": uid}, {"$set": {"firstName": "Countess", "lastName": "Lovelace"}})

    updated = clerk_version(uid, 5, "Augusta", "augusta@example.com", "https://img.clerk.com/b.png")
    assert deliver(client, "user.updated", updated) == "applied"
    return updated, db.users.find_one({"clerkId": uid})


def app_db(app):
    return app.extensions["webhook_service"].db


def test_insert_only_names_keep_the_apps_edits_while_other_fields_follow_clerk(make_app):
    app = make_app(insert_only_fields=NAMES)

    updated, doc = app_edits_names_then_clerk_updates(app.test_client(), app_db(app))

    assert doc["firstName"] == "Countess" and doc["lastName"] == "Lovelace"
    assert doc["email"] == "augusta@example.com"
    assert doc["profilePicture"] == "https://img.clerk.com/b.png"
    assert doc["clerkUpdatedAt"] == updated["updated_at"]
    assert set(doc) == USER_DOC_FIELDS


def test_without_the_setting_clerk_overwrites_the_names(make_app):
    app = make_app()

    updated, doc = app_edits_names_then_clerk_updates(app.test_client(), app_db(app))

    assert_matches_clerk(doc, updated)
    assert doc["firstName"] == "Augusta" and doc["lastName"] == "Augustason"


def test_insert_only_profile_picture_keeps_the_apps_image(make_app):
    app = make_app(insert_only_fields=("profilePicture",))
    client, db = app.test_client(), app_db(app)
    uid = new_id()
    created = clerk_version(uid, 0, "Ada", "a@example.com", "https://i/a")
    assert deliver(client, "user.created", created) == "applied"
    db.users.update_one({"clerkId": uid}, {"$set": {"profilePicture": "https://app/mine.png"}})

    updated = clerk_version(uid, 1, "Augusta", "b@example.com", "https://i/b")
    assert deliver(client, "user.updated", updated) == "applied"

    doc = db.users.find_one({"clerkId": uid})
    assert doc["profilePicture"] == "https://app/mine.png"
    assert doc["firstName"] == "Augusta" and doc["email"] == "b@example.com"


# -- the other ways a document is created -------------------------------------------------


@pytest.fixture
def store(mongo_uri):
    db = connect(mongo_uri)
    yield user_store(db, XCLONE_FIELDS.with_insert_only(NAMES))
    db.client.close()


def test_reconcile_insert_writes_the_insert_only_fields(store):
    data = clerk_version(new_id(), 0, "Grace", "grace@example.com", "https://i/g")

    [(outcome, fresh)] = store.insert_new([xclone_user(data)], {"reconcileRun": "run-1"})

    assert outcome == "applied" and fresh
    doc = store.get(data["id"])
    assert_matches_clerk(doc, data)
    assert set(doc) == USER_DOC_FIELDS | {"reconcileRun"}


def test_upserts_of_a_new_user_write_the_insert_only_fields(store):
    single = clerk_version(new_id(), 0, "Grace", "grace@example.com", "https://i/g")
    paged = clerk_version(new_id(), 0, "Alan", "alan@example.com", "https://i/t")

    assert store.upsert_if_newer(xclone_user(single), "msg_1").created
    assert store.upsert_many_if_newer([xclone_user(paged)]) == ["applied"]

    for data in (single, paged):
        doc = store.get(data["id"])
        assert_matches_clerk(doc, data)
        assert set(doc) == USER_DOC_FIELDS


def test_a_later_upsert_leaves_the_insert_only_fields_alone(store):
    uid = new_id()
    store.upsert_if_newer(xclone_user(clerk_version(uid, 0, "Grace", "g@example.com", "https://i/g")))
    store.documents.update_one({"clerkId": uid}, {"$set": {"firstName": "Amazing", "lastName": "Grace"}})

    later = clerk_version(uid, 3, "Hopper", "h@example.com", "https://i/h")
    assert store.upsert_many_if_newer([xclone_user(later)]) == ["applied"]

    doc = store.get(uid)
    assert (doc["firstName"], doc["lastName"]) == ("Amazing", "Grace")
    assert doc["email"] == "h@example.com" and doc["clerkUpdatedAt"] == later["updated_at"]


# -- configuration -------------------------------------------------------------------------


def test_config_default_is_no_insert_only_fields():
    assert Config.from_env(BASE).insert_only_fields == ()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("firstName,lastName", ("firstName", "lastName")),
        (" lastName , ,firstName,lastName, ", ("lastName", "firstName")),
        ("profilePicture", ("profilePicture",)),
        (" , ", ()),
    ],
)
def test_config_parses_insert_only_fields(raw, expected):
    assert Config.from_env(dict(BASE, INSERT_ONLY_FIELDS=raw)).insert_only_fields == expected


@pytest.mark.parametrize("bad", ["bio", "email", "firstname", "clerkId"])
def test_config_rejects_other_fields_naming_the_value_and_the_allowed_ones(bad):
    with pytest.raises(ConfigError) as caught:
        Config.from_env(dict(BASE, INSERT_ONLY_FIELDS=f"firstName,{bad}"))
    message = str(caught.value)
    allowed = "allowed: firstName, lastName, profilePicture"
    assert message == f"INSERT_ONLY_FIELDS: {bad!r} is not allowed; {allowed}"
    assert "\n" not in message
