"""Fast unit tests of the dispatch of user events and DeliveryHandler.handle on mongomock.

mongomock needs two shims from tests/support/mongomock_compat.py (see there): bulk_write with
pymongo's ``sort=None`` (the event log) and DuplicateKeyError details naming the index
(the store tells a stale upsert from a username clash by ``keyPattern``). Uniqueness
itself is still mongomock's own check. The real-server versions of these rules, plus
concurrency and partial-index behaviour on a server, are in tests/integration/test_store.py.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import mongomock
import pytest
from bson import ObjectId
from pymongo.errors import AutoReconnect

from tests.support.fake_clerk import make_clerk_user, make_deleted_data, make_webhook_event
from tests.support.helpers import USER_DOC_FIELDS
from tests.support.mongomock_compat import patched_bulk_write
from tests.support.stores import event_log, user_record, user_store, xclone_user
from webhook_service.deliveries import DeliveryHandler
from webhook_service.dispatch import Stores, route
from webhook_service.events import Event, Outcome, parse_event
from webhook_service.resources.users.store import UserStore
from webhook_service.resources.users.usernames import disambiguated_username
from webhook_service.store.eventlog import EventLog, EventRecord

T0 = 1_735_000_000_000  # a Clerk updated_at in ms
ALICE = "user_2aliceAAAAAAAAAAAAAAAAAAAA"
BOB = "user_2bobBBBBBBBBBBBBBBBBBBBBBB"
CAROL = "user_2carolCCCCCCCCCCCCCCCCCCC"


# -- fixtures ------------------------------------------------------------------------------------


class TickingClock:
    """A clock that moves one second per reading, so a re-applied write would show."""

    def __init__(self) -> None:
        self._ticks = itertools.count()

    def __call__(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=next(self._ticks))


@pytest.fixture
def events(mongomock_compat, mock_db) -> Iterator[EventLog]:
    # A long interval: the background writer stays asleep, tests flush() explicitly,
    # so no second thread touches mongomock while a test reads it.
    log = event_log(mock_db, flush_interval_s=3600)
    yield log
    log.close()


@pytest.fixture
def store(mongomock_compat, mock_db) -> UserStore:
    return user_store(mock_db, clock=TickingClock())


@pytest.fixture
def handler(store, events) -> DeliveryHandler:
    return DeliveryHandler(Stores(users=store), events)


@pytest.fixture
def delivery_log(caplog) -> Iterator[pytest.LogCaptureFixture]:
    """Capture webhook_service.delivery even if logging was configured not to propagate."""
    logger = logging.getLogger("webhook_service.delivery")
    reaches_caplog, node = False, logger
    while node is not None and not reaches_caplog:
        reaches_caplog = caplog.handler in node.handlers
        node = node.parent if node.propagate else None
    if not reaches_caplog:  # e.g. wsgi.py's configure_logging() turned propagation off
        logger.addHandler(caplog.handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    caplog.handler.setLevel(logging.INFO)
    yield caplog
    if not reaches_caplog:
        logger.removeHandler(caplog.handler)
    logger.setLevel(old_level)


# -- helpers ---------------------------------------------------------------------------------------

_deliveries = itertools.count(1)


def new_delivery() -> str:
    return f"msg_2unit{next(_deliveries):020d}"


def clerk_user(user_id: str, version: int, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("created_at", T0)
    return make_clerk_user(user_id, updated_at=T0 + version, **kwargs)


def body(event_type: str, data: dict[str, Any]) -> bytes:
    return json.dumps(make_webhook_event(event_type, data, timestamp_ms=T0)).encode()


def deliver(handler: DeliveryHandler, event_type: str, data: dict[str, Any], delivery_id: str | None = None):
    return handler.handle(delivery_id or new_delivery(), body(event_type, data))


def user_doc(db, clerk_id: str) -> dict[str, Any] | None:
    return db.users.find_one({"clerkId": clerk_id})


def primary(data: dict[str, Any]) -> str:
    return next(
        e["email_address"] for e in data["email_addresses"] if e["id"] == data["primary_email_address_id"]
    )


# -- the shim itself -----------------------------------------------------------------------------


def test_event_log_record_and_flush_store_the_record_on_mongomock(mock_db) -> None:
    with patched_bulk_write():
        log = event_log(mock_db, flush_interval_s=3600)
        try:
            log.record(user_record("msg_1", "user.created", ALICE, Outcome.APPLIED, payload='{"x":1}'))
            log.record(user_record("msg_1", "user.created", ALICE, Outcome.DUPLICATE, payload='{"x":1}'))
            log.record(EventRecord("msg_2", "session.created", None, Outcome.IGNORED))
            log.flush()
            first = mock_db.events.find_one({"_id": "msg_1"})
            assert first["type"] == "user.created" and first["userId"] == ALICE
            assert first["outcome"] == "applied"  # the duplicate does not hide what happened
            assert first["lastOutcome"] == "duplicate"
            assert first["attempts"] == 2
            assert first["payload"] == '{"x":1}'
            assert first["expiresAt"] > first["receivedAt"]
            assert mock_db.events.find_one({"_id": "msg_2"})["outcome"] == "ignored"
        finally:
            log.close()


def test_without_the_shim_mongomock_bulk_write_is_broken() -> None:
    """Guards the shim's reason to exist: when mongomock is fixed, this fails and the shim can go."""
    from pymongo import UpdateOne

    plain_db = mongomock.MongoClient().get_database("unshimmed")
    with pytest.raises(TypeError, match="sort"):
        plain_db.events.bulk_write([UpdateOne({"_id": 1}, {"$set": {"a": 1}}, upsert=True)])


