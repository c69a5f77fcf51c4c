"""The index planner, webhook_service/schema.py: plain data in, plain data out, no database.

The existing indexes are given as ``listIndexes`` reports them (``ExistingIndex.from_info``)
and the plan is read back: which of the service's indexes an existing one serves whatever
its name, which are created and under what name, which existing ones are conflicts and
what replaces them. What the store then does with a plan on a real server is tested in
tests/integration/test_xclone_indexes.py, test_cli.py and test_delete_cascade.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bson import SON

from tests.support.examples import SAAS_USER_FIELDS
from tests.support.xclone import XCLONE_CASCADE
from webhook_service.catalog import Declarations, service_schema
from webhook_service.config import delete_cascade_rules
from webhook_service.fieldmap import FieldMap
from webhook_service.resources.users.indexes import user_indexes
from webhook_service.resources.users.mapping import load_user_fields, parse_user_fields
from webhook_service.schema import (
    EVENT_INDEXES,
    MIGRATE_COMMAND,
    Conflict,
    ExistingIndex,
    IndexPlan,
    IndexSpec,
    cascade_indexes,
    plan_indexes,
)

ROOT = Path(__file__).resolve().parents[2]
XCLONE = load_user_fields()  # the built-in map: xClone's users collection
SAAS = load_user_fields(SAAS_USER_FIELDS)


def index(collection: str, name: str, *keys: tuple[str, Any], **options: Any) -> ExistingIndex:
    """An existing index, from what ``listIndexes`` would report for it."""
    return ExistingIndex.from_info(collection, {"v": 2, "key": SON(keys), "name": name, **options})


ID = index("users", "_id_", ("_id", 1))
CASE_INSENSITIVE = {"locale": "en", "strength": 2}


def service_indexes(fields: FieldMap) -> tuple[IndexSpec, ...]:
    """The indexes the user map needs, then the event log's."""
    return (*user_indexes(fields), *EVENT_INDEXES)


def plan(*existing: ExistingIndex, fields: FieldMap = XCLONE, cascade: str = "") -> IndexPlan:
    schema = service_schema(Declarations(fields, delete_cascade_rules(cascade)))
    return plan_indexes([ID, *existing], schema)


def reused(p: IndexPlan) -> dict[str, str]:
    """Each reused spec's name and the name of the existing index that serves it."""
    return {f"{spec.collection}.{spec.name}": f"{ix.collection}.{ix.name}" for spec, ix in p.reused}


def missing_required(p: IndexPlan) -> list[IndexSpec]:
    """What the plan creates that correctness rests on."""
    return [s for s in p.create if s.required]


def created(p: IndexPlan) -> list[str]:
    return [f"{spec.collection}.{spec.name}" for spec in p.create]


def spec(name: str, fields: FieldMap = XCLONE) -> IndexSpec:
    return next(s for s in service_indexes(fields) if s.name == name)


ALL_XCLONE = [
    "users.clerkId_unique",
    "users.usernameLower_unique",
    "users.email",
    "users.followers",
    "users.following",
    "events.expiresAt_ttl",
    "events.receivedAt",
    "events.outcome",
    "events.userId",
]


# -- what the service wants -------------------------------------------------------------


def test_the_built_in_map_wants_these_indexes():
    wanted = [
        (s.collection, s.name, s.keys, s.unique, s.partial, s.ttl_seconds, s.required)
        for s in service_indexes(XCLONE)
    ]
    string = {"usernameLower": {"$type": "string"}}
    assert wanted == [
        ("users", "clerkId_unique", (("clerkId", 1),), True, None, None, True),
        ("users", "usernameLower_unique", (("usernameLower", 1),), True, string, None, True),
        ("users", "email", (("email", 1),), False, None, None, False),
        ("users", "followers", (("followers", 1),), False, None, None, False),
        ("users", "following", (("following", 1),), False, None, None, False),
        ("events", "expiresAt_ttl", (("expiresAt", 1),), False, None, 0, True),
        ("events", "receivedAt", (("receivedAt", -1),), False, None, None, False),
        ("events", "outcome", (("outcome", 1), ("receivedAt", -1)), False, None, None, False),
        ("events", "userId", (("userId", 1), ("receivedAt", -1)), False, None, None, True),
    ]


