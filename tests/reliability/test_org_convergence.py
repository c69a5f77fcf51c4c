"""Convergence for organizations and memberships: whatever order Svix delivers a history
in, duplicated and resent, the app's organizations and memberships end up equal to
Clerk's final state. Hypothesis draws the histories (tests/support/org_history.py) and the
orders; a failing one shrinks to a small history. Through the real route (Flask's test
client) into the real test database.

RELIABILITY_EXAMPLES (default 25) sets the number of examples.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.clerk_history import DataChooser, RandomChooser, jittered, resend_some
from tests.support.examples import ORGANIZATION_FIELDS
from tests.support.org_history import generate_org_history, org_state_problems
from tests.support.signing import signed_headers

EXAMPLES = int(os.environ.get("RELIABILITY_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def org_app(mongo_server):
    from tests.conftest import make_config
    from webhook_service.app import create_app

    uri = mongo_server.uri("org_convergence")
    app = create_app(make_config(uri, organization_fields_file=str(ORGANIZATION_FIELDS)))
    yield app
    app.extensions["webhook_service"].events.close()
    app.extensions["webhook_service"].db.client.drop_database("org_convergence")


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_any_delivery_order_converges_to_clerks_state(org_app, data):
    db = org_app.extensions["webhook_service"].db
    for name in (
        "organizations",
        "memberships",
        "deleted_organizations",
        "deleted_memberships",
        "deleted_users",
    ):
        db[name].delete_many({})
    c = DataChooser(data)
    history = generate_org_history(
        c, n_orgs=c.integer(1, 3), n_users=c.integer(2, 4), n_events=c.integer(5, 40), t0=1_750_000_000_000
    )
    copies = resend_some(c, history.events, 30, most=2)
    deliveries = c.permutation(copies) if c.chance(50) else jittered(c, copies)
    client = org_app.test_client()
    for event in deliveries:
        response = client.post(
            "/api/webhooks/clerk", data=event.body, headers=signed_headers(event.body, msg_id=event.msg_id)
        )
        assert response.status_code == 200, (event.type, response.get_json())
    problems = org_state_problems(history, db.organizations.find(), db.memberships.find())
    assert not problems, "\n".join(problems)


def test_the_check_reports_every_way_the_documents_differ():
    """The check itself can fail: right documents pass, and each kind of wrong one is named."""
    history = generate_org_history(
        RandomChooser(random.Random(7)), n_orgs=3, n_users=4, n_events=60, t0=1_750_000_000_000
    )
    assert len(history.organizations) >= 2 and len(history.memberships) >= 2
    orgs = [
        {
            "clerkOrgId": org_id,
            "name": o["name"],
            "slug": o["slug"],
            "plan": o["public_metadata"].get("plan", "free"),
            "clerkUpdatedAt": o["updated_at"],
        }
        for org_id, o in history.organizations.items()
    ]
    members = [
        {
            "clerkOrgId": org_id,
            "clerkUserId": user_id,
            "role": m["role"],
            "title": m["public_metadata"].get("title", ""),
            "clerkUpdatedAt": m["updated_at"],
        }
        for (org_id, user_id), m in history.memberships.items()
    ]
    assert org_state_problems(history, orgs, members) == []

    missing, renamed = orgs[0], dict(orgs[1], name="Someone Else")
    extra = dict(members[0], clerkOrgId="org_gone")
    demoted = dict(members[1], role="org:nobody")
    problems = org_state_problems(
        history, [renamed, *orgs[2:]], [members[0], members[0], demoted, *members[2:], extra]
    )
    member_key = (members[1]["clerkOrgId"], members[1]["clerkUserId"])
    assert problems[0] == f"membership {(members[0]['clerkOrgId'], members[0]['clerkUserId'])} stored twice"
    assert f"organization {missing['clerkOrgId']} missing" in problems
    assert any(
        p.startswith(f"organization {renamed['clerkOrgId']}: ") and "Someone Else" in p for p in problems
    )
    assert any(p.startswith(f"membership {member_key}: ") and "org:nobody" in p for p in problems)
    assert f"membership {('org_gone', extra['clerkUserId'])} should not exist" in problems
    assert len(problems) == 5, problems