def test_without_the_shim_mongomock_refuses_an_index_hint() -> None:
    """Guards the hint shim: when mongomock takes hints, this fails and the shim can go."""
    plain_db = mongomock.MongoClient().get_database("unshimmed")
    with pytest.raises(NotImplementedError, match="hint"):
        plain_db.users.update_one({"clerkId": "a"}, {"$set": {"x": 1}}, hint=[("clerkId", 1)])


def test_shim_refuses_a_real_sort_instead_of_ignoring_it(mock_db) -> None:
    from pymongo import UpdateOne

    with patched_bulk_write(), pytest.raises(NotImplementedError):
        mock_db.events.bulk_write([UpdateOne({"_id": 1}, {"$set": {"a": 1}}, upsert=True, sort={"a": 1})])


# -- create / update -------------------------------------------------------------------------------


def test_created_then_updated_applies_clerk_fields_and_app_defaults(handler, mock_db) -> None:
    created = clerk_user(ALICE, 0, email="alice@example.com", first_name="Alice", last_name="Liddell")
    result = deliver(handler, "user.created", created)
    assert (result.outcome, result.status) == (Outcome.APPLIED, 200)
    assert (result.event_type, result.user_id) == ("user.created", ALICE)

    doc = user_doc(mock_db, ALICE)
    assert doc["clerkId"] == ALICE
    assert doc["email"] == "alice@example.com"
    assert (doc["firstName"], doc["lastName"]) == ("Alice", "Liddell")
    assert doc["username"] == "alice"
    assert doc["profilePicture"] == created["image_url"]
    assert doc["bannerImage"] == "" and doc["bio"] == "" and doc["location"] == ""
    assert doc["followers"] == [] and doc["following"] == []
    assert doc["clerkUpdatedAt"] == T0
    assert set(doc) == USER_DOC_FIELDS
    created_at = doc["createdAt"]

    updated = clerk_user(
        ALICE,
        5,
        email="alice@wonderland.example",
        first_name="Al",
        last_name=None,
        image_url="https://i/a.png",
    )
    result = deliver(handler, "user.updated", updated)
    assert (result.outcome, result.status) == (Outcome.APPLIED, 200)
    doc = user_doc(mock_db, ALICE)
    assert doc["email"] == "alice@wonderland.example"
    assert (doc["firstName"], doc["lastName"]) == ("Al", "")
    assert doc["profilePicture"] == "https://i/a.png"
    assert doc["clerkUpdatedAt"] == T0 + 5
    assert doc["createdAt"] == created_at
    assert doc["updatedAt"] > created_at
    assert mock_db.users.count_documents({}) == 1


def test_updated_before_created_creates_the_user(handler, mock_db) -> None:
    """Svix does not order deliveries: an update may be the first thing we hear."""
    assert deliver(handler, "user.updated", clerk_user(ALICE, 5, email="a@x.com")).outcome is Outcome.APPLIED
    assert deliver(handler, "user.created", clerk_user(ALICE, 0, email="old@x.com")).outcome is Outcome.STALE
    assert user_doc(mock_db, ALICE)["email"] == "a@x.com"


