"""The field map through the routes, on the test database server: hostile metadata is
stored by the one documented rule and returned intact by sync. The map's pure functions
are tested in tests/unit/test_field_map.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import clerk_settings
from tests.support.helpers import clerk_user, deliver, new_id, post_sync
from webhook_service.values import MAX_DEPTH, storable


def write_map(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "user_fields.toml"
    path.write_text(text, encoding="utf-8")
    return path


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
    # Strings that look like JSON stay strings: only the rule's own text is read back.
    "json-looking-string": '{"theme": "dark"}',
    "digits": "1180591620717411303424",
    "hostile-looking-string": '{"a.b":1}',
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
    assert response.get_json()["prefs"] == prefs  # the JSON the browser set, whichever rule stored it
