"""POST /api/webhooks/clerk end to end: Flask test client, real svix signatures, real database.

Each test asserts what Clerk/Svix and the app would see: the status code, the JSON body,
and the documents in ``users`` / ``deleted_users`` / ``events``.
"""

from __future__ import annotations

import io
import json
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from svix.webhooks import Webhook

from tests.support.fake_clerk import make_deleted_data, make_webhook_event
from tests.support.helpers import (
    T0,
    USER_DOC_FIELDS,
    WEBHOOK,
    assert_matches_clerk,
    clerk_user,
    database_down,
    msg_id,
    new_id,
)
from tests.support.signing import TEST_SECRET, signed_delivery, signed_headers

OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="  # base64 of A..Z


def post(client, event: dict[str, Any] | None = None, *, body: str | bytes | None = None, **sign_kw):
    """Sign ``event`` (or the given text ``body``) as Svix would and deliver it."""
    if body is None:
        body, headers = signed_delivery(event, **sign_kw)
    else:
        headers = signed_headers(body, **sign_kw)
    return client.post(WEBHOOK, data=body, headers=headers)


def created(data: dict[str, Any]) -> dict[str, Any]:
    return make_webhook_event("user.created", data)


def updated(data: dict[str, Any]) -> dict[str, Any]:
    return make_webhook_event("user.updated", data)


def deleted(user_id: str) -> dict[str, Any]:
    return make_webhook_event("user.deleted", make_deleted_data(user_id))


def flushed_event(app, delivery_id: str) -> dict[str, Any] | None:
    events = app.extensions["webhook_service"].events
    events.flush()
    return events.get(delivery_id)


def assert_nothing_written(db) -> None:
    assert db.users.count_documents({}) == 0
    assert db.deleted_users.count_documents({}) == 0


def assert_clean_error(resp) -> None:
    assert resp.is_json, resp.data[:200]
    body = resp.get_json()
    assert isinstance(body.get("error"), str) and body["error"]
    text = resp.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text


# -- rejected deliveries: 400, nothing written -------------------------------------------


def _valid() -> tuple[str, dict[str, str]]:
    return signed_delivery(created(clerk_user(new_id(), 1)))


def _without(header: str):
    def build():
        body, headers = _valid()
        del headers[header]
        return body, headers

    return build


def _with(header: str, value: str):
    def build():
        body, headers = _valid()
        headers[header] = value
        return body, headers

    return build


def _no_headers():
    body, _ = _valid()
    return body, {"content-type": "application/json"}


def _wrong_secret():
    return signed_delivery(created(clerk_user(new_id(), 1)), secret=OTHER_SECRET)


def _tampered():
    body, headers = _valid()
    return body.replace('"first_name": "', '"first_name": "X'), headers


def _at(delta: timedelta):
    def build():
        return signed_delivery(created(clerk_user(new_id(), 1)), at=datetime.now(UTC) + delta)

    return build


def _non_utf8():
    body = b'{"type": "user.created", "data": {"id": "user_\xff\xfe"}}'
    headers = signed_headers(body.decode("latin-1"))
    return body, headers


REJECTED_SIGNATURES = {
    "no svix headers": _no_headers,
    "no svix-id": _without("svix-id"),
    "no svix-timestamp": _without("svix-timestamp"),
    "no svix-signature": _without("svix-signature"),
    "wrong secret": _wrong_secret,
    "tampered body": _tampered,
    "timestamp 6 min old": _at(timedelta(minutes=-6)),
    "timestamp 6 min ahead": _at(timedelta(minutes=6)),
    "signature without comma": _with("svix-signature", "v1abcdef"),
    "v1,abc": _with("svix-signature", "v1,abc"),
    "non-numeric timestamp": _with("svix-timestamp", "yesterday"),
    "non-utf8 body": _non_utf8,
}


@pytest.mark.parametrize("case", list(REJECTED_SIGNATURES))
def test_unverifiable_delivery_is_rejected_and_writes_nothing(app, client, db, case):
    body, headers = REJECTED_SIGNATURES[case]()

    resp = client.post(WEBHOOK, data=body, headers=headers)

    assert resp.status_code == 400
    assert_clean_error(resp)
    assert resp.get_json()["error"] == "invalid signature"
    assert_nothing_written(db)
    app.extensions["webhook_service"].events.flush()
    assert db.events.count_documents({}) == 0  # unauthenticated senders leave no trace


