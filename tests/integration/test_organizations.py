"""Organizations and memberships through real HTTP deliveries, with the worked example's
map (docs/examples/organization-fields.toml), on the test database server.

Every rule of the webhook path, one test each: ordering by ``updated_at``, a deletion that
nothing brings back, memberships keyed by organization and user, a membership deletion
dated by its envelope, a rejoin, out-of-order arrivals, a user's deletion reaching its
memberships, duplicates, and the 400s. The expected documents are written out from the
map's own words, not computed by the service's mapping code.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import clerk_settings
from tests.support.examples import ORGANIZATION_FIELDS
from tests.support.fake_clerk import make_clerk_user, make_deleted_data, make_webhook_event
from tests.support.helpers import WEBHOOK, msg_id
from tests.support.signing import signed_delivery
from webhook_service.dev.sample_organizations import (
    make_deleted_organization,
    make_membership,
    make_organization,
)

T0 = 1_740_000_000_000


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@pytest.fixture
def app(make_app, fake_clerk):
    return make_app(organization_fields_file=str(ORGANIZATION_FIELDS), **clerk_settings(fake_clerk))


@pytest.fixture
def db(app):
    return app.extensions["webhook_service"].db


def post(
    client, event_type: str, data: dict[str, Any], *, timestamp: int | None = None, svix_id: str | None = None
):
    body, headers = signed_delivery(
        make_webhook_event(event_type, data, timestamp), msg_id=svix_id or msg_id()
    )
    return client.post(WEBHOOK, data=body, headers=headers)


def outcome(client, event_type: str, data: dict[str, Any], **kw: Any) -> str:
    response = post(client, event_type, data, **kw)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["outcome"]


def org(version: int = 0, **kw: Any) -> dict[str, Any]:
    kw.setdefault("created_at", T0)
    return make_organization("org_2acme", name=kw.pop("name", "Acme"), updated_at=T0 + version, **kw)


def user(user_id: str = "user_2ada") -> dict[str, Any]:
    return make_clerk_user(user_id, email=f"{user_id}@example.com", first_name="Ada", created_at=T0 - 10)


def member(version: int = 0, *, user_id: str = "user_2ada", created: int = 0, **kw: Any) -> dict[str, Any]:
    return make_membership(org(), user(user_id), created_at=T0 + created, updated_at=T0 + version, **kw)


def organization_doc(db) -> dict[str, Any] | None:
    return db.organizations.find_one({"clerkOrgId": "org_2acme"})


def membership_doc(db, user_id: str = "user_2ada") -> dict[str, Any] | None:
    return db.memberships.find_one({"clerkOrgId": "org_2acme", "clerkUserId": user_id})


# -- organizations ---------------------------------------------------------------------------


def test_an_organization_is_stored_as_the_map_says(client, db):
    acme = org(5, slug="acme", public_metadata={"plan": "pro"}, private_metadata={"billing": "card"})
    assert outcome(client, "organization.created", acme) == "applied"
    stored = organization_doc(db)
    assert {k: stored[k] for k in ("name", "slug", "imageUrl", "plan", "createdAt", "seats")} == {
        "name": "Acme",
        "slug": "acme",
        "imageUrl": acme["image_url"],
        "plan": "pro",
        "createdAt": at(T0),  # Clerk's created_at: the map takes over the service's createdAt
        "seats": 5,
    }
    assert stored["clerkUpdatedAt"] == T0 + 5
    assert "private_metadata" not in stored and "billing" not in str(stored)


def test_an_older_organization_update_never_overwrites_a_newer_one(client, db):
    assert outcome(client, "organization.updated", org(20, name="Acme Ltd")) == "applied"
    assert outcome(client, "organization.created", org(0, name="Acme")) == "stale"
    assert outcome(client, "organization.updated", org(10, name="Acme Inc")) == "stale"
    assert organization_doc(db)["name"] == "Acme Ltd"
    assert outcome(client, "organization.updated", org(30, name="Acme Group")) == "applied"
    assert organization_doc(db)["name"] == "Acme Group"


def test_the_apps_own_fields_stick_and_a_missing_plan_gets_its_default(client, db):
    assert outcome(client, "organization.created", org(0)) == "applied"
    assert organization_doc(db)["plan"] == "free"
    db.organizations.update_one({"clerkOrgId": "org_2acme"}, {"$set": {"seats": 50}})
    assert outcome(client, "organization.updated", org(1, name="Acme 2")) == "applied"
    assert (organization_doc(db)["seats"], organization_doc(db)["name"]) == (50, "Acme 2")


def test_organization_deleted_removes_it_its_memberships_and_runs_its_cascade(client, db):
    assert outcome(client, "organization.created", org(0)) == "applied"
    for user_id in ("user_2ada", "user_2grace"):
        assert outcome(client, "organizationMembership.created", member(0, user_id=user_id)) == "applied"
    db.projects.insert_many(
        [{"orgId": "org_2acme", "name": "engine"}, {"orgId": "org_2other", "name": "loom"}]
    )
    svix_id = msg_id()

    assert outcome(
        client, "organization.deleted", make_deleted_organization("org_2acme"), svix_id=svix_id
    ) == ("deleted")
    assert organization_doc(db) is None
    assert db.memberships.count_documents({"clerkOrgId": "org_2acme"}) == 0
    assert [p["name"] for p in db.projects.find()] == ["loom"]
    assert db.deleted_organizations.find_one({"_id": "org_2acme"}) is not None

    # Nothing about it comes back: a late update, a late membership event, a resend.
    assert outcome(client, "organization.updated", org(99)) == "stale"
    assert outcome(client, "organizationMembership.updated", member(99)) == "stale"
    assert outcome(client, "organizationMembership.created", member(0, user_id="user_2alan")) == "stale"
    assert outcome(
        client, "organization.deleted", make_deleted_organization("org_2acme"), svix_id=svix_id
    ) == ("duplicate")
    assert organization_doc(db) is None
    assert db.memberships.count_documents({}) == 0


# -- memberships -----------------------------------------------------------------------------


def test_a_membership_is_stored_by_organization_and_user_with_its_mapped_fields(client, db):
    ada = member(3, role="org:admin", public_metadata={"title": "Founder"})
    assert outcome(client, "organizationMembership.created", ada) == "applied"
    stored = membership_doc(db)
    assert {k: stored[k] for k in ("role", "permissions", "title", "joinedAt")} == {
        "role": "org:admin",
        "permissions": ada["permissions"],
        "title": "Founder",
        "joinedAt": at(T0),
    }
    assert stored["clerkMembershipKey"] == "org_2acme:user_2ada"
    assert "identifier" not in str(stored) and "organization" not in stored


def test_pre_2023_roles_are_stored_with_their_org_prefix(client, db):
    assert outcome(client, "organizationMembership.created", member(0, role="admin")) == "applied"
    assert membership_doc(db)["role"] == "org:admin"
    assert outcome(client, "organizationMembership.updated", member(1, role="basic_member")) == "applied"
    assert membership_doc(db)["role"] == "org:member"


def test_an_older_role_change_never_overwrites_a_newer_one(client, db):
    assert outcome(client, "organizationMembership.updated", member(20, role="org:admin")) == "applied"
    assert outcome(client, "organizationMembership.updated", member(10, role="org:member")) == "stale"
    assert outcome(client, "organizationMembership.created", member(0, role="org:member")) == "stale"
    assert membership_doc(db)["role"] == "org:admin"


def test_a_deletion_dated_at_the_memberships_last_change_removes_it(client, db):
    """Clerk's own example dates a deletion at exactly its ``updated_at``."""
    assert outcome(client, "organizationMembership.created", member(5)) == "applied"
    assert outcome(client, "organizationMembership.deleted", member(5), timestamp=T0 + 5) == "deleted"
    assert membership_doc(db) is None


