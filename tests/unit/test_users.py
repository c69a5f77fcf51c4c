"""Pure tests of the users resource's mapping and usernames
(webhook_service/resources/users/mapping.py, usernames.py): what a Clerk User becomes,
which username a user gets, and who keeps a contested one."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.fake_clerk import make_clerk_user
from tests.support.stores import XCLONE_FIELDS
from webhook_service.resources.users.mapping import LocalUser, primary_email
from webhook_service.resources.users.mapping import map_clerk_user as map_with
from webhook_service.resources.users.usernames import (
    USERNAME_MAX,
    UsernameSource,
    choose_username,
    claim_beats_holder,
    disambiguated_username,
    email_username,
    fallback_username,
    normalise_username,
)

USERNAME_RE = re.compile(r"^[a-z0-9_]*$")
FALLBACK_RE = re.compile(r"^user_[0-9a-f]{10}$")
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

def map_clerk_user(user: dict[str, Any]) -> LocalUser:
    return map_with(user, XCLONE_FIELDS)


# -- primary_email ----------------------------------------------------------------------------


def test_primary_email_is_found_by_id_not_position() -> None:
    user = make_clerk_user(
        seed="primary-last",
        email="real@example.com",
        extra_emails=["old@example.com", "work@example.com"],
        primary_first=False,
    )
    assert user["email_addresses"][0]["email_address"] == "old@example.com"
    assert primary_email(user) == "real@example.com"


def test_primary_email_for_phone_only_user_is_none() -> None:
    user = make_clerk_user(seed="phone", phone_only=True)
    assert user["email_addresses"] == [] and user["primary_email_address_id"] is None
    assert primary_email(user) is None


def test_primary_email_none_when_primary_id_is_none_but_addresses_exist() -> None:
    user = make_clerk_user(seed="noprimary", extra_emails=["a@example.com"], email=None)
    assert user["primary_email_address_id"] is None and len(user["email_addresses"]) == 1
    assert primary_email(user) is None


def test_primary_email_none_when_primary_id_matches_nothing() -> None:
    user = make_clerk_user(
        seed="dangling", email="x@example.com", primary_email_address_id="idn_doesnotexist"
    )
    assert primary_email(user) is None


@pytest.mark.parametrize(
    "user",
    [
        {"primary_email_address_id": "idn_1"},
        {"primary_email_address_id": "idn_1", "email_addresses": None},
        {"primary_email_address_id": "idn_1", "email_addresses": ["idn_1"]},
        {"primary_email_address_id": "idn_1", "email_addresses": [{"id": "idn_1", "email_address": None}]},
        {"primary_email_address_id": "idn_1", "email_addresses": [{"id": "idn_1", "email_address": ""}]},
    ],
)
def test_primary_email_tolerates_odd_shapes(user: dict) -> None:
    assert primary_email(user) is None


# -- usernames ------------------------------------------------------------------------------------


def test_clerk_username_wins_over_email() -> None:
    user = make_clerk_user(seed="u", username="ada_l", email="john.doe@example.com")
    assert choose_username(user, primary_email(user)) == ("ada_l", UsernameSource.CLERK)
    local = map_clerk_user(user)
    assert (local.username, local.username_source) == ("ada_l", UsernameSource.CLERK)


def test_blank_clerk_username_falls_back_to_email() -> None:
    user = make_clerk_user(seed="u", username="   ", email="john.doe@example.com")
    assert choose_username(user, primary_email(user)) == ("john_doe", UsernameSource.EMAIL)


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ("John.Doe+tag@x.com", "john_doe"),
        ("john.doe@example.com", "john_doe"),
        ("JOHN@EXAMPLE.COM", "john"),
        ("a+b+c@x.com", "a"),
        ("zoë.o'brien@example.ie", "zo_o_brien"),
        ("josé@example.es", "jos"),
        ("first...last--x@x.com", "first_last_x"),
        ("_under_score_@x.com", "under_score"),
        ("user_99@x.com", "user_99"),
        ('"quoted name"@x.com', "quoted_name"),
    ],
)
def test_email_username_normalises_the_local_part(email: str, expected: str) -> None:
    assert email_username(email) == expected


def test_email_username_is_capped_at_the_length_limit() -> None:
    local = "a" * 29 + ".bcdef" + "g" * 40
    name = email_username(local + "@example.com")
    assert len(name) <= USERNAME_MAX
    assert name == "a" * 29  # cut at 30 ("a"*29 + "_"), trailing separator dropped
    assert len(email_username("x" * 64 + "@example.com")) == USERNAME_MAX


@pytest.mark.parametrize(
    "email", ["@example.com", "+newsletter@example.com", "...@example.com", "李雷@example.cn"]
)
def test_empty_derived_name_uses_the_fallback(email: str) -> None:
    user = make_clerk_user("user_2fallbackAAAAAAAAAAAAAAAAA", email=email)
    local = map_clerk_user(user)
    assert local.values["email"] == email
    assert local.username_source is UsernameSource.FALLBACK
    assert local.username == fallback_username("user_2fallbackAAAAAAAAAAAAAAAAA")
    assert FALLBACK_RE.match(local.username)


def test_phone_only_user_gets_fallback_username() -> None:
    user = make_clerk_user(seed="phone-user", phone_only=True)
    local = map_clerk_user(user)
    assert local.values["email"] is None
    assert local.username_source is UsernameSource.FALLBACK
    assert local.username == fallback_username(user["id"])


def test_fallback_username_is_deterministic_and_distinct_per_id() -> None:
    a, b = "user_2aaaaaaaaaaaaaaaaaaaaaaaaaa", "user_2aaaaaaaaaaaaaaaaaaaaaaaaab"
    assert fallback_username(a) == fallback_username(a)
    assert fallback_username(a) != fallback_username(b)
    assert FALLBACK_RE.match(fallback_username(a)) and FALLBACK_RE.match(fallback_username(b))


def test_disambiguated_username_is_deterministic_distinct_and_capped() -> None:
    a, b = "user_2aaaaaaaaaaaaaaaaaaaaaaaaaa", "user_2aaaaaaaaaaaaaaaaaaaaaaaaab"
    assert disambiguated_username("alice", a) == disambiguated_username("alice", a)
    assert disambiguated_username("alice", a) != disambiguated_username("alice", b)
    assert disambiguated_username("alice", a).startswith("alice_")
    assert disambiguated_username("alice", a) != "alice"
    long_base = "x" * USERNAME_MAX
    assert len(disambiguated_username(long_base, a)) == USERNAME_MAX
    assert disambiguated_username(long_base, a) != disambiguated_username(long_base, b)


@FAST
@given(base=st.text(max_size=80), clerk_id=st.text(min_size=1, max_size=40))
def test_disambiguated_username_property(base: str, clerk_id: str) -> None:
    name = disambiguated_username(base, clerk_id)
    assert len(name) <= USERNAME_MAX
    assert name == disambiguated_username(base, clerk_id)
    assert name.lower() != base.lower()  # it never re-creates the contested name


# -- normalise_username (property) ---------------------------------------------------------


@FAST
@given(st.text())
def test_normalise_username_output_is_safe_capped_and_idempotent(raw: str) -> None:
    name = normalise_username(raw)
    assert USERNAME_RE.match(name)
    assert len(name) <= USERNAME_MAX
    assert normalise_username(name) == name
    assert not name.startswith("_") and not name.endswith("_")


# -- map_clerk_user ------------------------------------------------------------------------------


def test_map_clerk_user_maps_a_realistic_user() -> None:
    user = make_clerk_user(
        "user_2map",
        email="Ada.Lovelace@example.com",
        first_name="Ada",
        last_name="Lovelace",
        image_url="https://img.clerk.com/abc",
        updated_at=1_700_000_000_999,
    )
    assert map_clerk_user(user) == LocalUser(
        key="user_2map",
        version=1_700_000_000_999,
        values={
            "email": "Ada.Lovelace@example.com",
            "firstName": "Ada",
            "lastName": "Lovelace",
            "username": "ada_lovelace",
            "usernameLower": "ada_lovelace",
            "usernameSource": "email",
            "profilePicture": "https://img.clerk.com/abc",
            "banned": False,
            "locked": False,
        },
        username="ada_lovelace",
        username_source=UsernameSource.EMAIL,
    )


def test_map_clerk_user_defaults_missing_names_and_picture_to_empty() -> None:
    user = make_clerk_user("user_2none", first_name=None, last_name=None, image_url=None, updated_at=5)
    user["image_url"] = None
    local = map_clerk_user(user)
    assert [local.values[n] for n in ("firstName", "lastName", "profilePicture")] == ["", "", ""]
    assert local.clerk_updated_at == 5


def test_map_clerk_user_values_use_app_field_names() -> None:
    user = make_clerk_user("user_2fields", email="e@example.com", username="Eve", image_url="https://i/e.png")
    local = map_clerk_user(user)
    assert local.values == {
        "email": "e@example.com",
        "firstName": user["first_name"],
        "lastName": user["last_name"],
        "username": "Eve",
        "usernameLower": "eve",
        "usernameSource": "clerk",
        "profilePicture": "https://i/e.png",
        "banned": False,
        "locked": False,
    }
    assert (local.clerk_id, local.username, local.absent) == ("user_2fields", "Eve", ())


def test_map_clerk_user_keeps_banned_and_locked_as_booleans() -> None:
    user = make_clerk_user("user_2flags", banned=True, locked=True)
    flags = map_clerk_user(user).values
    assert (flags["banned"], flags["locked"]) == (True, True)
    odd = map_clerk_user(dict(user, banned="yes", locked=None)).values  # anything but true is not banned
    assert (odd["banned"], odd["locked"]) == (False, False)


_idn = st.sampled_from(["idn_1", "idn_2", "idn_3"])
_email_obj = st.fixed_dictionaries(
    {"id": _idn, "email_address": st.one_of(st.emails(), st.text(max_size=30), st.none())}
)
_generated_user = st.fixed_dictionaries(
    {
        "id": st.text(min_size=1, max_size=40),
        "updated_at": st.integers(min_value=0, max_value=2**53),
        "username": st.one_of(st.none(), st.text(max_size=40), st.integers()),
        "first_name": st.one_of(st.none(), st.text(max_size=20)),
        "last_name": st.one_of(st.none(), st.text(max_size=20)),
        "image_url": st.one_of(st.none(), st.text(max_size=40)),
        "primary_email_address_id": st.one_of(st.none(), _idn),
        "email_addresses": st.lists(_email_obj, max_size=3),
    }
)


@FAST
@given(_generated_user)
def test_map_clerk_user_always_yields_a_usable_username(user: dict[str, Any]) -> None:
    local = map_clerk_user(user)
    assert local.username is not None and local.username.strip()
    assert local.clerk_id == user["id"]
    assert local.clerk_updated_at == user["updated_at"]
    if local.username_source is UsernameSource.CLERK:
        assert local.username == user["username"].strip()
    else:
        assert USERNAME_RE.match(local.username) and len(local.username) <= USERNAME_MAX
    if local.username_source is UsernameSource.FALLBACK:
        assert local.username == fallback_username(user["id"])


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(), phone_only=st.booleans(), primary_first=st.booleans())
def test_map_clerk_user_on_builder_users_matches_the_primary_email(
    seed: int, phone_only: bool, primary_first: bool
) -> None:
    user = make_clerk_user(
        seed=seed, phone_only=phone_only, primary_first=primary_first, extra_emails=["other@example.org"]
    )
    local = map_clerk_user(user)
    email = local.values["email"]
    if phone_only:
        assert email is None and local.username_source is UsernameSource.FALLBACK
    else:
        assert email != "other@example.org"
        assert email == next(
            e["email_address"] for e in user["email_addresses"] if e["id"] == user["primary_email_address_id"]
        )
        assert local.username == email_username(email)


# -- claim_beats_holder --------------------------------------------------------------------------


def claimant(source: UsernameSource, updated_at: int = 1000, clerk_id: str = "user_m") -> LocalUser:
    return LocalUser(key=clerk_id, version=updated_at, values={}, username="alice", username_source=source)


@pytest.mark.parametrize("holder_source", ["email", "fallback", None])
def test_clerk_name_beats_derived_holder(holder_source: str | None) -> None:
    # even when the derived holder is newer
    assert claim_beats_holder(claimant(UsernameSource.CLERK, 1000), holder_source, 9999, "user_h")


@pytest.mark.parametrize("source", [UsernameSource.EMAIL, UsernameSource.FALLBACK])
def test_derived_name_never_beats_clerk_holder(source: UsernameSource) -> None:
    assert not claim_beats_holder(claimant(source, 9999), "clerk", 1000, "user_h")
    assert not claim_beats_holder(claimant(source, 9999, "user_a"), "clerk", 1000, "user_z")


def test_newer_clerk_name_beats_older_clerk_holder_and_not_the_reverse() -> None:
    assert claim_beats_holder(claimant(UsernameSource.CLERK, 2000), "clerk", 1000, "user_h")
    assert not claim_beats_holder(claimant(UsernameSource.CLERK, 1000), "clerk", 2000, "user_h")


def test_clerk_tie_is_broken_by_id_consistently() -> None:
    a = claimant(UsernameSource.CLERK, 1000, "user_a")
    b = claimant(UsernameSource.CLERK, 1000, "user_b")
    a_takes = claim_beats_holder(a, "clerk", 1000, "user_b")
    b_takes = claim_beats_holder(b, "clerk", 1000, "user_a")
    assert a_takes != b_takes  # exactly one of the two can win, whichever arrives second
    assert a_takes  # the smaller id


@pytest.mark.parametrize("source", [UsernameSource.EMAIL, UsernameSource.FALLBACK])
@pytest.mark.parametrize("holder_source", ["email", "fallback", None])
def test_derived_vs_derived_holder_keeps_the_name(source: UsernameSource, holder_source: str | None) -> None:
    assert not claim_beats_holder(claimant(source, 9999, "user_a"), holder_source, 1, "user_z")
