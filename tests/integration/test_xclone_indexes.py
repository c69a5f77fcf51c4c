"""The service beside xClone's own indexes and documents (see tests/support/xclone.py).

What an engineer adding the service to a live app sees: the app's equivalent indexes
are reused whatever their names, its unique ``email_1`` is reported as a conflict with
the fix, a write it refuses answers 503 naming it (never a 500), ``init-db`` prints the
plan and ``--migrate`` replaces the conflict; legacy documents are adopted in place.
The warning gunicorn prints at start is tested in tests/e2e/test_xclone_indexes.py.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from click.testing import Result

from tests.support.fake_clerk import make_clerk_user, make_webhook_event
from tests.support.helpers import WEBHOOK, metrics_text, one_line_error
from tests.support.signing import signed_delivery
from tests.support.xclone import legacy_doc, prepare_xclone

MIGRATE = "flask --app wsgi init-db --migrate"


def cli(app, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=list(args))


def send(client, event_type: str, data: dict[str, Any], svix_id: str | None = None):
    options = {"msg_id": svix_id} if svix_id else {}
    body, headers = signed_delivery(make_webhook_event(event_type, data), **options)
    return client.post(WEBHOOK, data=body, headers=headers)


def index_names(db) -> set[str]:
    return set(db.users.index_information())


@pytest.fixture
def xclone(db):
    prepare_xclone(db)
    return db


def test_the_apps_indexes_are_reused_and_users_with_an_email_apply(client, xclone):
    assert client.get("/readyz").status_code == 200
    ada = make_clerk_user(seed="ada", email="ada@example.com", username="ada")

    response = send(client, "user.created", ada)

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"outcome": "applied"}
    names = index_names(xclone)
    assert "clerkId_unique" not in names, "the app's clerkId_1 serves; no second index on clerkId"
    assert {"clerkId_1", "email_1", "username_1", "usernameLower_unique"} <= names
    assert xclone.users.find_one({"clerkId": ada["id"]})["email"] == "ada@example.com"


def test_a_write_refused_by_the_apps_email_index_is_503_naming_it_then_applies_after_migrate(
    app, client, xclone, caplog
):
    first, second = (make_clerk_user(seed=f"phone-{n}", phone_only=True) for n in (1, 2))
    assert send(client, "user.created", first).status_code == 200
    caplog.set_level(logging.INFO, logger="webhook_service")

    refused = send(client, "user.created", second, svix_id="msg_phone2")

    assert refused.status_code == 503
    body = refused.get_json()
    assert body["error"] == "index conflict"
    assert "users.email_1" in body["detail"] and MIGRATE in body["detail"]
    assert xclone.users.count_documents({}) == 1
    lines = [r for r in caplog.records if "msg_phone2" in r.getMessage()]
    assert len(lines) == 1 and "users.email_1" in lines[0].getMessage()
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"
    assert 'clerk_webhook_index_conflicts_total{index="email_1"} 1.0' in metrics_text()

    migrated = cli(app, "init-db", "--migrate")
    assert migrated.exit_code == 0, migrated.output
    assert "dropped users.email_1 (unique email)" in migrated.output
    assert "created users.email_1 (email)" in migrated.output
    assert not xclone.users.index_information()["email_1"].get("unique")

    again = send(client, "user.created", second, svix_id="msg_phone2")
    assert again.status_code == 200 and again.get_json() == {"outcome": "applied"}
    third = make_clerk_user(seed="phone-3", phone_only=True)
    assert send(client, "user.created", third).get_json() == {"outcome": "applied"}
    assert xclone.users.count_documents({"email": None}) == 3


@pytest.mark.parametrize("order", ["in order", "reversed"])
def test_an_address_moving_between_users_converges_before_and_after_migrate(app, client, xclone, order):
    grace = make_clerk_user(seed=f"grace-{order}", email="grace@example.com", updated_at=1_000)
    alan = make_clerk_user(seed=f"alan-{order}", email="alan@example.com", updated_at=1_000)
    for user in (grace, alan):
        assert send(client, "user.created", user).status_code == 200
    # Grace gives the address up, then Alan takes it (Clerk's order).
    released = dict(grace, updated_at=2_000, email_addresses=[], primary_email_address_id=None)
    taken = dict(alan, updated_at=3_000)
    taken["email_addresses"] = [dict(taken["email_addresses"][0], email_address="grace@example.com")]
    moves = [(released, "msg_release"), (taken, "msg_take")]
    if order == "reversed":
        moves.reverse()

    statuses = [send(client, "user.updated", user, svix_id).status_code for user, svix_id in moves]
    # Svix redelivers whatever was not acknowledged.
    retried = [send(client, "user.updated", user, svix_id).status_code for user, svix_id in moves]

    assert statuses == ([200, 200] if order == "in order" else [503, 200])
    assert retried == [200, 200]
    assert xclone.users.find_one({"clerkId": alan["id"]})["email"] == "grace@example.com"
    assert xclone.users.find_one({"clerkId": grace["id"]})["email"] is None

    assert cli(app, "init-db", "--migrate").exit_code == 0
    back = dict(grace, updated_at=5_000)  # the address moves back, reordered again
    gone = dict(taken, updated_at=4_000, email_addresses=[], primary_email_address_id=None)
    for user in (back, gone) if order == "reversed" else (gone, back):
        assert send(client, "user.updated", user).status_code == 200
    assert xclone.users.find_one({"clerkId": grace["id"]})["email"] == "grace@example.com"
    assert xclone.users.find_one({"clerkId": alan["id"]})["email"] is None


def test_init_db_prints_the_plan_and_exits_1_while_the_conflict_remains(app, xclone):
    checked = cli(app, "init-db", "--check")

    assert checked.exit_code == 1
    assert "reused    users.clerkId_1 (unique clerkId): one document per Clerk user" in checked.output
    assert "missing   users.usernameLower_unique" in checked.output
    conflict = next(line for line in checked.output.splitlines() if line.startswith("CONFLICT"))
    assert "users.email_1 (unique email)" in conflict
    assert "refuses a second user without an email address" in conflict and MIGRATE in conflict
    assert index_names(xclone) == {"_id_", "clerkId_1", "email_1", "username_1"}, "--check changed something"

    created = cli(app, "init-db")
    assert one_line_error(created).startswith("Error: 1 reused, 7 created; 1 conflicting: users.email_1.")
    assert "usernameLower_unique" in index_names(xclone)
    assert xclone.users.index_information()["email_1"]["unique"], "init-db changed an existing index"

    first = cli(app, "init-db", "--migrate")
    rerun = cli(app, "init-db", "--migrate")
    assert first.exit_code == 0 and rerun.exit_code == 0, first.output + rerun.output
    assert "dropped" in first.output and "dropped" not in rerun.output
    assert rerun.output.strip().splitlines()[-1] == "indexes ready: 9 reused, 0 created, no conflicts"
    assert cli(app, "init-db", "--check").exit_code == 0


def test_legacy_documents_are_adopted_in_place_and_app_fields_are_never_touched(client, db):
    linus = make_clerk_user(seed="linus", email="linus.t@example.com", first_name="Linus")
    [old] = prepare_xclone(db, [legacy_doc(linus["id"], "linus.t@example.com")])

    assert send(client, "user.updated", linus).get_json() == {"outcome": "applied"}

    [doc] = db.users.find({"clerkId": linus["id"]})
    assert doc["_id"] == old["_id"]
    for name in ("bio", "location", "bannerImage", "followers", "following", "__v", "createdAt"):
        assert doc[name] == old[name], name
    assert doc["firstName"] == "Linus" and doc["clerkUpdatedAt"] == linus["updated_at"]


def test_a_clash_on_the_apps_username_index_is_settled_like_the_services_own(client, db):
    legacy_id = make_clerk_user(seed="legacy-grace")["id"]
    prepare_xclone(db, [legacy_doc(legacy_id, "grace@example.com")])  # username "grace"
    newcomer = make_clerk_user(seed="new-grace", email="g.hopper@example.com", username="grace")

    response = send(client, "user.created", newcomer)

    assert response.status_code == 200, response.get_data(as_text=True)
    assert db.users.find_one({"clerkId": newcomer["id"]})["username"] == "grace"
    moved = db.users.find_one({"clerkId": legacy_id})["username"]
    assert moved != "grace" and moved.startswith("grace_")


def test_readyz_is_503_while_a_required_index_cannot_be_had(client, db):
    twin = {"clerkId": "user_twin", "email": "a@example.com", "username": "a"}
    db.users.insert_many([dict(twin), dict(twin, email="b@example.com", username="b")])

    ready = client.get("/readyz")
    delivery = send(client, "user.created", make_clerk_user(seed="blocked"))

    assert ready.status_code == 503
    assert ready.get_json()["error"] == "indexes unavailable"
    assert "users.clerkId_unique (unique clerkId)" in ready.get_json()["detail"]
    assert "equal values" in ready.get_json()["detail"]
    assert "a@example.com" not in ready.get_data(as_text=True)
    assert delivery.status_code == 503

    db.users.delete_one({"email": "b@example.com"})
    assert client.get("/readyz").status_code == 200
