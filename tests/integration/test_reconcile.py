"""``flask reconcile`` end to end: the real CLI command, a real database, FakeClerkAPI over HTTP.

The app is built exactly as in production (create_app with a Config) with CLERK_API_URL
pointing at a local FakeClerkAPI; the command runs through Flask's CLI test runner.
Assertions are on the documents in ``users`` / ``deleted_users``, on what the fake was
asked, and on what the operator reads (the summary line, the error line, the exit code).

Faults "mid-run" are placed deterministically: the fake's fault queue answers the next
list request with the exact first page it would have served anyway (a 200 with that
body), and the request after it with the failure.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from typing import Any

import pytest
from bson import ObjectId
from click.testing import Result

from tests.support.fake_clerk import (
    FakeClerkAPI,
    make_clerk_user,
    make_deleted_data,
    make_users,
    make_webhook_event,
)
from tests.support.helpers import (
    USER_DOC_FIELDS,
    WEBHOOK,
    deliver,
    fail_point,
    legacy_user_doc,
    newer,
    one_line_error,
)
from tests.support.signing import signed_delivery
from tests.support.stores import xclone_user
from webhook_service.dev.sample_events import now_ms
from webhook_service.mirror import batched as batched_module
from webhook_service.resources.users.clerk import UserSource

PAGE = 500
START_MS = 1_672_531_200_000  # make_users' default start: 2023-01-01


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture
def app(make_app, fake_clerk):
    # A page is one bulk write of up to 500 upserts, which SecantusDB takes seconds over
    # while webhooks compete; the per-operation DB timeout is not what these tests are about.
    return make_app(
        clerk_secret_key=fake_clerk.secret_key, clerk_api_url=fake_clerk.url, db_timeout_ms=30_000
    )


# -- helpers ------------------------------------------------------------------------


def run(app, *args: str) -> Result:
    """``flask reconcile ARGS`` through the CLI runner, unpaced unless ARGS say otherwise."""
    pacing = [] if "--max-rps" in args else ["--max-rps", "0"]
    return app.test_cli_runner().invoke(args=["reconcile", *pacing, *args])


def summary(result: Result) -> str:
    """The counts of the command's one-line summary (its last stdout line, before the rate)."""
    lines = result.stdout.strip().splitlines()
    assert lines, result.output
    counts, _, rate = lines[-1].partition("; ")
    assert re.fullmatch(r"\d+ Clerk requests? in \d+\.\d s( \(\d+\.\d/s\))?", rate), lines[-1]
    return counts


def assert_ok(result: Result) -> None:
    assert result.exit_code == 0, result.output
    assert result.exception is None, result.exception


def assert_summary(result: Result, expected: str) -> None:
    """The command succeeded and its summary line is ``expected``."""
    assert_ok(result)
    assert summary(result) == expected


def doc(db, clerk_id: str) -> dict[str, Any] | None:
    return db.users.find_one({"clerkId": clerk_id})


def dump(db) -> dict[str, list[dict[str, Any]]]:
    """Every document of both collections reconcile may write, in a stable order."""
    return {
        "users": sorted(db.users.find(), key=lambda d: d["clerkId"]),
        "deleted_users": sorted(db.deleted_users.find(), key=lambda d: d["_id"]),
    }


def primary_address(user: dict[str, Any]) -> str | None:
    for address in user["email_addresses"]:
        if address["id"] == user["primary_email_address_id"]:
            return address["email_address"]
    return None


def assert_matches_clerk(local: dict[str, Any] | None, user: dict[str, Any]) -> None:
    """The local document carries the Clerk user's own fields (read from the raw User)."""
    assert local is not None, f"{user['id']} missing"
    assert local["email"] == primary_address(user)
    assert local["firstName"] == (user["first_name"] or "")
    assert local["lastName"] == (user["last_name"] or "")
    assert local["profilePicture"] == user["image_url"]
    assert local["clerkUpdatedAt"] == user["updated_at"]


