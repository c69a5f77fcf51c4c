"""Prove that tests/support/fake_clerk.py behaves like Clerk's Backend API for the real SDK."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from clerk_backend_api import Clerk, models
from clerk_backend_api.utils import BackoffStrategy, RetryConfig
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.fake_clerk import (
    DEFAULT_INSTANCE_ID,
    FakeClerkAPI,
    make_clerk_user,
    make_deleted_data,
    make_users,
    make_webhook_event,
)

# BackoffStrategy(initial_interval_ms, max_interval_ms, exponent, max_elapsed_time_ms)
RETRY = RetryConfig("backoff", BackoffStrategy(10, 50, 1.5, 200), False)
NO_RETRY = RetryConfig("none", BackoffStrategy(10, 50, 1.5, 200), False)
USER_ID_RE = re.compile(r"^user_[0-9A-Za-z]{27}$")
IDN_RE = re.compile(r"^idn_[0-9A-Za-z]{27}$")


@pytest.fixture
def fake() -> Iterator[FakeClerkAPI]:
    with FakeClerkAPI() as server:
        yield server


def make_sdk(fake: FakeClerkAPI, retry: RetryConfig = RETRY, bearer: str | None = None) -> Clerk:
    return Clerk(
        bearer_auth=bearer if bearer is not None else fake.secret_key,
        server_url=fake.url + "/v1",
        retry_config=retry,
        timeout_ms=2000,
    )


@pytest.fixture
def clerk(fake: FakeClerkAPI) -> Iterator[Clerk]:
    with make_sdk(fake) as sdk:
        yield sdk


@pytest.fixture
def clerk_no_retry(fake: FakeClerkAPI) -> Iterator[Clerk]:
    with make_sdk(fake, NO_RETRY) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def primary_email(user: models.User) -> str | None:
    return next(
        (e.email_address for e in user.email_addresses if e.id == user.primary_email_address_id), None
    )


# -- payload builders ----------------------------------------------------------

VARIANTS: dict[str, dict[str, Any]] = {
    "primary_first": {"email": "ada@example.com"},
    "primary_not_first": {
        "email": "ada@example.com",
        "extra_emails": ("old@example.com", "work@example.com"),
        "primary_first": False,
    },
    "phone_only": {"phone_only": True},
    "no_email_at_all": {"email": None},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_user_payload_is_complete_for_sdk_model(variant: str) -> None:
    data = make_clerk_user(seed=variant, **VARIANTS[variant])
    required = {n for n, f in models.User.model_fields.items() if f.is_required()}
    assert required <= data.keys()
    user = models.User.model_validate(data)  # strict SDK model: no ResponseValidationError
    assert USER_ID_RE.match(user.id)
    assert all(IDN_RE.match(e.id or "") for e in user.email_addresses)
    assert all(IDN_RE.match(p.id or "") for p in user.phone_numbers)
    assert data["object"] == "user"
    for email in data["email_addresses"]:
        assert email["object"] == "email_address"
        assert email["verification"] == {
            "object": "verification_otp",
            "status": "verified",
            "strategy": "email_code",
            "attempts": None,
            "expire_at": email["created_at"] + 600_000,
        }


def test_user_variants_shape() -> None:
    moved = make_clerk_user(seed=1, **VARIANTS["primary_not_first"])
    assert [e["email_address"] for e in moved["email_addresses"]][-1] == "ada@example.com"
    assert moved["email_addresses"][0]["id"] != moved["primary_email_address_id"]
    phone = make_clerk_user(seed=1, phone_only=True)
    assert phone["email_addresses"] == []
    assert phone["primary_email_address_id"] is None
    assert phone["primary_phone_number_id"] == phone["phone_numbers"][0]["id"]


def test_ids_are_deterministic_for_seed_or_id() -> None:
    assert make_clerk_user(seed=42) == make_clerk_user(seed=42)
    assert make_clerk_user(seed=42)["id"] != make_clerk_user(seed=43)["id"]
    fixed = make_clerk_user("user_2abc", created_at=1, updated_at=2)
    assert fixed == make_clerk_user("user_2abc", created_at=1, updated_at=2)
    assert fixed["id"] == "user_2abc"
    assert make_clerk_user()["id"] != make_clerk_user()["id"]
    users = make_users(50, seed="s")
    assert len({u["id"] for u in users}) == 50
    assert [u["created_at"] for u in users] == sorted(u["created_at"] for u in users)


def test_webhook_envelope_and_deleted_data() -> None:
    user = make_clerk_user(seed=7)
    event = make_webhook_event("user.created", user, timestamp_ms=1_654_012_591_835)
    assert event == {
        "data": user,
        "event_attributes": {
            "http_request": {
                "client_ip": "203.0.113.7",
                "user_agent": event["event_attributes"]["http_request"]["user_agent"],
            }
        },
        "instance_id": DEFAULT_INSTANCE_ID,
        "object": "event",
        "timestamp": 1_654_012_591_835,
        "type": "user.created",
    }
    assert DEFAULT_INSTANCE_ID.startswith("ins_")
    assert abs(make_webhook_event("user.updated", user)["timestamp"] - time.time() * 1000) < 5000
    assert make_deleted_data(user["id"]) == {"deleted": True, "id": user["id"], "object": "user"}


# -- SDK against the fake ----------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_sdk_get_user_parses_variants(fake: FakeClerkAPI, clerk: Clerk, variant: str) -> None:
    data = fake.add_user(make_clerk_user(seed=variant, updated_at=1_700_000_000_123, **VARIANTS[variant]))
    user = clerk.users.get(user_id=data["id"])
    assert isinstance(user, models.User)
    assert user.id == data["id"]
    assert user.updated_at == 1_700_000_000_123
    expected = {"primary_first": "ada@example.com", "primary_not_first": "ada@example.com"}
    assert primary_email(user) == expected.get(variant)
    if variant == "phone_only":
        assert user.email_addresses == []
        assert user.primary_email_address_id is None
        assert user.phone_numbers[0].id == user.primary_phone_number_id


def test_sdk_missing_user_raises_clerk_errors_404(clerk: Clerk) -> None:
    with pytest.raises(models.ClerkErrors) as info:
        clerk.users.get(user_id="user_doesnotexist")
    assert info.value.status_code == 404
    assert info.value.data.errors[0].code == "resource_not_found"


def test_sdk_list_pages_1200_users_each_exactly_once(fake: FakeClerkAPI, clerk: Clerk) -> None:
    fake.add_users(make_users(1200, seed="page"))
    seen: list[models.User] = []
    offset = 0
    while True:
        page = clerk.users.list(request={"limit": 500, "offset": offset, "order_by": "-created_at"})
        seen.extend(page)
        if len(page) < 500:
            break
        offset += 500
    ids = [u.id for u in seen]
    assert len(ids) == 1200
    assert set(ids) == set(fake.users)
    stamps = [u.created_at for u in seen]
    assert stamps == sorted(stamps, reverse=True)
    assert [int(r.query["offset"]) for r in fake.requests] == [0, 500, 1000]
    assert clerk.users.count().total_count == 1200
    oldest = clerk.users.list(request={"limit": 1, "order_by": "+created_at"})
    assert oldest[0].created_at == min(stamps)


def test_sdk_list_limit_over_500_is_422(clerk: Clerk) -> None:
    # GetUserList maps 400/401/422 JSON bodies to ClerkErrors, not SDKError.
    with pytest.raises(models.ClerkErrors) as info:
        clerk.users.list(request={"limit": 501})
    assert info.value.status_code == 422
    assert info.value.data.errors[0].code == "form_param_value_invalid"


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_queued_failure_surfaces_as_sdk_error_without_retries(
    fake: FakeClerkAPI, clerk_no_retry: Clerk, status: int
) -> None:
    user = fake.add_user(make_clerk_user(seed=status))
    fake.fail_next(1, status=status, retry_after=0 if status == 429 else None)
    with pytest.raises(models.SDKError) as info:
        clerk_no_retry.users.get(user_id=user["id"])
    assert info.value.status_code == status
    assert not isinstance(info.value, models.ClerkErrors)
    if status == 429:
        assert info.value.headers["retry-after"] == "0"
    assert clerk_no_retry.users.get(user_id=user["id"]).id == user["id"]  # fault consumed


def test_429_default_retry_after_header(fake: FakeClerkAPI) -> None:
    fake.fail_next(1, status=429)
    resp = httpx.get(fake.url + "/v1/users", headers={"Authorization": f"Bearer {fake.secret_key}"})
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "1"
    assert resp.json()["errors"][0]["code"] == "too_many_requests"


def test_backoff_retries_5xx_but_not_429(fake: FakeClerkAPI, clerk: Clerk) -> None:
    user = fake.add_user(make_clerk_user(seed="retry"))
    path = "/v1/users/" + user["id"]
    fake.fail_next(2, status=500)
    assert clerk.users.get(user_id=user["id"]).id == user["id"]
    assert fake.request_count(path) == 3
    fake.clear_requests()
    fake.fail_next(1, status=429, retry_after=0)
    with pytest.raises(models.SDKError) as info:
        clerk.users.get(user_id=user["id"])
    assert info.value.status_code == 429
    assert fake.request_count(path) == 1  # SDK only retries "5XX"


def test_backoff_gives_up_after_max_elapsed_and_surfaces_last_5xx(fake: FakeClerkAPI, clerk: Clerk) -> None:
    fake.set_down(True)
    started = time.monotonic()
    with pytest.raises(models.SDKError) as info:
        clerk.users.get(user_id="user_any")
    assert info.value.status_code == 503
    assert time.monotonic() - started < 1.5
    assert fake.request_count() > 1
    fake.set_down(False)
    with pytest.raises(models.ClerkErrors):
        clerk.users.get(user_id="user_any")


def test_wrong_bearer_gives_401(fake: FakeClerkAPI) -> None:
    user = fake.add_user(make_clerk_user(seed="auth"))
    # GetUser maps 400/401/404 JSON bodies to ClerkErrors (a ClerkBaseError), not SDKError.
    with make_sdk(fake, NO_RETRY, bearer="sk_test_wrong") as sdk, pytest.raises(models.ClerkErrors) as info:
        sdk.users.get(user_id=user["id"])
    assert info.value.status_code == 401
    assert info.value.data.errors[0].code == "authentication_invalid"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk_test_wrong"}, {"Authorization": "sk"}])
def test_missing_or_malformed_bearer_gives_401(fake: FakeClerkAPI, headers: dict[str, str]) -> None:
    resp = httpx.get(fake.url + "/v1/users/count", headers=headers)
    assert resp.status_code == 401
    body = resp.json()
    assert body["errors"][0]["code"] == "authentication_invalid"
    assert body["clerk_trace_id"]


def test_delay_makes_sdk_time_out_with_raw_httpx_error(fake: FakeClerkAPI, clerk: Clerk) -> None:
    user = fake.add_user(make_clerk_user(seed="slow"))
    fake.delay_next(1, 2.0)
    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        clerk.users.get(user_id=user["id"], timeout_ms=100)
    assert time.monotonic() - started < 1.0
    assert clerk.users.get(user_id=user["id"]).id == user["id"]


def test_fault_path_prefix_only_hits_matching_paths(fake: FakeClerkAPI, clerk_no_retry: Clerk) -> None:
    user = fake.add_user(make_clerk_user(seed="prefix"))
    fake.fail_next(1, status=502, path_prefix="/v1/jwks")
    assert clerk_no_retry.users.get(user_id=user["id"]).id == user["id"]
    with pytest.raises(models.SDKError) as info:
        clerk_no_retry.jwks.get_jwks()
    assert info.value.status_code == 502


def test_jwks_serves_proper_rsa_jwk(rsa_key: rsa.RSAPrivateKey) -> None:
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with FakeClerkAPI(jwks_public_key_pem=public_pem, jwks_kid="ins_testkid") as fake, make_sdk(fake) as sdk:
        jwks = sdk.jwks.get_jwks()
        assert jwks.keys is not None
        assert len(jwks.keys) == 1
        key = jwks.keys[0]
        assert (key.kty, key.use, key.alg, key.kid, key.e) == ("RSA", "sig", "RS256", "ins_testkid", "AQAB")
        token = jwt.encode({"sub": "user_1"}, rsa_key, algorithm="RS256", headers={"kid": "ins_testkid"})
        jwk = jwt.PyJWK(key.model_dump(exclude_none=True))
        assert jwt.decode(token, jwk.key, algorithms=["RS256"])["sub"] == "user_1"
    with FakeClerkAPI() as bare, make_sdk(bare) as sdk:
        assert sdk.jwks.get_jwks().keys == []


def test_requests_are_recorded_thread_safely(fake: FakeClerkAPI) -> None:
    headers = {"Authorization": f"Bearer {fake.secret_key}"}

    def worker() -> None:
        with httpx.Client(base_url=fake.url, headers=headers) as client:
            for _ in range(25):
                assert client.get("/v1/users/count", params={"x": "1"}).status_code == 200

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake.requests) == 200
    method, path, query, hdrs, _ = fake.requests[0]
    assert (method, path, query) == ("GET", "/v1/users/count", {"x": "1"})
    assert hdrs["authorization"] == f"Bearer {fake.secret_key}"


def test_store_changes_invalidate_sorted_cache(fake: FakeClerkAPI, clerk: Clerk) -> None:
    fake.add_users(make_users(5, seed="cache", start_ms=1_000_000))
    first = clerk.users.list(request={"limit": 1})[0]
    newest = fake.add_user(make_clerk_user(seed="newest", created_at=9_000_000))
    assert clerk.users.list(request={"limit": 1})[0].id == newest["id"]
    fake.remove_user(newest["id"])
    assert clerk.users.list(request={"limit": 1})[0].id == first.id
    fake.users[first.id]["created_at"] = 1  # in-place edit needs invalidate()
    fake.invalidate()
    assert clerk.users.list(request={"limit": 1, "order_by": "created_at"})[0].id == first.id
    fake.users = [newest]
    assert [u.id for u in clerk.users.list(request={"limit": 10})] == [newest["id"]]
    assert clerk.users.count().total_count == 1


def test_paging_100k_users_is_fast(fake: FakeClerkAPI) -> None:
    # Minimal dicts keep setup cheap; the server serves whatever is stored.
    fake.users = {f"user_{i:027d}": {"id": f"user_{i:027d}", "created_at": i} for i in range(100_000)}
    headers = {"Authorization": f"Bearer {fake.secret_key}"}
    started = time.monotonic()
    with httpx.Client(base_url=fake.url, headers=headers) as client:
        for offset in (0, 50_000, 99_500, 99_999, 100_000):
            page = client.get("/v1/users", params={"limit": 500, "offset": offset}).json()
            expected = list(range(99_999 - offset, max(99_999 - offset - 500, -1), -1))
            assert [u["created_at"] for u in page] == expected
        asc = client.get("/v1/users", params={"limit": 3, "offset": 10, "order_by": "+created_at"}).json()
        assert [u["created_at"] for u in asc] == [10, 11, 12]
        assert client.get("/v1/users/count").json() == {"object": "total_count", "total_count": 100_000}
    assert time.monotonic() - started < 2.0


def test_list_filters_and_validation(fake: FakeClerkAPI) -> None:
    users = make_users(3, seed="filters")
    fake.users = users
    headers = {"Authorization": f"Bearer {fake.secret_key}"}
    with httpx.Client(base_url=fake.url, headers=headers) as client:
        got = client.get("/v1/users", params={"user_id": [users[0]["id"], users[2]["id"]]}).json()
        assert [u["id"] for u in got] == [users[2]["id"], users[0]["id"]]
        email = users[1]["email_addresses"][0]["email_address"].upper()
        assert [u["id"] for u in client.get("/v1/users", params={"email_address": email}).json()] == [
            users[1]["id"]
        ]
        for bad in ({"limit": 0}, {"limit": "x"}, {"offset": -1}, {"order_by": "-shoe_size"}):
            resp = client.get("/v1/users", params=bad)
            assert resp.status_code == 422
            assert resp.json()["errors"][0]["code"] == "form_param_value_invalid"
        assert client.post("/v1/users").status_code == 405
        assert client.get("/v2/nothing").json()["errors"][0]["code"] == "resource_not_found"


def test_stop_drops_keepalive_connections_and_restart() -> None:
    fake = FakeClerkAPI().start()
    with httpx.Client(base_url=fake.url, headers={"Authorization": f"Bearer {fake.secret_key}"}) as client:
        assert client.get("/v1/users/count").status_code == 200
        fake.stop()
        with pytest.raises(httpx.TransportError):
            client.get("/v1/users/count")
    fake.stop()  # idempotent
    with fake:
        assert httpx.get(fake.url + "/v1/users/count").status_code == 401