def test_a_map_without_username_or_references_wants_no_index_for_them():
    """The SaaS example: its own identity field, no username, no follow lists."""
    assert [f"{s.collection}.{s.name}" for s in service_indexes(SAAS)] == [
        "users.clerkUserId_unique",
        "users.email",
        "events.expiresAt_ttl",
        "events.receivedAt",
        "events.outcome",
        "events.userId",
    ]


def test_a_map_without_an_email_wants_no_email_index():
    fields = parse_user_fields({"fields": {"name": "$full_name"}})
    assert [s.name for s in service_indexes(fields) if s.collection == "users"] == ["clerkId_unique"]


def test_options_are_create_index_arguments_and_never_background():
    assert spec("clerkId_unique").options() == {"name": "clerkId_unique", "unique": True}
    partial = spec("usernameLower_unique").options()
    assert partial == {
        "name": "usernameLower_unique",
        "unique": True,
        "partialFilterExpression": {"usernameLower": {"$type": "string"}},
    }
    assert type(partial["partialFilterExpression"]) is dict
    # A TTL of 0 seconds is an option, not a falsy value dropped.
    assert spec("expiresAt_ttl").options() == {"name": "expiresAt_ttl", "expireAfterSeconds": 0}
    assert spec("receivedAt").options() == {"name": "receivedAt"}
    for wanted in service_indexes(XCLONE):
        assert "background" not in wanted.options()


@pytest.mark.parametrize(
    ("name", "described"),
    [
        ("clerkId_unique", "unique clerkId"),
        ("usernameLower_unique", "unique usernameLower"),
        ("email", "email"),
        ("expiresAt_ttl", "expiresAt, expires after 0s"),
        ("receivedAt", "receivedAt -1"),
        ("outcome", "outcome, receivedAt -1"),
    ],
)
def test_a_spec_describes_its_keys_uniqueness_and_expiry(name, described):
    assert spec(name).describe() == described


# -- existing indexes, as listIndexes reports them --------------------------------------------


def test_an_existing_index_is_read_from_list_indexes_output():
    info = SON(
        [
            ("v", 2),
            ("key", SON([("b", -1), ("a", 1)])),
            ("name", "b_-1_a_1"),
            ("unique", True),
            ("sparse", True),
            ("partialFilterExpression", SON([("a", SON([("$exists", True)]))])),
            ("expireAfterSeconds", 60.0),
            ("collation", CASE_INSENSITIVE),
        ]
    )
    read = ExistingIndex.from_info("users", info)
    assert (read.collection, read.name) == ("users", "b_-1_a_1")
    assert read.keys == (("b", -1), ("a", 1))  # the key's order is kept: it is the index
    assert read.fields == ("b", "a")
    assert (read.unique, read.sparse, read.collation) == (True, True, True)
    assert read.partial == {"a": {"$exists": True}}
    assert type(read.partial) is dict and type(read.partial["a"]) is dict
    assert read.ttl_seconds == 60 and type(read.ttl_seconds) is int
    assert read.describe() == "unique sparse partial b -1, a, expires after 60s"


def test_a_plain_index_reads_with_every_option_off():
    read = ExistingIndex.from_info("events", {"key": {"receivedAt": -1}, "name": "receivedAt_-1"})
    assert (read.unique, read.sparse, read.partial, read.ttl_seconds, read.collation) == (
        False,
        False,
        None,
        None,
        False,
    )
    assert read.describe() == "receivedAt -1"


# -- an empty database ------------------------------------------------------------------------


def test_on_an_empty_database_every_index_is_created_under_its_own_name():
    p = plan()
    assert created(p) == ALL_XCLONE
    assert p.reused == [] and p.conflicts == []
    assert [s.name for s in missing_required(p)] == [
        "clerkId_unique",
        "usernameLower_unique",
        "expiresAt_ttl",
        "userId",
    ]


def test_the_id_index_is_never_a_conflict():
    assert plan().conflicts == []


# -- reuse, whatever the name -----------------------------------------------------------------