def test_app_owned_fields_survive_a_later_update(handler, mock_db) -> None:
    deliver(handler, "user.created", clerk_user(ALICE, 0))
    deliver(handler, "user.created", clerk_user(BOB, 0))
    bob_id = user_doc(mock_db, BOB)["_id"]
    mock_db.users.update_one(
        {"clerkId": ALICE},
        {
            "$set": {"bio": "Down the rabbit hole", "location": "Oxford", "bannerImage": "https://i/b.png"},
            "$push": {"followers": bob_id, "following": bob_id},
        },
    )

    assert (
        deliver(handler, "user.updated", clerk_user(ALICE, 9, first_name="Alicia")).outcome is Outcome.APPLIED
    )
    doc = user_doc(mock_db, ALICE)
    assert doc["firstName"] == "Alicia"
    assert (doc["bio"], doc["location"], doc["bannerImage"]) == (
        "Down the rabbit hole",
        "Oxford",
        "https://i/b.png",
    )
    assert doc["followers"] == [bob_id] and doc["following"] == [bob_id]


def test_stale_update_changes_nothing(handler, mock_db) -> None:
    deliver(handler, "user.updated", clerk_user(ALICE, 10, first_name="New"))
    before = user_doc(mock_db, ALICE)
    result = deliver(handler, "user.updated", clerk_user(ALICE, 3, first_name="Old", email="old@example.com"))
    assert (result.outcome, result.status) == (Outcome.STALE, 200)
    assert user_doc(mock_db, ALICE) == before
    assert mock_db.users.count_documents({}) == 1


def test_equal_version_from_another_delivery_applies(handler, mock_db) -> None:
    deliver(handler, "user.updated", clerk_user(ALICE, 10, first_name="One"))
    assert (
        deliver(handler, "user.updated", clerk_user(ALICE, 10, first_name="Two")).outcome is Outcome.APPLIED
    )
    assert user_doc(mock_db, ALICE)["firstName"] == "Two"


@pytest.mark.parametrize("event_type", ["user.created", "user.updated"])
def test_same_delivery_again_is_duplicate_and_changes_nothing(handler, mock_db, events, event_type) -> None:
    msg = new_delivery()
    data = clerk_user(ALICE, 0)
    assert deliver(handler, event_type, data, msg).outcome is Outcome.APPLIED
    before = user_doc(mock_db, ALICE)

    again = deliver(handler, event_type, data, msg)
    assert (again.outcome, again.status) == (Outcome.DUPLICATE, 200)
    after = user_doc(mock_db, ALICE)
    assert after["updatedAt"] == before["updatedAt"]  # the store's clock moved; the write did not happen
    assert after == before

    events.flush()
    record = events.get(msg)
    assert (record["outcome"], record["lastOutcome"], record["attempts"]) == ("applied", "duplicate", 2)


# -- delete --------------------------------------------------------------------------------------


@pytest.mark.parametrize("late", ["user.created", "user.updated"])
def test_delete_first_then_created_leaves_no_document(handler, mock_db, late) -> None:
    deleted = deliver(handler, "user.deleted", make_deleted_data(ALICE))
    assert (deleted.outcome, deleted.status, deleted.user_id) == (Outcome.DELETED, 200, ALICE)
    result = deliver(handler, late, clerk_user(ALICE, 0))
    assert (result.outcome, result.status) == (Outcome.STALE, 200)
    assert user_doc(mock_db, ALICE) is None
    assert mock_db.deleted_users.find_one({"_id": ALICE}) is not None


def test_delete_removes_user_and_pulls_it_from_follow_lists(handler, mock_db) -> None:
    for user_id in (ALICE, BOB, CAROL):
        deliver(handler, "user.created", clerk_user(user_id, 0))
    alice, bob, carol = (user_doc(mock_db, u)["_id"] for u in (ALICE, BOB, CAROL))
    mock_db.users.update_one({"_id": bob}, {"$set": {"followers": [alice, carol], "following": [alice]}})
    mock_db.users.update_one({"_id": carol}, {"$set": {"followers": [bob], "following": [alice, bob]}})

    result = deliver(handler, "user.deleted", make_deleted_data(ALICE))
    assert (result.outcome, result.status) == (Outcome.DELETED, 200)
    assert user_doc(mock_db, ALICE) is None
    assert mock_db.users.find_one({"_id": bob}, {"followers": 1, "following": 1, "_id": 0}) == {
        "followers": [carol],
        "following": [],
    }
    assert mock_db.users.find_one({"_id": carol}, {"followers": 1, "following": 1, "_id": 0}) == {
        "followers": [bob],
        "following": [bob],
    }
    tombstone = mock_db.deleted_users.find_one({"_id": ALICE})
    assert tombstone["objectIds"] == [alice]


