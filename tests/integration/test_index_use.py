"""Every command a delivery, a sync, a deletion or a reconcile page sends is index-backed.

The app runs on a client with pymongo command monitoring; every command it sent while a
path ran is then explained (``queryPlanner``) on the test server, and a collection scan
anywhere in a winning plan fails the test, naming the command. Updates and deletes are
explained as a ``find`` with the same filter, which is what their planner runs (SecantusDB
does not plan an explained ``update``). A cost that grows with the collection starts as a
scan here, at any size.

The one scan allowed is named: finding the local users a reconcile run did not see, once
per run, walked in ``_id`` order.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from pymongo import MongoClient, WriteConcern, monitoring

from tests.conftest import clerk_settings, make_config
from tests.support.examples import ORGANIZATION_FIELDS
from tests.support.fake_clerk import FakeClerkAPI, make_clerk_user, make_deleted_data, make_webhook_event
from tests.support.helpers import SYNC, WEBHOOK, deliver, newer
from tests.support.signing import signed_delivery
from tests.support.tokens_util import bearer, mint_token
from webhook_service.app import create_app
from webhook_service.config import delete_cascade_rules
from webhook_service.mirror import batched as batched_module

XCLONE_CASCADE = (
    "posts.user:delete,comments.user:delete,notifications.from:delete,notifications.to:delete,"
    "posts.likes:pull,comments.likes:pull"
)
QUERY_COMMANDS = {"find", "update", "delete", "findAndModify", "aggregate", "count", "distinct"}
# (collection, the filter's fields): scans made once per reconcile run or deletion walk, not
# per record: the local records a reconcile run did not see, or a watcher's walk confirms.
ONCE_PER_RUN_SCANS = {
    (collection, frozenset(fields))
    for collection in ("users", "organizations", "memberships")
    for fields in ({"clerkUpdatedAt", "reconcileRun"}, {"clerkUpdatedAt"})
}


class Recorder(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name in QUERY_COMMANDS:
            self.commands.append((event.command_name, copy.deepcopy(dict(event.command))))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def filters(name: str, command: dict[str, Any]) -> list[tuple[str, dict[str, Any], Any]]:
    """The (collection, filter, hint) of each query a command plans, as ``find`` runs them."""
    collection = command[name]
    if name == "update":
        return [(collection, u["q"], u.get("hint")) for u in command["updates"]]
    if name == "delete":
        return [(collection, d["q"], d.get("hint")) for d in command["deletes"]]
    if name == "aggregate":
        first = command["pipeline"][0] if command["pipeline"] else {}
        return [(collection, first.get("$match", {}), command.get("hint"))]
    query = command.get("filter" if name == "find" else "query", {})
    return [(collection, query, command.get("hint"))]


def scans(plan: dict[str, Any]) -> bool:
    if plan.get("stage") == "COLLSCAN":
        return True
    children = [plan.get("inputStage"), *plan.get("inputStages", [])]
    return any(scans(child) for child in children if child)


def collection_scans(explainer, recorded: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Each recorded command whose plan scans a collection, unless it is a named
    once-per-run scan."""
    found = []
    for name, command in recorded:
        for collection, query, hint in filters(name, command):
            if (collection, frozenset(query)) in ONCE_PER_RUN_SCANS:
                continue
            find = {"find": collection, "filter": query, **({"hint": hint} if hint else {})}
            explained = explainer.command({"explain": find, "verbosity": "queryPlanner"})
            if scans(explained["queryPlanner"]["winningPlan"]):
                found.append(f"{name} on {collection} with filter {query!r}")
    return found


@pytest.fixture
def watched(mongo_uri: str, fake_clerk: FakeClerkAPI) -> Iterator[tuple[Flask, Recorder, Any]]:
    """The service (xClone's cascade rules, the fake Clerk) on a monitored client, after
    `init-db`; and a plain client for the explains."""
    recorder = Recorder()
    client: MongoClient[Any] = MongoClient(mongo_uri, event_listeners=[recorder], tz_aware=True)
    db = client.get_database(write_concern=WriteConcern(w="majority", j=True))
    config = make_config(
        mongo_uri,
        delete_cascade=delete_cascade_rules(XCLONE_CASCADE),
        **clerk_settings(fake_clerk),
    )
    app = create_app(config, db=db)
    init = app.test_cli_runner().invoke(args=["init-db"])
    assert init.exit_code == 0, init.output
    explainer: MongoClient[Any] = MongoClient(mongo_uri)
    yield app, recorder, explainer.get_default_database()
    app.extensions["webhook_service"].events.close()
    client.close()
    explainer.close()


