"""Organizations and memberships on every path but the webhook's: reconcile and sync
against the fake Clerk (its organization endpoints: ``{data, total_count}``, offset
paging), the event log (records that name an organization, erasure), ``init-db``'s plan,
and an app that kept its own memberships before the service. On the test database server.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import clerk_settings
from tests.support.examples import ORGANIZATION_FIELDS
from tests.support.fake_clerk import make_clerk_user, make_deleted_data, make_webhook_event
from tests.support.helpers import WEBHOOK, msg_id, post_sync
from tests.support.signing import signed_delivery
from webhook_service.dev.sample_organizations import make_membership, make_organization

T0 = 1_740_000_000_000


@pytest.fixture
def app(make_app, fake_clerk):
    return make_app(organization_fields_file=str(ORGANIZATION_FIELDS), **clerk_settings(fake_clerk))


@pytest.fixture
def db(app):
    return app.extensions["webhook_service"].db


def cli(app, *args: str):
    return app.test_cli_runner().invoke(args=list(args))


def deliver(client, event_type: str, data: dict[str, Any], timestamp: int | None = None) -> str:
    body, headers = signed_delivery(make_webhook_event(event_type, data, timestamp), msg_id=msg_id())
    response = client.post(WEBHOOK, data=body, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["outcome"]


def clerk_world(fake_clerk, orgs: int = 3, users: int = 4) -> tuple[list[dict], list[dict], list[dict]]:
    """Organizations, users and memberships (every user in every organization) in the fake."""
    people = [make_clerk_user(f"user_2p{i}", created_at=T0 + i) for i in range(users)]
    teams = [make_organization(f"org_2t{i}", name=f"Team {i}", created_at=T0 + 100 + i) for i in range(orgs)]
    members = [
        make_membership(team, person, role="org:admin" if i == 0 else "org:member", created_at=T0 + 1000 + i)
        for team in teams
        for i, person in enumerate(people)
    ]
    fake_clerk.add_users(people)
    for team in teams:
        fake_clerk.orgs.add_organization(team)
    for membership in members:
        fake_clerk.orgs.add_membership(membership)
    return teams, people, members


def keys(db) -> set[tuple[str, str]]:
    return {(m["clerkOrgId"], m["clerkUserId"]) for m in db.memberships.find()}


# -- reconcile ------------------------------------------------------------------------------


def test_reconcile_brings_organizations_and_memberships_to_clerks_state(app, db, fake_clerk):
    teams, people, members = clerk_world(fake_clerk)
    # Locally: a stale copy of one team, a membership Clerk no longer has, an organization gone.
    client = app.test_client()
    assert (
        deliver(client, "organization.created", dict(teams[0], name="Old name", updated_at=T0)) == "applied"
    )
    gone_team = make_organization("org_2gone", created_at=T0)
    assert deliver(client, "organization.created", gone_team) == "applied"
    left = make_membership(teams[1], make_clerk_user("user_2left", created_at=T0), created_at=T0)
    assert deliver(client, "organizationMembership.created", left) == "applied"

    result = cli(app, "reconcile", "--max-rps", "0")

    assert result.exit_code == 0, result.output
    summary = result.output.strip().splitlines()[-1]
    assert "4 Clerk users in 1 pages: created 4" in summary
    assert "3 Clerk organizations in 1 pages: created 2, updated 1, unchanged 0, deleted 1" in summary
    assert "12 Clerk memberships in 1 pages: created 12, updated 0, unchanged 0, deleted 1" in summary
    assert {o["clerkOrgId"]: o["name"] for o in db.organizations.find()} == {
        t["id"]: t["name"] for t in teams
    }
    assert keys(db) == {(m["organization"]["id"], m["public_user_data"]["user_id"]) for m in members}
    assert db.deleted_organizations.find_one({"_id": "org_2gone"}) is not None
    # Organization pages were asked for oldest first, by offset; memberships likewise.
    listed = [
        r for r in fake_clerk.requests if r.path in ("/v1/organizations", "/v1/organization_memberships")
    ]
    assert listed and all(
        r.query.get("order_by", "").strip() in ("+created_at", "created_at") for r in listed
    )
    assert all("starting_after" not in r.query for r in listed)

    again = cli(app, "reconcile", "--max-rps", "0")
    assert "3 Clerk organizations in 1 pages: created 0, updated 0, unchanged 3, deleted 0" in again.output


def test_reconcile_pages_organizations_by_offset_past_one_page(app, db, fake_clerk):
    for i in range(1203):
        fake_clerk.orgs.add_organization(make_organization(f"org_2many{i:05d}", created_at=T0 + i))
    result = cli(app, "reconcile", "--max-rps", "0")
    assert result.exit_code == 0, result.output
    assert "1203 Clerk organizations in 3 pages: created 1203" in result.output
    offsets = [r.query.get("offset", "0") for r in fake_clerk.requests if r.path == "/v1/organizations"]
    assert offsets == ["0", "500", "1000"]
    assert db.organizations.count_documents({}) == 1203


def test_a_dry_run_changes_nothing_and_says_what_it_would_do(app, db, fake_clerk):
    clerk_world(fake_clerk, orgs=1, users=2)
    result = cli(app, "reconcile", "--dry-run", "--max-rps", "0")
    assert result.exit_code == 0, result.output
    assert "1 Clerk organizations in 1 pages: would be created 1" in result.output
    assert "2 Clerk memberships in 1 pages: would be created 2" in result.output
    assert db.organizations.count_documents({}) == 0 and db.memberships.count_documents({}) == 0


def test_reconcile_keeps_a_membership_clerk_lists_only_under_its_organization(app, db, fake_clerk):
    """Absence from the instance-wide list is no proof: each one is confirmed against its
    organization's own list before it is deleted."""
    teams, people, members = clerk_world(fake_clerk, orgs=1, users=2)
    client = app.test_client()
    for membership in members:
        assert deliver(client, "organizationMembership.created", membership) == "applied"
    hidden = members[1]

    original = fake_clerk.orgs.answer

    def answer(req, route):  # the instance-wide list misses one membership
        response = original(req, route)
        if route == "/v1/organization_memberships":
            body = response.get_json()
            body["data"] = [m for m in body["data"] if m["id"] != hidden["id"]]
            body["total_count"] -= 1
            response.set_data(__import__("json").dumps(body))
        return response

    fake_clerk.orgs.answer = answer
    result = cli(app, "reconcile", "--max-rps", "0")
    assert result.exit_code == 0, result.output
    assert "1 Clerk memberships in 1 pages" in result.output and "deleted 0" in result.output.splitlines()[-1]
    assert (teams[0]["id"], hidden["public_user_data"]["user_id"]) in keys(db)
    confirmed = [
        r for r in fake_clerk.requests if r.path == f"/v1/organizations/{teams[0]['id']}/memberships"
    ]
    assert confirmed


