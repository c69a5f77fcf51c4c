"""No personal data is left behind once a user is deleted, whichever path deletes.

Asserted the way an auditor would: every document of every collection the service
writes is dumped, and the user's name and email address must appear nowhere.
"""

from __future__ import annotations

import json
from typing import Any

from bson import json_util

from tests.support.fake_clerk import make_clerk_user, make_deleted_data, make_webhook_event
from tests.support.helpers import WEBHOOK
from tests.support.signing import signed_delivery
from tests.support.stores import user_store


def send(client, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    body, headers = signed_delivery(make_webhook_event(event_type, data))
    response = client.post(WEBHOOK, data=body, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def everything(db) -> str:
    return "\n".join(
        json_util.dumps(doc) for name in db.list_collection_names() for doc in db[name].find()
    )


def flush(app) -> None:
    app.extensions["webhook_service"].events.flush()


def personal(user: dict[str, Any]) -> list[str]:
    return [user["first_name"], user["last_name"], user["email_addresses"][0]["email_address"]]


def test_a_webhook_deletion_erases_the_users_payloads_and_keeps_the_record_of_it(app, client, db):
    ada = make_clerk_user(
        seed="pd-ada", email="ada.pd@example.com", first_name="Adaline", last_name="Byronova"
    )
    send(client, "user.created", ada)
    send(client, "user.updated", dict(ada, updated_at=ada["updated_at"] + 1))
    flush(app)
    assert all(value in everything(db) for value in personal(ada)), "precondition: the payloads were kept"

    assert send(client, "user.deleted", make_deleted_data(ada["id"])) == {"outcome": "deleted"}
    flush(app)

    dump = everything(db)
    for value in personal(ada):
        assert value not in dump, f"{value!r} is still stored after the deletion"
    records = list(db.events.find({"userId": ada["id"]}))
    assert sorted(r["type"] for r in records) == ["user.created", "user.deleted", "user.updated"]
    deletion = next(r for r in records if r["type"] == "user.deleted")
    assert json.loads(deletion["payload"])["data"] == {"deleted": True, "id": ada["id"], "object": "user"}
    assert all("payload" not in r for r in records if r["type"] != "user.deleted")


def test_records_buffered_elsewhere_or_arriving_after_the_deletion_do_not_bring_it_back(make_app):
    one, two = make_app(), make_app()  # two workers, each with its own event-log buffer
    db = one.extensions["webhook_service"].db
    grace = make_clerk_user(seed="pd-grace", email="grace.pd@example.com", first_name="Gracelyn")
    send(one.test_client(), "user.created", grace)  # still in worker one's buffer

    send(two.test_client(), "user.deleted", make_deleted_data(grace["id"]))
    flush(two)
    flush(one)
    late = dict(grace, updated_at=grace["updated_at"] + 5)
    assert send(two.test_client(), "user.updated", late) == {"outcome": "stale"}
    flush(two)

    dump = everything(db)
    for value in personal(grace):
        assert value not in dump, f"{value!r} came back"
    assert db.events.count_documents({"userId": grace["id"]}) == 3


def test_a_deletion_outside_webhooks_erases_too(app, client, db):
    """Reconcile and a sync that finds the user gone delete through ``UserStore.delete``."""
    linus = make_clerk_user(seed="pd-linus", email="linus.pd@example.com", first_name="Linnea")
    send(client, "user.created", linus)
    flush(app)

    user_store(db).delete(linus["id"])

    dump = everything(db)
    for value in personal(linus):
        assert value not in dump


def test_an_ignored_event_keeps_no_payload(app, client, db):
    data = {"id": "sess_1", "user_id": "user_x", "object": "session"}
    session = make_webhook_event("session.created", data)
    body, headers = signed_delivery(session)
    assert client.post(WEBHOOK, data=body, headers=headers).get_json() == {"outcome": "ignored"}
    flush(app)

    [record] = db.events.find({"type": "session.created"})
    assert "payload" not in record and record["outcome"] == "ignored"