def run_path(app: Flask, recorder: Recorder, path) -> list[tuple[str, dict[str, Any]]]:
    """The query commands ``path`` sent, the event log's writes included."""
    recorder.commands.clear()
    path()
    app.extensions["webhook_service"].events.flush()
    return list(recorder.commands)


def seed(app: Flask, fake_clerk: FakeClerkAPI, count: int = 20) -> list[dict[str, Any]]:
    """Users who follow each other and have posts, comments and notifications."""
    client = app.test_client()
    users = [fake_clerk.add_user(make_clerk_user(seed=f"index-use-{i}")) for i in range(count)]
    for user in users:
        assert deliver(client, "user.created", user) == "applied"
    db = app.extensions["webhook_service"].db
    ids = [d["_id"] for d in db.users.find({}, {"_id": 1})]
    for i, oid in enumerate(ids):
        db.users.update_one({"_id": oid}, {"$set": {"followers": ids[:i], "following": ids[i:]}})
        db.posts.insert_one({"user": oid, "likes": ids[:3]})
        db.comments.insert_one({"user": oid, "likes": ids[-3:]})
        db.notifications.insert_one({"from": oid, "to": ids[0]})
    return users


def test_every_delivery_sync_deletion_and_reconcile_command_uses_an_index(watched, fake_clerk) -> None:
    app, recorder, explainer = watched
    users = seed(app, fake_clerk)
    client = app.test_client()
    fresh = make_clerk_user(seed="index-use-fresh")
    token = mint_token(sub=users[1]["id"])

    def deliveries_of_each_kind() -> None:
        created = fake_clerk.add_user(fresh)
        assert deliver(client, "user.created", created) == "applied"  # first
        body, headers = signed_delivery(make_webhook_event("user.updated", newer(created, 1)))
        for outcome in ("applied", "duplicate"):  # the same delivery again
            assert client.post(WEBHOOK, data=body, headers=headers).get_json() == {"outcome": outcome}
        later = newer(users[0], 60_000)
        assert deliver(client, "user.updated", later) == "applied"
        assert deliver(client, "user.updated", newer(users[0], 30_000)) == "stale"  # out of order
        assert deliver(client, "user.deleted", make_deleted_data(users[2]["id"])) == "deleted"
        assert deliver(client, "user.deleted", make_deleted_data(users[2]["id"])) == "duplicate"
        assert deliver(client, "user.updated", newer(users[2], 90_000)) == "stale"  # after its deletion
        assert deliver(client, "user.deleted", make_deleted_data("user_never_seen_here")) == "deleted"

    def a_sync() -> None:
        response = client.post(SYNC, headers={"Authorization": bearer(token)})
        assert response.status_code == 200, response.get_json()

    def a_reconcile() -> None:
        fake_clerk.remove_user(users[3]["id"])  # gone from Clerk: reconcile deletes it
        fake_clerk.add_user(make_clerk_user(seed="index-use-only-in-clerk"))  # reconcile creates it
        result = app.test_cli_runner().invoke(args=["reconcile", "--max-rps", "0"])
        assert result.exit_code == 0, result.output

    recorded = {
        "deliveries": run_path(app, recorder, deliveries_of_each_kind),
        "sync": run_path(app, recorder, a_sync),
        "reconcile": run_path(app, recorder, a_reconcile),
    }

    for path, commands in recorded.items():
        assert commands, f"{path} sent no query command: the monitoring saw nothing"
        assert collection_scans(explainer, commands) == [], path
    assert any(name == "delete" and c["delete"] == "posts" for name, c in recorded["deliveries"]), (
        "no cascade rule ran"
    )


