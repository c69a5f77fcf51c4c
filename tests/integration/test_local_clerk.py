"""The local Clerk that ``make run`` starts: its session tokens pass the service's own
verifier (by PEM and by JWKS), its route for them checks the secret, and its sample
users are ones the service can store."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

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
