"""DELETE_CASCADE's rules as parsed from the environment: a malformed rule is a
configuration error naming it, and collections the service or the server owns are refused."""

from __future__ import annotations

import pytest

from tests.support.signing import TEST_SECRET
from tests.support.xclone import XCLONE_CASCADE
from webhook_service.cascade import CascadeRule, parse_cascade_rules
from webhook_service.config import Config, ConfigError, delete_cascade_rules


@pytest.mark.parametrize(
    "rule",
    ["posts.user", "posts:delete", "posts.user:drop", ".user:delete", "posts.:delete", "events.x:delete",
     "users.x:delete", "posts.$x:delete", "posts.us er:delete"],
)
def test_a_malformed_rule_is_a_config_error_naming_it(rule):
    env = {
        "MONGODB_URI": "mongodb://localhost/x",
        "CLERK_WEBHOOK_SIGNING_SECRET": TEST_SECRET,
        "DELETE_CASCADE": f"posts.user:delete,{rule}",
    }
    with pytest.raises(ConfigError) as raised:
        Config.from_env(env)
    assert str(raised.value).startswith("DELETE_CASCADE: rule ") and repr(rule) in str(raised.value)


def test_xclones_value_parses_to_six_rules():
    rules = delete_cascade_rules(XCLONE_CASCADE)
    assert (rules[0].collection, rules[0].field, rules[0].action) == ("posts", "user", "delete")
    assert (rules[4].collection, rules[4].field, rules[4].action) == ("posts", "likes", "pull")
    assert len(rules) == 6


@pytest.mark.parametrize("rule", ["system.profile.x:delete", "deleted_users.x:unset", "users.x:delete"])
def test_rules_on_collections_the_service_or_server_owns_are_refused(rule):
    with pytest.raises(ValueError, match="rule"):
        delete_cascade_rules(rule)


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ("deleted_organizations.x:delete", "owns"),
        ("organizations.parent:delete", "would delete organizations Clerk keeps"),
        ("users.ownerId:delete", "would delete users Clerk keeps"),
        (123, "must be a string"),
    ],
)
def test_an_organization_maps_cascade_list_is_checked_the_same_way(rule, problem):
    owned = ("deleted_users", "deleted_organizations", "events")
    with pytest.raises(ValueError, match=problem):
        parse_cascade_rules(["projects.orgId:delete", rule], owned=owned, kept=("organizations", "users"))
    assert parse_cascade_rules(["projects.orgId:delete"], owned=owned, kept=("organizations", "users")) == (
        CascadeRule("projects", "orgId", "delete"),
    )


def test_allowed_rules_on_users_and_dotted_fields_parse():
    rules = delete_cascade_rules(" users.referrer:unset , ,posts.meta.author:delete,systemlogs.user:delete")
    assert rules == (
        CascadeRule("users", "referrer", "unset"),
        CascadeRule("posts", "meta.author", "delete"),
        CascadeRule("systemlogs", "user", "delete"),
    )
    env = {"MONGODB_URI": "mongodb://localhost/x", "CLERK_WEBHOOK_SIGNING_SECRET": TEST_SECRET}
    config = Config.from_env(dict(env, DELETE_CASCADE=XCLONE_CASCADE))
    assert config.delete_cascade == delete_cascade_rules(XCLONE_CASCADE)
