"""The local Clerk that ``make run`` starts: its session tokens pass the service's own
verifier (by PEM and by JWKS), its route for them checks the secret, and its sample
users are ones the service can store."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.examples import ORGANIZATION_FIELDS
from tests.support.stores import xclone_user
from webhook_service.dev.local_clerk import TOKEN_PATH, LocalClerk, generate_signing_key, public_pem_of
from webhook_service.dev.sample_events import sample_users
from webhook_service.events import unstorable_reason
from webhook_service.tokens import JwksCache, SessionTokenVerifier, TokenError


@pytest.fixture(scope="module")
def clerk() -> Iterator[LocalClerk]:
    with LocalClerk(users=sample_users(), signing_key_pem=generate_signing_key()) as running:
        yield running


def issue(clerk: LocalClerk, body: object, secret: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {secret or clerk.secret_key}"}
    return httpx.post(clerk.url + TOKEN_PATH, json=body, headers=headers, timeout=5)


def test_its_tokens_pass_the_services_verifier_by_pem_and_by_jwks(clerk):
    ada = sample_users()[0]["id"]
    token = issue(clerk, {"user_id": ada}).json()["jwt"]
    by_pem = SessionTokenVerifier(
        jwt_key=public_pem_of(clerk.signing_key_pem), authorized_parties=("https://x",)
    )
    by_jwks = SessionTokenVerifier(jwt_key=None, jwks=JwksCache(clerk.url, clerk.secret_key))

    assert by_pem.verify(f"Bearer {token}") == ada
    assert by_jwks.verify(f"Bearer {token}") == ada


def test_a_token_from_another_local_clerk_is_refused(clerk):
    other = LocalClerk(signing_key_pem=generate_signing_key())
    verifier = SessionTokenVerifier(jwt_key=public_pem_of(clerk.signing_key_pem))

    with pytest.raises(TokenError):
        verifier.verify(f"Bearer {other.session_token(sample_users()[0]['id'])}")


def test_an_expired_token_is_refused(clerk):
    verifier = SessionTokenVerifier(jwt_key=public_pem_of(clerk.signing_key_pem))

    with pytest.raises(TokenError):
        verifier.verify(f"Bearer {clerk.session_token(sample_users()[0]['id'], lifetime_s=-120)}")


def test_the_token_route_checks_the_secret_and_the_user(clerk):
    wrong_secret = issue(clerk, {"user_id": sample_users()[0]["id"]}, secret="sk_test_wrong")
    unknown = issue(clerk, {"user_id": "user_nobody"})
    missing = issue(clerk, {})

    assert wrong_secret.status_code == 401
    assert wrong_secret.json()["errors"][0]["code"] == "authentication_invalid"
    assert unknown.status_code == 404
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["meta"] == {"param_name": "user_id"}


def test_users_list_is_a_json_array_of_the_sample_users(clerk):
    listed = httpx.get(
        clerk.url + "/v1/users",
        params={"limit": 10, "order_by": "+created_at"},
        headers={"Authorization": f"Bearer {clerk.secret_key}"},
    )

    assert listed.status_code == 200
    assert [u["id"] for u in listed.json()] == [u["id"] for u in sample_users()]


def test_the_sample_users_are_ones_the_service_can_store():
    users = sample_users()
    mapped = [xclone_user(u) for u in users]

    assert [unstorable_reason(u) for u in users] == [None] * len(users)
    assert len({m.values["email"] for m in mapped}) == len({m.username for m in mapped}) == len(users)
    assert [m.values["firstName"] for m in mapped] == ["Ada", "Grace", "Alan", "Margaret"]
    assert mapped[1].values["email"] == "grace.hopper@example.com"  # her primary is not listed first
    assert [m.values["banned"] for m in mapped] == [False, False, False, True]
    assert sample_users() == users  # the same on every run


# -- organizations ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def with_orgs() -> Iterator[LocalClerk]:
    from webhook_service.dev.sample_organizations import sample_organizations

    organizations, memberships = sample_organizations()
    with LocalClerk(users=sample_users(), organizations=organizations, memberships=memberships) as running:
        yield running


def get(clerk: LocalClerk, path: str, **params: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {clerk.secret_key}"}
    return httpx.get(clerk.url + path, params=params, headers=headers, timeout=5)


def test_its_organization_lists_have_clerks_shape_and_paging(with_orgs):
    from webhook_service.dev.sample_organizations import make_organization

    listed = get(with_orgs, "/v1/organizations").json()
    assert set(listed) == {"data", "total_count"} and listed["total_count"] == 1
    [society] = listed["data"]
    assert society["object"] == "organization" and "members_count" not in society
    counted = get(with_orgs, "/v1/organizations", include_members_count="true").json()["data"][0]
    assert counted["members_count"] == 2
    assert get(with_orgs, f"/v1/organizations/{society['id']}").json()["name"] == society["name"]
    assert get(with_orgs, f"/v1/organizations/{society['slug']}").json()["id"] == society["id"]
    assert get(with_orgs, "/v1/organizations/org_nope").status_code == 404
    assert get(with_orgs, "/v1/organizations", limit=501).status_code == 422
    assert get(with_orgs, "/v1/organizations", order_by="updated_at").json()["errors"][0]["meta"] == {
        "param_name": "order_by"
    }
    for i in range(3):
        with_orgs.orgs.add_organization(make_organization(f"org_2page{i}", created_at=2_000_000_000_000 + i))
    pages = [
        get(with_orgs, "/v1/organizations", limit=2, offset=o, order_by="+created_at").json() for o in (0, 2)
    ]
    assert [len(p["data"]) for p in pages] == [2, 2] and pages[0]["total_count"] == 4
    assert pages[1]["data"][-1]["id"] == "org_2page2"


def test_its_memberships_are_listed_by_instance_organization_and_user(with_orgs):
    society = get(with_orgs, "/v1/organizations", order_by="+created_at").json()["data"][0]
    ada, grace = (u["id"] for u in sample_users()[:2])
    everyone = get(with_orgs, "/v1/organization_memberships", limit=100).json()
    assert everyone["total_count"] == 2
    assert {m["public_user_data"]["user_id"] for m in everyone["data"]} == {ada, grace}
    theirs = get(with_orgs, f"/v1/organizations/{society['id']}/memberships", user_id=[grace]).json()
    assert [m["public_user_data"]["user_id"] for m in theirs["data"]] == [grace]
    embedded = theirs["data"][0]["organization"]
    assert "private_metadata" not in embedded and "created_by" not in embedded
    mine = get(with_orgs, f"/v1/users/{ada}/organization_memberships").json()
    assert [m["role"] for m in mine["data"]] == ["org:admin"]
    assert get(with_orgs, "/v1/organizations/org_nope/memberships").status_code == 404


def test_its_sample_organization_and_members_map_through_the_worked_example(with_orgs):
    from webhook_service.config import load_organization_file
    from webhook_service.dev.sample_organizations import sample_organizations
    from webhook_service.resources.memberships.mapping import map_membership, unstorable_membership
    from webhook_service.resources.organizations.mapping import map_organization

    organizations, memberships = load_organization_file(ORGANIZATION_FIELDS)
    assert memberships is not None
    [society], members = sample_organizations()
    assert map_organization(society, organizations.fields).values["plan"] == "pro"
    for membership in members:
        assert unstorable_membership(membership) is None
        assert map_membership(membership, memberships).values["title"] in ("Founder", "Engineer")
