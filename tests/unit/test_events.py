"""Pure tests of the envelope (webhook_service/events.py) and of what each registered event
type requires of its ``data`` (dispatch.EVENT_TYPES, the resources' handlers)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.fake_clerk import make_clerk_user, make_deleted_data, make_webhook_event
from webhook_service.dispatch import EVENT_TYPES
from webhook_service.events import Event, MalformedEvent, Subject, parse_event

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def body_of(value: Any) -> bytes:
    return json.dumps(value).encode()


def user_event(event_type: str = "user.created", **data_overrides: Any) -> dict[str, Any]:
    data = make_clerk_user("user_2pAbCdEfGhIjKlMnOpQrStUvWxY", updated_at=1_700_000_000_123)
    data.update(data_overrides)
    return make_webhook_event(event_type, data, timestamp_ms=1_700_000_000_200)

def checked(body: bytes) -> Subject:
    """The body as the webhook route reads it: the envelope, then its type's own checks."""
    event = parse_event(body)
    return EVENT_TYPES[event.type].subject(event)


# -- parse_event: malformed bodies ----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "not JSON"),
        (b"{not json", "not JSON"),
        (b'{"type": "user.created", "data": {}', "not JSON"),
        (b"\xff\xfe\xfa", "not UTF-8"),
        (b'{"type": "session.created", "data": {"name": "caf\xe9"}}', "not UTF-8"),
        # Valid JSON, but UTF-16: json.loads(bytes) would sniff and accept it.
        (json.dumps({"type": "session.created", "data": {}}).encode("utf-16"), "not UTF-8"),
        (b"[]", "not a JSON object"),
        (b'[{"type": "user.created", "data": {}}]', "not a JSON object"),
        (b'"user.created"', "not a JSON object"),
        (b"42", "not a JSON object"),
        (b"null", "not a JSON object"),
        (b"[" * 100_000, "nested too deeply"),
    ],
    ids=[
        "empty",
        "garbage",
        "truncated",
        "non-utf8-bytes",
        "latin1-inside-json",
        "utf16-json",
        "array",
        "array-of-event",
        "string",
        "number",
        "null",
        "deeply-nested",
    ],
)
def test_parse_event_rejects_bodies_that_are_not_a_json_object(body: bytes, problem: str) -> None:
    with pytest.raises(MalformedEvent, match=problem):
        parse_event(body)


def test_parse_event_rejects_deep_nesting_inside_data() -> None:
    body = b'{"type": "session.created", "data": {"x": ' + b"[" * 100_000 + b"}}"
    with pytest.raises(MalformedEvent, match="nested too deeply"):
        parse_event(body)


@pytest.mark.parametrize(
    "envelope",
    [
        {"data": {"id": "user_1", "updated_at": 1}},
        {"type": None, "data": {"id": "user_1", "updated_at": 1}},
        {"type": 7, "data": {"id": "user_1", "updated_at": 1}},
        {"type": ["user.created"], "data": {"id": "user_1", "updated_at": 1}},
        {"type": "", "data": {"id": "user_1", "updated_at": 1}},
    ],
    ids=["missing", "null", "number", "list", "empty"],
)
def test_parse_event_requires_a_non_empty_string_type(envelope: dict[str, Any]) -> None:
    with pytest.raises(MalformedEvent, match="'type'"):
        parse_event(body_of(envelope))


@pytest.mark.parametrize("data", [None, [], "user_1", 5, True], ids=repr)
def test_parse_event_requires_object_data(data: Any) -> None:
    with pytest.raises(MalformedEvent, match="'data'"):
        parse_event(body_of({"type": "user.created", "data": data}))


def test_parse_event_rejects_missing_data() -> None:
    with pytest.raises(MalformedEvent, match="'data'"):
        parse_event(body_of({"type": "session.created", "object": "event"}))


@pytest.mark.parametrize("event_type", ["user.created", "user.updated", "user.deleted"])
@pytest.mark.parametrize("bad_id", ["<missing>", None, 123, "", ["user_1"], {"id": "user_1"}], ids=repr)
def test_user_events_require_a_string_data_id(event_type: str, bad_id: Any) -> None:
    data = make_clerk_user("user_x", updated_at=1) if event_type != "user.deleted" else make_deleted_data("x")
    if bad_id == "<missing>":
        del data["id"]
    else:
        data["id"] = bad_id
    body = body_of(make_webhook_event(event_type, data))
    assert parse_event(body).type == event_type  # the envelope is fine: the type's check refuses
    with pytest.raises(MalformedEvent, match="user event has no string 'data.id'"):
        checked(body)


@pytest.mark.parametrize("event_type", ["user.created", "user.updated"])
@pytest.mark.parametrize(
    "bad_updated_at",
    ["<missing>", None, "1700000000000", 1.7e12, 1700000000000.5, True, False, -1, [1], {"ms": 1}],
    ids=repr,
)
def test_user_changes_require_a_non_negative_int_updated_at(event_type: str, bad_updated_at: Any) -> None:
    event = user_event(event_type)
    if bad_updated_at == "<missing>":
        del event["data"]["updated_at"]
    else:
        event["data"]["updated_at"] = bad_updated_at
    with pytest.raises(MalformedEvent, match="'data.updated_at'"):
        checked(body_of(event))