def test_reconcile_survives_a_429_on_the_organization_list(app, db, fake_clerk):
    clerk_world(fake_clerk, orgs=2, users=1)
    fake_clerk.fail_next(1, 429, retry_after=0.2, path_prefix="/v1/organizations")
    result = cli(app, "reconcile", "--max-rps", "0")
    assert result.exit_code == 0, result.output
    assert db.organizations.count_documents({}) == 2


# -- sync ----------------------------------------------------------------------------------------


def test_sync_refreshes_the_users_memberships(app, db, fake_clerk):
    teams, people, members = clerk_world(fake_clerk, orgs=2, users=2)
    ada = people[0]
    client = app.test_client()
    stale_team = make_organization("org_2stale", created_at=T0)
    assert deliver(
        client, "organizationMembership.created", make_membership(stale_team, ada, created_at=T0)
    ) == ("applied")

    response = post_sync(client, ada["id"])

    assert response.status_code == 201, response.get_json()
    assert response.get_json()["clerkId"] == ada["id"]
    mine = {m["clerkOrgId"] for m in db.memberships.find({"clerkUserId": ada["id"]})}
    assert mine == {t["id"] for t in teams}  # joined both; the one Clerk no longer lists is gone
    assert db.memberships.count_documents({"clerkUserId": people[1]["id"]}) == 0  # only the syncing user's
    asked = [r.path for r in fake_clerk.requests if r.path.startswith("/v1/users/")]
    assert asked == [f"/v1/users/{ada['id']}", f"/v1/users/{ada['id']}/organization_memberships"]


