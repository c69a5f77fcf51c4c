"""The second worked example: a SaaS app's ``users`` collection, mapped by
docs/examples/saas-user-fields.toml, through webhooks, sync, reconcile, a refresh after
the map gains a field, and deletion with the app's cascade. On the test database server.

The expected documents are written out here from the map's own words, not computed by
the service's mapping code.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import clerk_settings
from tests.support.examples import SAAS_USER_FIELDS
from tests.support.fake_clerk import make_deleted_data, make_webhook_event
from tests.support.helpers import T0, clerk_user, deliver, msg_id, new_id, newer, post_sync
from tests.support.signing import signed_delivery
from webhook_service.config import delete_cascade_rules

BOOKKEEPING = {"_id", "clerkUpdatedAt", "lastDeliveryId", "createdAt", "updatedAt", "reconcileRun"}


def at(ms: int) -> datetime:
    """Clerk's milliseconds as the BSON date the service's client reads back (UTC)."""
    return datetime.fromtimestamp(ms / 1000, UTC)


@pytest.fixture
def make_saas(make_app, fake_clerk):
    def make(map_file: Path = SAAS_USER_FIELDS, **overrides: Any):
        return make_app(
            user_fields_file=str(map_file),
            **clerk_settings(fake_clerk),
            db_timeout_ms=30_000,
            delete_cascade=delete_cascade_rules(overrides.pop("delete_cascade", "")),
            **overrides,
        )

    return make


@pytest.fixture
def saas(make_saas):
    return make_saas()


def db_of(app):
    return app.extensions["webhook_service"].db


def doc(app, clerk_id: str) -> dict[str, Any] | None:
    return db_of(app).users.find_one({"clerkUserId": clerk_id})


def mapped(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without the service's bookkeeping: the fields the map describes."""
    return {k: v for k, v in doc.items() if k not in BOOKKEEPING}