def test_update_after_delete_does_not_resurrect(handler, mock_db) -> None:
    deliver(handler, "user.created", clerk_user(ALICE, 0))
    deliver(handler, "user.deleted", make_deleted_data(ALICE))
    assert deliver(handler, "user.updated", clerk_user(ALICE, 99)).outcome is Outcome.STALE
    assert user_doc(mock_db, ALICE) is None


def test_redelivered_delete_is_duplicate(handler, mock_db) -> None:
    deliver(handler, "user.created", clerk_user(ALICE, 0))
    msg = new_delivery()
    assert deliver(handler, "user.deleted", make_deleted_data(ALICE), msg).outcome is Outcome.DELETED
    assert deliver(handler, "user.deleted", make_deleted_data(ALICE), msg).outcome is Outcome.DUPLICATE
    assert mock_db.users.count_documents({}) == 0


# -- other event types, malformed bodies ------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("session.created", {"id": "sess_1", "object": "session", "user_id": ALICE, "status": "active"}),
        ("email.created", {"object": "email", "to_email_address": "alice@example.com", "user_id": ALICE}),
        ("organization.created", {"id": "org_1", "object": "organization", "name": "Acme"}),
    ],
)
def test_non_user_events_are_ignored_and_write_no_user(handler, mock_db, events, event_type, data) -> None:
    msg = new_delivery()
    result = deliver(handler, event_type, data, msg)
    assert (result.outcome, result.status) == (Outcome.IGNORED, 200)
    assert (result.event_type, result.user_id) == (event_type, None)
    assert mock_db.users.count_documents({}) == 0
    assert mock_db.deleted_users.count_documents({}) == 0
    events.flush()
    assert events.get(msg)["outcome"] == "ignored"


def apply(store: UserStore, event: Event) -> Outcome | None:
    """The event as the registry dispatches it; None when no entry takes it (ignored)."""
    routed = route(Stores(users=store), event.type)
    if routed is None:
        return None
    entry, target = routed
    return entry.apply(target, event, entry.subject(event), new_delivery())


def test_a_type_not_in_the_registry_is_not_dispatched(store, mock_db) -> None:
    event = parse_event(body("session.ended", {"id": "sess_1", "user_id": ALICE}))
    assert apply(store, event) is None
    assert mock_db.users.count_documents({}) == 0


def test_the_registry_applies_user_created_and_deleted(store, mock_db) -> None:
    created = parse_event(body("user.created", clerk_user(ALICE, 0, email="alice@example.com")))
    assert apply(store, created) is Outcome.APPLIED
    assert user_doc(mock_db, ALICE)["email"] == "alice@example.com"
    deleted = parse_event(body("user.deleted", make_deleted_data(ALICE)))
    assert apply(store, deleted) is Outcome.DELETED
    assert user_doc(mock_db, ALICE) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"type": "user.created", "data": {"updated_at": 1}}',
        b'{"type": "user.updated", "data": {"id": "user_1", "updated_at": "yesterday"}}',
        b"\xff\xfe\x00",
    ],
    ids=["not-json", "array", "no-id", "bad-updated-at", "not-utf8"],
)
def test_malformed_body_is_rejected_with_400_and_writes_no_user(handler, mock_db, events, raw) -> None:
    msg = new_delivery()
    result = handler.handle(msg, raw)
    assert (result.outcome, result.status) == (Outcome.REJECTED, 400)
    assert result.error
    assert mock_db.users.count_documents({}) == 0
    assert mock_db.deleted_users.count_documents({}) == 0
    events.flush()
    assert events.get(msg)["outcome"] == "rejected"


# -- logging -------------------------------------------------------------------------------------