def test_mongooses_clerkId_1_serves_as_the_identity_index():
    p = plan(index("users", "clerkId_1", ("clerkId", 1), unique=True))
    assert reused(p) == {"users.clerkId_unique": "users.clerkId_1"}
    assert "users.clerkId_unique" not in created(p)
    assert p.conflicts == []


def test_the_service_indexes_under_other_names_are_all_reused_and_nothing_is_created():
    existing = [
        index("users", "by_clerk", ("clerkId", 1), unique=True),
        index("users", "handle_ci", ("usernameLower", 1), unique=True),  # no partial: still unique
        index("users", "email_lookup", ("email", 1), ("createdAt", -1)),  # a prefix serves
        index("users", "fans", ("followers", 1)),
        index("users", "idols", ("following", 1)),
        index("events", "ttl", ("expiresAt", 1), expireAfterSeconds=0),
        index("events", "recent", ("receivedAt", -1)),
        index("events", "by_outcome", ("outcome", 1), ("receivedAt", -1)),
        index("events", "by_user", ("userId", 1), ("receivedAt", -1)),
    ]
    p = plan(*existing)
    assert created(p) == [] and p.conflicts == [] and missing_required(p) == []
    assert reused(p) == {
        "users.clerkId_unique": "users.by_clerk",
        "users.usernameLower_unique": "users.handle_ci",
        "users.email": "users.email_lookup",
        "users.followers": "users.fans",
        "users.following": "users.idols",
        "events.expiresAt_ttl": "events.ttl",
        "events.receivedAt": "events.recent",
        "events.outcome": "events.by_outcome",
        "events.userId": "events.by_user",
    }


def test_a_unique_index_serves_lookups_too():
    p = plan(index("events", "received_u", ("receivedAt", -1), unique=True))
    assert reused(p) == {"events.receivedAt": "events.received_u"}


def test_a_compound_index_serves_only_by_its_first_fields():
    p = plan(index("users", "created_email", ("createdAt", -1), ("email", 1)))
    assert "users.email" not in reused(p)
    assert "users.email" in created(p)


def test_an_index_on_another_collection_serves_nothing_here():
    p = plan(index("posts", "clerkId_1", ("clerkId", 1), unique=True), index("posts", "email", ("email", 1)))
    assert reused(p) == {}
    assert created(p) == ALL_XCLONE


# -- conflicts ----------------------------------------------------------------------------------


def test_xclones_unique_email_1_is_a_conflict_replaced_by_a_non_unique_index_of_its_name():
    email_1 = index("users", "email_1", ("email", 1), unique=True)
    p = plan(
        index("users", "clerkId_1", ("clerkId", 1), unique=True),
        email_1,
        index("users", "username_1", ("username", 1), unique=True),  # kept unique by the service itself
    )
    assert p.conflicts == [
        Conflict(
            email_1,
            "refuses a second user without an email address (phone or web3 sign-in), and one moving "
            "from one user to another when its two events arrive out of order",
            IndexSpec("users", "email_1", (("email", 1),), "lookups"),
        )
    ]
    assert p.conflicts[0].replacement.unique is False
    # Its key serves lookups, but it is not reused, and no second email index is created:
    # --migrate replaces it.
    assert "users.email" not in reused(p) and "users.email" not in created(p)
    assert reused(p) == {"users.clerkId_unique": "users.clerkId_1"}
    assert created(p) == [name for name in ALL_XCLONE if name not in ("users.clerkId_unique", "users.email")]


def test_the_conflicts_warning_names_the_index_what_it_breaks_and_the_fix():
    [conflict] = plan(index("users", "email_1", ("email", 1), unique=True)).conflicts
    assert conflict.warning() == (
        "index users.email_1 (unique email) conflicts with the service: it refuses a second user "
        "without an email address (phone or web3 sign-in), and one moving from one user to another "
        f"when its two events arrive out of order. Fix: {MIGRATE_COMMAND} (replaces it with a "
        "non-unique index email_1 on email)"
    )