def test_the_check_fails_on_a_follow_list_or(watched, fake_clerk) -> None:
    """An ``$or`` over the two follow lists, as the deletion once sent, is a scan."""
    app, recorder, explainer = watched
    seed(app, fake_clerk, count=3)
    db = app.extensions["webhook_service"].db
    ids = {"$in": [db.users.find_one()["_id"]]}

    def pull_with_an_or() -> None:
        db.users.update_many({"$or": [{"followers": ids}, {"following": ids}]}, {"$pull": {"followers": ids}})

    found = collection_scans(explainer, run_path(app, recorder, pull_with_an_or))
    assert len(found) == 1 and found[0].startswith("update on users with filter {'$or': ["), found


def test_the_once_per_run_walk_reads_the_collection_once(watched, fake_clerk, monkeypatch) -> None:
    """The walk over the unseen users is one query, read in batches: a query per page
    would scan the collection once per page on a server that plans an ``_id`` range as a
    scan (SecantusDB does), and the walk would grow with the square of the users."""
    app, recorder, _ = watched
    monkeypatch.setattr(batched_module, "UNSEEN_PAGE", 10)
    users = seed(app, fake_clerk, count=35)
    for user in users[:12]:
        fake_clerk.remove_user(user["id"])

    def a_reconcile() -> None:
        result = app.test_cli_runner().invoke(args=["reconcile", "--max-rps", "0"])
        assert result.exit_code == 0, result.output
        assert "deleted 12" in result.output

    walks = [
        c
        for name, c in run_path(app, recorder, a_reconcile)
        if name == "find" and c["find"] == "users" and "reconcileRun" in c["filter"]
    ]
    assert len(walks) == 1, walks
    assert app.extensions["webhook_service"].db.users.count_documents({}) == 23


