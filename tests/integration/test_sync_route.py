"""POST /api/users/sync end to end: Flask test client, real database, FakeClerkAPI over HTTP.

The app is built exactly as in production (create_app with a Config); the only
difference is that CLERK_API_URL points at a local FakeClerkAPI and CLERK_JWT_KEY
is the public half of a key pair the tests sign session tokens with.
"""

from __future__ import annotations

from typing import Any

import pytest
from bson import ObjectId

from tests.support.fake_clerk import make_clerk_user
from tests.support.helpers import deliver, newer, post_sync, user_requests
from tests.support.tokens_util import DEFAULT_AZP, REJECTED_AUTHORIZATIONS, bearer, mint_token

SYNC = "/api/users/sync"
PARTIES = (DEFAULT_AZP,)
APP_OWNED_DEFAULTS = {"bannerImage": "", "bio": "", "location": "", "followers": [], "following": []}
BOOKKEEPING = ("clerkUpdatedAt", "lastDeliveryId", "usernameLower", "usernameSource")


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture
def app(build_app):
    return build_app()


@pytest.fixture
def clerk_user(fake_clerk) -> dict[str, Any]:
    """A user Clerk knows, whose primary address is not the first in the list."""
    user = make_clerk_user(
        seed="sync-route",
        email="ada.primary@example.com",
        extra_emails=("old.address@example.com", "work@example.com"),
        primary_first=False,
        first_name="Ada",
        last_name="Lovelace",
        image_url="https://img.clerk.com/ada.png",
    )
    return fake_clerk.add_user(user)


# -- helpers ------------------------------------------------------------------------


# -- success ------------------------------------------------------------------------


def test_first_sync_creates_the_user_from_clerk(client, db, fake_clerk, clerk_user):
    response = post_sync(client, clerk_user["id"])

    assert response.status_code == 201
    body = response.get_json()
    doc = db.users.find_one({"clerkId": clerk_user["id"]})
    assert doc is not None
    assert body["_id"] == str(doc["_id"])
    assert ObjectId.is_valid(body["_id"])
    assert body["clerkId"] == doc["clerkId"] == clerk_user["id"]
    assert body["email"] == doc["email"] == "ada.primary@example.com"
    assert body["username"] == doc["username"] == "ada_primary"
    assert body["firstName"] == doc["firstName"] == "Ada"
    assert body["lastName"] == doc["lastName"] == "Lovelace"
    assert body["profilePicture"] == doc["profilePicture"] == "https://img.clerk.com/ada.png"
    for name, default in APP_OWNED_DEFAULTS.items():
        assert body[name] == default
        assert doc[name] == default
    assert body["createdAt"] and body["updatedAt"]
    assert doc["clerkUpdatedAt"] == clerk_user["updated_at"]
    assert not set(BOOKKEEPING) & set(body), "bookkeeping fields leak into the response"
    assert db.users.count_documents({}) == 1
    calls = user_requests(fake_clerk, clerk_user["id"])
    assert len(calls) == 1
    assert calls[0].headers["authorization"] == f"Bearer {fake_clerk.secret_key}"


def test_second_sync_answers_200_with_the_same_document(client, db, clerk_user):
    first = post_sync(client, clerk_user["id"])
    second = post_sync(client, clerk_user["id"])

    assert (first.status_code, second.status_code) == (201, 200)
    assert second.get_json()["_id"] == first.get_json()["_id"]
    assert second.get_json()["email"] == "ada.primary@example.com"
    assert db.users.count_documents({"clerkId": clerk_user["id"]}) == 1


def test_sync_refreshes_from_newer_clerk_data_and_keeps_app_owned_fields(client, db, fake_clerk, clerk_user):
    created = post_sync(client, clerk_user["id"]).get_json()
    friend = ObjectId()
    db.users.update_one(
        {"clerkId": clerk_user["id"]}, {"$set": {"bio": "hello", "location": "London", "followers": [friend]}}
    )
    fake_clerk.add_user(newer(clerk_user, 5000, first_name="Augusta", username="countess"))

    response = post_sync(client, clerk_user["id"])

    assert response.status_code == 200
    body = response.get_json()
    assert body["_id"] == created["_id"]
    assert body["firstName"] == "Augusta"
    assert body["username"] == "countess"
    assert body["bio"] == "hello"
    assert body["followers"] == [str(friend)]
    doc = db.users.find_one({"clerkId": clerk_user["id"]})
    assert doc["firstName"] == "Augusta"
    assert doc["username"] == "countess"
    assert doc["clerkUpdatedAt"] == clerk_user["updated_at"] + 5000
    assert doc["bio"] == "hello"
    assert doc["location"] == "London"
    assert doc["followers"] == [friend]
    assert body["createdAt"] == created["createdAt"]


