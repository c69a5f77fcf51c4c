"""The field map (USER_FIELDS_FILE), its pure functions: the built-in map is xClone's, a
bad map is one configuration error naming the entry, and values are coerced to the
declared types. The same map through the routes is in tests/integration/test_field_map.py,
and a bad map stopping the processes at start in tests/e2e/test_field_map.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.examples import SAAS_USER_FIELDS
from tests.support.fake_clerk import make_clerk_user
from tests.support.helpers import T0, new_id
from tests.support.signing import TEST_SECRET
from webhook_service.bookkeeping import BOOKKEEPING_FIELDS, RESERVED_FIELDS
from webhook_service.config import Config, ConfigError
from webhook_service.fieldmap import FieldMapError
from webhook_service.resources.users.mapping import (
    builtin_path,
    load_user_fields,
    map_clerk_user,
    parse_user_fields,
)

ROOT = Path(__file__).resolve().parents[2]


def write_map(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "user_fields.toml"
    path.write_text(text, encoding="utf-8")
    return path


# -- the built-in map -------------------------------------------------------------------


def test_the_built_in_map_is_xclones_users_collection():
    fields = load_user_fields()
    assert builtin_path().parent == ROOT / "webhook_service/resources/users"
    assert fields.identity == ("clerkId",)
    assert fields.references == ("followers", "following")
    assert fields.target_of("$username") == "username"
    assert [f.target for f in fields.sourced] == [
        "email",
        "firstName",
        "lastName",
        "profilePicture",
        "banned",
        "locked",
    ]
    assert fields.app_owned == {
        "bannerImage": "",
        "bio": "",
        "location": "",
        "followers": [],
        "following": [],
    }


def test_the_built_in_map_maps_a_phone_only_user_as_before():
    """No email, no names, no image: the same values the hard-coded mapping gave."""
    user = make_clerk_user(new_id(), phone_only=True, first_name=None, last_name=None, image_url="")
    local = map_clerk_user(user, load_user_fields())
    username = local.username
    assert username is not None and username.startswith("user_")
    assert dict(local.values) == {
        "email": None,
        "firstName": "",
        "lastName": "",
        "username": username,
        "usernameLower": username,
        "usernameSource": "fallback",
        "profilePicture": "",
        "banned": False,
        "locked": False,
    }
    assert local.absent == ()
    assert local.username is not None


# -- a bad map is one line at start -------------------------------------------------------

BAD_MAPS = {
    "unknown-derived-source": ('[fields]\nphone = "$phone"\n', "fields.phone: unknown source '$phone'"),
    "unknown-type": (
        '[fields]\nage = { from = "public_metadata.age", type = "int" }\n',
        "fields.age: unknown type 'int'",
    ),
    "empty-target": ('[fields]\n"" = "image_url"\n', "fields.: a field name must be a non-empty string"),
    "dotted-target": (
        '[fields]\n"profile.image" = "image_url"\n',
        "fields.profile.image: field name 'profile.image' may not contain '.'",
    ),
    "dollar-target": ('[fields]\n"$avatar" = "image_url"\n', "fields.$avatar: field name '$avatar' may not"),
    "identity-mapped-twice": (
        'identity = "clerkUserId"\n[fields]\nclerkUserId = "id"\n',
        "fields.clerkUserId: is the identity field",
    ),
    "bookkeeping-collision": (
        '[fields]\nlastDeliveryId = "id"\n',
        "fields.lastDeliveryId: 'lastDeliveryId' is one of the service's own fields",
    ),
    "bookkeeping-identity": (
        'identity = "_id"\n[fields]\nemail = "$primary_email"\n',
        "identity: '_id' is one",
    ),
    "username-mapped-twice": (
        '[fields]\nhandle = "$username"\nusername = "$username"\n',
        "fields.username: $username is mapped twice",
    ),
    "default-of-the-wrong-type": (
        '[fields]\nrole = { from = "public_metadata.role", type = "string", default = 3 }\n',
        "fields.role: default 3 is not of type string",
    ),
    "app-owned-without-default": ("[fields]\nplan = { insert_only = true }\n", "fields.plan: needs 'from'"),
    "unknown-entry-key": (
        '[fields]\nrole = { form = "public_metadata.role" }\n',
        "fields.role: unknown key 'form'",
    ),
    "no-fields": ('identity = "userId"\n', "[fields] must be a table with at least one field"),
    "not-toml": ("[fields\nemail = 1\n", "not TOML"),
}


@pytest.mark.parametrize(("text", "expected"), BAD_MAPS.values(), ids=BAD_MAPS.keys())
def test_a_bad_map_is_one_config_error_naming_the_entry(tmp_path, text, expected):
    path = write_map(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        Config.from_env(
            {
                "MONGODB_URI": "mongodb://127.0.0.1:1/x",
                "CLERK_WEBHOOK_SIGNING_SECRET": TEST_SECRET,
                "USER_FIELDS_FILE": str(path),
            }
        )
    message = str(raised.value)
    assert message.startswith(f"USER_FIELDS_FILE: {path}: "), message
    assert expected in message, message
    assert "\n" not in message


def test_a_missing_map_file_names_the_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(FieldMapError, match=f"^{missing}: cannot be read"):
        load_user_fields(missing)


def test_every_bookkeeping_field_but_the_timestamps_is_refused_as_a_target():
    for name in RESERVED_FIELDS:
        with pytest.raises(FieldMapError, match=f"fields.{name}: '{name}' is one of the service's own"):
            parse_user_fields({"fields": {name: "first_name"}})
    assert set(BOOKKEEPING_FIELDS) - set(RESERVED_FIELDS) == {"createdAt", "updatedAt"}


def test_a_map_may_take_over_the_service_timestamps():
    """An organization map's ``createdAt = { from = "created_at" }``: the field holds Clerk's
    creation time, and the service no longer writes its own there."""
    fields = parse_user_fields({"fields": {"createdAt": {"from": "created_at", "type": "datetime"}}})
    assert fields.service_timestamps == {"updatedAt"}
    assert fields.public_fields.count("createdAt") == 1
    assert parse_user_fields({"fields": {"email": "$primary_email"}}).service_timestamps == {
        "createdAt",
        "updatedAt",
    }


def test_insert_only_fields_are_checked_against_the_map(tmp_path):
    saas = SAAS_USER_FIELDS
    env = {"MONGODB_URI": "mongodb://127.0.0.1:1/x", "CLERK_WEBHOOK_SIGNING_SECRET": TEST_SECRET}
    assert Config.from_env({**env, "INSERT_ONLY_FIELDS": "firstName"}).user_fields.insert_only == {
        "firstName"
    }
    with pytest.raises(ConfigError, match="^INSERT_ONLY_FIELDS: 'firstName' is not allowed; allowed: avatar"):
        Config.from_env({**env, "USER_FIELDS_FILE": str(saas), "INSERT_ONLY_FIELDS": "firstName"})


# -- values, types and defaults -----------------------------------------------------------

TYPED = """
identity = "userId"
[fields]
role = { from = "public_metadata.role", type = "string", default = "member" }
seats = { from = "public_metadata.seats", type = "integer" }
score = { from = "public_metadata.score", type = "number", default = 0 }
beta = { from = "public_metadata.beta", type = "boolean", default = false }
joinedAt = { from = "created_at", type = "datetime" }
lastSignInAt = { from = "last_sign_in_at", type = "datetime", nullable = true }
tags = { from = "public_metadata.tags", type = "array", default = [] }
address = { from = "private_metadata.address", type = "object" }
external = "external_id"
"""


def test_values_are_coerced_to_their_declared_types(tmp_path):
    fields = load_user_fields(write_map(tmp_path, TYPED))
    user = make_clerk_user(
        new_id(),
        created_at=T0,
        last_sign_in_at=T0 + 1234,
        external_id="crm-42",
        public_metadata={"role": "admin", "seats": 5, "score": 2.5, "beta": True, "tags": ["a", "b"]},
        private_metadata={"address": {"city": "Lyon"}},
    )
    local = map_clerk_user(user, fields)
    assert dict(local.values) == {
        "role": "admin",
        "seats": 5,
        "score": 2.5,
        "beta": True,
        "joinedAt": datetime.fromtimestamp(T0 / 1000, UTC),
        "lastSignInAt": datetime.fromtimestamp((T0 + 1234) / 1000, UTC),
        "tags": ["a", "b"],
        "address": {"city": "Lyon"},
        "external": "crm-42",
    }
    assert local.username is None and local.absent == ()


def test_a_missing_path_or_a_wrong_type_gets_the_default_or_no_field(tmp_path):
    fields = load_user_fields(write_map(tmp_path, TYPED))
    user = make_clerk_user(
        new_id(),
        last_sign_in_at=None,
        public_metadata={"role": 7, "seats": "five", "score": "high", "beta": "yes", "tags": {"a": 1}},
        private_metadata={"address": "somewhere"},
    )
    user["created_at"] = "yesterday"
    local = map_clerk_user(user, fields)
    assert dict(local.values) == {
        "role": "member",
        "score": 0,
        "beta": False,
        "lastSignInAt": None,
        "tags": [],
    }
    assert set(local.absent) == {"seats", "joinedAt", "address", "external"}


def test_defaults_are_fresh_copies_for_every_user(tmp_path):
    fields = load_user_fields(write_map(tmp_path, TYPED))
    first = map_clerk_user(make_clerk_user(new_id()), fields)
    second = map_clerk_user(make_clerk_user(new_id()), fields)
    first.values["tags"].append("mutated")
    assert second.values["tags"] == []