def assert_local_users_are(db, users: list[dict[str, Any]]) -> None:
    """``users`` holds exactly these Clerk users, each with its Clerk fields."""
    local = {d["clerkId"]: d for d in db.users.find()}
    assert set(local) == {u["id"] for u in users}
    for user in users:
        assert_matches_clerk(local[user["id"]], user)


def list_requests(fake_clerk: FakeClerkAPI) -> list:
    """Paging requests (not the by-id lookups reconcile makes before deleting)."""
    return [r for r in fake_clerk.requests if r.path == "/v1/users" and "user_id" not in r.query]


def gaps_between(requests: list) -> list[float]:
    """Seconds between consecutive requests' arrival at the fake."""
    return [b.received_at - a.received_at for a, b in itertools.pairwise(requests)]


def serve_first_page(fake_clerk: FakeClerkAPI, users: list[dict[str, Any]]) -> None:
    """Queue the first list page as the next /v1/users answer, so faults queued after it
    hit the second page: reconcile meets them mid-run.

    The body is exactly what the fake serves for offset 0 (users sorted by created_at).
    """
    first = sorted(users, key=lambda u: (u["created_at"], u["id"]))[:PAGE]
    fake_clerk.fail_next(1, 200, body=first, path_prefix="/v1/users")


def listing_and_a_local_only_user(
    client, fake_clerk: FakeClerkAPI, count: int, seed: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``count`` Clerk users (first page served ahead of any fault queued next), and a user
    only the local database has (delivered by webhook, unknown to Clerk)."""
    users = make_users(count, seed=seed)
    fake_clerk.users = users
    local_only = make_clerk_user(seed=f"{seed}-local-only")
    assert deliver(client, "user.created", local_only) == "applied"
    serve_first_page(fake_clerk, users)
    return users, local_only


# -- scale and mapping --------------------------------------------------------------------


def test_two_thousand_users_across_pages_are_created_with_mapped_fields_and_rerun_changes_nothing(
    app, db, fake_clerk
):
    bulk = make_users(2000, seed="bulk")

    def at(k: int) -> int:  # between two bulk users; k = 0, 2, 3, 5 land on pages 1, 2, 2, 3
        return START_MS + k * 250_000 + 500

    grace = make_clerk_user(
        seed="grace",
        created_at=at(0),
        email="grace.hopper@example.com",
        extra_emails=("old.grace@example.org", "work@navy.example"),
        primary_first=False,
        first_name="Grace",
        last_name="Hopper",
        image_url="https://img.clerk.com/grace.png",
    )
    ada = make_clerk_user(
        seed="ada",
        created_at=at(2),
        email="Ada.Lovelace+clerk@example.com",
        extra_emails=("ada@old.example",),
        primary_first=False,
        first_name="Ada",
        last_name="Lovelace",
    )
    linus = make_clerk_user(seed="linus", created_at=at(3), username="Linus_T", email="lt@example.com")
    phone = make_clerk_user(seed="phone", created_at=at(5), phone_only=True, first_name=None, last_name=None)
    special = [grace, ada, linus, phone]
    fake_clerk.users = bulk + special
    total = len(bulk) + len(special)

    result = run(app)

    assert_summary(
        result,
        f"reconciled: {total} Clerk users in 5 pages: created {total}, updated 0, unchanged 0, deleted 0",
    )
    pages = list_requests(fake_clerk)
    assert {r.query["limit"] for r in pages} == {"500"}
    ordered = sorted(bulk + special, key=lambda u: (u["created_at"], u["id"]))
    assert not any("offset" in r.query for r in pages), "a large offset times out on Clerk's side"
    cursors = [None] + [ordered[i]["id"] for i in (499, 999, 1499, 1999)]
    assert [r.query.get("starting_after") for r in pages] == cursors
    assert {r.query["order_by"].lstrip("+ ") for r in pages} == {"created_at"}
    assert db.users.count_documents({}) == total
    by_id = {d["clerkId"]: d for d in db.users.find()}
    for user in bulk + special:
        assert_matches_clerk(by_id.get(user["id"]), user)
    assert len({d["usernameLower"] for d in by_id.values()}) == total

    g = by_id[grace["id"]]
    assert (g["email"], g["username"], g["usernameSource"]) == (
        "grace.hopper@example.com",
        "grace_hopper",
        "email",
    )
    assert g["profilePicture"] == "https://img.clerk.com/grace.png"
    assert (g["bio"], g["bannerImage"], g["location"], g["followers"], g["following"]) == ("", "", "", [], [])
    assert g["createdAt"] and g["updatedAt"]
    a = by_id[ada["id"]]
    assert (a["email"], a["username"], a["usernameSource"]) == (
        "Ada.Lovelace+clerk@example.com",
        "ada_lovelace",
        "email",
    )
    n = by_id[linus["id"]]
    assert (n["username"], n["usernameLower"], n["usernameSource"]) == ("Linus_T", "linus_t", "clerk")
    p = by_id[phone["id"]]
    assert p["email"] is None and (p["firstName"], p["lastName"]) == ("", "")
    assert p["usernameSource"] == "fallback" and p["username"].startswith("user_")
    assert all(set(doc) == USER_DOC_FIELDS | {"reconcileRun"} for doc in db.users.find({}))

    before = dump(db)
    again = run(app)

    assert_summary(
        again,
        f"reconciled: {total} Clerk users in 5 pages: created 0, updated 0, unchanged {total}, deleted 0",
    )
    after = dump(db)
    strip = lambda docs: [{k: v for k, v in d.items() if k != "reconcileRun"} for d in docs]  # noqa: E731
    assert strip(after["users"]) == strip(before["users"])
    assert after["deleted_users"] == before["deleted_users"] == []


def test_clerk_data_newer_than_local_updates_and_keeps_app_owned_fields(app, client, db, fake_clerk):
    user = make_clerk_user(seed="upd", first_name="Old", email="old@example.com")
    assert deliver(client, "user.created", user) == "applied"
    friend = ObjectId()
    db.users.update_one({"clerkId": user["id"]}, {"$set": {"bio": "hi", "followers": [friend]}})
    current = fake_clerk.add_user(
        newer(user, 9000, first_name="New", email_addresses=[], primary_email_address_id=None)
    )

    result = run(app)

    assert_summary(
        result, "reconciled: 1 Clerk users in 1 pages: created 0, updated 1, unchanged 0, deleted 0"
    )
    local = doc(db, user["id"])
    assert_matches_clerk(local, current)
    assert local["email"] is None
    assert (local["bio"], local["followers"]) == ("hi", [friend])


def test_legacy_document_without_a_version_is_brought_up_to_date(app, db, fake_clerk):
    user = fake_clerk.add_user(make_clerk_user(seed="legacy", email="new@example.com", username="newname"))
    friend = ObjectId()
    db.users.insert_one(legacy_user_doc(user["id"], friend))

    result = run(app)

    assert_summary(
        result, "reconciled: 1 Clerk users in 1 pages: created 0, updated 1, unchanged 0, deleted 0"
    )
    local = doc(db, user["id"])
    assert_matches_clerk(local, user)
    assert local["username"] == "newname"
    assert (local["bio"], local["location"], local["followers"]) == ("legacy bio", "Paris", [friend])
    assert db.users.count_documents({}) == 1


# -- deletions ------------------------------------------------------------------------------


def test_local_users_clerk_does_not_have_are_deleted_exactly_like_user_deleted(app, client, db, fake_clerk):
    keep1, keep2 = (fake_clerk.add_user(make_clerk_user(seed=s)) for s in ("k1", "k2"))
    gone1, gone2, by_webhook = (make_clerk_user(seed=s) for s in ("g1", "g2", "w"))
    for user in (keep1, keep2, gone1, gone2, by_webhook):
        assert deliver(client, "user.created", user) == "applied"
    oid = {u["id"]: doc(db, u["id"])["_id"] for u in (keep1, keep2, gone1, gone2, by_webhook)}
    db.users.update_one(
        {"clerkId": keep1["id"]},
        {
            "$set": {
                "followers": [oid[gone1["id"]], oid[keep2["id"]], oid[by_webhook["id"]]],
                "following": [oid[gone2["id"]]],
            }
        },
    )
    db.users.update_one(
        {"clerkId": keep2["id"]}, {"$set": {"followers": [oid[gone2["id"]]], "following": [oid[keep1["id"]]]}}
    )
    assert deliver(client, "user.deleted", make_deleted_data(by_webhook["id"])) == "deleted"

    result = run(app)

    assert_summary(
        result, "reconciled: 2 Clerk users in 1 pages: created 0, updated 0, unchanged 2, deleted 2"
    )
    assert doc(db, gone1["id"]) is None and doc(db, gone2["id"]) is None
    k1, k2 = doc(db, keep1["id"]), doc(db, keep2["id"])
    assert (k1["followers"], k1["following"]) == ([oid[keep2["id"]]], [])
    assert (k2["followers"], k2["following"]) == ([], [oid[keep1["id"]]])
    webhook_tombstone = db.deleted_users.find_one({"_id": by_webhook["id"]})
    for user in (gone1, gone2):
        tombstone = db.deleted_users.find_one({"_id": user["id"]})
        assert tombstone is not None
        assert set(tombstone) == set(webhook_tombstone)
        assert tombstone["objectIds"] == [oid[user["id"]]]
        assert tombstone["deletedAt"] is not None
    # Deleted for good, as after user.deleted: a late delivery cannot bring it back.
    assert deliver(client, "user.updated", newer(gone1, 60_000)) == "stale"
    assert doc(db, gone1["id"]) is None


def test_a_deletion_phase_lasting_several_bulk_timeouts_completes(
    app, db, fake_clerk, mongo_uri, monkeypatch
):
    """Each bound covers one command, never the walk over the unseen users: the deletions
    made between its batches run under their own deadlines, however long the phase lasts,
    and each batch the walk reads later is bounded alone."""
    monkeypatch.setattr(batched_module, "UNSEEN_PAGE", 50)  # the walk reads three batches
    # Deletions run in batches of 5, while the walk is open: 25 of them.
    monkeypatch.setattr(UserSource, "confirm_batch", 5)
    store = app.extensions["webhook_service"].stores.users
    keep = fake_clerk.add_user(make_clerk_user(seed="keep-through-slow-deletes"))
    gone = make_users(122, seed="gone-slowly")
    store.insert_new([xclone_user(u) for u in (keep, *gone)], {})
    store.bulk_timeout_s = bulk_timeout_s = 0.5
    # Every delete command of the service waits 150 ms first: 25 batches take over 3.7 s.
    with fail_point(mongo_uri, "alwaysOn", failCommands=["delete"], blockConnection=True, blockTimeMS=150):
        started = time.monotonic()
        result = run(app)
        phase_s = time.monotonic() - started

    assert_summary(
        result, "reconciled: 1 Clerk users in 1 pages: created 0, updated 0, unchanged 1, deleted 122"
    )
    assert phase_s > 4 * bulk_timeout_s, "the deletion phase did not outlast the bulk timeout"
    assert [d["clerkId"] for d in db.users.find()] == [keep["id"]]
    assert db.deleted_users.count_documents({}) == 122


def test_a_deletion_batch_stopped_before_its_documents_is_finished_by_the_next_run(
    app, client, db, fake_clerk, mongo_uri
):
    """A batch's tombstones land first and its documents go last, as in ``user.deleted``:
    a run stopped in between leaves the documents for the next run, which deletes them."""
    keep = fake_clerk.add_user(make_clerk_user(seed="keep-past-the-failure"))
    gone = make_users(3, seed="gone-interrupted")
    for user in (keep, *gone):
        assert deliver(client, "user.created", user) == "applied"

    with fail_point(mongo_uri, {"times": 1}, failCommands=["delete"], errorCode=2):
        stopped = run(app)

    assert stopped.exit_code == 1
    error = stopped.output.strip().splitlines()[-1]
    assert error.startswith(
        "Error: reconcile stopped: database error: OperationFailure. So far: 1 Clerk users in 1 pages: "
        "created 0, updated 0, unchanged 1, deleted 0;"
    ), error
    assert error.endswith("Rerunning is safe."), error
    assert {t["_id"] for t in db.deleted_users.find()} == {u["id"] for u in gone}
    assert db.users.count_documents({}) == 4

    assert_summary(
        run(app), "reconciled: 1 Clerk users in 1 pages: created 0, updated 0, unchanged 1, deleted 3"
    )
    assert [d["clerkId"] for d in db.users.find()] == [keep["id"]]
    assert deliver(client, "user.updated", newer(gone[0], 60_000)) == "stale"
    assert db.users.count_documents({}) == 1


def test_user_missing_from_the_listing_but_still_in_clerk_is_not_deleted(app, client, db, fake_clerk):
    listed = [fake_clerk.add_user(make_clerk_user(seed=f"l{i}")) for i in range(2)]
    skipped = fake_clerk.add_user(make_clerk_user(seed="skipped"))
    assert deliver(client, "user.created", skipped) == "applied"
    # Offset paging can skip a user when another is deleted mid-run: the listing omits it.
    fake_clerk.fail_next(1, 200, body=listed, path_prefix="/v1/users")

    result = run(app)

    assert_summary(
        result, "reconciled: 2 Clerk users in 1 pages: created 2, updated 0, unchanged 0, deleted 0"
    )
    assert_matches_clerk(doc(db, skipped["id"]), skipped)
    assert db.deleted_users.count_documents({}) == 0
    lookups = [r for r in fake_clerk.requests if r.path == "/v1/users" and "user_id" in r.query]
    assert lookups, "reconcile deleted nothing without asking Clerk about the unlisted user"


def test_zero_users_from_clerk_refuses_to_delete_without_force(app, client, db, fake_clerk):
    local = [make_clerk_user(seed=f"z{i}") for i in range(3)]
    for user in local:
        assert deliver(client, "user.created", user) == "applied"
    before = dump(db)

    refused = run(app)

    error = one_line_error(refused)
    assert "--force" in error and "zero users" in error
    assert dump(db) == before

    forced = run(app, "--force")

    assert_summary(
        forced, "reconciled: 0 Clerk users in 0 pages: created 0, updated 0, unchanged 0, deleted 3"
    )
    assert db.users.count_documents({}) == 0
    assert {t["_id"] for t in db.deleted_users.find()} == {u["id"] for u in local}


# -- ordering against webhooks ------------------------------------------------------------------


def test_local_version_newer_than_clerks_is_kept(app, client, db, fake_clerk):
    user = fake_clerk.add_user(make_clerk_user(seed="newer-local", first_name="Listed"))
    webhook = newer(user, 5000, first_name="Webhook", username="fresh")
    assert deliver(client, "user.updated", webhook) == "applied"
    same = fake_clerk.add_user(make_clerk_user(seed="same"))
    assert deliver(client, "user.created", same) == "applied"
    before = {d["clerkId"]: d for d in db.users.find()}

    result = run(app)

    assert_summary(
        result, "reconciled: 2 Clerk users in 1 pages: created 0, updated 0, unchanged 2, deleted 0"
    )
    local = doc(db, user["id"])
    assert_matches_clerk(local, webhook)
    assert (local["firstName"], local["username"]) == ("Webhook", "fresh")
    assert local["updatedAt"] == before[user["id"]]["updatedAt"]
    assert doc(db, same["id"])["updatedAt"] == before[same["id"]]["updatedAt"]


def test_tombstoned_user_that_clerk_still_lists_is_not_recreated(app, client, db, fake_clerk):
    alive = fake_clerk.add_user(make_clerk_user(seed="alive"))
    deleted = fake_clerk.add_user(make_clerk_user(seed="deleted"))
    assert deliver(client, "user.created", deleted) == "applied"
    assert deliver(client, "user.deleted", make_deleted_data(deleted["id"])) == "deleted"

    first = run(app)
    second = run(app)

    assert_summary(
        first, "reconciled: 2 Clerk users in 1 pages: created 1, updated 0, unchanged 1, deleted 0"
    )
    assert_summary(
        second, "reconciled: 2 Clerk users in 1 pages: created 0, updated 0, unchanged 2, deleted 0"
    )
    assert doc(db, deleted["id"]) is None
    assert db.deleted_users.count_documents({"_id": deleted["id"]}) == 1
    assert_matches_clerk(doc(db, alive["id"]), alive)


def test_reconcile_while_webhooks_arrive_ends_with_the_newest_version_of_everyone(
    app, client, db, fake_clerk
):
    clerk = make_users(520, seed="race")
    fake_clerk.users = clerk
    already_local = clerk[::10]
    for user in already_local:
        assert deliver(client, "user.created", newer(user, -1000, first_name="Older")) == "applied"
    # Webhooks carry newer versions than the listing shows, for users on both pages,
    # interleaved so that some land before and some after reconcile writes them.
    updated = [u for i, u in enumerate(clerk) if i % 4 == 0]
    updated = updated[::2] + updated[1::2][::-1]
    # Deleted in Clerk after the listing was taken: the listing still shows them.
    removed = clerk[5::50]
    # Signed up during the run: newest created_at, so they do not shift the paging.
    signups = [make_clerk_user(seed=f"signup{i}", created_at=now_ms()) for i in range(5)]
    start = threading.Barrier(2)
    outcome: dict[str, Any] = {}
    failures: list[str] = []

    def reconcile_thread() -> None:
        start.wait()
        outcome["result"] = run(app)

    def webhook_thread() -> None:
        poster = app.test_client()

        def post(event_type: str, data: dict[str, Any]) -> None:
            body, headers = signed_delivery(make_webhook_event(event_type, data))
            response = poster.post(WEBHOOK, data=body, headers=headers)
            if response.status_code != 200:
                failures.append(f"{event_type} {data['id']}: {response.status_code}")

        start.wait()
        for i, user in enumerate(updated):
            post("user.updated", newer(user, 7000, first_name=f"Webhook{i}"))
            if i % 25 == 0 and signups:
                signup = fake_clerk.add_user(signups.pop())
                post("user.created", signup)
        for user in removed:
            post("user.deleted", make_deleted_data(user["id"]))

    threads = [threading.Thread(target=reconcile_thread), threading.Thread(target=webhook_thread)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads)

    assert failures == []
    assert_ok(outcome["result"])
    removed_ids = {u["id"] for u in removed}
    newest = {u["id"]: u for u in clerk}
    for i, user in enumerate(updated):
        newest[user["id"]] = newer(user, 7000, first_name=f"Webhook{i}")
    for user in fake_clerk.users.values():
        newest.setdefault(user["id"], user)
    for clerk_id in removed_ids:
        newest.pop(clerk_id)
        assert doc(db, clerk_id) is None
        assert db.deleted_users.count_documents({"_id": clerk_id}) == 1
    assert_local_users_are(db, list(newest.values()))


# -- Clerk failures -----------------------------------------------------------------------------


def test_rate_limit_and_server_errors_mid_run_are_retried_and_reconcile_completes(
    app, client, db, fake_clerk
):
    users, local_only = listing_and_a_local_only_user(client, fake_clerk, 510, "transient")
    fake_clerk.fail_next(1, 429, retry_after=1, path_prefix="/v1/users")
    fake_clerk.fail_next(2, 502, path_prefix="/v1/users")

    result = run(app)

    assert_summary(
        result, "reconciled: 510 Clerk users in 2 pages: created 510, updated 0, unchanged 0, deleted 1"
    )
    # Page 2 was asked for four times: 429, 502, 502, then served.
    cursor = sorted(users, key=lambda u: (u["created_at"], u["id"]))[PAGE - 1]["id"]
    listed = list_requests(fake_clerk)
    assert [r.query.get("starting_after") for r in listed] == [None] + [cursor] * 4
    # The 429 asked for Retry-After: 1, and the retry waited that long.
    assert listed[2].received_at - listed[1].received_at >= 0.95
    assert_local_users_are(db, users)
    assert db.deleted_users.count_documents({"_id": local_only["id"]}) == 1


def test_clerk_outage_stops_with_one_clear_line_and_a_rerun_converges(app, client, db, fake_clerk):
    users, local_only = listing_and_a_local_only_user(client, fake_clerk, 505, "outage")
    fake_clerk.fail_next(1000, 503, path_prefix="/v1/users")

    stopped = run(app, "--retry-budget", "1")

    error = one_line_error(stopped)
    assert re.fullmatch(
        re.escape(
            "Error: reconcile stopped: Clerk API answered 503 (The service is temporarily unavailable.). "
            "So far: 500 Clerk users in 1 pages: created 500, updated 0, unchanged 0, deleted 0; "
        )
        + r"1 Clerk request in \d+\.\d s( \(\d+\.\d/s\))?\. Rerunning is safe\.",
        error,
    ), error
    assert db.users.count_documents({}) == 501
    assert doc(db, local_only["id"]) is not None, "deleted although the listing never finished"
    assert db.deleted_users.count_documents({}) == 0

    fake_clerk.reset_faults()
    rerun = run(app)

    assert_summary(
        rerun, "reconciled: 505 Clerk users in 2 pages: created 5, updated 0, unchanged 500, deleted 1"
    )
    assert_local_users_are(db, users)
    assert db.deleted_users.count_documents({"_id": local_only["id"]}) == 1


def test_clerk_unreachable_from_the_start_fails_cleanly_and_changes_nothing(app, client, db, fake_clerk):
    user = make_clerk_user(seed="unreachable")
    assert deliver(client, "user.created", user) == "applied"
    before = dump(db)
    fake_clerk.stop()

    result = run(app, "--retry-budget", "0.5")

    error = one_line_error(result)
    assert error == (
        "Error: reconcile stopped: Clerk API unreachable: ConnectError. "
        "So far: nothing done. Rerunning is safe."
    )
    assert dump(db) == before


def test_reconcile_without_a_clerk_secret_key_says_so(make_app):
    result = run(make_app())

    error = one_line_error(result)
    assert "CLERK_SECRET_KEY" in error


# -- dry run --------------------------------------------------------------------------------------


def test_dry_run_writes_nothing_and_prints_what_would_change(app, client, db, fake_clerk):
    stale = make_clerk_user(seed="stale", first_name="Before")
    same = make_clerk_user(seed="same")
    tombstoned = make_clerk_user(seed="tombstoned")
    gone = sorted((make_clerk_user(seed=f"gone{i}") for i in range(2)), key=lambda u: u["id"])
    fresh = [make_clerk_user(seed=f"fresh{i}") for i in range(3)]
    for user in (stale, same, tombstoned, *gone):
        assert deliver(client, "user.created", user) == "applied"
    assert deliver(client, "user.deleted", make_deleted_data(tombstoned["id"])) == "deleted"
    fake_clerk.users = [newer(stale, 1000, first_name="After"), same, tombstoned, *fresh]
    before = dump(db)

    dry = run(app, "--dry-run")

    assert_ok(dry)
    assert dump(db) == before
    lines = dry.stdout.strip().splitlines()
    assert sorted(line for line in lines if line.startswith("would delete")) == [
        f"would delete {u['id']}" for u in gone
    ]
    assert summary(dry) == (
        "dry run: 6 Clerk users in 1 pages: "
        "would be created 3, would be updated 1, unchanged 2, would be deleted 2"
    )

    real = run(app)

    assert_summary(real, "reconciled: 6 Clerk users in 1 pages: created 3, updated 1, unchanged 2, deleted 2")
    assert doc(db, stale["id"])["firstName"] == "After"
    assert all(doc(db, u["id"]) is None for u in gone)


# -- Clerk's API as it is today -----------------------------------------------------------


def with_values_the_sdk_does_not_know(user: dict[str, Any]) -> dict[str, Any]:
    """Clerk adds verification kinds and statuses; the SDK's enums are closed."""
    odd = dict(user, brand_new_field={"nested": True})
    odd["email_addresses"] = [
        dict(e, verification={"object": "verification_passkey_v2", "status": "pending_review"})
        for e in user["email_addresses"]
    ]
    return odd


def test_users_with_values_the_sdk_does_not_know_reconcile_with_the_right_email(app, db, fake_clerk):
    odd = with_values_the_sdk_does_not_know(make_clerk_user(seed="odd-enum", email="odd@example.com"))
    fake_clerk.users = [*make_users(3, seed="plain"), odd]

    expected = "reconciled: 4 Clerk users in 1 pages: created 4, updated 0, unchanged 0, deleted 0"
    assert_summary(run(app), expected)
    assert doc(db, odd["id"])["email"] == "odd@example.com"


def test_reconcile_walks_past_the_offset_limit_with_the_cursor(app, db, make_app, fake_clerk):
    fake_clerk.max_offset = 500  # larger offsets time out, as Clerk's spec warns
    fake_clerk.users = make_users(1_200, seed="cursor")

    assert_summary(
        run(app), "reconciled: 1200 Clerk users in 3 pages: created 1200, updated 0, unchanged 0, deleted 0"
    )
    assert db.users.count_documents({}) == 1_200


def test_reconcile_paces_its_clerk_requests_and_prints_their_rate(app, db, fake_clerk):
    fake_clerk.users = make_users(1_001, seed="paced")  # three pages

    result = run(app, "--max-rps", "1.5")

    assert_ok(result)
    listed = list_requests(fake_clerk)
    assert len(listed) == 3
    assert min(gaps_between(listed)) >= 0.6  # 1/1.5 s, less jitter
    requests, seconds, rate = re.search(
        r"; (\d+) Clerk requests in (\d+\.\d) s \((\d+\.\d)/s\)$", result.stdout.strip()
    ).groups()
    assert int(requests) == fake_clerk.request_count("/v1/users") == 3
    assert float(seconds) >= 1.3
    assert float(rate) <= 2.3


def test_by_default_reconcile_leaves_most_of_a_development_instances_limit_to_the_app(app, fake_clerk):
    """A development instance allows 100 requests per 10 s for the whole app: 2/s leaves 80 %."""
    fake_clerk.users = make_users(1_001, seed="default-pace")

    result = app.test_cli_runner().invoke(args=["reconcile"])

    assert_ok(result)
    listed = list_requests(fake_clerk)
    assert min(gaps_between(listed)) >= 0.45


def test_a_422_from_clerk_names_the_parameter(app, fake_clerk):
    fake_clerk.users = make_users(2, seed="422")
    error_body = {"errors": [{
        "code": "form_param_value_invalid",
        "message": "is invalid",
        "long_message": "starting_after cannot be combined with offset",
        "meta": {"param_name": "starting_after"},
    }]}
    fake_clerk.fail_next(1, 422, body=error_body, path_prefix="/v1/users")

    error = one_line_error(run(app))

    assert "Clerk API answered 422: parameter 'starting_after' rejected" in error
    assert "answered 200" not in error


def test_a_user_that_cannot_be_mapped_is_skipped_named_and_counted(app, db, fake_clerk):
    good = make_users(2, seed="mappable")
    broken = dict(make_clerk_user(seed="no-version"), updated_at="yesterday")
    fake_clerk.users = [*good, broken]

    result = run(app)

    assert_ok(result)
    assert f"skipped {broken['id']}: no integer updated_at" in result.output
    assert summary(result).endswith("created 2, updated 0, unchanged 0, deleted 0, skipped 1")
    assert db.users.count_documents({}) == 2


def test_reconciles_clerk_answers_are_counted_as_the_reconcile_callers(app, fake_clerk):
    from prometheus_client import REGISTRY

    def counted(status: str) -> float:
        labels = {"status": status, "caller": "reconcile"}
        return REGISTRY.get_sample_value("clerk_api_requests_total", labels) or 0.0

    fake_clerk.users = make_users(3, seed="counted")
    fake_clerk.fail_next(1, 429, retry_after=0, path_prefix="/v1/users")
    before = counted("200"), counted("429")

    assert_ok(run(app))

    assert (counted("200") - before[0], counted("429") - before[1]) == (1.0, 1.0)
