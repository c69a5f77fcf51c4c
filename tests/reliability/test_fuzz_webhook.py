"""Webhook fuzzing: over 10,000 generated requests against POST /api/webhooks/clerk.

The app is built by ``create_app`` against the real test database and driven through the
Flask test client. A seeded generator produces the volume (hypothesis is too slow per
example for 10k requests); a hypothesis test adds a few hundred shrinkable examples.

Phase A, no valid signature: dropped, emptied, altered or huge svix-*/webhook-* headers;
malformed, re-versioned, duplicated and reordered signature entries; wrong secrets;
signatures older or newer than Svix's five minutes; a body, id or timestamp changed after
signing; bodies over 1 MiB (with and without Content-Length); odd content types; other
methods. Every answer must be a 4xx JSON error, and afterwards ``users``,
``deleted_users`` and ``events`` must all be empty: nothing is written without a valid
signature.

Phase B, a valid signature over garbage: random and non-UTF-8 bytes, truncated events,
JSON of the wrong shape (wrong types of type/data/id/updated_at, updated_at beyond
int64), deep nesting, lone surrogate escapes (and both combined, swept over the depths
where the JSON decoder and encoder run out of stack at different points). Each must be a
400 and no user or tombstone may appear; positive controls in the same phase (valid
signatures in odd dress: webhook-* headers, reordered and duplicated entries, odd content
types) must be 200, so the harness is shown to be able to get a request accepted.

Afterwards the app must still be healthy: /healthz 200 and a valid delivery applies.
Throughout, tests/support/hygiene.py checks that no secret or payload reaches a log line or a
response and no traceback reaches a client.

Knobs: WEBHOOK_FUZZ_SEED (default 20261129), WEBHOOK_FUZZ_REQUESTS (default 10000, the
seeded requests before the depth sweep), WEBHOOK_FUZZ_EXAMPLES (hypothesis, default 300).
The figures appear under "reliability figures" at the end of the pytest run.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import os
import random
import string
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from werkzeug.wrappers import Response

from tests.support.fake_clerk import (
    DEFAULT_SECRET_KEY,
    clerk_id,
    make_clerk_user,
    make_deleted_data,
    make_webhook_event,
)
from tests.support.helpers import WEBHOOK, msg_id
from tests.support.hygiene import signing_secret_forms, summary_line, watch
from tests.support.signing import TEST_SECRET, signed_delivery

URL = WEBHOOK
MAX_BODY = 1024 * 1024
TOLERANCE_S = 300  # Svix's fixed replay window
MARGIN_S = 10  # keep generated timestamps clear of the window's edge
SEED = int(os.environ.get("WEBHOOK_FUZZ_SEED", "20261129"))
REQUESTS = int(os.environ.get("WEBHOOK_FUZZ_REQUESTS", "10000"))
EXAMPLES = int(os.environ.get("WEBHOOK_FUZZ_EXAMPLES", "300"))
OTHER_SECRETS = (
    "whsec_" + base64.b64encode(b"another instance's signing key!!").decode(),
    "whsec_" + base64.b64encode(hashlib.sha256(b"rotated").digest()).decode(),
)
NON_USER_TYPES = ("session.created", "session.ended", "email.created", "sms.created", "organization.created")
ODD_CONTENT_TYPES = (
    None,
    "text/plain",
    "multipart/form-data; boundary=----x",
    "application/x-www-form-urlencoded",
    "application/json; charset=latin-1",
    "application/octet-stream",
    "",
    "json",
)


# -- signing ------------------------------------------------------------------------


def sign(body: bytes, secret: str, delivery_id: str, timestamp: str) -> str:
    """Svix's v1 signature over raw bytes (svix's own ``sign`` only takes text)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = delivery_id.encode() + b"." + timestamp.encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def random_signature(rng: random.Random) -> str:
    return "v1," + base64.b64encode(rng.randbytes(32)).decode()


def test_raw_signer_matches_svix():
    """The harness signs exactly as Svix does, so 'valid signature' cases really are valid."""
    body, headers = signed_delivery(make_webhook_event("session.created", {"id": "sess_1"}))
    assert (
        sign(body.encode(), TEST_SECRET, headers["svix-id"], headers["svix-timestamp"])
        == (headers["svix-signature"])
    )