def test_sync_over_an_older_webhook_copy_answers_200_with_clerks_data(client, db, fake_clerk, clerk_user):
    old = newer(clerk_user, -5000, first_name="Stale", username="stale_name")
    assert deliver(client, "user.created", old) == "applied"
    webhook_doc = db.users.find_one({"clerkId": clerk_user["id"]})

    response = post_sync(client, clerk_user["id"])

    assert response.status_code == 200
    assert response.get_json()["_id"] == str(webhook_doc["_id"])
    assert response.get_json()["firstName"] == "Ada"
    doc = db.users.find_one({"clerkId": clerk_user["id"]})
    assert doc["firstName"] == "Ada"
    assert doc["username"] == "ada_primary"
    assert doc["clerkUpdatedAt"] == clerk_user["updated_at"]


def test_newer_webhook_already_applied_is_kept_when_clerk_answers_older(client, db, fake_clerk, clerk_user):
    fresher = newer(clerk_user, 5000, first_name="Fresher", username="fresher")
    assert deliver(client, "user.updated", fresher) == "applied"

    response = post_sync(client, clerk_user["id"])

    assert response.status_code == 200
    assert response.get_json()["firstName"] == "Fresher"
    assert response.get_json()["username"] == "fresher"
    doc = db.users.find_one({"clerkId": clerk_user["id"]})
    assert doc["firstName"] == "Fresher"
    assert doc["clerkUpdatedAt"] == fresher["updated_at"]
    assert len(user_requests(fake_clerk, clerk_user["id"])) == 1  # Clerk was asked; its older answer lost


def test_stale_webhook_after_sync_does_not_overwrite_synced_data(client, db, clerk_user):
    assert post_sync(client, clerk_user["id"]).status_code == 201
    stale = newer(clerk_user, -1000, first_name="Old", username="old_name")

    assert deliver(client, "user.updated", stale) == "stale"

    doc = db.users.find_one({"clerkId": clerk_user["id"]})
    assert doc["firstName"] == "Ada"
    assert doc["username"] == "ada_primary"
    assert doc["clerkUpdatedAt"] == clerk_user["updated_at"]


def test_transient_clerk_error_is_retried_within_the_budget(build_app, fake_clerk, clerk_user):
    client = build_app(clerk_retry_budget_ms=3000).test_client()
    fake_clerk.fail_next(1, 500, path_prefix="/v1/users")

    response = post_sync(client, clerk_user["id"])

    assert response.status_code == 201
    assert len(user_requests(fake_clerk, clerk_user["id"])) == 2


def test_sync_with_jwks_instead_of_a_configured_pem(build_app, fake_clerk, clerk_user):
    app = build_app(clerk_jwt_key=None)
    token = mint_token(sub=clerk_user["id"], kid=fake_clerk.jwks_kid)

    response = post_sync(app.test_client(), token=token)

    assert response.status_code == 201
    assert app.extensions["webhook_service"].db.users.count_documents({"clerkId": clerk_user["id"]}) == 1
    assert fake_clerk.request_count("/v1/jwks") == 1


def test_sync_with_jwks_unavailable_is_503_and_writes_nothing(build_app, fake_clerk, clerk_user):
    app = build_app(clerk_jwt_key=None)
    fake_clerk.fail_next(5, 503, path_prefix="/v1/jwks")

    response = post_sync(app.test_client(), token=mint_token(sub=clerk_user["id"], kid=fake_clerk.jwks_kid))

    assert response.status_code == 503
    assert response.get_json()["error"] == "token verification unavailable"
    assert app.extensions["webhook_service"].db.users.count_documents({}) == 0
    assert user_requests(fake_clerk, clerk_user["id"]) == []


# -- Clerk says the user does not exist -------------------------------------------