@pytest.mark.parametrize("first", ["conflict", "lookup"])
def test_beside_a_conflicting_email_index_a_serving_one_means_nothing_is_created(first):
    """Whichever order listIndexes reports them in. (Whether the serving one is listed as
    reused does depend on that order: only the first index that serves is looked at.)"""
    conflict = index("users", "email_1", ("email", 1), unique=True)
    lookup = index("users", "email_lookup", ("email", 1), ("createdAt", -1))
    p = plan(*((conflict, lookup) if first == "conflict" else (lookup, conflict)))
    assert [c.index.name for c in p.conflicts] == ["email_1"]
    assert "users.email" not in created(p)


@pytest.mark.parametrize(
    ("existing", "fields", "breaks"),
    [
        (
            index("users", "phone_1", ("phone", 1), unique=True),
            SAAS,
            "refuses a second user without a phone number, and one moving from one user to another "
            "when its two events arrive out of order",
        ),
        (
            index("users", "email_1", ("email", 1), unique=True, sparse=True),  # null is indexed
            XCLONE,
            "refuses a second user without an email address (phone or web3 sign-in), and one moving "
            "from one user to another when its two events arrive out of order",
        ),
        (
            index("users", "name_1", ("firstName", 1), ("lastName", 1), unique=True),
            XCLONE,
            "refuses two users with the same firstName, lastName, which Clerk allows",
        ),
        (
            index("users", "stripe_1", ("stripeCustomerId", 1), unique=True),
            XCLONE,
            "refuses a second user without stripeCustomerId, which the service never sets",
        ),
    ],
    ids=["saas-phone", "sparse-email", "names", "app-field"],
)
def test_a_unique_index_that_refuses_what_the_service_writes_is_a_conflict(existing, fields, breaks):
    [conflict] = plan(existing, fields=fields).conflicts
    assert conflict.index == existing
    assert conflict.breaks == breaks
    assert conflict.replacement == IndexSpec("users", existing.name, existing.keys, "lookups")


@pytest.mark.parametrize(
    "existing",
    [
        index("users", "stripe_1", ("stripeCustomerId", 1), unique=True, sparse=True),
        index(
            "users",
            "stripe_1",
            ("stripeCustomerId", 1),
            unique=True,
            partialFilterExpression={"stripeCustomerId": {"$exists": True}},
        ),
        index("users", "clerk_email", ("clerkId", 1), ("email", 1), unique=True),
        index("users", "username_1", ("username", 1), unique=True),
        index("users", "handle", ("usernameLower", 1), unique=True, partialFilterExpression={"x": 1}),
        index("posts", "email_1", ("email", 1), unique=True),  # not the users collection
        index("users", "email_plain", ("email", 1)),  # not unique
    ],
    ids=[
        "sparse-app-field",
        "partial-app-field",
        "with-the-identity",
        "username",
        "usernameLower",
        "another-collection",
        "not-unique",
    ],
)
def test_indexes_that_never_refuse_what_the_service_writes_are_no_conflict(existing):
    assert plan(existing).conflicts == []


# -- an equal index under another name blocks creation (MongoDB's error 85) ---------------------


def test_a_ttl_index_with_another_expiry_is_not_reused_and_blocks_the_services():
    expires = index("events", "expires", ("expiresAt", 1), expireAfterSeconds=3600)
    p = plan(expires)
    assert "events.expiresAt_ttl" not in reused(p)
    assert "events.expiresAt_ttl" not in created(p)
    ttl = spec("expiresAt_ttl")
    assert p.conflicts == [Conflict(expires, "blocks the service's expiresAt, expires after 0s", ttl)]
    assert p.conflicts[0].warning() == (
        "index events.expires (expiresAt, expires after 3600s) conflicts with the service: it blocks "
        f"the service's expiresAt, expires after 0s. Fix: {MIGRATE_COMMAND} (replaces it with a "
        "non-unique index expiresAt_ttl on expiresAt, expires after 0s)"
    )
    # Reported as a conflict, so not as a required index missing.
    assert "expiresAt_ttl" not in [s.name for s in missing_required(p)]


def test_a_plain_index_on_the_ttl_field_blocks_the_ttl_index():
    expires_1 = index("events", "expiresAt_1", ("expiresAt", 1))
    [conflict] = plan(expires_1).conflicts
    assert conflict.index == expires_1 and conflict.replacement == spec("expiresAt_ttl")