def _envelope(**fields: Any) -> str:
    base = {"object": "event", "timestamp": T0, "instance_id": "ins_test"}
    base.update(fields)
    return json.dumps(base)


MALFORMED_SIGNED_BODIES = {
    "not JSON": "this is not json {",
    "JSON array": json.dumps([{"type": "user.created"}]),
    "no type": _envelope(data={"id": "user_1", "updated_at": T0}),
    "non-string type": _envelope(type=7, data={"id": "user_1", "updated_at": T0}),
    "no data": _envelope(type="user.created"),
    "data not an object": _envelope(type="user.created", data=["user_1"]),
    "user.created without data.id": _envelope(type="user.created", data={"updated_at": T0}),
    "data.id not a string": _envelope(type="user.updated", data={"id": 42, "updated_at": T0}),
    "user.deleted without data.id": _envelope(type="user.deleted", data={"deleted": True}),
}


@pytest.mark.parametrize("case", list(MALFORMED_SIGNED_BODIES))
def test_signed_but_malformed_event_is_rejected_and_writes_nothing(client, db, case):
    resp = post(client, body=MALFORMED_SIGNED_BODIES[case])

    assert resp.status_code == 400
    assert_clean_error(resp)
    assert resp.get_json()["error"] == "malformed event"
    assert_nothing_written(db)


def test_body_over_one_mebibyte_is_413_and_writes_nothing(app, client, db):
    body = b"x" * (1024 * 1024 + 1)
    headers = signed_headers("x" * 10)  # the size is refused before the signature matters

    resp = client.post(WEBHOOK, data=body, headers=headers)

    assert resp.status_code == 413
    assert_clean_error(resp)
    assert_nothing_written(db)
    app.extensions["webhook_service"].events.flush()
    assert db.events.count_documents({}) == 0


def post_chunked(client, body: bytes, headers: dict[str, str]):
    """Send without Content-Length, as a chunked request reaches the app under gunicorn
    (which sets ``wsgi.input_terminated``)."""
    headers = {**headers, "Transfer-Encoding": "chunked"}
    return client.post(
        WEBHOOK,
        input_stream=io.BytesIO(body),
        headers=headers,
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_chunked_body_over_one_mebibyte_is_413_not_truncated(app, client, db):
    data = clerk_user(new_id(), 1, unsafe_metadata={"notes": "n" * (1024 * 1024)})
    body, headers = signed_delivery(created(data))  # validly signed, just too big

    resp = post_chunked(client, body.encode(), headers)

    assert resp.status_code == 413
    assert_clean_error(resp)
    assert_nothing_written(db)


def test_chunked_signed_body_under_the_limit_is_accepted(client, db):
    data = clerk_user(new_id(), 1)
    body, headers = signed_delivery(created(data))

    resp = post_chunked(client, body.encode(), headers)

    assert resp.status_code == 200 and resp.get_json() == {"outcome": "applied"}
    assert_matches_clerk(db.users.find_one({"clerkId": data["id"]}), data)


def test_signed_body_just_under_one_mebibyte_is_accepted(client, db):
    data = clerk_user(new_id(), 1, unsafe_metadata={"notes": ""})
    event = created(data)
    room = 1024 * 1024 - 64 - len(json.dumps(event))
    data["unsafe_metadata"]["notes"] = "n" * room
    event = created(data)
    body = json.dumps(event)
    assert 1024 * 1024 - 100 < len(body.encode()) < 1024 * 1024

    resp = post(client, body=body)

    assert resp.status_code == 200
    assert resp.get_json() == {"outcome": "applied"}
    assert_matches_clerk(db.users.find_one({"clerkId": data["id"]}), data)


# -- accepted header variants -------------------------------------------------------------


def test_standard_webhooks_header_names_are_accepted(client, db):
    data = clerk_user(new_id(), 1)
    body, headers = signed_delivery(created(data))
    renamed = {k.replace("svix-", "webhook-"): v for k, v in headers.items()}
    assert "svix-id" not in renamed and "webhook-signature" in renamed

    resp = client.post(WEBHOOK, data=body, headers=renamed)

    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"outcome": "applied"}
    assert_matches_clerk(db.users.find_one({"clerkId": data["id"]}), data)
    assert db.users.find_one({"clerkId": data["id"]})["lastDeliveryId"] == headers["svix-id"]