def test_a_listed_membership_that_cannot_be_stored_is_kept_not_deleted(app, db, fake_clerk, caplog):
    """Clerk still has it: a copy this sync cannot store (no integer ``updated_at``) is no
    reason to delete the member's stored membership."""
    teams, people, members = clerk_world(fake_clerk, orgs=2, users=1)
    ada = people[0]
    client = app.test_client()
    for membership in members:
        assert deliver(client, "organizationMembership.created", membership) == "applied"
    broken = dict(members[0], updated_at="yesterday")
    fake_clerk.orgs.add_membership(broken)  # replaces the first team's copy in the listing

    with caplog.at_level("WARNING", logger="webhook_service"):
        assert post_sync(client, ada["id"]).status_code == 201  # Ada herself is new here

    assert {m["clerkOrgId"] for m in db.memberships.find({"clerkUserId": ada["id"]})} == {
        t["id"] for t in teams
    }
    assert db.deleted_memberships.count_documents({}) == 0
    assert any(
        f"sync of {ada['id']}: a membership Clerk lists is not stored" in r.getMessage()
        for r in caplog.records
    )


def test_a_sync_that_cannot_list_the_memberships_is_a_503_and_gives_its_interval_back(make_app, fake_clerk):
    app = make_app(
        organization_fields_file=str(ORGANIZATION_FIELDS),
        **dict(clerk_settings(fake_clerk), sync_min_interval_s=60),
    )
    teams, people, _ = clerk_world(fake_clerk, orgs=1, users=1)
    fake_clerk.fail_next(5, 503, path_prefix=f"/v1/users/{people[0]['id']}/organization_memberships")
    client = app.test_client()
    assert post_sync(client, people[0]["id"]).status_code in (502, 503)
    fake_clerk.reset_faults()
    assert post_sync(client, people[0]["id"]).status_code == 200
    db = app.extensions["webhook_service"].db
    assert db.memberships.count_documents({"clerkUserId": people[0]["id"]}) == 1


# -- the event log and personal data ----------------------------------------------------------


def test_records_name_their_organization_and_events_filters_by_it(app, db, fake_clerk):
    teams, people, members = clerk_world(fake_clerk, orgs=2, users=1)
    client = app.test_client()
    deliver(client, "organization.created", teams[0])
    deliver(client, "organizationMembership.created", members[0])
    deliver(client, "organization.created", teams[1])
    app.extensions["webhook_service"].events.flush()

    result = cli(app, "events", "--org", teams[0]["id"])

    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "2 deliveries"
    record = db.events.find_one({"type": "organizationMembership.created"})
    assert (record["subject"], record["subjectId"], record["orgId"], record["userId"]) == (
        "membership",
        f"{teams[0]['id']}:{people[0]['id']}",
        teams[0]["id"],
        people[0]["id"],
    )