def test_a_ttl_index_with_the_same_expiry_under_another_name_is_reused():
    p = plan(index("events", "expire_records", ("expiresAt", 1), expireAfterSeconds=0))
    assert reused(p)["events.expiresAt_ttl"] == "events.expire_records"
    assert p.conflicts == []


def test_a_partial_ttl_index_neither_serves_nor_blocks():
    """Its filter differs from the wanted index's (none), so the two can coexist."""
    p = plan(
        index(
            "events", "expires", ("expiresAt", 1), expireAfterSeconds=0, partialFilterExpression={"type": "x"}
        )
    )
    assert "events.expiresAt_ttl" in created(p)
    assert p.conflicts == []


# -- a free name when the wanted one is taken -------------------------------------------------


def test_a_free_name_is_chosen_when_the_wanted_one_is_taken_by_an_index_that_does_not_serve():
    p = plan(
        index("users", "email", ("emailVerified", 1)),
        index("users", "email_2", ("emailDomain", 1)),
        index("events", "userId", ("userId", 1)),  # not (userId, receivedAt -1)
    )
    by_name = {f"{s.collection}.{s.name}": s for s in p.create}
    assert "users.email" not in by_name and "events.userId" not in by_name
    assert by_name["users.email_3"].keys == (("email", 1),)
    assert by_name["events.userId_2"].keys == (("userId", 1), ("receivedAt", -1))
    assert by_name["events.userId_2"].required
    assert [s.name for s in missing_required(p)] == [
        "clerkId_unique",
        "usernameLower_unique",
        "expiresAt_ttl",
        "userId_2",
    ]


def test_a_name_taken_on_another_collection_is_still_free():
    p = plan(index("posts", "email", ("author", 1)))
    assert "users.email" in created(p)


# -- partial, sparse and collation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("partial", "serves"),
    [
        ({"clerkId": {"$exists": True}}, True),
        ({"clerkId": {"$type": "string"}}, True),
        ({"banned": False}, False),
        ({"clerkId": {"$exists": True}, "banned": False}, False),
    ],
    ids=["exists", "type-string", "another-field", "exists-and-more"],
)
def test_a_partial_unique_identity_index_serves_only_if_it_indexes_every_user(partial, serves):
    p = plan(index("users", "clerkId_1", ("clerkId", 1), unique=True, partialFilterExpression=partial))
    assert ("users.clerkId_unique" in reused(p)) is serves
    assert ("users.clerkId_unique" in created(p)) is not serves
    assert p.conflicts == []


def test_the_username_index_with_the_services_own_filter_under_another_name_is_reused():
    p = plan(
        index(
            "users",
            "handle",
            ("usernameLower", 1),
            unique=True,
            partialFilterExpression={"usernameLower": {"$type": "string"}},
        )
    )
    assert reused(p)["users.usernameLower_unique"] == "users.handle"


def test_a_sparse_unique_identity_index_serves():
    """The service writes the identity on every document: a sparse index skips none of them."""
    p = plan(index("users", "clerkId_1", ("clerkId", 1), unique=True, sparse=True))
    assert reused(p)["users.clerkId_unique"] == "users.clerkId_1"


def test_a_unique_identity_index_with_a_collation_does_not_serve():
    """Under a case-insensitive collation two Clerk ids differing in case would clash."""
    p = plan(index("users", "clerkId_ci", ("clerkId", 1), unique=True, collation=CASE_INSENSITIVE))
    assert "users.clerkId_unique" not in reused(p)
    assert "users.clerkId_unique" in created(p)
    assert p.conflicts == []


@pytest.mark.parametrize(
    "existing",
    [
        index("users", "followers_1", ("followers", 1), sparse=True),
        index("users", "followers_1", ("followers", 1), partialFilterExpression={"followers": {"$size": 1}}),
    ],
    ids=["sparse", "partial"],
)
def test_a_sparse_or_partial_index_does_not_serve_lookups(existing):
    p = plan(existing)
    assert "users.followers" not in reused(p)
    assert "users.followers" in created(p)  # the wanted name is free beside followers_1
    assert p.conflicts == []