def ada(user_id: str, version: int = 1, **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = dict(
        email="ada@example.com",
        first_name="Ada",
        last_name="Lovelace",
        image_url="https://img.clerk.com/ada.png",
        phone_number="+15550100001",
        external_id="crm-1",
        public_metadata={"role": "admin"},
        unsafe_metadata={"prefs": {"theme": "dark"}},
        last_sign_in_at=T0 + 500,
    )
    return clerk_user(user_id, version, **{**values, **changes})


def ada_document(user_id: str, **changes: Any) -> dict[str, Any]:
    expected = {
        "clerkUserId": user_id,
        "email": "ada@example.com",
        "phone": "+15550100001",
        "name": "Ada Lovelace",
        "avatar": "https://img.clerk.com/ada.png",
        "externalId": "crm-1",
        "role": "admin",
        "prefs": {"theme": "dark"},
        "joinedAt": at(T0),
        "lastSignInAt": at(T0 + 500),
        "plan": "free",
        "nickname": "Ada",
    }
    expected.update(changes)
    return expected


# -- webhooks --------------------------------------------------------------------------------


def test_created_updated_and_deleted_webhooks_write_exactly_the_mapped_document(saas):
    client, db = saas.test_client(), db_of(saas)
    user_id = new_id()
    created = ada(user_id)

    assert deliver(client, "user.created", created) == "applied"
    stored = doc(saas, user_id)
    assert stored is not None
    assert mapped(stored) == ada_document(user_id)
    assert stored["clerkUpdatedAt"] == created["updated_at"]
    # No username rule here: no username, usernameLower or usernameSource on the document.
    assert not {"username", "usernameLower", "usernameSource", "clerkId"} & set(stored)

    db.users.update_one({"clerkUserId": user_id}, {"$set": {"plan": "pro", "nickname": "Countess"}})
    updated = newer(
        created,
        1000,
        first_name="Augusta",
        public_metadata={},
        unsafe_metadata={},
        external_id=None,
    )
    assert deliver(client, "user.updated", updated) == "applied"
    # role falls back to its default; prefs and externalId, gone from Clerk, leave the
    # document; the app's plan and nickname stay the app's.
    assert mapped(doc(saas, user_id)) == _without(
        ada_document(user_id, name="Augusta Lovelace", role="member", plan="pro", nickname="Countess"),
        "prefs",
        "externalId",
    )

    assert deliver(client, "user.deleted", make_deleted_data(user_id)) == "deleted"
    assert doc(saas, user_id) is None
    assert db.deleted_users.find_one({"_id": user_id}) is not None
    assert deliver(client, "user.updated", newer(updated, 1000)) == "stale"
    assert db.users.count_documents({}) == 0


def _without(document: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in names}


def test_a_phone_only_sign_up_stores_its_phone_and_a_null_email(saas):
    user_id = new_id()
    user = clerk_user(
        user_id, 1, phone_only=True, phone_number="+15550100002", first_name="Bo", last_name=None
    )
    assert deliver(saas.test_client(), "user.created", user) == "applied"
    assert mapped(doc(saas, user_id)) == {
        "clerkUserId": user_id,
        "email": None,
        "phone": "+15550100002",
        "name": "Bo",
        "avatar": user["image_url"],
        "role": "member",
        "joinedAt": at(T0),
        "plan": "free",
        "nickname": "Bo",
    }


def test_init_db_plans_the_maps_indexes_unique_on_the_apps_id_and_no_username_index(saas):
    result = saas.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    indexes = db_of(saas).users.index_information()
    assert indexes["clerkUserId_unique"]["unique"] is True
    assert indexes["clerkUserId_unique"]["key"] == [("clerkUserId", 1)]
    assert not any("username" in name for name in indexes), indexes
    assert not any("clerkId" in name for name in indexes), indexes
    assert saas.test_cli_runner().invoke(args=["init-db", "--check"]).exit_code == 0


# -- sync ----------------------------------------------------------------------------------


def test_sync_creates_and_answers_the_mapped_document(saas, fake_clerk):
    user_id = new_id()
    fake_clerk.add_user(ada(user_id))

    response = post_sync(saas.test_client(), user_id)

    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    stored = doc(saas, user_id)
    assert body == {
        "_id": str(stored["_id"]),
        **ada_document(user_id, joinedAt=at(T0).isoformat()),
        "lastSignInAt": at(T0 + 500).isoformat(),
        "createdAt": stored["createdAt"].replace(tzinfo=UTC).isoformat(),
        "updatedAt": stored["updatedAt"].replace(tzinfo=UTC).isoformat(),
    }
    assert mapped(stored) == ada_document(user_id)


# -- reconcile, refresh and deletion --------------------------------------------------------


def run_reconcile(app, *args: str):
    result = app.test_cli_runner().invoke(args=["reconcile", "--max-rps", "0", *args])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[-1]


def test_reconcile_creates_updates_and_deletes_by_the_map_with_the_apps_cascade(make_saas, fake_clerk):
    saas = make_saas(delete_cascade="projects.ownerId:delete,memberships.userId:delete")
    client, db = saas.test_client(), db_of(saas)
    new_in_clerk, changed, gone = new_id(), new_id(), new_id()
    assert deliver(client, "user.created", ada(changed)) == "applied"
    assert deliver(client, "user.created", ada(gone)) == "applied"
    gone_oid = doc(saas, gone)["_id"]
    db.projects.insert_many([{"ownerId": gone_oid, "name": "old"}, {"ownerId": "someone", "name": "kept"}])
    db.memberships.insert_one({"userId": gone, "team": "t1"})
    fake_clerk.add_user(ada(new_in_clerk))
    fake_clerk.add_user(ada(changed, 2, public_metadata={"role": "owner"}))

    line = run_reconcile(saas)

    assert line.startswith(
        "reconciled: 2 Clerk users in 1 pages: created 1, updated 1, unchanged 0, deleted 1"
    )
    assert mapped(doc(saas, new_in_clerk)) == ada_document(new_in_clerk)
    assert mapped(doc(saas, changed)) == ada_document(changed, role="owner")
    assert doc(saas, gone) is None
    assert [p["name"] for p in db.projects.find()] == ["kept"]
    assert db.memberships.count_documents({}) == 0
    assert run_reconcile(saas).startswith(
        "reconciled: 2 Clerk users in 1 pages: created 0, updated 0, unchanged 2"
    )


def test_a_field_added_to_the_map_reaches_every_user_through_refresh_alone(make_saas, fake_clerk, tmp_path):
    without_team = tmp_path / "before.toml"
    with_team = tmp_path / "after.toml"
    text = SAAS_USER_FIELDS.read_text(encoding="utf-8")
    without_team.write_text(text, encoding="utf-8")
    with_team.write_text(
        text + 'team = { from = "public_metadata.team", default = "none" }\n', encoding="utf-8"
    )

    before = make_saas(without_team)
    client, db = before.test_client(), db_of(before)
    edited, untouched, newer_here, deleted = new_id(), new_id(), new_id(), new_id()
    team = {"role": "admin", "team": "blue"}
    for user_id in (edited, untouched, newer_here, deleted):
        assert deliver(client, "user.created", ada(user_id, public_metadata=team)) == "applied"
    db.users.update_one({"clerkUserId": edited}, {"$set": {"plan": "pro", "nickname": "Countess"}})
    assert deliver(client, "user.deleted", make_deleted_data(deleted)) == "deleted"
    assert "team" not in doc(before, edited)

    after = make_saas(with_team)
    # An ordinary delivery changes only the user Clerk updated.
    assert deliver(after.test_client(), "user.updated", ada(newer_here, 5, public_metadata=team)) == "applied"
    assert doc(after, newer_here)["team"] == "blue"
    assert "team" not in doc(after, untouched) and "team" not in doc(after, edited)

    # Clerk still lists the deleted user, and an older version of the one updated here.
    for user_id in (edited, untouched, deleted):
        fake_clerk.add_user(ada(user_id, public_metadata=team))
    fake_clerk.add_user(ada(newer_here, 1, public_metadata={"role": "admin", "team": "red"}))
    plain = run_reconcile(after)
    assert "updated 0" in plain
    assert "team" not in doc(after, untouched)

    refreshed = run_reconcile(after, "--refresh")

    assert "created 0, updated 2, unchanged 2" in refreshed, refreshed
    assert mapped(doc(after, untouched)) == ada_document(untouched, team="blue")
    assert mapped(doc(after, edited)) == ada_document(edited, team="blue", plan="pro", nickname="Countess")
    assert doc(after, newer_here)["team"] == "blue"  # the newer local version is kept
    assert doc(after, newer_here)["clerkUpdatedAt"] == T0 + 5
    assert doc(after, deleted) is None  # a deletion is never undone
    assert db.deleted_users.find_one({"_id": deleted}) is not None


def test_a_redelivered_created_after_deletion_never_recreates_the_user(saas):
    client = saas.test_client()
    user_id = new_id()
    body, headers = signed_delivery(make_webhook_event("user.created", ada(user_id)), msg_id=msg_id())
    assert client.post("/api/webhooks/clerk", data=body, headers=headers).status_code == 200
    assert deliver(client, "user.deleted", make_deleted_data(user_id)) == "deleted"
    again = client.post("/api/webhooks/clerk", data=body, headers=headers)
    assert again.status_code == 200 and again.get_json()["outcome"] in ("duplicate", "stale")
    assert doc(saas, user_id) is None