def test_a_reconcile_deletes_a_batch_of_users_in_the_commands_it_takes_for_one(watched, fake_clerk) -> None:
    """The users Clerk confirms gone are deleted together: the commands a reconcile sends
    are the same for one deletion as for thirty (up to a batch of 100), where one at a time
    with xClone's cascade costs about ten per user. Each user is erased all the same."""
    app, recorder, _ = watched
    users = seed(app, fake_clerk, count=40)
    app.extensions["webhook_service"].events.flush()  # the seed's event records, not counted
    db = app.extensions["webhook_service"].db
    oid = {d["clerkId"]: d["_id"] for d in db.users.find({}, {"clerkId": 1})}

    def commands_deleting(gone: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
        for user in gone:
            fake_clerk.remove_user(user["id"])

        def a_reconcile() -> None:
            result = app.test_cli_runner().invoke(args=["reconcile", "--max-rps", "0"])
            assert result.exit_code == 0, result.output
            assert f"deleted {len(gone)};" in result.output

        return Counter((name, command[name]) for name, command in run_path(app, recorder, a_reconcile))

    one, thirty = commands_deleting(users[:1]), commands_deleting(users[1:31])

    assert thirty == one, "the deletion phase's commands grew with the users it deleted"
    assert one[("delete", "posts")] == 1, one
    kept = {oid[u["id"]] for u in users[31:]}
    assert {d["_id"] for d in db.users.find()} == kept
    for user in db.users.find():
        assert set(user["followers"]) <= kept and set(user["following"]) <= kept, user
    for collection in ("posts", "comments"):
        assert {d["user"] for d in db[collection].find()} == kept
        assert all(set(d["likes"]) <= kept for d in db[collection].find())
    assert db.notifications.count_documents({}) == 0  # each was to the first user, now gone
    tombstones = {t["_id"]: t["objectIds"] for t in db.deleted_users.find()}
    assert tombstones == {u["id"]: [oid[u["id"]]] for u in users[:31]}


def test_every_organization_and_membership_command_uses_an_index(mongo_uri, fake_clerk) -> None:
    """The same check with the worked example's organization map: its deliveries (the
    dated deletion, a rejoin, an organization's and a user's cascade), a sync refreshing
    the user's memberships, and a reconcile of both resources."""
    from webhook_service.dev.sample_organizations import make_membership, make_organization

    recorder = Recorder()
    client_: MongoClient[Any] = MongoClient(mongo_uri, event_listeners=[recorder], tz_aware=True)
    db = client_.get_database(write_concern=WriteConcern(w="majority", j=True))
    config = make_config(
        mongo_uri, organization_fields_file=str(ORGANIZATION_FIELDS), **clerk_settings(fake_clerk)
    )
    app = create_app(config, db=db)
    assert app.test_cli_runner().invoke(args=["init-db"]).exit_code == 0
    explainer: MongoClient[Any] = MongoClient(mongo_uri)
    people = [fake_clerk.add_user(make_clerk_user(seed=f"org-index-{i}")) for i in range(6)]
    teams = [make_organization(f"org_2index{i}", created_at=1_740_000_000_000 + i) for i in range(3)]
    for team in teams:
        fake_clerk.orgs.add_organization(team)
        for person in people:
            fake_clerk.orgs.add_membership(make_membership(team, person))
    client = app.test_client()

    def deliveries_of_each_kind() -> None:
        team, member = teams[0], make_membership(teams[0], people[0], created_at=1_740_000_001_000)
        assert deliver(client, "organization.created", team) == "applied"
        assert deliver(
            client, "organization.updated", dict(team, name="New", updated_at=team["updated_at"] + 5)
        ) == ("applied")
        assert deliver(client, "organization.updated", team) == "stale"
        assert deliver(client, "organizationMembership.created", member) == "applied"
        assert deliver(client, "organizationMembership.updated", dict(member, role="org:admin")) == "applied"
        body, headers = signed_delivery(
            make_webhook_event("organizationMembership.deleted", member, member["updated_at"] + 10)
        )
        assert client.post(WEBHOOK, data=body, headers=headers).get_json() == {"outcome": "deleted"}
        assert deliver(client, "organizationMembership.updated", member) == "stale"
        rejoined = dict(member, created_at=member["updated_at"] + 20, updated_at=member["updated_at"] + 20)
        assert deliver(client, "organizationMembership.created", rejoined) == "applied"
        for person in people[1:3]:
            assert (
                deliver(client, "organizationMembership.created", make_membership(teams[1], person))
                == "applied"
            )
        assert deliver(client, "user.deleted", make_deleted_data(people[1]["id"])) == "deleted"
        assert deliver(client, "organization.deleted", {"deleted": True, "id": teams[1]["id"]}) == "deleted"

    def a_sync() -> None:
        response = client.post(SYNC, headers={"Authorization": bearer(mint_token(sub=people[4]["id"]))})
        assert response.status_code in (200, 201), response.get_json()

    def a_reconcile() -> None:
        fake_clerk.orgs.remove_organization(teams[2]["id"])
        result = app.test_cli_runner().invoke(args=["reconcile", "--max-rps", "0"])
        assert result.exit_code == 0, result.output

    try:
        for path in (deliveries_of_each_kind, a_sync, a_reconcile):
            commands = run_path(app, recorder, path)
            assert commands, f"{path.__name__} sent no query command"
            assert collection_scans(explainer.get_default_database(), commands) == [], path.__name__
    finally:
        app.extensions["webhook_service"].events.close()
        client_.close()
        explainer.close()


def test_every_command_of_a_watcher_pass_uses_an_index(watched, fake_clerk) -> None:
    """A quiet pass, a pass that repairs, and the walk that finds missed deletions: the
    lease, the state, the versions, the guarded upserts, the count and the deletions."""
    app, recorder, explainer = watched
    users = seed(app, fake_clerk, count=8)
    watcher = app.extensions["webhook_service"].watcher
    assert watcher is not None

    def passes() -> None:
        fake_clerk.add_user(make_clerk_user(seed="watch-missed", updated_at=1_700_000_000_000))
        for user in users[:2]:
            fake_clerk.remove_user(user["id"])
        for _ in range(3):
            assert watcher.run_once() is not None

    commands = run_path(app, recorder, passes)
    assert any(name == "aggregate" and c["aggregate"] == "users" for name, c in commands), "no count"
    assert any(name == "delete" and c["delete"] == "users" for name, c in commands), "no walk deleted"
    assert collection_scans(explainer, commands) == []