def test_a_non_unique_index_with_a_collation_counts_as_serving_lookups():
    """What the planner does today: collation is only looked at for unique indexes, though a
    query without the index's collation cannot use it for strings (reported, not fixed here)."""
    p = plan(index("users", "email_ci", ("email", 1), collation=CASE_INSENSITIVE))
    assert reused(p)["users.email"] == "users.email_ci"


def test_a_required_index_is_served_only_by_its_exact_key_pattern():
    """The store names a required index in its hints by key pattern (``[(clerkId, 1)]``,
    ``[(userId, 1), (receivedAt, -1)]``): an index on the same fields in another direction,
    or with a field after them, would leave such a hint naming no index, and every write
    failing. So those are not reused, and the exact pattern is created beside them."""
    p = plan(
        index("users", "clerkId_-1", ("clerkId", -1), unique=True),
        index("events", "by_user", ("userId", 1), ("receivedAt", 1)),
        index("events", "by_user_type", ("userId", 1), ("receivedAt", -1), ("type", 1)),
    )
    assert "users.clerkId_unique" not in reused(p) and "events.userId" not in reused(p)
    created = {(s.collection, s.keys) for s in p.create}
    assert ("users", (("clerkId", 1),)) in created
    assert ("events", (("userId", 1), ("receivedAt", -1))) in created
    served = plan(index("users", "clerkId_1", ("clerkId", 1.0), unique=True))
    assert reused(served)["users.clerkId_unique"] == "users.clerkId_1"


# -- cascade indexes --------------------------------------------------------------------------


def test_cascade_indexes_are_one_per_field_named_as_mongoose_names_them():
    specs = cascade_indexes(delete_cascade_rules(XCLONE_CASCADE))
    assert [(s.collection, s.name, s.keys, s.unique, s.required) for s in specs] == [
        ("posts", "user_1", (("user", 1),), False, False),
        ("comments", "user_1", (("user", 1),), False, False),
        ("notifications", "from_1", (("from", 1),), False, False),
        ("notifications", "to_1", (("to", 1),), False, False),
        ("posts", "likes_1", (("likes", 1),), False, False),
        ("comments", "likes_1", (("likes", 1),), False, False),
    ]
    assert specs[0].purpose == "finding what a deleted user leaves in posts (DELETE_CASCADE)"


def test_cascade_indexes_are_deduplicated_among_rules_and_against_the_services():
    rules = delete_cascade_rules(
        "posts.user:delete,posts.user:unset,users.followers:pull,users.referrer:unset,users.clerkId:unset"
    )
    service = service_indexes(XCLONE)
    assert [f"{s.collection}.{s.name}" for s in cascade_indexes(rules, service)] == [
        "posts.user_1",
        "users.referrer_1",
    ]
    # Without the service's indexes to compare with, users.followers and users.clerkId get one.
    assert [f"{s.collection}.{s.name}" for s in cascade_indexes(rules)] == [
        "posts.user_1",
        "users.followers_1",
        "users.referrer_1",
        "users.clerkId_1",
    ]


def test_a_dotted_cascade_field_gets_an_index_on_the_path():
    [only] = cascade_indexes(delete_cascade_rules("posts.meta.author:delete"))
    assert (only.collection, only.name, only.keys) == ("posts", "meta.author_1", (("meta.author", 1),))


def test_the_apps_own_index_on_a_cascade_field_is_reused_and_the_rest_created():
    p = plan(
        index("posts", "user_feed", ("user", 1), ("createdAt", -1)),
        index("comments", "user_1", ("user", 1), sparse=True),  # does not serve: skips documents
        cascade="posts.user:delete,comments.user:delete",
    )
    assert reused(p) == {"posts.user_1": "posts.user_feed"}
    assert created(p)[-1:] == ["comments.user_1_2"]
    assert p.conflicts == []  # conflicts are only looked for on users


def test_event_indexes_are_the_same_for_every_map():
    assert service_indexes(XCLONE)[-len(EVENT_INDEXES) :] == EVENT_INDEXES
    assert service_indexes(SAAS)[-len(EVENT_INDEXES) :] == EVENT_INDEXES