def test_user_unknown_to_clerk_is_404_removed_and_tombstoned(client, db, fake_clerk, clerk_user):
    user_id = clerk_user["id"]
    assert deliver(client, "user.created", clerk_user) == "applied"
    fake_clerk.remove_user(user_id)

    response = post_sync(client, user_id)

    assert response.status_code == 404
    assert response.get_json()["error"] == "user not found"
    assert db.users.count_documents({"clerkId": user_id}) == 0
    assert db.deleted_users.find_one({"_id": user_id}) is not None
    # A later (even newer) update for the id must not bring it back...
    deliver(client, "user.updated", newer(clerk_user, 60_000, first_name="Zombie"))
    assert db.users.count_documents({"clerkId": user_id}) == 0
    # ...nor a later sync if Clerk were to answer for the id again.
    fake_clerk.add_user(newer(clerk_user, 120_000))
    assert post_sync(client, user_id).status_code == 404
    assert db.users.count_documents({"clerkId": user_id}) == 0


def test_user_unknown_to_clerk_and_never_seen_is_404_with_no_document(client, db, fake_clerk):
    response = post_sync(client, "user_2neverexisted0000000000000")

    assert response.status_code == 404
    assert db.users.count_documents({}) == 0


# -- Clerk failing ------------------------------------------------------------------


def _fail_500s(fake_clerk):
    fake_clerk.fail_next(100, 500, path_prefix="/v1/users")


def _rate_limited(fake_clerk):
    fake_clerk.fail_next(100, 429, retry_after=1, path_prefix="/v1/users")


def _slow(fake_clerk):
    fake_clerk.delay_next(100, 5.0, path_prefix="/v1/users")  # the app's timeout is 500 ms


def _down(fake_clerk):
    fake_clerk.set_down(True)


def _unreachable(fake_clerk):
    fake_clerk.stop()