@pytest.mark.parametrize("unit", ["ms", "seconds"])
def test_the_deletions_time_is_the_envelopes_timestamp_in_ms_or_seconds(client, db, unit):
    """The payload's ``updated_at`` is the membership's last change, not the deletion's."""
    deleted_at = T0 + 60_000
    timestamp = deleted_at if unit == "ms" else deleted_at // 1000
    assert outcome(client, "organizationMembership.updated", member(5)) == "applied"
    assert outcome(client, "organizationMembership.deleted", member(5), timestamp=timestamp) == "deleted"
    assert membership_doc(db) is None
    # A late update older than the deletion does not bring the member back.
    assert outcome(client, "organizationMembership.updated", member(30_000)) == "stale"
    assert membership_doc(db) is None


def test_a_member_who_left_and_rejoined_stays_when_the_old_deletion_is_resent(client, db):
    left, rejoined = T0 + 1000, T0 + 2000
    deletion = msg_id()
    assert outcome(client, "organizationMembership.created", member(0)) == "applied"
    assert (
        outcome(client, "organizationMembership.deleted", member(0), timestamp=left, svix_id=deletion)
        == "deleted"
    )
    back = member(2000, created=2000, role="org:admin")
    assert outcome(client, "organizationMembership.created", back) == "applied"
    # The dashboard resends the old deletion (same svix-id), and a copy arrives with another.
    assert (
        outcome(client, "organizationMembership.deleted", member(0), timestamp=left, svix_id=deletion)
        == "stale"
    )
    assert outcome(client, "organizationMembership.deleted", member(0), timestamp=left) == "stale"
    stored = membership_doc(db)
    assert (stored["role"], stored["clerkUpdatedAt"], stored["joinedAt"]) == (
        "org:admin",
        rejoined,
        at(rejoined),
    )


