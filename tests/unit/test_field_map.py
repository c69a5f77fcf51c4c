"""The field map (USER_FIELDS_FILE): the built-in map is xClone's, a bad map stops the
service with one line naming the entry, values are coerced to the declared types, and
hostile metadata is stored by the one documented rule and returned intact by sync.

The HTTP tests run on the test database server; the mapping tests are pure functions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import clerk_settings
from tests.e2e.test_gunicorn_e2e import exit_status_of_failed_start
from tests.support.fake_clerk import make_clerk_user
from tests.support.helpers import T0, clerk_user, deliver, new_id, post_sync
from tests.support.processes import GunicornService
from tests.support.signing import TEST_SECRET
from webhook_service import Config, ConfigError
from webhook_service.domain import map_clerk_user
from webhook_service.fieldmap import (
    BOOKKEEPING_FIELDS,
    MAX_DEPTH,
    FieldMapError,
    builtin_path,
    load_field_map,
    parse_field_map,
    storable,
)

ROOT = Path(__file__).resolve().parents[2]


def write_map(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "user_fields.toml"
    path.write_text(text, encoding="utf-8")
    return path


# -- the built-in map -------------------------------------------------------------------


def test_the_built_in_map_is_xclones_users_collection():
    fields = load_field_map()
    assert builtin_path().parent == ROOT / "webhook_service"
    assert fields.identity == "clerkId"
    assert fields.references == ("followers", "following")
    assert fields.username == "username"
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
    local = map_clerk_user(user)
    assert dict(local.values) == {
        "email": None,
        "firstName": "",
        "lastName": "",
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
        '[fields]\nupdatedAt = { from = "updated_at", type = "datetime" }\n',
        "fields.updatedAt: 'updatedAt' is one of the service's own fields",
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
        load_field_map(missing)


def test_every_bookkeeping_field_is_refused_as_a_target():
    for name in BOOKKEEPING_FIELDS:
        with pytest.raises(FieldMapError, match=f"fields.{name}: '{name}' is one of the service's own"):
            parse_field_map({"fields": {name: "first_name"}})


def test_insert_only_fields_are_checked_against_the_map(tmp_path):
    saas = ROOT / "docs/examples/saas-user-fields.toml"
    env = {"MONGODB_URI": "mongodb://127.0.0.1:1/x", "CLERK_WEBHOOK_SIGNING_SECRET": TEST_SECRET}
    assert Config.from_env({**env, "INSERT_ONLY_FIELDS": "firstName"}).user_fields.insert_only == {
        "firstName"
    }
    with pytest.raises(ConfigError, match="^INSERT_ONLY_FIELDS: 'firstName' is not allowed; allowed: avatar"):
        Config.from_env({**env, "USER_FIELDS_FILE": str(saas), "INSERT_ONLY_FIELDS": "firstName"})


def service_env(mongo_uri: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLERK_", "MONGODB_", "USER_FIELDS"))}
    env.update(MONGODB_URI=mongo_uri, CLERK_WEBHOOK_SIGNING_SECRET=TEST_SECRET, **extra)
    return env


def test_init_db_check_with_a_bad_map_fails_with_one_line(tmp_path, mongo_uri):
    path = write_map(tmp_path, '[fields]\nphone = "$phone"\n')
    flask = Path(sys.executable).with_name("flask")
    result = subprocess.run(
        [str(flask), "--app", "wsgi", "init-db", "--check"],
        cwd=ROOT,
        env=service_env(mongo_uri, USER_FIELDS_FILE=str(path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"configuration error: USER_FIELDS_FILE: {path}: fields.phone: unknown source '$phone' "
        "(known: $primary_email, $primary_phone, $username, $full_name)"
    ]


@pytest.mark.timeout(60)
def test_a_bad_map_stops_gunicorn_at_start_with_one_line(tmp_path, mongo_uri):
    path = write_map(tmp_path, '[fields]\n"a.b" = "image_url"\n')
    service = GunicornService(mongo_uri, env={"USER_FIELDS_FILE": str(path)})
    returncode, output = exit_status_of_failed_start(service, "a bad USER_FIELDS_FILE")
    assert returncode != 0
    lines = [line for line in output.splitlines() if "USER_FIELDS_FILE" in line]
    assert lines and all(line.startswith("configuration error: USER_FIELDS_FILE: ") for line in lines), output
    assert "fields.a.b: field name 'a.b' may not contain '.'" in lines[0]
    assert "Traceback" not in output


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
    fields = load_field_map(write_map(tmp_path, TYPED))
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
    fields = load_field_map(write_map(tmp_path, TYPED))
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
    fields = load_field_map(write_map(tmp_path, TYPED))
    first = map_clerk_user(make_clerk_user(new_id()), fields)
    second = map_clerk_user(make_clerk_user(new_id()), fields)
    first.values["tags"].append("mutated")
    assert second.values["tags"] == []


# -- hostile metadata ----------------------------------------------------------------------


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for i in range(levels):
        value = {f"l{i}": value}
    return value


HOSTILE = {
    "dotted-key": {"a.b": 1, "ok": "x"},
    "dollar-key": {"$where": "sleep(1000)", "theme": "dark"},
    "nested-dollar-key": {"ui": {"$set": {"admin": True}}},
    "empty-key": {"": "blank"},
    "too-deep": deep(MAX_DEPTH + 5),
    "huge-integer": {"n": 2**70},
    "list-of-mixed": {"l": [1, "two", None, {"x.y": [3.5, False]}]},
}
PLAIN = {
    "plain-object": {"theme": "dark", "sizes": [1, 2.5], "nested": {"on": True, "none": None}},
    "just-deep-enough": deep(MAX_DEPTH - 2),
    "string": "hello",
    "number": 12,
}
METADATA_MAP = """
identity = "clerkUserId"
[fields]
email = "$primary_email"
prefs = "unsafe_metadata.prefs"
"""


@pytest.fixture
def metadata_app(make_app, fake_clerk, tmp_path):
    return make_app(
        user_fields_file=str(write_map(tmp_path, METADATA_MAP)),
        **clerk_settings(fake_clerk),
    )


@pytest.mark.parametrize(
    ("prefs", "as_text"),
    [*((v, True) for v in HOSTILE.values()), *((v, False) for v in PLAIN.values())],
    ids=[*HOSTILE, *PLAIN],
)
def test_metadata_is_stored_by_the_rule_and_sync_returns_it_intact(metadata_app, fake_clerk, prefs, as_text):
    """A value BSON holds as it is is stored as it is; any other is stored whole as its
    JSON text. Either way the delivery is a 200, the first time, and nothing is dropped."""
    client = metadata_app.test_client()
    db = metadata_app.extensions["webhook_service"].db
    user_id = new_id()
    user = clerk_user(user_id, 1, unsafe_metadata={"prefs": prefs})

    assert deliver(client, "user.created", user) == "applied"

    stored = db.users.find_one({"clerkUserId": user_id})
    assert stored is not None
    if as_text:
        assert stored["prefs"] == json.dumps(prefs, ensure_ascii=False)
        assert json.loads(stored["prefs"]) == prefs
    else:
        assert stored["prefs"] == prefs
    assert storable(prefs) == stored["prefs"]

    fake_clerk.add_user(user)
    response = post_sync(client, user_id)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["prefs"] == stored["prefs"]
