"""The watcher's passes against the fake Clerk, with no deliveries at all, on the test
database server: missed creations, updates and deletions repaired; a newer local version
and a deletion kept; changes inside the grace period left for the next pass; what a quiet
pass costs; Clerk's 429 and 5xx; the lease; the counts' backoff; organizations.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from tests.conftest import clerk_settings
from tests.support.examples import ORGANIZATION_FIELDS
from tests.support.fake_clerk import make_clerk_user, make_deleted_data
from tests.support.helpers import deliver, metrics_text, newer
from webhook_service.clerk_api import ClerkUnavailable
from webhook_service.dev.local_clerk import json_response
from webhook_service.dev.sample_organizations import make_membership, make_organization


def past(seconds: float) -> int:
    """A Clerk time ``seconds`` ago, in ms: past the watcher's grace period."""
    return int((time.time() - seconds) * 1000)


@pytest.fixture
def watching(make_app, fake_clerk):
    def make(**overrides: Any):
        values: dict[str, Any] = dict(clerk_settings(fake_clerk), watch_interval_s=1, watch_max_rps=0)
        values.update(overrides)
        return make_app(**values)

    return make


@pytest.fixture
def app(watching):
    return watching()


@pytest.fixture
def watcher(app):
    return app.extensions["webhook_service"].watcher


@pytest.fixture
def db(app):
    return app.extensions["webhook_service"].db


def user(i: int, changed_s_ago: float = 30, **kw: Any) -> dict[str, Any]:
    return make_clerk_user(f"user_2watch{i}", created_at=past(3600), updated_at=past(changed_s_ago), **kw)


def requests_of(fake_clerk, action) -> list[str]:
    before = len(fake_clerk.requests)
    action()
    return [
        f"{r.path}?{'&'.join(f'{k}={v}' for k, v in sorted(r.query.items()))}"
        for r in fake_clerk.requests[before:]
    ]


def test_missed_creations_and_updates_are_repaired_with_one_line_each(watcher, db, fake_clerk, caplog):
    ada = fake_clerk.add_user(user(1, first_name="Ada"))
    grace = fake_clerk.add_user(user(2, first_name="Grace", changed_s_ago=40))
    assert deliver_app(watcher, grace) == "applied"  # Grace's creation was delivered...
    fake_clerk.add_user(newer(grace, 5000, first_name="Grace B."))  # ...her update was not

    with caplog.at_level(logging.WARNING, logger="webhook_service.watch"):
        report = watcher.run_once()

    assert report is not None
    [users] = report.resources
    assert {(r.kind, r.key) for r in users.repairs} == {("created", ada["id"]), ("updated", grace["id"])}
    assert db.users.find_one({"clerkId": ada["id"]})["firstName"] == "Ada"
    assert db.users.find_one({"clerkId": grace["id"]})["firstName"] == "Grace B."
    lines = [r.getMessage() for r in caplog.records]
    assert (
        f"watch repaired user {ada['id']}: missed its creation (Clerk version {ada['updated_at']})" in lines
    )
    assert any(
        line.startswith(f"watch repaired user {grace['id']}: missed an update (local version ")
        for line in lines
    )
    text = metrics_text()
    assert 'clerk_sync_repairs_total{kind="created",resource="user"}' in text
    assert 'clerk_sync_drift{resource="user"} 0.0' in text


def test_a_listed_user_that_cannot_be_stored_is_named_and_the_rest_repaired(watcher, db, fake_clerk, caplog):
    ada = fake_clerk.add_user(user(1, first_name="Ada"))
    fake_clerk.add_user(dict(user(2), id=""))  # no id: nothing to key it by

    with caplog.at_level(logging.WARNING, logger="webhook_service.watch"):
        report = watcher.run_once()

    assert report is not None
    assert [(r.kind, r.key) for r in report.resources[0].repairs] == [("created", ada["id"])]
    assert db.users.count_documents({}) == 1
    assert "watch: user ? from Clerk cannot be stored: no string id" in [
        r.getMessage() for r in caplog.records
    ]


def deliver_app(watcher, data: dict[str, Any]) -> str:
    """``user.created`` through the store the watcher writes to (as a delivery would)."""
    from webhook_service.resources.users.mapping import map_clerk_user

    store = watcher.targets[0][0]
    return store.upsert_if_newer(map_clerk_user(data, store.fields), "msg_delivered").outcome.value