# -- requests -----------------------------------------------------------------------


@dataclass
class Req:
    kind: str
    body: bytes
    headers: dict[str, str]
    expect: frozenset[int]
    method: str = "POST"
    chunked: bool = False
    verified: bool = False  # the signature is valid: an event record follows


def send(client, req: Req):
    if req.chunked:
        headers = {**req.headers, "Transfer-Encoding": "chunked"}
        return client.open(
            URL,
            method=req.method,
            input_stream=io.BytesIO(req.body),
            headers=headers,
            environ_overrides={"wsgi.input_terminated": True},
        )
    return client.open(URL, method=req.method, data=req.body, headers=req.headers)


def check_response(req: Req, resp) -> None:
    status = resp.status_code
    assert status < 500, f"{req.kind}: {status} {resp.get_data(as_text=True)[:300]}"
    assert status in req.expect, f"{req.kind}: got {status}, expected {sorted(req.expect)}"
    if status >= 400:
        assert resp.is_json, f"{req.kind}: {status} without a JSON body"
        payload = resp.get_json()
        assert isinstance(payload, dict) and payload.get("error"), f"{req.kind}: {payload!r}"


# -- bodies -------------------------------------------------------------------------


class Bodies:
    """Request bodies: realistic events, and garbage that a signature does not redeem."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def user_event(self) -> dict[str, Any]:
        rng = self.rng
        user = make_clerk_user(
            seed=rng.random(),
            username=rng.choice([None, "ada", "grace_h"]),
            extra_emails=rng.choice([(), ("other@example.com",)]),
            primary_first=rng.random() < 0.5,
        )
        kind = rng.choice(["user.created", "user.updated", "user.deleted"])
        data = make_deleted_data(user["id"]) if kind == "user.deleted" else user
        return make_webhook_event(kind, data, user["updated_at"])

    def non_user_event(self) -> dict[str, Any]:
        kind = self.rng.choice(NON_USER_TYPES)
        return make_webhook_event(
            kind, {"id": clerk_id(kind.split(".")[0][:4]), "object": kind.split(".")[0]}
        )

    def random_bytes(self) -> bytes:
        return self.rng.randbytes(self.rng.choice([1, 7, 64, 700, 5000]))

    def random_text(self) -> bytes:
        alphabet = string.printable + "éß☃\u2028"
        return "".join(self.rng.choices(alphabet, k=self.rng.choice([1, 10, 300, 4000]))).encode()

    def any_body(self) -> bytes:
        """For phase A: anything, most often a real event (the most dangerous to accept)."""
        roll = self.rng.random()
        if roll < 0.5:
            return json.dumps(self.user_event()).encode()
        if roll < 0.6:
            return json.dumps(self.non_user_event()).encode()
        if roll < 0.75:
            return self.random_bytes()
        if roll < 0.9:
            return self.random_text()
        return self.rng.choice([b"", b"a=b&c=d", b"------x\r\nContent-Disposition: form-data\r\n\r\nx"])

    # -- garbage: each must be refused even with a valid signature ----------------------

    def garbage(self) -> tuple[str, bytes]:
        makers: list[tuple[str, Callable[[], bytes]]] = [
            ("random-bytes", self.random_bytes),
            ("random-text", self.random_text),
            ("truncated-event", self.truncated_event),
            ("json-not-object", self.json_not_object),
            ("bad-type", lambda: self.broken_envelope("type")),
            ("bad-data", lambda: self.broken_envelope("data")),
            ("bad-id", lambda: self.broken_envelope("id")),
            ("bad-updated_at", lambda: self.broken_envelope("updated_at")),
            ("deep-nesting", self.deep_nesting),
            ("lone-surrogate", self.lone_surrogate),
            ("non-utf8-field", self.non_utf8_field),
            ("utf16-event", self.utf16_event),
        ]
        kind, make = self.rng.choice(makers)
        return kind, make()

    def truncated_event(self) -> bytes:
        body = json.dumps(self.user_event()).encode()
        return body[: self.rng.randrange(len(body))]

    def json_not_object(self) -> bytes:
        value = self.rng.choice([None, True, 0, -1.5, "user.created", [], [self.user_event()], "", [1, 2]])
        return json.dumps(value).encode()

    def broken_envelope(self, part: str) -> bytes:
        rng = self.rng
        event = self.user_event()
        if part == "updated_at" and event["type"] == "user.deleted":
            event = make_webhook_event("user.updated", make_clerk_user(seed=rng.random()))
        bad_values: list[Any] = [None, 1, 1.5, True, [], {}, ""]
        if part == "type":
            if rng.random() < 0.3:
                del event["type"]
            else:
                event["type"] = rng.choice(bad_values)
        elif part == "data":
            if rng.random() < 0.3:
                del event["data"]
            else:
                event["data"] = rng.choice([None, 1, "user_x", [], [event["data"]], True])
        elif part == "id":
            if rng.random() < 0.3:
                del event["data"]["id"]
            else:
                event["data"]["id"] = rng.choice(bad_values)
        else:
            bad_values = [
                None,
                "1735000000000",
                1735000000000.0,
                1.5,
                True,
                False,
                -1,
                [],
                {},
                2**63,
                2**64 + 7,
                10**30,
                -(2**63),
            ]
            if rng.random() < 0.2:
                del event["data"]["updated_at"]
            elif rng.random() < 0.1:
                text = json.dumps(event).replace(
                    f'"updated_at": {event["data"]["updated_at"]}',
                    '"updated_at": ' + rng.choice(["NaN", "Infinity"]),
                )
                return text.encode()
            else:
                event["data"]["updated_at"] = rng.choice(bad_values)
        return json.dumps(event).encode()

    def deep_nesting(self) -> bytes:
        depth = self.rng.choice([2000, 10_000, 100_000])
        opener, closer = self.rng.choice([("[", "]"), ('{"a":', "}")])
        inner = opener * depth + ("1" if opener != "[" else "") + closer * depth
        return ('{"type":"user.created","data":{"id":"user_x","updated_at":1},"n":' + inner + "}").encode()

    def lone_surrogate(self) -> bytes:
        event = self.user_event()
        escape = self.rng.choice(["\\ud800", "\\udfff", "\\udbff", "\\udc00\\ud800", "x\\ud83d"])
        field_name = self.rng.choice(["id", "first_name", "username", "image_url"])
        if event["type"] == "user.deleted":
            field_name = "id"
        marker = "@@SURROGATE@@"
        event["data"][field_name] = f"{event['data'].get(field_name) or ''}{marker}"
        return json.dumps(event).replace(marker, escape).encode()

    def non_utf8_field(self) -> bytes:
        event = self.user_event()
        marker = "@@RAW@@"
        event["data"]["first_name" if event["type"] != "user.deleted" else "id"] = f"Ren{marker}e"
        raw = self.rng.choice([b"\xe9", b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\x80"])
        return json.dumps(event).encode().replace(marker.encode(), raw)

    def utf16_event(self) -> bytes:
        return json.dumps(self.user_event()).encode(self.rng.choice(["utf-16", "utf-16-le", "utf-32"]))


def nested_with_surrogate(depth: int, opener: str) -> bytes:
    """A lone surrogate plus nesting near the stack limit: the decoder succeeds where the
    encoder that checks for surrogates runs out of stack."""
    inner = "[" * depth + "]" * depth if opener == "[" else '{"a":' * depth + "1" + "}" * depth
    return ('{"type":"session.created","data":{},"s":"\\ud800","n":' + inner + "}").encode()


# -- headers ------------------------------------------------------------------------


class Requests:
    """Phase A (no valid signature), garbage (valid signature, bad body) and controls."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.bodies = Bodies(rng)

    def headers(self, body: bytes, *, secret: str = TEST_SECRET, offset_s: int = 0, style: str = "svix"):
        delivery_id = msg_id()
        timestamp = str(int(time.time()) + offset_s)
        prefix = "svix-" if style == "svix" else "webhook-"
        return {
            f"{prefix}id": delivery_id,
            f"{prefix}timestamp": timestamp,
            f"{prefix}signature": sign(body, secret, delivery_id, timestamp),
            "content-type": "application/json",
        }

    def neutral(self, headers: dict[str, str], *, junk_webhook_headers: bool = True) -> None:
        """Changes that must not matter: content type, unrelated and huge extra headers."""
        rng = self.rng
        if rng.random() < 0.3:
            ctype = rng.choice(ODD_CONTENT_TYPES)
            headers.pop("content-type", None)
            if ctype is not None:
                headers["content-type"] = ctype
        if rng.random() < 0.2:
            headers[f"x-fuzz-{rng.randrange(1000)}"] = rng.choice(["", "x" * 100_000, "é☃", "v1,abc"])
        if junk_webhook_headers and rng.random() < 0.1 and "svix-id" in headers:
            # Standard Webhooks names alongside svix-*: svix-* win, so these are ignored.
            headers["webhook-id"] = msg_id()
            headers["webhook-signature"] = random_signature(rng)

    # -- phase A ----------------------------------------------------------------------

    def unsigned(self) -> Req:
        rng = self.rng
        body = self.bodies.any_body()
        style = "svix" if rng.random() < 0.85 else "webhook"
        headers = self.headers(body, style=style)
        prefix = "svix-" if style == "svix" else "webhook-"
        breakers: list[tuple[str, Callable[[], Req | None]]] = [
            ("drop-headers", lambda: self._drop(headers, prefix)),
            ("empty-headers", lambda: self._empty(headers, prefix)),
            ("random-signature", lambda: self._random_signatures(headers, prefix)),
            ("malformed-signature", lambda: self._malformed_signature(headers, prefix)),
            ("wrong-version", lambda: self._wrong_version(headers, prefix)),
            ("huge-header", lambda: self._huge(headers, prefix)),
            ("wrong-secret", lambda: self._resign(body, prefix, style, secret=rng.choice(OTHER_SECRETS))),
            (
                "replayed-old",
                lambda: self._resign(body, prefix, style, offset=-rng.randint(TOLERANCE_S + MARGIN_S, 10**9)),
            ),
            (
                "from-the-future",
                lambda: self._resign(body, prefix, style, offset=rng.randint(TOLERANCE_S + MARGIN_S, 10**9)),
            ),
            ("garbage-timestamp", lambda: self._garbage_timestamp(headers, prefix, body)),
            ("tampered-timestamp", lambda: self._tampered_timestamp(headers, prefix)),
            ("tampered-id", lambda: self._tampered_id(headers, prefix)),
            ("tampered-body", lambda: None),
            ("oversized", lambda: None),
            ("method", lambda: None),
        ]
        kind, breaker = rng.choice(breakers)
        if kind == "tampered-body":
            return self._tampered_body(body, headers)
        if kind == "oversized":
            return self._oversized(headers)
        if kind == "method":
            return Req(
                kind, body, headers, frozenset({405}), method=rng.choice(["GET", "PUT", "DELETE", "PATCH"])
            )
        replaced = breaker()
        if replaced is not None:
            return replaced
        self.neutral(headers, junk_webhook_headers=False)
        return Req(kind, body, headers, frozenset({400}))

    def _drop(self, headers, prefix) -> None:
        names = [f"{prefix}id", f"{prefix}timestamp", f"{prefix}signature"]
        for name in self.rng.sample(names, self.rng.randint(1, 3)):
            del headers[name]

    def _empty(self, headers, prefix) -> None:
        names = [f"{prefix}id", f"{prefix}timestamp", f"{prefix}signature"]
        for name in self.rng.sample(names, self.rng.randint(1, 3)):
            headers[name] = self.rng.choice(["", " "])

    def _random_signatures(self, headers, prefix) -> None:
        entries = [random_signature(self.rng) for _ in range(self.rng.randint(1, 5))]
        entries += self.rng.sample(entries, self.rng.randint(0, len(entries)))  # duplicated entries
        self.rng.shuffle(entries)
        headers[f"{prefix}signature"] = " ".join(entries)

    def _malformed_signature(self, headers, prefix) -> None:
        valid = headers[f"{prefix}signature"]
        digest = valid.split(",", 1)[1]
        headers[f"{prefix}signature"] = self.rng.choice(
            [
                "v1",
                "v1,",
                ",",
                "v1,abc",
                "v1," + digest[:-8],  # truncated: other bytes, or not base64 at all
                digest,  # no version
                "v1;" + digest,
                "v1," + digest[:20] + "," + digest[20:],
                "garbage " * 50,
                "v1," + base64.b64encode(self.rng.randbytes(31)).decode(),  # too short
                "v1," + base64.b64encode(self.rng.randbytes(64)).decode(),  # too long
            ]
        )

    def _wrong_version(self, headers, prefix) -> None:
        digest = headers[f"{prefix}signature"].split(",", 1)[1]
        tags = ["v2", "v0", "v1a", "v10", "w1"]
        entries = [f"{self.rng.choice(tags)},{digest}" for _ in range(self.rng.randint(1, 3))]
        headers[f"{prefix}signature"] = " ".join(entries)

    def _huge(self, headers, prefix) -> None:
        name = self.rng.choice(["id", "timestamp", "signature"])
        if name == "signature":
            entry = random_signature(self.rng)
            headers[f"{prefix}signature"] = " ".join([entry] * (100_000 // len(entry)))
        elif name == "id":
            headers[f"{prefix}id"] = "msg_" + "x" * 100_000  # signature was for the original id
        else:
            headers[f"{prefix}timestamp"] = "1" * 100_000

    def _resign(self, body, prefix, style, *, secret: str = TEST_SECRET, offset: int = 0) -> Req:
        headers = self.headers(body, secret=secret, offset_s=offset, style=style)
        self.neutral(headers, junk_webhook_headers=False)
        kind = (
            "wrong-secret" if secret != TEST_SECRET else ("replayed-old" if offset < 0 else "from-the-future")
        )
        return Req(kind, body, headers, frozenset({400}))

    def _garbage_timestamp(self, headers, prefix, body) -> None:
        timestamp = self.rng.choice(
            ["abc", "nan", "inf", "-inf", "1e999", "-1", "0x10", "1_700_000_000", "٣"]
        )
        headers[f"{prefix}timestamp"] = timestamp
        headers[f"{prefix}signature"] = sign(body, TEST_SECRET, headers[f"{prefix}id"], timestamp)

    def _tampered_timestamp(self, headers, prefix) -> None:
        shift = self.rng.choice([-1, 1]) * self.rng.randint(1, 200)
        headers[f"{prefix}timestamp"] = str(int(headers[f"{prefix}timestamp"]) + shift)

    def _tampered_id(self, headers, prefix) -> None:
        original = headers[f"{prefix}id"]
        headers[f"{prefix}id"] = self.rng.choice([original + "x", msg_id(), original.upper(), "é" + original])

    def _tampered_body(self, body: bytes, headers) -> Req:
        rng = self.rng
        choice = rng.randrange(4)
        if choice == 0 and body:
            tampered = body[: rng.randrange(len(body))]
        elif choice == 1:
            tampered = body + rng.choice([b" ", b"\n", b"}", b"\x00", b'{"x":1}'])
        elif choice == 2 and body:
            i = rng.randrange(len(body))
            tampered = body[:i] + bytes([body[i] ^ (1 << rng.randrange(8))]) + body[i + 1 :]
        else:
            tampered = json.dumps(self.bodies.user_event()).encode()
        assert tampered != body
        self.neutral(headers, junk_webhook_headers=False)
        return Req("tampered-body", tampered, headers, frozenset({400}))

    def _oversized(self, headers) -> Req:
        """1 MiB + n: refused before any work, however it is signed."""
        rng = self.rng
        event = self.bodies.user_event()
        event["data"]["unsafe_metadata"] = {"notes": "n" * MAX_BODY}
        body = json.dumps(event).encode()[: MAX_BODY + rng.randint(1, 4096)]
        if rng.random() < 0.5:
            headers = self.headers(body)  # even a valid signature does not help
        return Req("oversized", body, headers, frozenset({413}), chunked=rng.random() < 0.3)

    # -- phase B ----------------------------------------------------------------------

    def garbage(self) -> Req:
        kind, body = self.bodies.garbage()
        headers = self.headers(body)
        self.neutral(headers)
        # The signature covers the raw bytes (Standard Webhooks): a signed body verifies
        # whatever its encoding, and is then refused as malformed, on record.
        return Req(f"signed-{kind}", body, headers, frozenset({400}), verified=True)

    def control(self) -> Req:
        """A valid signature in odd dress over a real non-user event: must be accepted."""
        rng = self.rng
        body = json.dumps(self.bodies.non_user_event()).encode()
        style = "svix" if rng.random() < 0.7 else "webhook"
        headers = self.headers(body, style=style)
        prefix = "svix-" if style == "svix" else "webhook-"
        valid = headers[f"{prefix}signature"]
        entries = [valid] * rng.randint(1, 3) + [random_signature(rng) for _ in range(rng.randint(0, 3))]
        entries += [f"v2,{base64.b64encode(rng.randbytes(32)).decode()}"] * rng.randint(0, 1)
        rng.shuffle(entries)
        headers[f"{prefix}signature"] = " ".join(entries)
        if rng.random() < 0.05:
            # A huge but genuine delivery id.
            delivery_id = msg_id() + "y" * 100_000
            headers[f"{prefix}id"] = delivery_id
            headers[f"{prefix}signature"] = sign(
                body, TEST_SECRET, delivery_id, headers[f"{prefix}timestamp"]
            )
        self.neutral(headers)
        return Req(f"control-{style}", body, headers, frozenset({200}), verified=True)


def _utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# -- the app under test ---------------------------------------------------------------


def fuzz_app(make_app):
    """A production-shaped config: the Clerk secret key is set, so a leak of it would show."""
    return make_app(clerk_secret_key=DEFAULT_SECRET_KEY, clerk_api_url="http://127.0.0.1:9")


def counts(app) -> dict[str, int]:
    services = app.extensions["webhook_service"]
    services.events.flush()
    db = services.db
    return {name: db[name].count_documents({}) for name in ("users", "deleted_users", "events")}


def assert_healthy_and_applies(app, client, hygiene) -> None:
    """After the storm: the probes answer and a genuine delivery is applied."""
    resp = client.get("/healthz")
    hygiene.saw(resp)
    assert resp.status_code == 200
    resp = client.get("/readyz")
    hygiene.saw(resp)
    assert resp.status_code == 200
    user = make_clerk_user(seed=f"after-fuzz-{uuid.uuid4()}", first_name="Ada", last_name="Lovelace")
    body, headers = signed_delivery(make_webhook_event("user.created", user, user["updated_at"]))
    resp = client.post(URL, data=body, headers=headers)
    hygiene.saw(resp, payload=body)
    assert resp.status_code == 200 and resp.get_json() == {"outcome": "applied"}
    doc = app.extensions["webhook_service"].db.users.find_one({"clerkId": user["id"]})
    assert doc is not None and doc["firstName"] == "Ada" and doc["clerkUpdatedAt"] == user["updated_at"]


# -- the seeded volume test --------------------------------------------------------------


def test_ten_thousand_fuzzed_requests_never_5xx_and_never_write_unsigned(make_app, pytestconfig):
    rng = random.Random(SEED)
    gen = Requests(rng)
    statuses: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    n_phase_a = REQUESTS * 7 // 10
    n_phase_b = REQUESTS - n_phase_a
    started = time.perf_counter()
    secrets = [*signing_secret_forms(TEST_SECRET), DEFAULT_SECRET_KEY]
    app = fuzz_app(make_app)
    with watch(secrets) as hygiene:
        client = app.test_client()

        def run(req: Req) -> None:
            resp = send(client, req)
            hygiene.saw(resp, payload=req.body)
            check_response(req, resp)
            statuses[resp.status_code] += 1
            kinds[req.kind] += 1

        # Phase A: no request carries a valid signature.
        for _ in range(n_phase_a):
            run(gen.unsigned())
        assert counts(app) == {"users": 0, "deleted_users": 0, "events": 0}

        # Phase B: valid signatures over garbage, with accepted controls mixed in.
        # The spec signs the raw bytes, so every signed body verifies and is then refused on
        # record. A verifier that only takes text may refuse a non-UTF-8 body at the signature
        # instead (standardwebhooks 1.1 did): still a 400 with nothing written, just no record.
        on_record: set[str] = set()
        maybe_on_record: set[str] = set()
        controls = 0
        for _ in range(n_phase_b):
            req = gen.control() if rng.random() < 0.1 else gen.garbage()
            run(req)
            if req.kind.startswith("control"):
                controls += 1
            elif req.verified:
                (on_record if _utf8(req.body) else maybe_on_record).add(req.headers["svix-id"])
        # The stack-depth window: a lone surrogate with nesting from well below to well
        # above the decoder's limit, every depth, both container kinds.
        for depth in range(850, 1150):
            for opener in ("[", "{"):
                body = nested_with_surrogate(depth, opener)
                headers = gen.headers(body)
                run(Req("signed-deep-surrogate", body, headers, frozenset({400}), verified=True))
                on_record.add(headers["svix-id"])

        after = counts(app)
        assert after["users"] == 0 and after["deleted_users"] == 0
        db = app.extensions["webhook_service"].db
        # Every verified delivery is on record, as refused or (controls) ignored.
        refused = {e["_id"] for e in db.events.find({"outcome": "rejected"}, {"_id": 1})}
        assert on_record <= refused <= on_record | maybe_on_record
        assert db.events.count_documents({"outcome": "ignored"}) == controls
        assert after["events"] == len(refused) + controls

        assert_healthy_and_applies(app, client, hygiene)
        hygiene.assert_clean()
    total = sum(statuses.values())
    elapsed = time.perf_counter() - started
    assert total >= 10_000 or REQUESTS < 10_000
    assert statuses[200] == controls and statuses[413] > 0 and statuses[405] > 0  # every branch was reached
    summary_line(
        pytestconfig,
        f"webhook fuzz (seed {SEED}): {total} requests in {elapsed:.1f}s; "
        f"statuses {dict(sorted(statuses.items()))}; {len(kinds)} request kinds; "
        f"{len(hygiene.log_lines)} log lines checked",
    )


# -- hypothesis ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
BREAKS = (
    "drop-id",
    "drop-timestamp",
    "drop-signature",
    "wrong-secret",
    "stale",
    "tamper-body",
    "tamper-id",
    "random-signature",
)


def would_be_accepted(body: bytes) -> bool:
    """The spec's reading of a signed body: a JSON object with a string type, object data,
    and for user events a string id (and an int64 updated_at), all strings UTF-8 clean."""
    try:
        event = json.loads(body.decode("utf-8"))
        json.dumps(event, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, ValueError, RecursionError):
        return False
    if not isinstance(event, dict) or not isinstance(event.get("type"), str) or not event["type"]:
        return False
    data = event.get("data")
    if not isinstance(data, dict):
        return False
    if event["type"].startswith("user."):
        if not isinstance(data.get("id"), str) or not data["id"]:
            return False
        if event["type"] in ("user.created", "user.updated"):
            at = data.get("updated_at")
            return isinstance(at, int) and not isinstance(at, bool) and 0 <= at < 2**63
    return True


@st.composite
def fuzz_cases(draw):
    breaks = draw(st.sets(st.sampled_from(BREAKS), max_size=3))
    kinds = ["non-user-event", "binary", "text", "json"] + (["user-event"] if breaks else [])
    body_kind = draw(st.sampled_from(kinds))
    if body_kind == "user-event":
        user = make_clerk_user(seed=draw(st.integers(0, 10**9)))
        body = json.dumps(make_webhook_event("user.created", user, user["updated_at"])).encode()
    elif body_kind == "non-user-event":
        body = json.dumps(
            make_webhook_event(draw(st.sampled_from(NON_USER_TYPES)), {"id": "sess_1"})
        ).encode()
    elif body_kind == "binary":
        body = draw(st.binary(max_size=300))
    elif body_kind == "text":
        body = draw(st.text(max_size=300)).encode("utf-8", "surrogatepass")
    else:
        body = json.dumps(draw(json_values)).encode()
    offset = draw(st.integers(-(TOLERANCE_S - MARGIN_S), TOLERANCE_S - MARGIN_S))
    stale = draw(st.integers(TOLERANCE_S + MARGIN_S, 10**8)) * draw(st.sampled_from([-1, 1]))
    extra = draw(
        st.dictionaries(
            st.sampled_from(["x-a", "content-type", "webhook-id", "user-agent"]),
            st.text(
                st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=50
            ),
            max_size=3,
        )
    )
    style = draw(st.sampled_from(["svix-", "webhook-"]))
    return body_kind, body, frozenset(breaks), offset, stale, extra, style


def test_hypothesis_fuzzed_requests(make_app, pytestconfig):
    """Shrinkable examples; the oracle is built from the case, never from the response."""
    seen: Counter[tuple[bool, int]] = Counter()
    started = time.perf_counter()
    app = fuzz_app(make_app)
    with watch([*signing_secret_forms(TEST_SECRET), DEFAULT_SECRET_KEY]) as hygiene:
        client = app.test_client()
        last = {"counts": counts(app)}

        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
        )
        @given(fuzz_cases())
        def one(case):
            body_kind, body, breaks, offset, stale, extra, style = case
            valid_signature = not breaks
            if valid_signature and would_be_accepted(body):
                assume(not json.loads(body)["type"].startswith("user."))  # it would be written
            secret = OTHER_SECRETS[0] if "wrong-secret" in breaks else TEST_SECRET
            delivery_id = msg_id()
            timestamp = str(int(time.time()) + (stale if "stale" in breaks else offset))
            signature = sign(body, secret, delivery_id, timestamp)
            if "random-signature" in breaks:
                signature = random_signature(random.Random(body))
            headers = {**{k: v for k, v in extra.items() if style != "webhook-" or k != "webhook-id"}}
            headers.update(
                {f"{style}id": delivery_id, f"{style}timestamp": timestamp, f"{style}signature": signature}
            )
            if "tamper-id" in breaks:
                headers[f"{style}id"] = delivery_id + "0"
            sent = body + b"!" if "tamper-body" in breaks else body
            for name, part in (
                ("drop-id", "id"),
                ("drop-timestamp", "timestamp"),
                ("drop-signature", "signature"),
            ):
                if name in breaks:
                    del headers[f"{style}{part}"]
                    headers.pop(f"webhook-{part}", None)  # no fallback header may rescue it
            before = last["counts"]
            resp = client.post(URL, data=sent, headers=headers)
            hygiene.saw(resp, payload=sent)
            expected = {400} if not valid_signature else ({200} if would_be_accepted(body) else {400})
            check_response(Req(body_kind, sent, headers, frozenset(expected)), resp)
            after = last["counts"] = counts(app)
            assert after["users"] == before["users"] == 0
            assert after["deleted_users"] == 0
            if not valid_signature:
                assert after["events"] == before["events"], "an unsigned request was recorded"
            seen[(valid_signature, resp.status_code)] += 1

        one()
        assert_healthy_and_applies(app, client, hygiene)
        hygiene.assert_clean()
    assert seen[(False, 400)] > 0 and seen[(True, 400)] > 0  # both sides of the oracle were exercised
    summary_line(
        pytestconfig,
        f"webhook fuzz (hypothesis): {sum(seen.values())} examples in {time.perf_counter() - started:.1f}s; "
        f"(valid signature, status): {dict(seen)}",
    )


def test_hygiene_catches_leaks_and_tracebacks(make_app):
    """The checks used above can fail: a logged secret (even with propagation off, as
    configure_logging sets it), an echoed payload and a traceback body are all caught."""
    service_logger = logging.getLogger("webhook_service")
    previous = service_logger.propagate
    service_logger.propagate = False
    try:
        with watch(signing_secret_forms(TEST_SECRET)) as hygiene:
            logging.getLogger("webhook_service.delivery").info("key %s", TEST_SECRET.removeprefix("whsec_"))
            assert hygiene.leaks()
            with pytest.raises(AssertionError, match="secret leak"):
                hygiene.assert_clean()
    finally:
        service_logger.propagate = previous
    payload = json.dumps(make_webhook_event("session.created", {"id": "sess_leaky"}))
    with watch() as hygiene:
        logging.getLogger("webhook_service.delivery").warning("bad body %s", payload)
        with pytest.raises(AssertionError, match="payload"):
            hygiene.saw(Response("{}", mimetype="application/json"), payload=payload)
    with watch() as hygiene, pytest.raises(AssertionError, match="traceback"):
        hygiene.saw(Response('Traceback (most recent call last):\n  File "app.py", line 1', status=500))
    app = fuzz_app(make_app)
    with watch([TEST_SECRET]) as hygiene:
        hygiene.saw(app.test_client().get("/healthz"), payload=payload)
        hygiene.assert_clean()  # and a clean exchange passes
