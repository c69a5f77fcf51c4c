"""A storm of organization and membership histories against two production-started
services sharing one database, with the worked example's map.

Clerk's side is simulated (tests/support/org_history.py): organizations created with their
creator's membership right behind them, renamed, re-planned; members joining, changing
role and title, leaving and rejoining; organizations and users deleted, with or without a
membership deletion for each of their memberships. Svix's side: every delivery once and a
quarter of them twice with the same svix-id (a dashboard resend, re-signed), all shuffled,
16 client threads sending to either instance, each delivery resent until acknowledged.

The end state must equal Clerk's: one document per live organization and per live
membership, with Clerk's final fields, and nothing of a deleted organization or user.
"""

from __future__ import annotations

import os
import random
import time
import uuid

import pytest
from pymongo import MongoClient

from tests.support.clerk_history import RandomChooser, resend_exactly
from tests.support.examples import ORGANIZATION_FIELDS
from tests.support.org_history import generate_org_history, org_state_problems
from tests.support.processes import GunicornService
from tests.support.storm import (
    DUPLICATE_SHARE,
    Storm,
    assert_converged,
    assert_only_retryable_failures,
    figures,
)

pytestmark = pytest.mark.slow

ORG_STORM_EVENTS = int(os.environ.get("ORG_STORM_EVENTS", "1200"))
ORG_STORM_SEED = int(os.environ.get("ORG_STORM_SEED", "7"))


@pytest.mark.timeout(300)
def test_two_instances_converge_under_an_organization_storm(mongo_server):
    uri = mongo_server.uri(f"orgstorm_{uuid.uuid4().hex[:10]}")
    c = RandomChooser(random.Random(ORG_STORM_SEED))
    history = generate_org_history(c, n_orgs=12, n_users=30, n_events=ORG_STORM_EVENTS, t0=1_750_000_000_000)
    deliveries = c.permutation(resend_exactly(c, history.events, int(len(history.events) * DUPLICATE_SHARE)))
    env = {"ORGANIZATION_FIELDS_FILE": str(ORGANIZATION_FIELDS)}
    with GunicornService(uri, workers=2, env=env) as one, GunicornService(uri, workers=2, env=env) as two:
        began = time.monotonic()
        storm = Storm(deliveries, [one.url, two.url]).run()
        elapsed = time.monotonic() - began
        with MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
            db = client.get_default_database()
            problems = org_state_problems(history, db.organizations.find(), db.memberships.find())
            deleted = {t["_id"] for t in db.deleted_organizations.find()}
        print(
            "\norganization storm:",
            figures(
                storm,
                problems,
                events=len(history.events),
                organizations=len(history.organizations),
                memberships=len(history.memberships),
                deleted_organizations=len(history.deleted_organizations),
                deleted_users=len(history.deleted_users),
                rejoins=history.rejoins,
                seconds=round(elapsed, 1),
            ),
        )
    assert_converged(storm, problems)
    assert_only_retryable_failures(storm)
    assert history.deleted_organizations <= deleted
    # The storm did exercise what it is about: repeats, reordering, deletions and rejoins.
    assert {"applied", "duplicate", "stale", "deleted"} <= set(storm.outcomes())
    assert history.rejoins > 0 and history.deleted_organizations and history.deleted_users
