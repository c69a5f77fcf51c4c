"""Token fuzzing for POST /api/users/sync: every forged, malformed or misplaced session token
gets a 401, nothing is written, and Clerk is never asked.

The app is production-shaped: FakeClerkAPI (a real local HTTP server) stands in for
Clerk's Backend API, CLERK_JWT_KEY is the public half of a key pair minted in the tests
(tests/support/tokens_util.py), and the authorized party is configured. The fake knows the user,
so any token that got through would reach it and create a document; the suite asserts
the fake saw zero requests, the users collection stayed empty and no network connection
was even attempted, then a genuine token gets its 201 once.

Covered: ``alg: none`` (in several spellings, with and without a signature);
HS256/384/512 keyed with the public PEM (algorithm confusion); RS256/PS256/RS512/ES256
with other keys; forged ``kid``/``jku``/``x5u``/``jwk`` headers; missing or invalid
``exp`` (string, negative, far past, NaN, infinities, bool, null); ``nbf``/``iat`` in the
future; missing, empty and non-string ``sub``; missing, empty and foreign ``azp``; tokens
over 8 KiB and a 100 KiB header; truncated and garbage tokens; a genuine token wrapped in
junk ("Bearer Bearer <token>", "<token> =="); API-key-shaped tokens (``ak_``, ``m2m_``,
``oat_``, ``mt_``); the token in a ``__session`` cookie, a query string, a form field or
another header instead of Authorization; other schemes, lowercase ``bearer`` and extra
spaces around forged tokens. Then hypothesis edits a valid token's characters
(TOKEN_FUZZ_EXAMPLES, default 300); edits that leave the same token in another spelling
are skipped by an explicit oracle, everything else must be refused.

Not asserted, on purpose: with CLERK_JWT_KEY pinned, a token correctly signed by the
instance key is valid whatever ``kid`` it names (the key is not looked up by kid), and
RFC 7235/6750 make the scheme case-insensitive and allow several spaces, so
"bearer <valid token>" is accepted. Those forms are checked with forged tokens only.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.support.fake_clerk import FakeClerkAPI, make_clerk_user, rsa_jwk
from tests.support.hygiene import signing_secret_forms, summary_line, watch
from tests.support.signing import TEST_SECRET
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
from webhook_service.tokens import MAX_TOKEN_BYTES

SYNC = "/api/users/sync"
EXAMPLES = int(os.environ.get("TOKEN_FUZZ_EXAMPLES", "300"))
MACHINE_SHAPED = (
    "ak_2pWx4Yqk7TzL0mN3bV8cR1sD5fGhJ",
    "m2m_2pWx4Yqk7TzL0mN3bV8cR1sD5fGhJ",
    "oat_2pWx4Yqk7TzL0mN3bV8cR1sD5fGhJ",
    "mt_2pWx4Yqk7TzL0mN3bV8cR1sD5fGhJ",
)


# -- a guard that records any network attempt made from this thread -----------------------
# (the Flask test client runs the app in the calling thread)

_NETWORK_EVENTS = frozenset({"socket.connect", "socket.getaddrinfo", "socket.gethostbyname"})
_watched: dict[int, list[tuple[str, tuple]]] = {}


def _audit(event: str, args: tuple) -> None:
    if event in _NETWORK_EVENTS:
        attempts = _watched.get(threading.get_ident())
        if attempts is not None:
            attempts.append((event, args))


sys.addaudithook(_audit)  # permanent, but records nothing unless a test is watching


@contextmanager
def network_attempts() -> Iterator[list[tuple[str, tuple]]]:
    attempts: list[tuple[str, tuple]] = []
    _watched[threading.get_ident()] = attempts
    try:
        yield attempts
    finally:
        del _watched[threading.get_ident()]


# -- the token zoo ------------------------------------------------------------------------


def _segment(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def _ec_token(claims: dict[str, Any]) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return jwt.encode(claims, key, algorithm="ES256")


def forged_tokens() -> dict[str, str]:
    """name -> token; none of them may authenticate."""
    now = time.time()
    claims = session_claims()
    valid = mint_token()
    head, payload, signature = valid.split(".")
    pem = instance_keys().public_pem
    other = other_keys()
    jwk = rsa_jwk(other.public_pem, "ins_attacker")
    victim = _segment({**claims, "sub": "user_victim"})
    tokens: dict[str, str] = {
        # alg none
        "none": mint_token(algorithm="none"),
        "none-None": unsigned_token(claims, {"alg": "None"}),
        "none-NONE": unsigned_token(claims, {"alg": "NONE"}),
        "none-nOnE": unsigned_token(claims, {"alg": "nOnE"}),
        "none-with-valid-signature": unsigned_token(claims).rstrip(".") + "." + signature,
        "none-empty-alg": unsigned_token(claims, {"alg": ""}),
        "no-alg-header": f"{_segment({'typ': 'JWT'})}.{payload}.{signature}",
        "alg-null": f"{_segment({'alg': None, 'typ': 'JWT'})}.{payload}.{signature}",
        # algorithm confusion: the public key as an HMAC secret
        "hs256-public-pem": mint_token(algorithm="HS256"),
        "hs384-public-pem": mint_token(algorithm="HS384"),
        "hs512-public-pem": mint_token(algorithm="HS512"),
        "hs256-flattened-pem": hmac_token(claims, pem.replace("\n", "")),
        "hs256-crlf-pem": hmac_token(claims, pem.replace("\n", "\r\n")),
        "hs256-pem-under-rs256-header": hmac_token(claims, pem, header={"alg": "RS256"}),
        "rs256-header-swapped-to-hs256": f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{payload}.{signature}",
        # other keys and algorithms
        "rs256-other-key": mint_token(other),
        "rs512-other-key": mint_token(other, algorithm="RS512"),
        "ps256-other-key": mint_token(other, algorithm="PS256"),
        "ps256-instance-key": mint_token(algorithm="PS256"),
        "rs512-instance-key": mint_token(algorithm="RS512"),
        "es256-other-key": _ec_token(claims),
        "payload-swapped-under-valid-signature": f"{head}.{victim}.{signature}",
        "signature-stripped": f"{head}.{payload}.",
        # forged key hints (signed by another key)
        "unknown-kid-other-key": mint_token(other, kid="ins_unknown"),
        "traversal-kid-other-key": mint_token(other, kid="../../../../../dev/null"),
        "injection-kid-other-key": mint_token(other, kid="' OR '1'='1"),
        "long-kid-other-key": mint_token(other, kid="k" * 4000),
        "numeric-kid-reused-signature": f"{_segment({'alg': 'RS256', 'kid': 123})}.{payload}.{signature}",
        "null-kid-reused-signature": f"{_segment({'alg': 'RS256', 'kid': None})}.{payload}.{signature}",
        "jku-other-key": mint_token(other, headers={"jku": "http://127.0.0.1:9/jwks.json", "kid": "a"}),
        "x5u-other-key": mint_token(other, headers={"x5u": "http://127.0.0.1:9/cert.pem"}),
        "embedded-jwk-other-key": mint_token(other, headers={"jwk": jwk}),
        # exp
        "exp-missing": mint_token(omit=["exp"]),
        "exp-string-future": mint_token(exp=str(int(now) + 3600)),
        "exp-string-garbage": mint_token(exp="tomorrow"),
        "exp-empty-string": mint_token(exp=""),
        "exp-negative": mint_token(exp=-1),
        "exp-zero": mint_token(exp=0),
        "exp-far-past": mint_token(exp=1_000_000_000),
        "exp-an-hour-ago": mint_token(now=now - 3600),
        "exp-nan": mint_token(exp=float("nan")),
        "exp-infinity": mint_token(exp=float("inf")),
        "exp-minus-infinity": mint_token(exp=float("-inf")),
        "exp-true": mint_token(exp=True),
        "exp-false": mint_token(exp=False),
        "exp-null": mint_token(exp=None),
        "exp-list": mint_token(exp=[int(now) + 3600]),
        "exp-object": mint_token(exp={"$gt": 0}),
        # nbf / iat
        "nbf-future": mint_token(nbf=int(now) + 3600),
        "nbf-just-past-skew": mint_token(nbf=int(now) + 120),
        "nbf-string-future": mint_token(nbf=str(int(now) + 3600)),
        "nbf-nan": mint_token(nbf=float("nan")),
        "iat-future": mint_token(now=now + 600),
        # sub
        "sub-missing": mint_token(omit=["sub"]),
        "sub-empty": mint_token(sub=""),
        "sub-null": mint_token(sub=None),
        "sub-number": mint_token(sub=12345),
        "sub-list": mint_token(sub=[DEFAULT_SUB]),
        "sub-object": mint_token(sub={"id": DEFAULT_SUB}),
        "sub-true": mint_token(sub=True),
        # azp
        "azp-missing": mint_token(omit=["azp"]),
        "azp-empty": mint_token(azp=""),
        "azp-null": mint_token(azp=None),
        "azp-foreign": mint_token(azp="https://evil.example"),
        "azp-suffix-attack": mint_token(azp=DEFAULT_AZP + ".evil.example"),
        "azp-http-downgrade": mint_token(azp=DEFAULT_AZP.replace("https://", "http://")),
        "azp-trailing-slash": mint_token(azp=DEFAULT_AZP + "/"),
        "azp-list": mint_token(azp=[DEFAULT_AZP]),
        # size
        "over-8-kib-validly-signed": mint_token(pad="x" * MAX_TOKEN_BYTES),
        "100-kib-validly-signed": mint_token(pad="x" * 100 * 1024),
        # garbage and truncation
        "drop-last-char": valid[:-1],
        "drop-signature-segment": f"{head}.{payload}",
        "half": valid[: len(valid) // 2],
        "header-only": head,
        "extra-segment": valid + ".e30",
        "five-segments-jwe-shaped": f"{head}.{payload}.{signature}.AAAA.BBBB",
        "dots": "..",
        "a.b.c": "a.b.c",
        "not-json-segments": "bm90.anNvbg.c2ln",
        "null": "null",
        "undefined": "undefined",
        "json-object": json.dumps(claims),
        "base64-padding-junk": valid + "===",
        "junk-inside-signature": f"{head}.{payload}.{signature[:40]}!!!!{signature[40:]}",
        "bearer-bearer-garbage": "Bearer xyz",
    }
    for shaped in MACHINE_SHAPED:
        tokens[f"machine-{shaped.split('_')[0]}"] = shaped
    return tokens


def header_variants() -> dict[str, dict[str, str]]:
    """Authorization headers that must fail however the token inside them looks."""
    valid = mint_token()
    other = mint_token(other_keys())
    return {
        "no-header": {},
        "empty": {"Authorization": ""},
        "scheme-only": {"Authorization": "Bearer"},
        "scheme-and-space": {"Authorization": "Bearer "},
        "basic-valid-token": {"Authorization": f"Basic {valid}"},
        "token-scheme-valid-token": {"Authorization": f"Token {valid}"},
        "jwt-scheme-valid-token": {"Authorization": f"JWT {valid}"},
        "no-scheme-valid-token": {"Authorization": valid},
        "colon-valid-token": {"Authorization": f"Bearer:{valid}"},
        "tab-separated-valid-token": {"Authorization": f"Bearer\t{valid}"},
        "lowercase-bearer-forged": {"Authorization": f"bearer {other}"},
        "uppercase-bearer-forged": {"Authorization": f"BEARER {other}"},
        "extra-spaces-forged": {"Authorization": f"Bearer    {other}   "},
        "leading-spaces-forged": {"Authorization": f"   Bearer {other}"},
        "two-tokens-forged-first": {"Authorization": f"Bearer {other} {valid}"},
        "bearer-twice-forged": {"Authorization": f"Bearer Bearer {other}"},
        # A genuine token wrapped in junk is still not a token: the SDK strips every
        # "Bearer " it finds, so these once verified a different string than was sent.
        "bearer-twice-valid-token": {"Authorization": f"Bearer Bearer {valid}"},
        "bearer-spliced-into-valid-token": {"Authorization": f"Bearer {valid[:20]}Bearer {valid[20:]}"},
        "valid-token-then-padding": {"Authorization": f"Bearer {valid} =="},
        "valid-token-then-word": {"Authorization": f"Bearer {valid} extra"},
        "other-header-valid-token": {"X-Authorization": f"Bearer {valid}"},
        "authentication-header-valid-token": {"Authentication": f"Bearer {valid}"},
        "x-clerk-header-valid-token": {"X-Clerk-Session": valid},
        "100-kib-header": {"Authorization": "Bearer " + "a" * 100 * 1024},
        "100-kib-header-dotted": {"Authorization": "Bearer " + ("a" * 34_000 + ".") * 3},
    }


# -- the app ------------------------------------------------------------------------------


@pytest.fixture
def fake(fake_clerk: FakeClerkAPI) -> FakeClerkAPI:
    """Clerk, knowing the user every token here names: a token that got through would
    reach it and create a document."""
    fake_clerk.add_user(make_clerk_user(DEFAULT_SUB, first_name="Ada", last_name="Lovelace"))
    return fake_clerk


@pytest.fixture
def sync_app(make_app, fake):
    return make_app(
        clerk_api_url=fake.url,
        clerk_secret_key=fake.secret_key,
        clerk_jwt_key=instance_keys().public_pem,
        authorized_parties=(DEFAULT_AZP,),
        require_azp=True,  # web-only: a token without azp is refused too
        clerk_timeout_ms=500,
        clerk_retry_budget_ms=100,
    )


def assert_refused(resp, name: str) -> None:
    assert resp.status_code == 401, f"{name}: {resp.status_code} {resp.get_data(as_text=True)[:300]}"
    payload = resp.get_json(silent=True)
    assert isinstance(payload, dict) and payload.get("error"), f"{name}: {resp.get_data(as_text=True)[:300]}"


def assert_nothing_happened(app, fake: FakeClerkAPI, attempts: list) -> None:
    db = app.extensions["webhook_service"].db
    assert fake.requests == [], f"Clerk was asked: {fake.requests[:3]}"
    assert attempts == [], f"network attempted: {attempts[:3]}"
    assert db.users.count_documents({}) == 0
    assert db.deleted_users.count_documents({}) == 0


def hygiene_secrets(fake: FakeClerkAPI) -> list[str]:
    return [*signing_secret_forms(TEST_SECRET), fake.secret_key]


def finish_with_a_valid_token(client, hygiene, app, fake: FakeClerkAPI, attempts: list) -> None:
    """Nothing happened so far; then, sanity: the same app accepts a genuine token exactly
    once as a creation."""
    assert_nothing_happened(app, fake, attempts)
    token = mint_token()
    hygiene.add_secret(token)
    resp = client.post(SYNC, headers={"Authorization": bearer(token)})
    hygiene.saw(resp)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert resp.get_json()["clerkId"] == DEFAULT_SUB
    assert [r.path for r in fake.requests] == [f"/v1/users/{DEFAULT_SUB}"]
    assert app.extensions["webhook_service"].db.users.count_documents({"clerkId": DEFAULT_SUB}) == 1


# -- the tests ----------------------------------------------------------------------------


def test_forged_and_misplaced_tokens_are_all_401_and_nothing_happens(sync_app, fake, pytestconfig):
    client = sync_app.test_client()
    tokens = forged_tokens()
    headers = header_variants()
    assert len(tokens["over-8-kib-validly-signed"]) > MAX_TOKEN_BYTES
    assert len(tokens["100-kib-validly-signed"]) > 100 * 1024
    requests = 0
    started = time.perf_counter()
    with watch(hygiene_secrets(fake)) as hygiene, network_attempts() as attempts:
        hygiene.add_secrets([*tokens.values(), mint_token(), mint_token(other_keys())])

        def post(name: str, **kwargs: Any) -> None:
            nonlocal requests
            resp = client.post(SYNC, **kwargs)
            requests += 1
            hygiene.saw(resp)
            assert_refused(resp, name)

        for name, token in tokens.items():
            post(name, headers={"Authorization": bearer(token)})
        for name, hdrs in headers.items():
            post(name, headers=hdrs)

        # The token where a browser would keep it: a cookie alone is not enough, and a
        # cookie never rescues a bad header.
        valid = mint_token()
        hygiene.add_secret(valid)
        client.set_cookie("__session", valid)
        post("cookie-only")
        post("cookie-and-empty-header", headers={"Authorization": ""})
        post("cookie-and-forged-header", headers={"Authorization": bearer(tokens["rs256-other-key"])})
        client.delete_cookie("__session")
        post("cookie-header-by-hand", headers={"Cookie": f"__session={valid}"})
        post("query-string", query_string={"__session": valid, "token": valid})
        post("form-field", data={"__session": valid, "token": valid})
        post("json-body", json={"token": valid})

        finish_with_a_valid_token(client, hygiene, sync_app, fake, attempts)
        hygiene.assert_clean()
    summary_line(
        pytestconfig,
        f"sync token fuzz (catalogue): {requests} forged/misplaced tokens, all 401, "
        f"0 Clerk requests, in {time.perf_counter() - started:.1f}s",
    )


def _lenient_bytes(segment: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except Exception:
        return None


def same_token(original: str, mutated: str) -> bool:
    """Whether ``mutated`` is ``original`` in another spelling: the signed part is identical
    and the signature segment decodes to the same bytes (trailing bits, padding), or it
    differs only by surrounding whitespace. Such a token is genuine, not a forgery."""
    mutated = mutated.strip()
    if mutated.count(".") < 2:
        return False
    original_input, original_sig = original.rsplit(".", 1)
    mutated_input, mutated_sig = mutated.rsplit(".", 1)
    if mutated_input != original_input:
        return False
    decoded = _lenient_bytes(mutated_sig)
    return decoded is not None and decoded == _lenient_bytes(original_sig)


TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ !%é"
edits = st.lists(
    st.tuples(
        st.sampled_from(["replace", "insert", "delete"]), st.integers(0, 10**6), st.sampled_from(TOKEN_CHARS)
    ),
    min_size=1,
    max_size=4,
)


def apply_edits(token: str, ops: list[tuple[str, int, str]]) -> str:
    chars = list(token)
    for op, position, char in ops:
        i = position % (len(chars) + (op == "insert")) if chars or op == "insert" else 0
        if op == "replace" and chars:
            chars[i] = char
        elif op == "insert":
            chars.insert(i, char)
        elif op == "delete" and chars:
            del chars[i]
    return "".join(chars)


def test_hypothesis_mutated_valid_tokens_are_401(sync_app, fake, pytestconfig):
    client = sync_app.test_client()
    valid = mint_token()
    seen: Counter[str] = Counter()
    started = time.perf_counter()
    with watch(hygiene_secrets(fake)) as hygiene, network_attempts() as attempts:
        hygiene.add_secret(valid)

        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
        )
        @given(edits)
        def one(ops):
            mutated = apply_edits(valid, ops)
            assume(not same_token(valid, mutated))
            hygiene.add_secret(mutated)
            resp = client.post(SYNC, headers={"Authorization": f"Bearer {mutated}"})
            hygiene.saw(resp)
            assert_refused(resp, f"mutation {ops!r}")
            assert fake.requests == []
            seen["segment-" + str(min(mutated.count("."), 3))] += 1

        one()
        finish_with_a_valid_token(client, hygiene, sync_app, fake, attempts)
        hygiene.assert_clean()
    summary_line(
        pytestconfig,
        f"sync token fuzz (hypothesis): {sum(seen.values())} mutated tokens, all 401, "
        f"0 Clerk requests, in {time.perf_counter() - started:.1f}s",
    )


def test_the_oracle_tells_a_respelling_from_a_forgery():
    """``same_token`` is what lets the mutation test skip genuine tokens; it must not
    excuse real changes."""
    valid = mint_token()
    assert same_token(valid, valid)
    assert same_token(valid, f"  {valid} ")
    assert not same_token(valid, valid[:-1])
    head, payload, signature = valid.split(".")
    assert not same_token(valid, f"{head}.{payload}x.{signature}")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    assert not same_token(valid, f"{head}.{payload}.{flipped}")