CLERK_FAILURES = {
    "500-beyond-retry-budget": _fail_500s,
    "429-retry-after": _rate_limited,
    "timeout": _slow,
    "down": _down,
    "unreachable": _unreachable,
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("failure", list(CLERK_FAILURES), ids=list(CLERK_FAILURES))
def test_clerk_failure_is_5xx_and_writes_nothing(client, db, fake_clerk, clerk_user, failure):
    CLERK_FAILURES[failure](fake_clerk)

    response = post_sync(client, clerk_user["id"])

    assert response.status_code in (502, 503)
    assert response.get_json()["error"] == "Clerk API unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    assert db.users.count_documents({}) == 0
    assert db.deleted_users.count_documents({}) == 0


@pytest.mark.parametrize(("clerk_says", "we_say"), [("30", "30"), ("3600", "60"), ("0.2", "1")])
def test_a_rate_limited_sync_answers_503_with_clerks_retry_after_capped(
    client, fake_clerk, clerk_user, clerk_says, we_say
):
    fake_clerk.fail_next(1, 429, headers={"Retry-After": clerk_says}, path_prefix="/v1/users")

    response = post_sync(client, clerk_user["id"])

    assert response.status_code == 503
    assert response.headers["Retry-After"] == we_say


def test_every_503_carries_retry_after(build_app, clerk_user):
    unconfigured = build_app(clerk_secret_key=None)

    response = post_sync(unconfigured.test_client(), clerk_user["id"])

    assert response.status_code == 503 and response.headers["Retry-After"] == "300"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("failure", list(CLERK_FAILURES), ids=list(CLERK_FAILURES))
def test_clerk_failure_leaves_an_existing_user_untouched(client, db, fake_clerk, clerk_user, failure):
    """A failing Clerk must never read as "user gone": the local copy stays as it was."""
    assert deliver(client, "user.created", clerk_user) == "applied"
    before = db.users.find_one({"clerkId": clerk_user["id"]})
    CLERK_FAILURES[failure](fake_clerk)

    response = post_sync(client, clerk_user["id"])

    assert response.status_code in (502, 503)
    assert db.users.find_one({"clerkId": clerk_user["id"]}) == before
    assert db.deleted_users.count_documents({}) == 0


def test_rate_limit_answers_503(client, fake_clerk, clerk_user):
    _rate_limited(fake_clerk)
    assert post_sync(client, clerk_user["id"]).status_code == 503


# -- authentication -------------------------------------------------------------


@pytest.mark.parametrize("case", list(REJECTED_AUTHORIZATIONS), ids=list(REJECTED_AUTHORIZATIONS))
def test_bad_session_token_is_401_writes_nothing_and_never_calls_clerk(
    client, db, fake_clerk, clerk_user, case
):
    authorization = REJECTED_AUTHORIZATIONS[case](clerk_user["id"])
    headers = {} if authorization is None else {"Authorization": authorization}

    response = post_sync(client, headers=headers)

    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert db.users.count_documents({}) == 0
    assert db.deleted_users.count_documents({}) == 0
    assert fake_clerk.requests == []


def test_session_cookie_without_authorization_header_is_401(client, db, fake_clerk, clerk_user):
    """Header-only: a browser's __session cookie must not authenticate a cross-site POST.

    (Werkzeug's test client drops a literal Cookie header, so the cookie goes in its jar.)
    """
    client.set_cookie("__session", mint_token(sub=clerk_user["id"]))
    assert client.get_cookie("__session") is not None

    response = post_sync(client, headers={})

    assert response.status_code == 401
    assert db.users.count_documents({}) == 0
    assert fake_clerk.requests == []


def test_the_same_user_with_a_valid_token_is_synced(client, fake_clerk, clerk_user):
    """Control for the 401 cases above: only the token differed."""
    assert (
        post_sync(client, headers={"Authorization": bearer(mint_token(sub=clerk_user["id"]))}).status_code
        == 201
    )


# -- not configured ---------------------------------------------------------------


def test_without_clerk_secret_key_sync_is_503_and_webhooks_still_work(build_app, fake_clerk, clerk_user):
    app = build_app(clerk_secret_key=None)
    client = app.test_client()
    db = app.extensions["webhook_service"].db

    response = post_sync(client, clerk_user["id"])

    assert response.status_code == 503
    assert response.get_json()["error"] == "sync not configured"
    assert db.users.count_documents({}) == 0
    assert fake_clerk.requests == []
    assert deliver(client, "user.created", clerk_user) == "applied"
    assert db.users.find_one({"clerkId": clerk_user["id"]})["email"] == "ada.primary@example.com"


# -- azp and native apps ---------------------------------------------------------------


def test_a_native_app_token_without_azp_syncs_while_parties_are_configured(client, clerk_user, db):
    """The Expo app's token has no ``azp`` (no Origin header); the web app's list must not lock it out."""
    response = post_sync(client, token=mint_token(sub=clerk_user["id"], omit=["azp"]))

    assert response.status_code == 201, response.get_data(as_text=True)
    assert db.users.find_one({"clerkId": clerk_user["id"]})["email"] == "ada.primary@example.com"


def test_with_azp_required_a_token_without_it_is_401_and_writes_nothing(build_app, clerk_user, fake_clerk):
    app = build_app(require_azp=True)
    fake_clerk.clear_requests()

    response = post_sync(app.test_client(), token=mint_token(sub=clerk_user["id"], omit=["azp"]))

    assert response.status_code == 401
    assert "no azp claim" in response.get_json()["detail"]
    assert fake_clerk.request_count("/v1/users") == 0
    assert app.extensions["webhook_service"].db.users.count_documents({}) == 0


def test_a_user_with_values_the_sdk_does_not_know_syncs_with_the_right_email(client, fake_clerk, db):
    user = make_clerk_user(seed="sync-odd", email="odd.sync@example.com")
    user["email_addresses"] = [
        dict(e, verification={"object": "verification_passkey_v2", "status": "pending_review"})
        for e in user["email_addresses"]
    ]
    fake_clerk.add_user(dict(user, a_field_clerk_added_later=[1, 2]))

    response = post_sync(client, user["id"])

    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["email"] == "odd.sync@example.com"


def test_a_user_clerk_sends_without_a_version_is_502_naming_it_not_a_500(client, fake_clerk, db):
    user = fake_clerk.add_user(dict(make_clerk_user(seed="sync-noversion"), updated_at=None))

    response = post_sync(client, user["id"])

    assert response.status_code == 502
    detail = response.get_json()["detail"]
    assert detail == "Clerk API sent a user that cannot be stored: no integer updated_at"
    assert db.users.count_documents({}) == 0