def test_a_rejoin_that_arrives_before_the_deletion_is_kept(client, db):
    assert outcome(client, "organizationMembership.created", member(2000, created=2000)) == "applied"
    assert outcome(client, "organizationMembership.deleted", member(0), timestamp=T0 + 1000) == "stale"
    assert outcome(client, "organizationMembership.created", member(0)) == "stale"
    assert membership_doc(db)["clerkUpdatedAt"] == T0 + 2000


def test_a_deletion_that_arrives_before_its_membership_holds_it_back(client, db):
    assert outcome(client, "organizationMembership.deleted", member(5), timestamp=T0 + 10) == "deleted"
    assert outcome(client, "organizationMembership.created", member(0)) == "stale"
    assert outcome(client, "organizationMembership.updated", member(5)) == "stale"
    assert membership_doc(db) is None


def test_a_membership_before_its_organization_and_user_is_stored_and_writes_no_organization(client, db):
    """The embedded organization lacks ``private_metadata`` and ``created_by``: it is never
    written. The organization appears only with ``organization.created``."""
    assert outcome(client, "organizationMembership.created", member(0, user_id="user_2new")) == "applied"
    assert membership_doc(db, "user_2new") is not None
    assert db.organizations.count_documents({}) == 0
    assert db.users.count_documents({}) == 0
    assert outcome(client, "organization.created", org(0, private_metadata={"billing": "card"})) == "applied"
    assert organization_doc(db)["name"] == "Acme"


def test_user_deleted_removes_the_users_memberships_and_nothing_brings_them_back(client, db):
    for user_id in ("user_2ada", "user_2grace"):
        assert outcome(client, "organizationMembership.created", member(0, user_id=user_id)) == "applied"
    assert outcome(client, "user.deleted", make_deleted_data("user_2ada")) == "deleted"
    assert membership_doc(db) is None
    assert membership_doc(db, "user_2grace") is not None
    assert outcome(client, "organizationMembership.updated", member(50)) == "stale"
    assert outcome(client, "organizationMembership.created", member(60, created=60)) == "stale"
    assert membership_doc(db) is None