def test_a_quiet_pass_costs_two_clerk_requests(watcher, fake_clerk):
    for i in range(30):
        fake_clerk.add_user(user(i, changed_s_ago=600 + i))
    watcher.run_once()  # the first pass looks back an hour: it lists and stores them all

    quiet = requests_of(fake_clerk, watcher.run_once)

    assert quiet == ["/v1/users?limit=10&offset=0&order_by=-updated_at", "/v1/users/count?"]


def test_a_newer_local_version_and_a_deletion_are_kept(app, watcher, db, fake_clerk):
    client = app.test_client()
    ahead = fake_clerk.add_user(user(1, first_name="Clerk's older"))
    assert deliver(client, "user.created", newer(ahead, 10_000, first_name="Delivered newer")) == "applied"
    gone = fake_clerk.add_user(user(2))
    assert deliver(client, "user.deleted", make_deleted_data(gone["id"])) == "deleted"  # Clerk still lists it

    report = watcher.run_once()

    assert report is not None and report.resources[0].repairs == []
    assert db.users.find_one({"clerkId": ahead["id"]})["firstName"] == "Delivered newer"
    assert db.users.find_one({"clerkId": gone["id"]}) is None


def test_a_change_inside_the_grace_period_waits_for_the_next_pass(watching, db, fake_clerk):
    watcher = watching(watch_interval_s=2).extensions["webhook_service"].watcher  # grace: 1 s
    fresh = fake_clerk.add_user(make_clerk_user("user_2fresh", created_at=past(5), updated_at=past(0)))

    first = watcher.run_once()

    assert first is not None and (first.resources[0].deferred, first.resources[0].repairs) == (1, [])
    assert db.users.find_one({"clerkId": fresh["id"]}) is None
    time.sleep(1.1)
    second = watcher.run_once()
    assert second is not None and [r.kind for r in second.resources[0].repairs] == ["created"]


def test_missed_deletions_are_found_by_the_counts_and_deleted_with_their_cascade(watching, fake_clerk):
    from webhook_service.config import delete_cascade_rules

    app = watching(delete_cascade=delete_cascade_rules("posts.user:delete"))
    watcher, db = app.extensions["webhook_service"].watcher, app.extensions["webhook_service"].db
    people = [fake_clerk.add_user(user(i, changed_s_ago=100)) for i in range(5)]
    watcher.run_once()
    db.posts.insert_many([{"user": people[1]["id"]}, {"user": people[2]["id"]}])
    db.pages.insert_one({"clerkId": None, "title": "the app keeps other documents too"})
    for gone in people[1:3]:
        fake_clerk.remove_user(gone["id"])  # deleted in Clerk; the webhooks never came

    once = watcher.run_once()
    twice = watcher.run_once()

    assert once is not None and once.resources[0].drift == 2 and not once.resources[0].walked
    assert twice is not None and twice.resources[0].walked
    assert sorted(r.key for r in twice.resources[0].repairs if r.kind == "deleted") == sorted(
        p["id"] for p in people[1:3]
    )
    assert twice.resources[0].drift == 0
    assert db.users.count_documents({}) == 3 and db.posts.count_documents({}) == 0
    assert db.deleted_users.count_documents({}) == 2


def test_a_mismatch_a_walk_does_not_explain_backs_off(watcher, fake_clerk):
    for i in range(3):
        fake_clerk.add_user(user(i, changed_s_ago=100))
    watcher.run_once()
    counted = {"total": 1}  # Clerk's count says fewer than it lists (say, a count that lags)
    fake_clerk.directory.count = lambda req: json_response(
        200, {"object": "total_count", "total_count": counted["total"]}
    )

    passes = [watcher.run_once() for _ in range(2)]
    assert passes[-1] is not None and passes[-1].resources[0].walked
    assert passes[-1].resources[0].repairs == [] and passes[-1].resources[0].drift == 2
    quiet = requests_of(fake_clerk, watcher.run_once)  # backing off: no walk, no lookups
    assert len(quiet) == 2
    assert 'clerk_sync_drift{resource="user"} 2.0' in metrics_text()
    counted["total"] = 0  # it grows beyond what was left unexplained: a walk again
    assert watcher.run_once().resources[0].walked


def test_clerks_429_and_5xx_are_waited_out(watcher, db, fake_clerk):
    missed = fake_clerk.add_user(user(1))
    fake_clerk.fail_next(1, 429, retry_after=0.2, path_prefix="/v1/users")
    fake_clerk.fail_next(2, 503, path_prefix="/v1/users")

    report = watcher.run_once()

    assert report is not None and [r.key for r in report.resources[0].repairs] == [missed["id"]]
    statuses = [r.path for r in fake_clerk.requests]
    assert len(statuses) == 5  # 429, 503, 503, then the page and the count


