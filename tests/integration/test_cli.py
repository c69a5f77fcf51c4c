"""The operator commands (``flask --app wsgi <command>``) through Flask's CLI test runner.

Real database (SecantusDB), real webhook route (signed deliveries through the test client,
or over HTTP to a running server for ``send-test-event``). Assertions are on the exit code,
the printed rows and the one-line errors, and on the documents in the database.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import Result
from werkzeug.serving import make_server

from tests.support.examples import ORGANIZATION_FIELDS
from tests.support.fake_clerk import make_clerk_user, make_deleted_data, make_webhook_event
from tests.support.helpers import WEBHOOK, newer, one_line_error
from tests.support.mongo_server import free_port
from tests.support.signing import signed_delivery
from webhook_service.dev.sample_events import sample_users

COMMANDS = ("init-db", "reconcile", "events", "replay", "send-test-event", "dev-token")
OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk="


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture
def app(make_app):
    # Short DB timeout: the outage tests wait it out on every operation.
    return make_app(db_timeout_ms=1000)


# -- helpers ------------------------------------------------------------------------


def cli(app, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=list(args))


def post(client, event: dict[str, Any], **kw: Any) -> tuple[str, Any]:
    """Post a signed delivery; returns (svix-id, response)."""
    body, headers = signed_delivery(event, **kw)
    return headers["svix-id"], client.post(WEBHOOK, data=body, headers=headers)


def post_user_event(client, event_type: str, data: dict[str, Any], status: int = 200) -> str:
    svix_id, response = post(client, make_webhook_event(event_type, data))
    assert response.status_code == status, response.get_data(as_text=True)
    return svix_id


def flush(app) -> None:
    app.extensions["webhook_service"].events.flush()


def flush_until(app, query: dict[str, Any], count: int, timeout: float = 20.0) -> None:
    """Flush the buffered event log until ``count`` records match ``query``.

    After an outage the log's background writer may hold a batch in flight against the
    dead connection (it requeues it when that fails), so one flush is not always enough.
    """
    events = app.extensions["webhook_service"].events
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            events.flush()
        if events.collection.count_documents(query) == count:
            return
        assert time.monotonic() < deadline, f"event log never showed {count} records for {query}"
        time.sleep(0.05)


def rows(result: Result) -> list[dict[str, str]]:
    """The delivery rows ``events`` printed, in order, parsed back into fields."""
    lines = result.stdout.strip().splitlines()
    assert lines and re.fullmatch(r"\d+ deliveries", lines[-1]), result.output
    parsed = []
    for line in lines[:-1]:
        fields = line.split()
        parsed.append(
            dict(
                id=fields[2],
                type=fields[3],
                user=fields[4],
                outcome=fields[5],
                attempts=fields[6].removeprefix("attempts="),
                error=line.split("error=", 1)[1] if "error=" in line else "",
            )
        )
    assert int(lines[-1].split()[0]) == len(parsed)
    return parsed


def listed(app, *args: str) -> list[str]:
    """Svix ids ``events ARGS`` lists, in the printed order."""
    result = cli(app, "events", *args)
    assert result.exit_code == 0, result.output
    return [row["id"] for row in rows(result)]


def users_dump(db) -> list[dict[str, Any]]:
    return sorted(db.users.find(), key=lambda d: d["clerkId"])


# -- events -------------------------------------------------------------------------


@pytest.fixture
def deliveries(app, client) -> dict[str, Any]:
    """A small, varied event log: applied, deleted, ignored, rejected and a duplicate."""
    alice, bob = make_clerk_user(seed="alice"), make_clerk_user(seed="bob")
    ids = dict(
        alice_created=post_user_event(client, "user.created", alice),
        alice_updated=post_user_event(client, "user.updated", newer(alice, 1000, first_name="Alicia")),
        bob_created=post_user_event(client, "user.created", bob),
        bob_deleted=post_user_event(client, "user.deleted", make_deleted_data(bob["id"])),
    )
    session = {"id": "sess_2abc", "object": "session", "user_id": alice["id"], "status": "active"}
    ids["session"], response = post(client, make_webhook_event("session.created", session))
    assert response.get_json() == {"outcome": "ignored"}
    ids["malformed"], response = post(client, {"type": "user.created", "data": {"id": "user_x"}})
    assert response.status_code == 400
    # Svix retrying the update: same svix-id and event, new signature.
    update = make_webhook_event("user.updated", newer(alice, 1000, first_name="Alicia"))
    body, headers = signed_delivery(update, msg_id=ids["alice_updated"])
    assert client.post(WEBHOOK, data=body, headers=headers).get_json() == {"outcome": "duplicate"}
    flush(app)
    return dict(ids=ids, alice=alice, bob=bob)


def test_events_lists_every_delivery_with_type_user_outcome_and_attempts(app, deliveries):
    ids, alice, bob = deliveries["ids"], deliveries["alice"], deliveries["bob"]

    result = cli(app, "events")

    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == "6 deliveries"
    by_id = {row["id"]: row for row in rows(result)}
    assert set(by_id) == set(ids.values())
    expected = {
        "alice_created": ("user.created", alice["id"], "applied", "1"),
        "alice_updated": ("user.updated", alice["id"], "applied", "2"),
        "bob_created": ("user.created", bob["id"], "applied", "1"),
        "bob_deleted": ("user.deleted", bob["id"], "deleted", "1"),
        "session": ("session.created", "-", "ignored", "1"),
        "malformed": ("user.created", "-", "rejected", "1"),  # its type's own check refused it
    }
    for name, (event_type, user, outcome, attempts) in expected.items():
        row = by_id[ids[name]]
        assert (row["type"], row["user"], row["outcome"], row["attempts"]) == (
            event_type,
            user,
            outcome,
            attempts,
        ), name
    assert "updated_at" in by_id[ids["malformed"]]["error"]


def test_events_filters_by_status_user_type_and_limit(app, deliveries):
    ids, alice = deliveries["ids"], deliveries["alice"]

    assert set(listed(app, "--status", "applied")) == {
        ids["alice_created"],
        ids["alice_updated"],
        ids["bob_created"],
    }
    assert listed(app, "--status", "deleted") == [ids["bob_deleted"]]
    assert listed(app, "--status", "ignored") == [ids["session"]]
    assert listed(app, "--status", "rejected") == [ids["malformed"]]
    assert listed(app, "--status", "failed") == []
    assert set(listed(app, "--user", alice["id"])) == {ids["alice_created"], ids["alice_updated"]}
    assert listed(app, "--type", "user.updated") == [ids["alice_updated"]]
    assert listed(app, "--type", "user.created", "--user", alice["id"]) == [ids["alice_created"]]
    assert len(listed(app, "--limit", "2")) == 2
    assert len(listed(app, "--limit", "0")) == 6


def test_events_since_accepts_durations_and_iso_times_and_lists_newest_first(app, db, deliveries):
    ids = deliveries["ids"]
    now = datetime.now(UTC)
    db.events.update_one({"_id": ids["alice_created"]}, {"$set": {"receivedAt": now - timedelta(hours=3)}})
    db.events.update_one({"_id": ids["alice_updated"]}, {"$set": {"receivedAt": now - timedelta(days=10)}})
    recent = {ids[k] for k in ("bob_created", "bob_deleted", "session", "malformed")}

    everything = listed(app)
    assert everything[-2:] == [ids["alice_created"], ids["alice_updated"]]
    assert set(everything[:-2]) == recent
    assert set(listed(app, "--since", "30m")) == recent
    assert set(listed(app, "--since", "2h")) == recent
    assert set(listed(app, "--since", "7d")) == recent | {ids["alice_created"]}
    four_hours_ago = (now - timedelta(hours=4)).replace(tzinfo=None).isoformat(timespec="minutes")
    assert set(listed(app, "--since", four_hours_ago)) == recent | {ids["alice_created"]}
    eleven_days_ago = (now - timedelta(days=11)).isoformat()
    assert set(listed(app, "--since", eleven_days_ago)) == set(ids.values())


@pytest.mark.parametrize("command", ["events", "replay"])
@pytest.mark.parametrize("value", ["yesterday", "30 minutes", "2w", "-1h"])
def test_a_bad_since_is_a_usage_error_naming_the_format(app, command, value):
    result = cli(app, command, "--since", value)

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "Invalid value for '--since'" in result.output
    assert "30m, 2h, 7d or 2026-11-29T10:00" in result.output


def test_events_rejects_an_unknown_status(app):
    result = cli(app, "events", "--status", "bogus")

    assert result.exit_code == 2
    assert "Invalid value for '--status'" in result.output


# -- replay -------------------------------------------------------------------------


def test_replay_of_applied_events_goes_through_dedupe_and_ordering_and_changes_nothing(app, client, db):
    user = make_clerk_user(seed="replayed")
    created = post_user_event(client, "user.created", user)
    updated = post_user_event(client, "user.updated", newer(user, 1000, first_name="Second"))
    flush(app)
    before = users_dump(db)

    one = cli(app, "replay", updated)

    assert one.exit_code == 0, one.output
    assert one.stdout.splitlines() == [f"{updated}  user.updated  duplicate", "replayed 1: duplicate 1"]
    assert users_dump(db) == before

    both = cli(app, "replay", "--since", "1h")

    assert both.exit_code == 0, both.output
    lines = both.stdout.splitlines()
    # The older delivery is now stale: replaying it cannot roll the user back.
    assert sorted(lines[:-1]) == sorted(
        [f"{updated}  user.updated  duplicate", f"{created}  user.created  stale"]
    )
    assert lines[-1] == "replayed 2: duplicate 1, stale 1"
    assert users_dump(db) == before
    assert db.users.find_one({"clerkId": user["id"]})["firstName"] == "Second"
    record = db.events.find_one({"_id": updated})
    assert (record["outcome"], record["lastOutcome"], record["attempts"]) == ("applied", "duplicate", 3)
    record = db.events.find_one({"_id": created})
    assert (record["lastOutcome"], record["attempts"]) == ("stale", 2)


def test_replay_of_an_unknown_svix_id_fails_clearly(app, client):
    post_user_event(client, "user.created", make_clerk_user(seed="known"))
    flush(app)

    result = cli(app, "replay", "msg_2doesnotexist")

    assert result.exit_code == 1
    assert one_line_error(result) == "Error: no stored event with svix-id msg_2doesnotexist"


def test_replay_without_a_selection_says_what_to_pass(app):
    result = cli(app, "replay")

    assert result.exit_code == 1
    assert one_line_error(result) == "Error: name a svix-id, or pass --status, --since, --user or --org"


def fail_deliveries_during_outage(app, client, server, users: list[dict[str, Any]]) -> list[str]:
    """Post user.created for each user while the database is down; returns the svix-ids.

    Each is answered 503 and logged as failed once the database is back.
    """
    server.kill()
    ids = []
    for user in users:
        svix_id, response = post(client, make_webhook_event("user.created", user))
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.get_json()["error"] == "database unavailable"
        ids.append(svix_id)
    return ids


def test_failed_deliveries_are_replayed_after_the_database_returns(app, client, db, restartable):
    users = [
        make_clerk_user(seed="outage1", email="first@example.com"),
        make_clerk_user(seed="outage2", username="second_user"),
    ]
    ids = fail_deliveries_during_outage(app, client, restartable, users)

    # While the database is still down, the commands fail with one clear line.
    down = cli(app, "replay", "--status", "failed")
    assert one_line_error(down).startswith("Error: could not read the event log: ")
    down = cli(app, "events")
    assert one_line_error(down).startswith("Error: could not read the event log: ")

    restartable.start()
    flush_until(app, {"_id": {"$in": ids}, "outcome": "failed", "attempts": 1}, 2)
    failed = cli(app, "events", "--status", "failed")
    assert {row["id"] for row in rows(failed)} == set(ids)
    assert all(row["error"].startswith("database error") for row in rows(failed))
    assert db.users.count_documents({}) == 0

    result = cli(app, "replay", "--status", "failed")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert sorted(lines[:-1]) == sorted(f"{i}  user.created  applied" for i in ids)
    assert lines[-1] == "replayed 2: applied 2"
    first = db.users.find_one({"clerkId": users[0]["id"]})
    second = db.users.find_one({"clerkId": users[1]["id"]})
    assert (first["email"], first["username"]) == ("first@example.com", "first")
    assert second["username"] == "second_user"
    assert first["clerkUpdatedAt"] == users[0]["updated_at"]
    for svix_id in ids:
        record = db.events.find_one({"_id": svix_id})
        assert (record["outcome"], record["lastOutcome"], record["attempts"]) == ("applied", "applied", 2)
        assert record["error"] is None
    assert listed(app, "--status", "failed") == []


class _KillOnFirstDelivery(logging.Handler):
    """Stops the database right after the first delivery a replay handles."""

    def __init__(self, server) -> None:
        super().__init__()
        self.server = server
        self.fired = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.fired:
            self.fired = True
            self.server.kill()


def test_replay_that_fails_again_stays_failed_with_the_new_error(app, client, db, restartable):
    users = [make_clerk_user(seed="again1"), make_clerk_user(seed="again2")]
    ids = fail_deliveries_during_outage(app, client, restartable, users)
    restartable.start()
    flush_until(app, {"_id": {"$in": ids}, "outcome": "failed", "attempts": 1}, 2)
    before = {i: db.events.find_one({"_id": i}) for i in ids}

    logger = logging.getLogger("webhook_service.delivery")
    hook, level = _KillOnFirstDelivery(restartable), logger.level
    logger.addHandler(hook)
    logger.setLevel(logging.INFO)
    try:
        result = cli(app, "replay", "--status", "failed")
    finally:
        logger.removeHandler(hook)
        logger.setLevel(level)
        restartable.start()

    assert hook.fired
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = result.stdout.splitlines()
    assert lines[-1] == "replayed 2: applied 1, failed 1"
    applied_id, applied_type, applied_outcome = lines[0].split()
    failed_line = lines[1]
    failed_id = failed_line.split()[0]
    assert (applied_type, applied_outcome) == ("user.created", "applied")
    assert {applied_id, failed_id} == set(ids)
    assert failed_line.startswith(f"{failed_id}  user.created  failed  error=database error")
    new_error = failed_line.split("error=", 1)[1]

    flush_until(app, {"_id": {"$in": ids}, "attempts": 2}, 2)
    record = db.events.find_one({"_id": failed_id})
    assert (record["outcome"], record["lastOutcome"], record["attempts"]) == ("failed", "failed", 2)
    assert record["error"] == new_error
    assert record["lastReceivedAt"] > before[failed_id]["lastReceivedAt"]
    applied = db.events.find_one({"_id": applied_id})
    assert (applied["outcome"], applied["attempts"], applied["error"]) == ("applied", 2, None)
    by_svix = dict(zip(ids, users, strict=True))
    assert db.users.find_one({"clerkId": by_svix[applied_id]["id"]}) is not None
    assert db.users.find_one({"clerkId": by_svix[failed_id]["id"]}) is None


# -- send-test-event ------------------------------------------------------------------


@pytest.fixture
def serve() -> Iterator[Any]:
    """Serve an app over real HTTP on a free port; returns its webhook URL."""
    servers = []

    def start(app) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}{WEBHOOK}"

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(timeout=5)


SENT = re.compile(r"^(user\.\w+) for (user_\w+) \((msg_\w+)\) -> (\d{3}) (.*)$")


def sent(result: Result) -> tuple[str, str, str, int, str]:
    match = SENT.match(result.stdout.strip().splitlines()[-1])
    assert match, result.output
    event_type, user_id, svix_id, status, body = match.groups()
    return event_type, user_id, svix_id, int(status), body


def test_send_test_event_posts_correctly_signed_events_to_a_running_service(app, db, serve):
    url = serve(app)

    created = cli(
        app,
        "send-test-event",
        "user.created",
        "--url",
        url,
        "--new",
        "--email",
        "rosalind@example.com",
        "--username",
        "rfranklin",
        "--first-name",
        "Rosalind",
        "--last-name",
        "Franklin",
    )

    assert created.exit_code == 0, created.output
    event_type, user_id, svix_id, status, body = sent(created)
    assert (event_type, status, body) == ("user.created", 200, '{"outcome":"applied"}')
    doc = db.users.find_one({"clerkId": user_id})
    assert (doc["email"], doc["username"], doc["usernameSource"]) == (
        "rosalind@example.com",
        "rfranklin",
        "clerk",
    )
    assert (doc["firstName"], doc["lastName"]) == ("Rosalind", "Franklin")
    assert doc["lastDeliveryId"] == svix_id

    updated = cli(
        app,
        "send-test-event",
        "user.updated",
        "--url",
        url,
        "--user-id",
        user_id,
        "--email",
        "rf@example.com",
    )

    assert updated.exit_code == 0, updated.output
    assert sent(updated)[3:] == (200, '{"outcome":"applied"}')
    doc = db.users.find_one({"clerkId": user_id})
    assert (doc["email"], doc["username"], doc["usernameSource"]) == ("rf@example.com", "rf", "email")

    deleted = cli(app, "send-test-event", "user.deleted", "--url", url, "--user-id", user_id)

    assert deleted.exit_code == 0, deleted.output
    assert sent(deleted)[3:] == (200, '{"outcome":"deleted"}')
    assert db.users.find_one({"clerkId": user_id}) is None
    assert db.deleted_users.find_one({"_id": user_id}) is not None
    flush(app)
    logged = rows(cli(app, "events", "--user", user_id))
    assert sorted((r["type"], r["outcome"]) for r in logged) == [
        ("user.created", "applied"),
        ("user.deleted", "deleted"),
        ("user.updated", "applied"),
    ]


def test_send_test_event_exits_non_zero_when_the_service_rejects_the_signature(app, make_app, db, serve):
    url = serve(make_app(webhook_signing_secret=OTHER_SECRET))
    result = cli(app, "send-test-event", "user.created", "--url", url, "--email", "x@example.com")

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert sent(result)[3] == 400
    assert db.users.count_documents({}) == 0


def test_send_test_event_to_nothing_listening_fails_clearly(app):
    url = f"http://127.0.0.1:{free_port()}{WEBHOOK}"

    result = cli(app, "send-test-event", "user.created", "--url", url)

    assert one_line_error(result) == f"Error: could not post to {url}: ConnectError"


def test_send_test_event_tells_the_local_clerks_story_by_default(app, db, serve):
    """Without --user-id the event is about Ada, the local Clerk's first user, exactly as
    the local Clerk serves her, so a later sync or reconcile agrees with the webhook."""
    url = serve(app)
    ada = sample_users()[0]

    created = cli(app, "send-test-event", "user.created", "--url", url)

    assert created.exit_code == 0, created.output
    assert sent(created)[:2] == ("user.created", ada["id"])
    doc = db.users.find_one({"clerkId": ada["id"]})
    assert (doc["email"], doc["username"], doc["firstName"], doc["lastName"]) == (
        "ada@example.com",
        "ada",
        "Ada",
        "Lovelace",
    )

    renamed = cli(app, "send-test-event", "user.updated", "--url", url, "--first-name", "Augusta")

    assert sent(renamed)[3:] == (200, '{"outcome":"applied"}')
    assert db.users.find_one({"clerkId": ada["id"]})["firstName"] == "Augusta"

    deleted = cli(app, "send-test-event", "user.deleted", "--url", url)

    assert sent(deleted)[1:4:2] == (ada["id"], 200)
    assert db.users.count_documents({}) == 0


def test_send_test_event_new_user_cannot_be_deleted_or_named(app):
    unused = "http://127.0.0.1:9/unused"

    deleted = cli(app, "send-test-event", "user.deleted", "--url", unused, "--new")
    both = cli(app, "send-test-event", "user.created", "--url", unused, "--new", "--user-id", "user_x")

    assert one_line_error(deleted) == (
        "Error: user.deleted needs an existing user: give --user-id, or leave it out for Ada"
    )
    assert one_line_error(both) == "Error: --new excludes --user-id and --org-id"


# -- init-db and help ---------------------------------------------------------------------


def test_init_db_creates_the_indexes(app, db):
    result = cli(app, "init-db")

    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert "created   users.clerkId_unique (unique clerkId): one document per Clerk user; orders writes" in (
        lines
    )
    assert lines[-1] == "indexes ready: 0 reused, 9 created, no conflicts"
    assert {"clerkId_unique", "usernameLower_unique"} <= set(db.users.index_information())
    assert "expiresAt_ttl" in db.events.index_information()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(app, command):
    result = cli(app, command, "--help")

    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    assert f" {command} " in result.output.splitlines()[0]
    assert "--help" in result.output


def test_the_command_list_names_every_command(app):
    result = cli(app, "--help")

    assert result.exit_code == 0, result.output
    for command in COMMANDS:
        assert re.search(rf"^\s+{re.escape(command)}\s", result.output, re.M), command


def test_send_test_event_tells_the_local_clerks_organization_story(make_app, serve):
    """Organization and membership events are about the local Clerk's organization and its
    members (Ada by default), as it serves them: the whole membership, .deleted included."""
    from webhook_service.dev.sample_organizations import sample_organizations

    app = make_app(organization_fields_file=str(ORGANIZATION_FIELDS))
    db = app.extensions["webhook_service"].db
    url = serve(app)
    [society], members = sample_organizations()
    grace = members[1]["public_user_data"]["user_id"]

    lines = [
        cli(app, "send-test-event", event_type, "--url", url, *extra)
        for event_type, extra in (
            ("organizationMembership.created", ()),
            ("organization.created", ("--name", "The Society")),
            ("organizationMembership.updated", ("--user-id", grace, "--role", "org:admin")),
            ("organizationMembership.deleted", ()),
        )
    ]

    assert [r.exit_code for r in lines] == [0, 0, 0, 0], [r.output for r in lines]
    assert all(" -> 200 " in r.output for r in lines), [r.output for r in lines]
    assert f"organization.created for {society['id']} (" in lines[1].output
    assert db.organizations.find_one()["name"] == "The Society"
    [left] = list(db.memberships.find())
    assert (left["clerkUserId"], left["role"], left["title"]) == (grace, "org:admin", "Engineer")
    gone = cli(app, "send-test-event", "organization.deleted", "--url", url)
    assert gone.exit_code == 0, gone.output
    assert db.organizations.count_documents({}) == 0 and db.memberships.count_documents({}) == 0