def test_one_log_line_per_delivery_with_ids_and_outcome_but_no_payload(handler, delivery_log) -> None:
    email = "alice.secret@example.com"
    data = clerk_user(ALICE, 0, email=email, first_name="Alicesecretname")
    msgs = [new_delivery() for _ in range(4)]
    deliver(handler, "user.created", data, msgs[0])
    deliver(handler, "user.created", data, msgs[1])  # another delivery, same version: applies again
    deliver(handler, "user.created", data, msgs[1])  # the same delivery again: duplicate
    handler.handle(msgs[2], b"{not json")
    deliver(handler, "session.created", {"id": "sess_1", "user_id": ALICE}, msgs[3])

    records = [r for r in delivery_log.records if r.name == "webhook_service.delivery"]
    lines = [r.getMessage() for r in records]
    assert len(lines) == 5, lines
    expected = [
        (msgs[0], "user.created", ALICE, "applied"),
        (msgs[1], "user.created", ALICE, "applied"),
        (msgs[1], "user.created", ALICE, "duplicate"),
        (msgs[2], None, None, "rejected"),
        (msgs[3], "session.created", None, "ignored"),
    ]
    for line, record, (msg, event_type, user_id, outcome) in zip(lines, records, expected, strict=True):
        assert msg in line
        assert f"outcome={outcome}" in line
        assert f"type={event_type}" in line
        assert f"user={user_id}" in line
        assert (record.svix_id, record.event_type, record.user_id, record.outcome) == (
            msg,
            event_type,
            user_id,
            outcome,
        )
    for record in records:
        rendered = record.getMessage() + " " + json.dumps(record.__dict__, default=str)
        assert email not in rendered
        assert "Alicesecretname" not in rendered
        assert "not json" not in rendered
        assert "email_addresses" not in rendered


# -- username collisions ----------------------------------------------------------------------------


def test_second_user_with_same_email_local_part_gets_disambiguated_name(handler, mock_db) -> None:
    deliver(handler, "user.created", clerk_user(ALICE, 0, email="alice@one.example"))
    result = deliver(handler, "user.created", clerk_user(BOB, 0, email="Alice+news@two.example"))
    assert result.outcome is Outcome.APPLIED
    assert user_doc(mock_db, ALICE)["username"] == "alice"
    bob = user_doc(mock_db, BOB)
    assert bob["username"] == disambiguated_username("alice", BOB)
    assert bob["username"] != "alice"
    assert bob["usernameSource"] == "email"

    # The holder keeps it however often the newcomer's events arrive.
    deliver(handler, "user.updated", clerk_user(BOB, 5, email="alice@two.example"))
    assert user_doc(mock_db, BOB)["username"] == disambiguated_username("alice", BOB)
    assert user_doc(mock_db, ALICE)["username"] == "alice"


def test_disambiguation_is_reproducible_on_a_fresh_database(mock_db, mongomock_compat) -> None:
    """The same deliveries on two databases give the same names: no counters, no randomness."""
    names = []
    for name in ("one", "two"):
        db = mock_db.client.get_database(name)
        store = user_store(db)
        for user_id in (ALICE, BOB, CAROL):
            local = xclone_user(clerk_user(user_id, 0, email="sam@example.com"))
            store.upsert_if_newer(local, new_delivery())
        names.append(sorted((d["clerkId"], d["username"]) for d in db.users.find()))
    assert (
        names[0]
        == names[1]
        == sorted(
            [
                (ALICE, "sam"),
                (BOB, disambiguated_username("sam", BOB)),
                (CAROL, disambiguated_username("sam", CAROL)),
            ]
        )
    )


def test_clerk_username_takes_name_from_derived_holder(handler, mock_db) -> None:
    deliver(handler, "user.created", clerk_user(ALICE, 0, email="alice@example.com"))
    assert user_doc(mock_db, ALICE)["username"] == "alice"

    result = deliver(handler, "user.created", clerk_user(BOB, 0, username="alice", email="bob@example.com"))
    assert result.outcome is Outcome.APPLIED
    bob, alice = user_doc(mock_db, BOB), user_doc(mock_db, ALICE)
    assert (bob["username"], bob["usernameSource"]) == ("alice", "clerk")
    assert alice["username"] == disambiguated_username("alice", ALICE)
    assert alice["usernameLower"] == alice["username"].lower()
    assert alice["usernameSource"] == "email"


def test_clerk_username_collides_case_insensitively(handler, mock_db) -> None:
    deliver(handler, "user.created", clerk_user(ALICE, 0, email="alice@example.com"))
    deliver(handler, "user.created", clerk_user(BOB, 0, username="Alice"))
    assert user_doc(mock_db, BOB)["username"] == "Alice"
    assert user_doc(mock_db, ALICE)["username"] == disambiguated_username("alice", ALICE)


def test_derived_newcomer_does_not_take_a_clerk_username(handler, mock_db) -> None:
    deliver(handler, "user.created", clerk_user(BOB, 0, username="alice"))
    deliver(handler, "user.created", clerk_user(ALICE, 50, email="alice@example.com"))
    assert user_doc(mock_db, BOB)["username"] == "alice"
    assert user_doc(mock_db, ALICE)["username"] == disambiguated_username("alice", ALICE)


