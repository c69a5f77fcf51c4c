"""WebhookVerifier against deliveries signed exactly as Svix signs them.

The expectations are the Standard Webhooks specification's and Svix's documentation's, not
one library version's: the signature header may list several space-separated signatures and
the delivery verifies when any one matches; entries of other versions are ignored; no
matching entry, or a timestamp more than five minutes away, is refused. The messages are
the library's own, so only the refusal is asserted, never its wording.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta

import pytest
from svix.webhooks import Webhook

from tests.support.fake_clerk import make_clerk_user, make_webhook_event
from tests.support.signing import TEST_SECRET
from webhook_service.signatures import SignatureError, WebhookVerifier

OTHER_SECRET = "whsec_" + base64.b64encode(b"another-32-byte-signing-secret!!").decode()
MSG_ID = "msg_2pTestDeliveryAAAAAAAAAAAAA"
BODY = json.dumps(make_webhook_event("user.created", make_clerk_user("user_2sig", updated_at=1)))


def sign(
    body: str = BODY, *, secret: str = TEST_SECRET, msg_id: str = MSG_ID, at: datetime | None = None
) -> str:
    return Webhook(secret).sign(msg_id, at or datetime.now(UTC), body)


def headers(
    body: str = BODY,
    *,
    secret: str = TEST_SECRET,
    msg_id: str = MSG_ID,
    at: datetime | None = None,
    prefix: str = "svix",
) -> dict[str, str]:
    at = at or datetime.now(UTC)
    return {
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(int(at.timestamp())),
        f"{prefix}-signature": sign(body, secret=secret, msg_id=msg_id, at=at),
    }


@pytest.fixture
def verifier() -> WebhookVerifier:
    return WebhookVerifier(TEST_SECRET)


def random_signature() -> str:
    return "v1," + base64.b64encode(os.urandom(32)).decode()


# -- accepted ---------------------------------------------------------------------------------


def test_valid_delivery_returns_the_svix_id(verifier: WebhookVerifier) -> None:
    assert verifier.verify(BODY.encode(), headers()) == MSG_ID


def test_header_names_are_case_insensitive(verifier: WebhookVerifier) -> None:
    h = headers()
    mixed = {
        "Svix-Id": h["svix-id"],
        "SVIX-TIMESTAMP": h["svix-timestamp"],
        "Svix-Signature": h["svix-signature"],
    }
    assert verifier.verify(BODY.encode(), mixed) == MSG_ID


def test_standard_webhooks_header_names_are_accepted(verifier: WebhookVerifier) -> None:
    assert verifier.verify(BODY.encode(), headers(prefix="webhook")) == MSG_ID


def test_timestamp_within_tolerance_is_accepted(verifier: WebhookVerifier) -> None:
    for skew in (timedelta(minutes=-4), timedelta(minutes=4)):
        at = datetime.now(UTC) + skew
        assert verifier.verify(BODY.encode(), headers(at=at)) == MSG_ID


def test_non_ascii_body_is_verified_on_its_utf8_bytes(verifier: WebhookVerifier) -> None:
    body = json.dumps(
        make_webhook_event("user.updated", {"id": "user_1", "first_name": "Zoë 李"}), ensure_ascii=False
    )
    assert verifier.verify(body.encode("utf-8"), headers(body)) == MSG_ID


@pytest.mark.parametrize("valid_position", [0, 1, 2])
def test_key_rotation_one_valid_signature_among_several(valid_position: int) -> None:
    """During rotation Svix sends one signature per active secret, space separated."""
    at = datetime.now(UTC)
    sigs = [random_signature(), sign(secret=TEST_SECRET, at=at), random_signature()]
    sigs[1], sigs[valid_position] = sigs[valid_position], sigs[1]
    h = {"svix-id": MSG_ID, "svix-timestamp": str(int(at.timestamp())), "svix-signature": " ".join(sigs)}
    assert WebhookVerifier(TEST_SECRET).verify(BODY.encode(), h) == MSG_ID


def test_key_rotation_new_secret_verifies_delivery_signed_by_old_and_new() -> None:
    at = datetime.now(UTC)
    both = f"{sign(secret=TEST_SECRET, at=at)} {sign(secret=OTHER_SECRET, at=at)}"
    h = {"svix-id": MSG_ID, "svix-timestamp": str(int(at.timestamp())), "svix-signature": both}
    assert WebhookVerifier(OTHER_SECRET).verify(BODY.encode(), h) == MSG_ID
    assert WebhookVerifier(TEST_SECRET).verify(BODY.encode(), h) == MSG_ID
    unrelated = WebhookVerifier("whsec_" + base64.b64encode(b"a-third-secret-nobody-signs-with").decode())
    with pytest.raises(SignatureError):
        unrelated.verify(BODY.encode(), h)


def test_unknown_signature_versions_are_skipped(verifier: WebhookVerifier) -> None:
    at = datetime.now(UTC)
    h = headers(at=at)
    h["svix-signature"] = "v2,abcdef " + h["svix-signature"]
    assert verifier.verify(BODY.encode(), h) == MSG_ID


def test_a_valid_digest_under_another_version_label_does_not_verify(verifier: WebhookVerifier) -> None:
    h = headers()
    digest = h["svix-signature"].removeprefix("v1,")
    h["svix-signature"] = f"v2,{digest} v1a,{digest} v0,{digest}"
    with pytest.raises(SignatureError):
        verifier.verify(BODY.encode(), h)


# -- rejected: signature/timestamp ------------------------------------------------------------


def test_timestamp_older_than_five_minutes_is_rejected(verifier: WebhookVerifier) -> None:
    at = datetime.now(UTC) - timedelta(minutes=6)
    with pytest.raises(SignatureError):
        verifier.verify(BODY.encode(), headers(at=at))


def test_timestamp_newer_than_five_minutes_is_rejected(verifier: WebhookVerifier) -> None:
    at = datetime.now(UTC) + timedelta(minutes=6)
    with pytest.raises(SignatureError):
        verifier.verify(BODY.encode(), headers(at=at))


def test_replayed_signature_with_a_fresh_timestamp_header_is_rejected(verifier: WebhookVerifier) -> None:
    """The timestamp is signed: moving it forward to dodge the tolerance breaks the signature."""
    old = datetime.now(UTC) - timedelta(minutes=30)
    h = headers(at=old)
    h["svix-timestamp"] = str(int(datetime.now(UTC).timestamp()))
    with pytest.raises(SignatureError):
        verifier.verify(BODY.encode(), h)


def test_wrong_secret_is_rejected(verifier: WebhookVerifier) -> None:
    with pytest.raises(SignatureError):
        verifier.verify(BODY.encode(), headers(secret=OTHER_SECRET))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b: b.replace(b'"user.created"', b'"user.deleted"'),
        lambda b: b + b" ",
        lambda b: b[:-1],
        lambda b: json.dumps(json.loads(b)).replace(", ", ",").encode(),  # same JSON, other bytes
    ],
    ids=["changed-type", "trailing-space", "truncated", "reserialised"],
)
def test_tampered_body_is_rejected(verifier: WebhookVerifier, tamper) -> None:
    body = tamper(BODY.encode())
    assert body != BODY.encode()
    with pytest.raises(SignatureError):
        verifier.verify(body, headers())


def test_signature_for_another_delivery_id_is_rejected(verifier: WebhookVerifier) -> None:
    h = headers()
    h["svix-id"] = "msg_someOtherDelivery"
    with pytest.raises(SignatureError):
        verifier.verify(BODY.encode(), h)


@pytest.mark.parametrize("missing", ["svix-id", "svix-timestamp", "svix-signature"])
def test_missing_header_is_rejected(verifier: WebhookVerifier, missing: str) -> None:
    h = headers()
    del h[missing]
    with pytest.raises(SignatureError):
        verifier.verify(BODY.encode(), h)


@pytest.mark.parametrize("emptied", ["svix-id", "svix-timestamp", "svix-signature"])
def test_empty_header_is_rejected(verifier: WebhookVerifier, emptied: str) -> None:
    h = headers()
    h[emptied] = ""
    with pytest.raises(SignatureError):
        verifier.verify(BODY.encode(), h)


def test_no_headers_at_all_is_rejected(verifier: WebhookVerifier) -> None:
    with pytest.raises(SignatureError):
        verifier.verify(BODY.encode(), {})


# -- malformed headers: whatever the library raises, the caller sees a SignatureError --------


@pytest.mark.parametrize(
    "signature",
    [
        "v1abc",  # no comma
        "v1,abc",  # not a whole base64 digest
        "v1,a,b",  # too many commas
        "v1,!!!!",  # not base64 at all
        "garbage",
    ],
)
def test_malformed_signature_header_is_a_signature_error(verifier: WebhookVerifier, signature: str) -> None:
    h = headers()
    h["svix-signature"] = signature
    with pytest.raises(SignatureError):
        verifier.verify(BODY.encode(), h)


def test_a_malformed_entry_beside_a_valid_signature_is_either_skipped_or_refused(
    verifier: WebhookVerifier,
) -> None:
    """The specification says a delivery is valid when any listed signature matches, and does
    not say what to do with an entry that cannot be parsed: a verifier may skip it (what
    standardwebhooks 1.3 does) or refuse the header (1.1 stopped at it). Either is safe, as
    the valid entry really is the sender's; what must hold is that the answer is the
    delivery id or a SignatureError, never another exception."""
    for listed in ("v1,abc {valid}", "{valid} v1,abc", "v1abc {valid}", "v1,!!!! {valid} v1,a,b"):
        h = headers()
        h["svix-signature"] = listed.format(valid=h["svix-signature"])
        try:
            assert verifier.verify(BODY.encode(), h) == MSG_ID
        except SignatureError as exc:
            assert str(exc)


def test_malformed_entries_alone_never_verify(verifier: WebhookVerifier) -> None:
    h = headers()
    digest = h["svix-signature"].removeprefix("v1,")
    for listed in (f"v1,abc v1abc {digest}", f"v1 ,{digest}", f"v1,{digest[:-4]}", f"V1,{digest}"):
        h["svix-signature"] = listed
        with pytest.raises(SignatureError):
            verifier.verify(BODY.encode(), h)


def test_non_utf8_body_is_a_signature_error(verifier: WebhookVerifier) -> None:
    body = b'{"type": "user.created", "data": {"first_name": "Zo\xeb"}}'
    with pytest.raises(SignatureError):
        verifier.verify(body, headers(body.decode("latin-1")))


@pytest.mark.parametrize("timestamp", ["yesterday", "", "1e400", "nan", "0x10"])
def test_non_numeric_timestamp_is_a_signature_error(verifier: WebhookVerifier, timestamp: str) -> None:
    h = headers()
    h["svix-timestamp"] = timestamp
    with pytest.raises(SignatureError):
        verifier.verify(BODY.encode(), h)


def test_every_failure_is_only_ever_a_signature_error(verifier: WebhookVerifier) -> None:
    """Whatever svix raises internally, the caller sees exactly one exception type."""
    cases = [
        (BODY.encode(), {**headers(), "svix-signature": "v1abc"}),
        (BODY.encode(), {**headers(), "svix-signature": "v1,abc"}),
        (b"\xff\xfe", headers("\xff\xfe")),
        (BODY.encode(), {**headers(), "svix-timestamp": "soon"}),
        (BODY.encode(), {"svix-id": "", "svix-timestamp": "", "svix-signature": ""}),
    ]
    for body, h in cases:
        try:
            verifier.verify(body, h)
        except SignatureError as exc:
            assert str(exc)  # a message the route can show the sender
        else:
            pytest.fail(f"accepted {h!r}")
