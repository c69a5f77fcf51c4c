"""ORGANIZATION_FIELDS_FILE and the organization and membership mappings, as pure
functions: the worked example reads as the docs say, a bad file is one configuration error
naming the entry, and Clerk's objects map as the map declares."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.examples import ORGANIZATION_FIELDS
from tests.support.signing import TEST_SECRET
from webhook_service.cascade import CascadeRule
from webhook_service.config import Config, ConfigError, load_organization_file
from webhook_service.dev.sample_events import make_clerk_user
from webhook_service.dev.sample_organizations import make_membership, make_organization
from webhook_service.fieldmap import FieldMapError
from webhook_service.resources.memberships.mapping import map_membership, role, unstorable_membership
from webhook_service.resources.organizations.mapping import map_organization

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ORGANIZATION_FIELDS
ENV = {"MONGODB_URI": "mongodb://127.0.0.1:1/x", "CLERK_WEBHOOK_SIGNING_SECRET": TEST_SECRET}


def test_the_worked_example_declares_organizations_and_memberships():
    organizations, memberships = load_organization_file(EXAMPLE)
    assert (organizations.collection, organizations.identity) == ("organizations", "clerkOrgId")
    assert organizations.cascade == (CascadeRule("projects", "orgId", "delete"),)
    assert [f.target for f in organizations.fields.fields] == [
        "name",
        "slug",
        "imageUrl",
        "plan",
        "createdAt",
        "seats",
    ]
    assert organizations.fields.app_owned == {"seats": 5}
    assert organizations.fields.service_timestamps == {"updatedAt"}
    assert memberships is not None
    assert (memberships.collection, memberships.organization, memberships.user) == (
        "memberships",
        "clerkOrgId",
        "clerkUserId",
    )
    assert [f.target for f in memberships.fields.fields] == ["role", "permissions", "title", "joinedAt"]


def test_without_a_memberships_table_only_organizations_are_kept(tmp_path):
    path = tmp_path / "orgs.toml"
    path.write_text('[fields]\nname = "name"\n', encoding="utf-8")
    organizations, memberships = load_organization_file(path)
    assert (organizations.collection, memberships) == ("organizations", None)
    config = Config.from_env({**ENV, "ORGANIZATION_FIELDS_FILE": str(path)})
    assert config.memberships is None and config.organizations == organizations


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('colection = "orgs"\n[fields]\nname = "name"\n', "unknown key 'colection'"),
        (
            'collection = "users"\n[fields]\nname = "name"\n',
            "collection: 'users' is a collection the service",
        ),
        ('collection = "deleted_users"\n[fields]\nname = "name"\n', "already keeps"),
        ('collection = "a$b"\n[fields]\nname = "name"\n', "collection: 'a$b' is not a collection name"),
        ('cascade = "projects.orgId:delete"\n[fields]\nname = "name"\n', "cascade must be a list"),
        ('cascade = ["projects:delete"]\n[fields]\nname = "name"\n', "cascade: rule 'projects:delete'"),
        (
            'cascade = ["events.orgId:delete"]\n[fields]\nname = "name"\n',
            "names a collection the service owns",
        ),
        ('cascade = ["users.orgId:delete"]\n[fields]\nname = "name"\n', "would delete users Clerk keeps"),
        ('[fields]\nslugs = "$slugs"\n', "fields.slugs: unknown source '$slugs' (known: $members_count)"),
        ('[fields]\nclerkOrgId = "id"\n', "fields.clerkOrgId: is the identity field"),
        ("[fields]\n", "[fields] must be a table with at least one field"),
        ('[fields]\nname = "name"\n[memberships]\nrole = "role"\n', "memberships: unknown key 'role'"),
        ('memberships = 5\n[fields]\nname = "name"\n', "[memberships] must be a table"),
        ('[fields]\nname = "name"\n[memberships]\nuser = "clerkOrgId"\n', "'clerkOrgId' is the organization"),
        (
            '[fields]\nname = "name"\n[memberships]\ncollection = "organizations"\n',
            "memberships.collection: 'organizations' is a collection the service already keeps",
        ),
        (
            '[fields]\nname = "name"\n[memberships.fields]\nrole = "$primary_email"\n',
            "memberships.fields.role: unknown source '$primary_email' (known: $role)",
        ),
        (
            '[fields]\nname = "name"\n[memberships.fields]\nclerkUserId = "public_user_data.user_id"\n',
            "memberships.fields.clerkUserId: is an identity field",
        ),
        (
            '[fields]\nname = "name"\n[memberships.fields]\nclerkMembershipKey = "id"\n',
            "'clerkMembershipKey' is one of the service's own fields",
        ),
    ],
)
def test_a_bad_file_is_one_configuration_error_naming_the_entry(tmp_path, text, problem):
    path = tmp_path / "orgs.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        Config.from_env({**ENV, "ORGANIZATION_FIELDS_FILE": str(path)})
    message = str(raised.value)
    assert message.startswith(f"ORGANIZATION_FIELDS_FILE: {path}: ") and "\n" not in message
    assert problem in message


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FieldMapError, match="cannot be read"):
        load_organization_file(tmp_path / "nope.toml")


def test_delete_cascade_may_not_delete_what_the_organization_map_mirrors():
    env = {
        **ENV,
        "ORGANIZATION_FIELDS_FILE": str(EXAMPLE),
        "DELETE_CASCADE": "memberships.clerkUserId:delete",
    }
    with pytest.raises(
        ConfigError, match="DELETE_CASCADE: rule 'memberships.clerkUserId:delete' would delete"
    ):
        Config.from_env(env)
    ok = Config.from_env({**env, "DELETE_CASCADE": "organizations.ownerId:unset"})
    assert ok.declared.user_cascade[-1] == CascadeRule("memberships", "clerkUserId", "delete")


def test_an_organization_maps_through_the_example():
    organizations, _ = load_organization_file(EXAMPLE)
    acme = make_organization("org_2acme", name="Acme", public_metadata={"plan": "pro"}, members_count=3)
    record = map_organization(acme, organizations.fields)
    assert record.key == "org_2acme" and record.version == acme["updated_at"]
    assert record.values["plan"] == "pro" and "seats" not in record.values


def test_a_missing_members_count_leaves_the_stored_one_alone(tmp_path):
    path = tmp_path / "orgs.toml"
    path.write_text('[fields]\nname = "name"\nmembers = "$members_count"\n', encoding="utf-8")
    organizations, _ = load_organization_file(path)
    counted = map_organization(make_organization("org_2a", members_count=4), organizations.fields)
    silent = map_organization(make_organization("org_2a"), organizations.fields)
    assert counted.values["members"] == 4
    assert "members" not in silent.values and "members" not in silent.absent  # neither set nor removed


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("admin", "org:admin"),
        ("basic_member", "org:member"),
        ("org:admin", "org:admin"),
        ("org:billing", "org:billing"),
    ],
)
def test_roles_are_read_in_todays_spelling(given, expected):
    assert role({"role": given}) == expected


def test_a_membership_maps_its_pair_and_never_its_embedded_organization():
    _, memberships = load_organization_file(EXAMPLE)
    assert memberships is not None
    membership = make_membership(make_organization("org_2a"), make_clerk_user("user_2b"), role="basic_member")
    record = map_membership(membership, memberships)
    assert record.key == "org_2a:user_2b"
    assert record.values["clerkOrgId"] == "org_2a" and record.values["clerkUserId"] == "user_2b"
    assert record.values["role"] == "org:member"
    assert not {"organization", "public_user_data", "name"} & set(record.values)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"organization": None}, "no string organization.id"),
        ({"public_user_data": {"first_name": "x"}}, "no string public_user_data.user_id"),
        ({"updated_at": "later"}, "no integer updated_at"),
    ],
)
def test_an_unstorable_membership_from_the_api_is_named(change, reason):
    membership = make_membership(make_organization("org_2a"), make_clerk_user("user_2b"))
    assert unstorable_membership(membership) is None
    assert unstorable_membership({**membership, **change}) == reason