def test_newer_clerk_username_wins_and_the_old_holder_settles_on_its_next_event(handler, mock_db) -> None:
    # Clerk: Alice was "sam" at v1, renamed to "samantha" at v3; Bob took "sam" at v2.
    # We hear Alice@v1, then Bob@v2, then Alice@v3.
    deliver(handler, "user.created", clerk_user(ALICE, 1, username="sam"))
    deliver(handler, "user.updated", clerk_user(BOB, 2, username="sam"))
    assert user_doc(mock_db, BOB)["username"] == "sam"
    assert user_doc(mock_db, ALICE)["username"] == disambiguated_username("sam", ALICE)
    deliver(handler, "user.updated", clerk_user(ALICE, 3, username="samantha"))
    assert user_doc(mock_db, ALICE)["username"] == "samantha"
    assert user_doc(mock_db, BOB)["username"] == "sam"


def test_stale_event_does_not_move_another_users_username(handler, mock_db) -> None:
    deliver(handler, "user.created", clerk_user(ALICE, 10, email="alice@example.com"))
    deliver(handler, "user.updated", clerk_user(BOB, 20, username="bobby"))
    # A late, older event for Bob claiming "alice" as his Clerk username.
    result = deliver(handler, "user.updated", clerk_user(BOB, 5, username="alice"))
    assert result.outcome is Outcome.STALE
    assert user_doc(mock_db, ALICE)["username"] == "alice"
    assert user_doc(mock_db, BOB)["username"] == "bobby"


def test_fallback_username_for_phone_only_user(handler, mock_db) -> None:
    data = clerk_user(ALICE, 0, phone_only=True)
    assert deliver(handler, "user.created", data).outcome is Outcome.APPLIED
    doc = user_doc(mock_db, ALICE)
    assert doc["email"] is None
    assert doc["usernameSource"] == "fallback" and doc["username"].startswith("user_")


def test_legacy_document_without_version_is_adopted(handler, mock_db) -> None:
    """A user written by the old login hook (no clerkUpdatedAt) is taken over, app fields kept."""
    legacy_id = ObjectId()
    mock_db.users.insert_one(
        {
            "_id": legacy_id,
            "clerkId": ALICE,
            "email": "old@example.com",
            "username": "alice_old",
            "bio": "hi",
            "followers": [],
            "following": [],
        }
    )
    result = deliver(handler, "user.updated", clerk_user(ALICE, 0, email="alice@example.com"))
    assert result.outcome is Outcome.APPLIED
    doc = user_doc(mock_db, ALICE)
    assert doc["_id"] == legacy_id
    assert doc["email"] == "alice@example.com" and doc["username"] == "alice"
    assert doc["bio"] == "hi"
    assert doc["clerkUpdatedAt"] == T0
    assert mock_db.users.count_documents({}) == 1


def test_handler_never_raises_for_these_bodies(handler: DeliveryHandler) -> None:
    """A delivery always ends in a result the route can answer with."""
    bodies: list[Callable[[], bytes]] = [
        lambda: b"",
        lambda: b"[" * 100_000,
        lambda: body("user.deleted", {"id": "user_1"}),
        lambda: body("user.created", clerk_user("user_odd", 0, username="   ")),
    ]
    for make in bodies:
        result = handler.handle(new_delivery(), make())
        assert result.status in (200, 400)


class _UnreachableEvents:
    """An events collection whose every insert fails at once, as a refused connection does."""

    def __init__(self, database: Any) -> None:
        self.database = database
        self.inserts = 0

    def insert_many(self, *args: Any, **kwargs: Any) -> None:
        self.inserts += 1
        raise AutoReconnect("connection refused")


def test_the_event_log_writer_backs_off_while_writes_fail_then_writes_everything(mongomock_compat, mock_db):
    """A full buffer is written at once while writes succeed, but not while they fail:
    then the writer waits longer between attempts instead of retrying in a tight loop."""
    log = event_log(mock_db, flush_interval_s=0.05, batch_size=10)
    real_collection = log.collection
    down = log.collection = _UnreachableEvents(mock_db)  # type: ignore[assignment]
    try:
        for i in range(25):
            log.record(user_record(f"down-{i}", "user.updated", ALICE, Outcome.APPLIED, payload="{}"))
        time.sleep(1.0)
        assert 2 <= down.inserts <= 6  # 0.05 s doubling: 0.1, 0.2, 0.4, 0.8 s between tries
        log.collection = real_collection
        deadline = time.monotonic() + 8
        while mock_db.events.count_documents({}) < 25 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mock_db.events.count_documents({}) == 25
    finally:
        log.collection = real_collection
        log.close()