def test_a_deleted_users_membership_payloads_are_erased(app, db, fake_clerk):
    """A membership payload carries the member's name, image and identifier (an email)."""
    teams, people, members = clerk_world(fake_clerk, orgs=1, users=2)
    client = app.test_client()
    for membership in members:
        deliver(client, "organizationMembership.created", membership)
    events = app.extensions["webhook_service"].events
    events.flush()
    gone = people[0]
    deliver(client, "user.deleted", make_deleted_data(gone["id"]))
    events.flush()
    erased = db.events.find_one({"userId": gone["id"], "type": "organizationMembership.created"})
    kept = db.events.find_one({"userId": people[1]["id"], "type": "organizationMembership.created"})
    assert "payload" not in erased and erased["erased"] is True
    assert people[1]["id"] in kept["payload"]
    assert gone["email_addresses"][0]["email_address"] not in str(list(db.events.find()))


def test_a_membership_deletions_record_keeps_only_what_replaying_it_needs(app, db, fake_clerk):
    teams, people, members = clerk_world(fake_clerk, orgs=1, users=1)
    client = app.test_client()
    deliver(client, "organizationMembership.created", members[0])
    body, headers = signed_delivery(
        make_webhook_event("organizationMembership.deleted", members[0], T0 + 5000)
    )
    assert client.post(WEBHOOK, data=body, headers=headers).get_json()["outcome"] == "deleted"
    app.extensions["webhook_service"].events.flush()
    record = db.events.find_one({"_id": headers["svix-id"]})
    assert people[0]["first_name"] not in record["payload"] and "identifier" not in record["payload"]

    # Replayed (the membership meanwhile rejoined in the database): the deletion is as old as it was.
    deliver(
        client, "organizationMembership.created", dict(members[0], updated_at=T0 + 6000, created_at=T0 + 6000)
    )
    result = cli(app, "replay", headers["svix-id"])
    assert result.exit_code == 0, result.output
    assert "organizationMembership.deleted  stale" in result.output
    assert db.memberships.count_documents({}) == 1


def test_replay_filters_by_organization(app, db, fake_clerk):
    teams, people, members = clerk_world(fake_clerk, orgs=2, users=1)
    client = app.test_client()
    for membership in members:
        deliver(client, "organizationMembership.created", membership)
    app.extensions["webhook_service"].events.flush()
    result = cli(app, "replay", "--org", teams[1]["id"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == "replayed 1: duplicate 1"


# -- init-db and an app's own memberships --------------------------------------------------------


def test_init_db_plans_the_organization_and_membership_indexes(app, db):
    result = cli(app, "init-db")
    assert result.exit_code == 0, result.output
    created = {
        line.split()[1].split(" (")[0] for line in result.output.splitlines() if line.startswith("created")
    }
    assert {
        "organizations.clerkOrgId_unique",
        "memberships.clerkMembershipKey_unique",
        "memberships.clerkOrgId_clerkUserId_unique",
        "memberships.clerkUserId",
        "projects.orgId_1",
        "events.orgId",
    } <= created
    assert "memberships.clerkOrgId_1" not in created  # the pair's index serves an organization's lookups


def test_init_db_reports_an_apps_unique_slug_as_a_conflict(app, db):
    db.organizations.create_index("slug", unique=True, name="slug_1")
    result = cli(app, "init-db", "--check")
    assert result.exit_code == 1
    assert "organizations.slug_1" in result.output
    assert "refuses two organizations with the same slug, which Clerk allows" in result.output


def test_an_apps_own_membership_document_is_adopted_in_place(app, db, fake_clerk):
    """An app that kept its own memberships (organization and user, unique) before the
    service: the first event finds that document and takes it over, same ``_id``."""
    teams, people, members = clerk_world(fake_clerk, orgs=1, users=1)
    cli(app, "init-db")
    own = db.memberships.insert_one(
        {"clerkOrgId": teams[0]["id"], "clerkUserId": people[0]["id"], "role": "owner", "notes": "the app's"}
    ).inserted_id
    assert deliver(app.test_client(), "organizationMembership.updated", members[0]) == "applied"
    [stored] = list(db.memberships.find())
    assert (stored["_id"], stored["role"], stored["notes"]) == (own, "org:admin", "the app's")
    assert stored["clerkMembershipKey"] == f"{teams[0]['id']}:{people[0]['id']}"
