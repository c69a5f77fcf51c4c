"""SessionTokenVerifier: which Clerk session tokens the sync route accepts.

Unit tests with no network, except the JWKS tests, which talk to FakeClerkAPI over
real HTTP on 127.0.0.1. Tokens are minted here (tests/support/tokens_util.py) with a fresh
RSA key pair standing in for the Clerk instance's key.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.support.fake_clerk import FakeClerkAPI
from tests.support.mongo_server import free_port
from tests.support.tokens_util import (
    DEFAULT_AZP,
    DEFAULT_SUB,
    bearer,
    hmac_token,
    instance_keys,
    mint_token,
    other_keys,
    session_claims,
    unsigned_token,
)
from webhook_service.tokens import (
    MAX_TOKEN_BYTES,
    JwksCache,
    SessionTokenVerifier,
    TokenError,
    VerifierUnavailable,
)

# -- a guard that sees any network attempt made by the current thread -------------

_NETWORK_EVENTS = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyname_ex")
_watched: dict[int, list[tuple[str, tuple]]] = {}


def _audit(event: str, args: tuple) -> None:
    if event in _NETWORK_EVENTS:
        attempts = _watched.get(threading.get_ident())
        if attempts is not None:
            attempts.append((event, args[1:] if event == "socket.connect" else args))


sys.addaudithook(_audit)  # audit hooks cannot be removed; this one only records while watched


@contextmanager
def network_attempts() -> Iterator[list[tuple[str, tuple]]]:
    attempts: list[tuple[str, tuple]] = []
    _watched[threading.get_ident()] = attempts
    try:
        yield attempts
    finally:
        del _watched[threading.get_ident()]


def test_network_guard_sees_an_attempt():
    """The guard used below is not vacuous: a connection attempt is recorded."""
    with network_attempts() as attempts, pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{free_port()}/", timeout=1)
    assert attempts


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture
def verifier() -> SessionTokenVerifier:
    return SessionTokenVerifier(jwt_key=instance_keys().public_pem, authorized_parties=(DEFAULT_AZP,))


def rejected(verifier: SessionTokenVerifier, header: str | None) -> TokenError:
    with pytest.raises(TokenError) as caught:
        verifier.verify(header)
    return caught.value


# -- the happy path -----------------------------------------------------------------


def test_valid_token_returns_the_clerk_user_id(verifier):
    assert verifier.verify(bearer(mint_token(sub="user_valid123"))) == "user_valid123"


def test_valid_token_with_a_kid_header_verifies_against_the_pem(verifier):
    assert verifier.verify(bearer(mint_token(kid="ins_anything"))) == DEFAULT_SUB


def test_any_azp_is_accepted_when_no_parties_are_configured():
    open_verifier = SessionTokenVerifier(jwt_key=instance_keys().public_pem)
    token = mint_token(azp="https://anywhere.example")
    assert open_verifier.verify(bearer(token)) == DEFAULT_SUB


def test_pem_with_escaped_newlines_flattened_still_verifies():
    """CLERK_JWT_KEY often arrives on one line; the SDK strips newlines before use."""
    one_line = instance_keys().public_pem.replace("\n", "")
    flat = SessionTokenVerifier(jwt_key=one_line, authorized_parties=(DEFAULT_AZP,))
    assert flat.verify(bearer(mint_token())) == DEFAULT_SUB


# -- the Authorization header ---------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [None, "", "   ", "Basic xyz", "Basic dXNlcjpwYXNz", "Bearer ", "Bearer", "Bearer    ", "Token abc"],
    ids=[
        "none",
        "empty",
        "blank",
        "basic",
        "basic-b64",
        "bearer-empty",
        "bearer-bare",
        "bearer-blank",
        "token",
    ],
)
def test_missing_or_non_bearer_header_is_rejected(verifier, header):
    rejected(verifier, header)


def test_non_bearer_scheme_is_rejected_even_with_a_valid_token(verifier):
    rejected(verifier, f"Basic {mint_token()}")


@pytest.mark.parametrize("garbage", ["not-a-jwt", "a.b.c", "eyJhbGciOiJSUzI1NiJ9..", "....", "Bearer x"])
def test_garbage_is_rejected(verifier, garbage):
    rejected(verifier, bearer(garbage))


# -- claims -------------------------------------------------------------------------


def test_expired_token_is_rejected(verifier):
    claims = session_claims()
    claims.update(iat=claims["iat"] - 600, nbf=claims["nbf"] - 600, exp=claims["iat"] - 60)
    rejected(verifier, bearer(mint_token(claims=claims)))


def test_token_without_exp_is_rejected(verifier):
    """The SDK accepts a token with no exp; a never-expiring token must not pass here."""
    error = rejected(verifier, bearer(mint_token(omit=["exp"])))
    assert "exp" in str(error)


@pytest.mark.parametrize("sub", [None, "", 12345], ids=["absent", "empty", "number"])
def test_token_without_a_usable_sub_is_rejected(verifier, sub):
    token = mint_token(omit=["sub"]) if sub is None else mint_token(sub=sub)
    rejected(verifier, bearer(token))


def test_token_not_yet_valid_is_rejected(verifier):
    claims = session_claims()
    claims["nbf"] = claims["iat"] + 120  # well past the SDK's 5 s clock skew
    rejected(verifier, bearer(mint_token(claims=claims)))


def test_token_issued_in_the_future_is_rejected(verifier):
    future = session_claims()["iat"] + 600
    rejected(verifier, bearer(mint_token(now=future)))


def test_azp_not_among_authorized_parties_is_rejected(verifier):
    rejected(verifier, bearer(mint_token(azp="https://evil.example")))


def test_a_native_app_token_without_azp_is_accepted_when_parties_are_configured(verifier):
    """Expo/React Native sends no Origin, so Clerk mints its tokens without ``azp``."""
    assert verifier.verify(bearer(mint_token(sub="user_native", omit=["azp"]))) == "user_native"


def test_missing_azp_is_rejected_when_azp_is_required():
    web_only = SessionTokenVerifier(
        jwt_key=instance_keys().public_pem, authorized_parties=(DEFAULT_AZP,), require_azp=True
    )
    with pytest.raises(TokenError, match="no azp claim"):
        web_only.verify(bearer(mint_token(omit=["azp"])))
    assert web_only.verify(bearer(mint_token(sub="user_web"))) == "user_web"


@pytest.mark.parametrize("azp", ["", None, [DEFAULT_AZP], DEFAULT_AZP + "/"])
def test_an_azp_that_is_present_must_be_on_the_list(verifier, azp):
    rejected(verifier, bearer(mint_token(azp=azp)))


# -- keys and algorithms ----------------------------------------------------------


def test_token_signed_with_another_key_is_rejected(verifier):
    rejected(verifier, bearer(mint_token(other_keys())))


def test_unsigned_none_algorithm_token_is_rejected(verifier):
    rejected(verifier, bearer(unsigned_token(session_claims())))


@pytest.mark.parametrize("flatten", [False, True], ids=["pem", "pem-without-newlines"])
def test_hs256_signed_with_the_public_pem_is_rejected(verifier, flatten):
    """Algorithm confusion: the public key used as an HMAC secret must not verify.

    Both the PEM as configured and the newline-stripped form the SDK actually
    hands to PyJWT are tried as the secret.
    """
    secret = instance_keys().public_pem
    if flatten:
        secret = secret.replace("\n", "")
    rejected(verifier, bearer(hmac_token(session_claims(), secret)))


@pytest.mark.parametrize("algorithm", ["RS512", "PS256"])
def test_other_rsa_algorithms_with_the_right_key_are_rejected(verifier, algorithm):
    """Clerk signs with RS256 only; the verifier pins it."""
    rejected(verifier, bearer(mint_token(algorithm=algorithm)))


# -- size ---------------------------------------------------------------------------


def _padded_token(total_length: int) -> str:
    base = mint_token(pad="")
    # Each padding character adds 4/3 of a base64 character to the token.
    pad = "x" * int((total_length - len(base)) * 3 / 4)
    token = mint_token(pad=pad)
    assert abs(len(token) - total_length) < 8
    return token


def test_large_but_valid_token_under_the_limit_is_accepted(verifier):
    token = _padded_token(MAX_TOKEN_BYTES - 100)
    assert verifier.verify(bearer(token)) == DEFAULT_SUB


def test_token_over_8_kib_is_rejected_even_if_validly_signed(verifier):
    token = _padded_token(MAX_TOKEN_BYTES + 100)
    assert len(token) > 8 * 1024
    error = rejected(verifier, bearer(token))
    assert "large" in str(error)


# -- token shapes that would make the SDK call Clerk ----------------------------

MACHINE_SHAPED = ["ak_2pWx4Yqk7TzL0mN3bV8cR1sD5fG", "m2m_xxx", "oat_xxx", "mt_xxx"]


@pytest.mark.timeout(10)
@pytest.mark.parametrize("token", MACHINE_SHAPED)
def test_api_key_shaped_token_is_rejected_without_any_network_call(verifier, token):
    with network_attempts() as attempts:
        rejected(verifier, bearer(token))
    assert attempts == []


@pytest.mark.timeout(10)
@pytest.mark.parametrize("token", MACHINE_SHAPED)
def test_api_key_shaped_token_is_rejected_in_jwks_mode_without_asking_clerk(fake_clerk, token):
    remote = jwks_verifier(fake_clerk)
    with network_attempts() as attempts:
        rejected(remote, bearer(token))
    assert attempts == []
    assert fake_clerk.requests == []


# -- JWKS (no CLERK_JWT_KEY) ------------------------------------------------------


def jwks_verifier(
    fake_clerk: FakeClerkAPI, timeout_s: float = 1.0, *, secret_key: str | None = None
) -> SessionTokenVerifier:
    """A verifier with no PEM, fetching keys from the fake's JWKS (with the fake's secret key
    unless ``secret_key`` is given)."""
    jwks = JwksCache(fake_clerk.url, secret_key or fake_clerk.secret_key, timeout_s=timeout_s)
    return SessionTokenVerifier(jwt_key=None, authorized_parties=(DEFAULT_AZP,), jwks=jwks)


def test_jwks_valid_token_verifies_and_the_keys_are_cached(fake_clerk):
    remote = jwks_verifier(fake_clerk)
    token = mint_token(kid=fake_clerk.jwks_kid, sub="user_jwks1")
    assert remote.verify(bearer(token)) == "user_jwks1"
    assert remote.verify(bearer(mint_token(kid=fake_clerk.jwks_kid, sub="user_jwks2"))) == "user_jwks2"
    jwks_requests = [r for r in fake_clerk.requests if r.path == "/v1/jwks"]
    assert len(jwks_requests) == 1
    assert jwks_requests[0].headers["authorization"] == f"Bearer {fake_clerk.secret_key}"


def test_jwks_unknown_kid_is_a_token_error(fake_clerk):
    remote = jwks_verifier(fake_clerk)
    rejected(remote, bearer(mint_token(kid="ins_somebodyelse")))


def test_jwks_token_without_kid_is_a_token_error(fake_clerk):
    rejected(jwks_verifier(fake_clerk), bearer(mint_token()))


def test_jwks_token_signed_by_another_key_under_the_right_kid_is_rejected(fake_clerk):
    rejected(jwks_verifier(fake_clerk), bearer(mint_token(other_keys(), kid=fake_clerk.jwks_kid)))


@pytest.mark.parametrize(
    "options",
    [{"omit": ["exp"]}, {"azp": "https://evil.example"}, {"now": 1_600_000_000}],
    ids=["no-exp", "wrong-azp", "expired"],
)
def test_jwks_mode_applies_the_same_claim_checks(fake_clerk, options):
    rejected(jwks_verifier(fake_clerk), bearer(mint_token(kid=fake_clerk.jwks_kid, **options)))


def test_jwks_mode_rejects_hs256_signed_with_the_served_key(fake_clerk):
    """The PEM the cache derives from the JWKS must not work as an HMAC secret either."""
    remote = jwks_verifier(fake_clerk)
    assert remote.verify(bearer(mint_token(kid=fake_clerk.jwks_kid))) == DEFAULT_SUB  # cache the PEM
    for secret in (instance_keys().public_pem, instance_keys().public_pem.replace("\n", "")):
        rejected(remote, bearer(hmac_token(session_claims(), secret, header={"kid": fake_clerk.jwks_kid})))


@pytest.mark.timeout(10)
def test_jwks_fetch_that_hangs_is_verifier_unavailable_not_a_hang(fake_clerk):
    fake_clerk.delay_next(5, 30.0, path_prefix="/v1/jwks")
    with pytest.raises(VerifierUnavailable):
        jwks_verifier(fake_clerk, timeout_s=1.0).verify(bearer(mint_token(kid=fake_clerk.jwks_kid)))


@pytest.mark.timeout(10)
def test_jwks_fetch_while_clerk_is_down_is_verifier_unavailable(fake_clerk):
    fake_clerk.set_down(True)
    with pytest.raises(VerifierUnavailable):
        jwks_verifier(fake_clerk).verify(bearer(mint_token(kid=fake_clerk.jwks_kid)))


@pytest.mark.timeout(10)
def test_jwks_fetch_when_clerk_is_unreachable_is_verifier_unavailable(fake_clerk):
    remote = jwks_verifier(fake_clerk)
    fake_clerk.stop()
    with pytest.raises(VerifierUnavailable):
        remote.verify(bearer(mint_token(kid=fake_clerk.jwks_kid)))


@pytest.mark.timeout(10)
def test_jwks_outage_is_not_remembered(fake_clerk):
    remote = jwks_verifier(fake_clerk)
    token = bearer(mint_token(kid=fake_clerk.jwks_kid))
    fake_clerk.fail_next(1, 500, path_prefix="/v1/jwks")
    with pytest.raises(VerifierUnavailable):
        remote.verify(token)
    assert remote.verify(token) == DEFAULT_SUB


def test_jwks_fetch_with_a_rejected_secret_key_is_verifier_unavailable(fake_clerk):
    remote = jwks_verifier(fake_clerk, secret_key="sk_test_wrong")
    with pytest.raises(VerifierUnavailable):
        remote.verify(bearer(mint_token(kid=fake_clerk.jwks_kid)))


def test_without_jwt_key_or_jwks_verification_is_unavailable():
    unconfigured = SessionTokenVerifier(jwt_key=None, authorized_parties=(DEFAULT_AZP,))
    with pytest.raises(VerifierUnavailable):
        unconfigured.verify(bearer(mint_token()))