def test_a_failing_pass_changes_nothing_and_the_next_repairs(watcher, db, fake_clerk):
    missed = fake_clerk.add_user(user(1))
    fake_clerk.set_down(True)
    watcher.targets[0][1].clerk._budget_s = 0.3  # fail fast here
    with pytest.raises(ClerkUnavailable):
        watcher.run_once()
    assert db.users.count_documents({}) == 0
    assert db["watch"].find_one({"_id": "state:users"}) is None  # where the last pass stopped: unchanged
    fake_clerk.set_down(False)
    assert [r.key for r in watcher.run_once().resources[0].repairs] == [missed["id"]]


def test_one_watcher_per_database_and_a_released_lease_is_taken_at_once(watching, fake_clerk):
    one = watching().extensions["webhook_service"].watcher
    two = watching().extensions["webhook_service"].watcher
    assert one.run_once() is not None
    assert two.run_once() is None  # one holds the lease
    assert one.run_once() is not None  # and renews it
    one.stop()  # a graceful stop releases it
    assert two.run_once() is not None


def test_a_lapsed_lease_is_taken_over(watching, fake_clerk):
    one = watching(watch_interval_s=0.2).extensions["webhook_service"].watcher  # a lease of 0.6 s
    two = watching(watch_interval_s=0.2).extensions["webhook_service"].watcher
    assert one.run_once() is not None
    assert two.run_once() is None
    time.sleep(0.7)  # one died without releasing it
    assert two.run_once() is not None
    assert one.run_once() is None


def test_watch_once_prints_what_it_found(app, fake_clerk):
    missed = fake_clerk.add_user(user(1))
    result = app.test_cli_runner().invoke(args=["watch", "--once"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert (
        lines[0]
        == f"watch repaired user {missed['id']}: missed its creation (Clerk version {missed['updated_at']})"
    )
    assert lines[-1].startswith(
        "watched: users: 1 listed as changed (0 left for the grace period), repaired: created 1"
    )


def test_watch_once_when_another_holds_the_lease_does_nothing(app, watching, fake_clerk):
    other = watching().extensions["webhook_service"].watcher
    assert other.run_once() is not None
    result = app.test_cli_runner().invoke(args=["watch", "--once"])
    assert result.exit_code == 0, result.output
    assert "another watcher holds the lease" in result.output
    assert result.output.strip().endswith("nothing to do here; it runs the passes")


def test_the_watcher_is_off_without_a_secret_key_or_an_interval(make_app, watching):
    assert watching(watch_interval_s=0).extensions["webhook_service"].watcher is None
    keyless = make_app()
    assert keyless.extensions["webhook_service"].watcher is None
    result = keyless.test_cli_runner().invoke(args=["watch", "--once"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: the watcher is off: CLERK_SECRET_KEY is not set"


def test_organizations_and_memberships_creations_and_deletions_are_repaired(watching, fake_clerk):
    app = watching(organization_fields_file=str(ORGANIZATION_FIELDS))
    watcher, db = app.extensions["webhook_service"].watcher, app.extensions["webhook_service"].db
    ada = fake_clerk.add_user(user(1, changed_s_ago=100))
    teams = [
        make_organization(f"org_2w{i}", created_at=past(60 + i), updated_at=past(60 + i)) for i in range(3)
    ]
    for team in teams:
        fake_clerk.orgs.add_organization(team)
        fake_clerk.orgs.add_membership(make_membership(team, ada, created_at=team["created_at"]))

    created = watcher.run_once()

    assert created is not None
    users, organizations, memberships = created.resources
    assert [r.kind for r in organizations.repairs] == ["created"] * 3
    assert [r.kind for r in memberships.repairs] == ["created"] * 3
    assert db.organizations.count_documents({}) == 3 and db.memberships.count_documents({}) == 3
    fake_clerk.orgs.remove_organization(teams[0]["id"])
    watcher.run_once()
    walked = watcher.run_once()
    assert walked is not None
    assert [(r.kind, r.key) for r in walked.resources[1].repairs] == [("deleted", teams[0]["id"])]
    assert db.organizations.count_documents({}) == 2
    assert db.memberships.count_documents({"clerkOrgId": teams[0]["id"]}) == 0