@pytest.mark.parametrize("ours_first", [True, False])
def test_several_signatures_during_key_rotation_are_accepted(client, db, ours_first):
    data = clerk_user(new_id(), 1)
    body = json.dumps(created(data))
    mid, at = msg_id(), datetime.now(UTC)
    ours = Webhook(TEST_SECRET).sign(mid, at, body)
    other = Webhook(OTHER_SECRET).sign(mid, at, body)
    headers = signed_headers(body, msg_id=mid, at=at)
    headers["svix-signature"] = f"{ours} {other}" if ours_first else f"{other} {ours}"

    resp = client.post(WEBHOOK, data=body, headers=headers)

    assert resp.status_code == 200
    assert_matches_clerk(db.users.find_one({"clerkId": data["id"]}), data)


def test_only_foreign_signatures_are_rejected(client, db):
    body = json.dumps(created(clerk_user(new_id(), 1)))
    mid, at = msg_id(), datetime.now(UTC)
    headers = signed_headers(body, msg_id=mid, at=at)
    other = Webhook(OTHER_SECRET).sign(mid, at, body)
    headers["svix-signature"] = f"{other} v1,{'A' * 43}="
    resp = client.post(WEBHOOK, data=body, headers=headers)
    assert resp.status_code == 400
    assert_nothing_written(db)


# -- duplicates, ordering, deletes -----------------------------------------------------------


def test_resend_with_same_svix_id_is_duplicate_and_changes_nothing(app, client, db):
    data = clerk_user(new_id(), 1)
    event = created(data)
    mid = msg_id()
    first = post(client, event, msg_id=mid, at=datetime.now(UTC) - timedelta(minutes=2))
    assert first.status_code == 200 and first.get_json() == {"outcome": "applied"}
    before = db.users.find_one({"clerkId": data["id"]})

    again = post(client, event, msg_id=mid)  # dashboard resend: fresh timestamp and signature

    assert again.status_code == 200
    assert again.get_json() == {"outcome": "duplicate"}
    assert db.users.find_one({"clerkId": data["id"]}) == before
    record = flushed_event(app, mid)
    assert record["outcome"] == "applied" and record["lastOutcome"] == "duplicate"
    assert record["attempts"] == 2


def test_stale_update_after_newer_is_acknowledged_and_ignored(client, db):
    uid = new_id()
    newest = clerk_user(uid, 30, first_name="Newest")
    assert post(client, updated(newest)).get_json() == {"outcome": "applied"}  # update before create
    before = db.users.find_one({"clerkId": uid})

    late_create = post(client, created(clerk_user(uid, 0, first_name="First")))
    late_update = post(client, updated(clerk_user(uid, 20, first_name="Middle")))

    assert late_create.status_code == 200 and late_create.get_json() == {"outcome": "stale"}
    assert late_update.status_code == 200 and late_update.get_json() == {"outcome": "stale"}
    assert db.users.find_one({"clerkId": uid}) == before
    assert_matches_clerk(before, newest)


def test_delete_then_late_create_and_update_recreate_nothing(client, db):
    uid, friend = new_id(), new_id()
    assert post(client, created(clerk_user(uid, 1))).get_json() == {"outcome": "applied"}
    assert post(client, created(clerk_user(friend, 1))).get_json() == {"outcome": "applied"}
    uid_oid = db.users.find_one({"clerkId": uid})["_id"]
    db.users.update_one({"clerkId": friend}, {"$set": {"followers": [uid_oid], "following": [uid_oid]}})

    resp = post(client, deleted(uid))

    assert resp.status_code == 200 and resp.get_json() == {"outcome": "deleted"}
    assert db.users.find_one({"clerkId": uid}) is None
    assert db.deleted_users.find_one({"_id": uid}) is not None
    friend_doc = db.users.find_one({"clerkId": friend})
    assert friend_doc["followers"] == [] and friend_doc["following"] == []
    assert post(client, updated(clerk_user(uid, 50))).get_json() == {"outcome": "stale"}
    assert post(client, created(clerk_user(uid, 1))).get_json() == {"outcome": "stale"}
    assert db.users.count_documents({"clerkId": uid}) == 0


def test_delete_arriving_first_blocks_the_create(client, db):
    uid = new_id()
    first = post(client, deleted(uid))
    assert first.status_code == 200 and first.get_json() == {"outcome": "deleted"}

    late = post(client, created(clerk_user(uid, 1)))

    assert late.status_code == 200 and late.get_json() == {"outcome": "stale"}
    assert db.users.count_documents({}) == 0
    assert db.deleted_users.count_documents({"_id": uid}) == 1
    assert post(client, deleted(uid)).get_json() == {"outcome": "duplicate"}