# -- parse_event: valid bodies ------------------------------------------------------------


def test_parse_event_accepts_a_realistic_user_created() -> None:
    event = parse_event(body_of(user_event("user.created")))
    assert event.type == "user.created"
    assert event.timestamp_ms == 1_700_000_000_200
    assert event.data["updated_at"] == 1_700_000_000_123
    user_id = "user_2pAbCdEfGhIjKlMnOpQrStUvWxY"
    assert checked(body_of(user_event("user.created"))) == Subject("user", user_id, user_id=user_id)


def test_parse_event_accepts_updated_at_zero() -> None:
    event = parse_event(body_of(user_event("user.updated", updated_at=0)))
    assert event.data["updated_at"] == 0


def test_parse_event_accepts_user_deleted_with_only_deleted_id_object() -> None:
    body = body_of({"type": "user.deleted", "data": {"deleted": True, "id": "user_gone", "object": "user"}})
    event = parse_event(body)
    assert event == Event(type="user.deleted", data={"deleted": True, "id": "user_gone", "object": "user"})
    assert checked(body).user_id == "user_gone"


def test_parse_event_accepts_user_deleted_from_the_builder() -> None:
    subject = checked(body_of(make_webhook_event("user.deleted", make_deleted_data("user_abc"))))
    assert (subject.kind, subject.id, subject.user_id) == ("user", "user_abc", "user_abc")


@pytest.mark.parametrize(
    ("event_type", "data"),
    [
        ("session.created", {"id": "sess_1", "object": "session", "user_id": "user_1", "status": "active"}),
        (
            "email.created",
            {"object": "email", "to_email_address": "a@example.com", "slug": "verification_code"},
        ),
        ("organization.created", {"id": "org_1", "object": "organization", "name": "Acme"}),
        ("session.ended", {}),
    ],
)
def test_parse_event_accepts_any_type_whatever_its_data(event_type: str, data: dict) -> None:
    event = parse_event(body_of(make_webhook_event(event_type, data)))
    assert event.type == event_type
    assert dict(event.data) == data


def test_parse_event_accepts_utf8_text_in_names() -> None:
    body = body_of(user_event(first_name="Zoë", last_name="李"))
    assert parse_event(body).data["first_name"] == "Zoë"
    assert (
        parse_event(json.dumps(user_event(first_name="Zoë"), ensure_ascii=False).encode()).data["first_name"]
        == "Zoë"
    )




@pytest.mark.parametrize(
    ("timestamp", "ms"),
    [
        (1_654_012_591_835, 1_654_012_591_835),  # Clerk's docs: milliseconds
        (1_654_012_591, 1_654_012_591_999),  # the dashboard's "Send example": seconds, read as its last ms
        (None, None),
        ("1654012591835", None),
        (True, None),
        (0, None),
        (-5, None),
        (1.5e12, None),
        (2**64, None),
    ],
)
def test_the_envelope_timestamp_in_seconds_or_milliseconds(timestamp: Any, ms: int | None) -> None:
    envelope = {"type": "organizationMembership.deleted", "data": {}, "timestamp": timestamp}
    event = parse_event(body_of(envelope))
    assert event.timestamp_ms == ms


# -- parse_event (property) --------------------------------------------------------------------


@FAST
@given(st.binary(max_size=200))
def test_parse_event_on_arbitrary_bytes_returns_event_or_malformed(body: bytes) -> None:
    try:
        event = parse_event(body)
    except MalformedEvent:
        return
    assert isinstance(event, Event) and event.type


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)
_envelope = st.dictionaries(
    st.sampled_from(["type", "data", "object", "timestamp"]),
    st.one_of(
        _json,
        st.sampled_from(["user.created", "user.updated", "user.deleted", "session.created", ""]),
        st.dictionaries(
            st.sampled_from(["id", "updated_at", "deleted", "username"]),
            st.one_of(_json, st.integers(min_value=-5, max_value=5), st.just("user_1")),
        ),
    ),
)


@FAST
@given(_envelope)
def test_parse_event_on_generated_envelopes_returns_valid_event_or_malformed(envelope: dict) -> None:
    try:
        event = parse_event(body_of(envelope))
    except MalformedEvent:
        return
    assert isinstance(event.type, str) and event.type
    assert isinstance(event.data, dict)
    entry = EVENT_TYPES.get(event.type)
    if entry is None:
        return
    try:
        subject = entry.subject(event)
    except MalformedEvent:
        return
    assert isinstance(subject.id, str) and subject.id
    if event.type in ("user.created", "user.updated"):
        updated_at = event.data["updated_at"]
        assert type(updated_at) is int and updated_at >= 0