def test_a_duplicate_delivery_has_one_effect(client, db):
    svix_id = msg_id()
    assert outcome(client, "organizationMembership.created", member(0), svix_id=svix_id) == "applied"
    db.memberships.update_one({"clerkUserId": "user_2ada"}, {"$set": {"title": "edited by the app"}})
    assert outcome(client, "organizationMembership.created", member(0), svix_id=svix_id) == "duplicate"
    assert membership_doc(db)["title"] == "edited by the app"


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "data", "timestamp", "problem"),
    [
        ("organization.created", {"object": "organization", "name": "x", "updated_at": T0}, T0, "'data.id'"),
        ("organization.deleted", {"deleted": True, "object": "organization"}, T0, "'data.id'"),
        ("organization.updated", dict(org(), updated_at="yesterday"), T0, "'data.updated_at'"),
        ("organizationMembership.created", dict(member(), organization={}), T0, "'data.organization.id'"),
        (
            "organizationMembership.updated",
            dict(member(), public_user_data={"first_name": "Ada"}),
            T0,
            "'data.public_user_data.user_id'",
        ),
        ("organizationMembership.deleted", member(), None, "no integer 'timestamp'"),
        ("organizationMembership.deleted", member(), "2025-01-01", "no integer 'timestamp'"),
    ],
    ids=[
        "org-no-id",
        "deleted-org-no-id",
        "org-bad-version",
        "no-org-id",
        "no-user-id",
        "no-time",
        "text-time",
    ],
)
def test_bad_input_is_a_400_naming_the_problem_and_writes_nothing(
    client, db, event_type, data, timestamp, problem
):
    body, headers = signed_delivery(make_webhook_event(event_type, data, None) | {"timestamp": timestamp})
    response = client.post(WEBHOOK, data=body, headers=headers)
    assert response.status_code == 400
    assert response.get_json()["error"] == "malformed event"
    assert problem in response.get_json()["detail"]
    for name in ("organizations", "memberships", "deleted_organizations", "deleted_memberships"):
        assert db[name].count_documents({}) == 0


@pytest.mark.parametrize(
    "event_type",
    [
        "organizationInvitation.created",
        "organizationInvitation.accepted",
        "organizationInvitation.revoked",
        "organizationDomain.created",
        "role.created",
        "permission.updated",
    ],
)
def test_invitations_domains_roles_and_permissions_are_acknowledged_and_ignored(client, db, event_type):
    data = {"id": "orginv_1", "organization_id": "org_2acme", "user_id": "user_2ada", "object": "x"}
    assert outcome(client, event_type, data) == "ignored"
    assert db.memberships.count_documents({}) == 0 and db.organizations.count_documents({}) == 0


def test_without_the_file_organization_events_are_ignored_and_nothing_new_is_written(make_app):
    plain = make_app()
    client, db = plain.test_client(), plain.extensions["webhook_service"].db
    before = set(db.list_collection_names())
    assert outcome(client, "organization.created", org(0)) == "ignored"
    assert outcome(client, "organizationMembership.created", member(0)) == "ignored"
    assert outcome(client, "organizationMembership.deleted", member(0), timestamp=T0) == "ignored"
    assert outcome(client, "organization.deleted", make_deleted_organization("org_2acme")) == "ignored"
    plain.extensions["webhook_service"].events.flush()
    new = set(db.list_collection_names()) - before - {"events", "users", "deleted_users"}
    assert new == set()
    assert "orgId" not in db.events.index_information()


# -- the store, where the race is -----------------------------------------------------------------


def test_an_update_landing_on_an_insert_a_deletion_holds_back_is_removed_too(app, db):
    """Found by the organization storm. A deletion dated T has no document to remove yet; a
    delivery of version v1 <= T inserts one, and before it checks the tombstones and removes
    its insert, a delivery of v2 <= T updates that document (an update checks no
    tombstone). The removal must take the document at v2 too: it is as dead as v1. A
    version newer than T (a rejoin) would stay."""
    from webhook_service.catalog import build_stores
    from webhook_service.resources.memberships.mapping import map_membership

    declared = app.extensions["webhook_service"].config.declared
    store = build_stores(db, declared).memberships
    other = build_stores(db, declared).memberships
    assert store is not None and other is not None
    mapping = store.memberships
    assert store.delete("org_2acme:user_2ada", msg_id(), at=T0 + 100) is not None  # dated T0 + 100

    class UpdatedMeanwhile(type(store)):
        def _held_back(self, records):
            held = super()._held_back(records)
            other.upsert_if_newer(map_membership(member(50, role="org:admin"), mapping), msg_id())
            return held

    store.__class__ = UpdatedMeanwhile
    result = store.upsert_if_newer(map_membership(member(10), mapping), msg_id())
    assert result.outcome.value == "stale"
    assert membership_doc(db) is None