@pytest.mark.parametrize(
    "event",
    [
        make_webhook_event("session.created", {"id": "sess_1", "object": "session", "user_id": "user_1"}),
        make_webhook_event("organization.created", {"id": "org_1", "object": "organization", "name": "Acme"}),
        make_webhook_event(
            "email.created",
            {"id": "ema_1", "object": "email", "to_email_address": "someone@example.com", "slug": "otp"},
        ),
    ],
    ids=lambda e: e["type"],
)
def test_other_event_types_are_acknowledged_and_ignored(app, client, db, event):
    mid = msg_id()
    resp = post(client, event, msg_id=mid)

    assert resp.status_code == 200
    assert resp.get_json() == {"outcome": "ignored"}
    assert_nothing_written(db)
    record = flushed_event(app, mid)
    assert record["outcome"] == "ignored" and record["type"] == event["type"]


# -- concurrency ----------------------------------------------------------------------------


def test_concurrent_out_of_order_deliveries_converge_to_clerks_state(app, db):
    rng = random.Random(20260101)
    ids = [new_id() for _ in range(8)]
    to_delete = set(ids[:3])
    clerk_final: dict[str, dict[str, Any]] = {}
    deliveries: list[tuple[str, dict[str, Any]]] = []
    for i, uid in enumerate(ids):
        versions = [
            clerk_user(uid, v, first_name=f"v{v}", username=f"person{i}_v{v}" if v % 2 else None)
            for v in range(1, 6)
        ]
        deliveries.append((msg_id(), created(versions[0])))
        deliveries.extend((msg_id(), updated(data)) for data in versions[1:])
        if uid in to_delete:
            deliveries.append((msg_id(), deleted(uid)))
        else:
            clerk_final[uid] = versions[-1]
    session = make_webhook_event("session.created", {"id": "sess_9", "object": "session"})
    deliveries.append((msg_id(), session))
    jobs = [d for d in deliveries for _ in range(rng.randint(3, 6))]  # duplicates of every delivery
    rng.shuffle(jobs)
    assert len(jobs) >= 150

    def deliver(chunk):
        client = app.test_client()
        out = []
        for mid, event in chunk:
            resp = post(client, event, msg_id=mid)
            out.append((resp.status_code, resp.get_json()))
        return out

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = [r for chunk in pool.map(deliver, [jobs[i::16] for i in range(16)]) for r in chunk]

    assert {status for status, _ in results} == {200}, [r for r in results if r[0] != 200][:5]
    assert {body["outcome"] for _, body in results} <= {"applied", "stale", "duplicate", "deleted", "ignored"}
    docs = list(db.users.find({}))
    assert sorted(d["clerkId"] for d in docs) == sorted(clerk_final)
    for doc in docs:
        assert_matches_clerk(doc, clerk_final[doc["clerkId"]])
        assert set(doc) == USER_DOC_FIELDS
    assert {t["_id"] for t in db.deleted_users.find({})} == to_delete
    events = app.extensions["webhook_service"].events
    events.flush()
    assert db.events.count_documents({}) == len(deliveries)
    assert sum(e["attempts"] for e in db.events.find({}, {"attempts": 1})) == len(jobs)


# -- database outage -------------------------------------------------------------------------


def test_database_down_answers_503_then_the_same_delivery_applies(restartable, make_app):
    app = make_app(db_timeout_ms=1500)
    db = app.extensions["webhook_service"].db
    client = app.test_client()
    existing = clerk_user(new_id(), 1)
    assert post(client, created(existing)).status_code == 200  # indexes made, pool warm
    newer = clerk_user(existing["id"], 2, first_name="AfterOutage")
    brand_new = clerk_user(new_id(), 1)
    update_id, create_id = msg_id(), msg_id()

    with database_down(restartable):
        for event, mid in ((updated(newer), update_id), (created(brand_new), create_id)):
            resp = post(client, event, msg_id=mid)
            assert resp.status_code == 503
            assert_clean_error(resp)
            assert "outcome" not in resp.get_json()
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.is_json
        assert client.get("/healthz").status_code == 200

    for _ in range(100):  # as a load balancer would: wait until ready again
        if client.get("/readyz").status_code == 200:
            break
        time.sleep(0.1)
    resent_update = post(client, updated(newer), msg_id=update_id)  # Svix retry: new signature
    resent_create = post(client, created(brand_new), msg_id=create_id)

    assert resent_update.status_code == 200 and resent_update.get_json() == {"outcome": "applied"}
    assert resent_create.status_code == 200 and resent_create.get_json() == {"outcome": "applied"}
    assert_matches_clerk(db.users.find_one({"clerkId": existing["id"]}), newer)
    assert_matches_clerk(db.users.find_one({"clerkId": brand_new["id"]}), brand_new)
    record = flushed_event(app, update_id)
    assert record["outcome"] == "applied" and record["lastOutcome"] == "applied"
    assert record["attempts"] == 2  # the failed attempt is on record too


# -- the delivery log line -----------------------------------------------------------------


@pytest.fixture
def delivery_log(caplog):
    """Records of ``webhook_service.delivery``, even if logging was configured not to propagate."""
    logger = logging.getLogger("webhook_service.delivery")
    reaches_root, node = True, logger
    while node is not None and node.parent is not None:
        reaches_root = reaches_root and node.propagate
        node = node.parent
    extra_handler = None if reaches_root else caplog.handler
    if extra_handler is not None:
        logger.addHandler(extra_handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield caplog
    finally:
        if extra_handler is not None:
            logger.removeHandler(extra_handler)
        logger.setLevel(old_level)


def _record_text(record: logging.LogRecord) -> str:
    """Everything a text or JSON formatter could print for this record."""
    return record.getMessage() + " " + " ".join(f"{k}={v!r}" for k, v in vars(record).items())


def test_each_delivery_logs_one_line_without_secrets_or_personal_data(client, delivery_log):
    email = "private.person@example.com"
    data = clerk_user(new_id(), 1, email=email, first_name="Private", username="privy")
    cases = [
        (created(data), "user.created", "applied"),
        (deleted(data["id"]), "user.deleted", "deleted"),
        (make_webhook_event("session.created", {"id": "sess_2", "object": "session"}), "session.created",
         "ignored"),
    ]
    for event, event_type, outcome in cases:
        delivery_log.clear()
        mid = msg_id()
        body, headers = signed_delivery(event, msg_id=mid)
        resp = client.post(WEBHOOK, data=body, headers=headers)
        assert resp.get_json() == {"outcome": outcome}

        lines = [r for r in delivery_log.records if r.name == "webhook_service.delivery"]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        message = lines[0].getMessage()
        assert mid in message and event_type in message and outcome in message
        if event_type.startswith("user."):
            assert data["id"] in message
        text = _record_text(lines[0])
        assert TEST_SECRET not in text and TEST_SECRET.removeprefix("whsec_") not in text
        assert email not in text and "Private" not in text and "privy" not in text
        assert body not in text and '"email_addresses"' not in text


@pytest.mark.parametrize("kind", ["tampered", "malformed"])
def test_rejected_delivery_log_line_carries_no_body_or_secret(client, delivery_log, kind):
    data = clerk_user(new_id(), 1, email="tampered.person@example.com")
    if kind == "tampered":
        body, headers = signed_delivery(created(data))
        body = body.replace("tampered.person", "attacker.person")
    else:  # validly signed, but updated_at is missing
        del data["updated_at"]
        body, headers = signed_delivery(updated({**data, "first_name": "attacker.person"}))
        assert "tampered.person" in body

    resp = client.post(WEBHOOK, data=body, headers=headers)

    assert resp.status_code == 400
    lines = [r for r in delivery_log.records if r.name == "webhook_service.delivery"]
    assert len(lines) == 1
    text = _record_text(lines[0])
    assert "rejected" in text and headers["svix-id"] in text
    assert "attacker.person" not in text and "tampered.person" not in text
    assert TEST_SECRET.removeprefix("whsec_") not in text


def test_banned_and_locked_are_kept_so_directory_sync_deprovisioning_reaches_the_app(client, db):
    user = clerk_user(new_id(), 1, email="scim@example.com")
    assert post(client, created(user)).status_code == 200
    assert (db.users.find_one({"clerkId": user["id"]})["banned"]) is False

    deprovisioned = dict(user, updated_at=user["updated_at"] + 1, banned=True, locked=True)
    assert post(client, updated(deprovisioned)).get_json() == {"outcome": "applied"}

    doc = db.users.find_one({"clerkId": user["id"]})
    assert doc["banned"] is True and doc["locked"] is True
