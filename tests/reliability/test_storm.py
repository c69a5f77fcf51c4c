"""A delivery storm against two production-started services sharing one database.

Clerk's side is simulated (tests/support/clerk_history.py, profile ``CROWD``): users are
created, renamed, change avatar, primary email and username (Clerk usernames and
addresses move between users, as they do when one user frees a name another then
takes), and some are deleted. Every change is a webhook. Svix's side too: each
delivery may arrive twice with the same ``svix-id`` (re-signed at send time), order is
shuffled, 16 client threads send to either instance at random, and a delivery answered
with anything but 2xx is sent again until it is acknowledged.

The end state must equal Clerk's: one document per live user with Clerk's fields,
no document and a tombstone for every deleted user. The harness is in
tests/support/storm.py.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support.processes import GunicornService
from tests.support.storm import (
    STORM_DELIVERIES,
    Storm,
    assert_converged,
    assert_only_retryable_failures,
    compare_with_clerk,
    events_for,
    storm_history,
)

pytestmark = pytest.mark.slow



@pytest.mark.timeout(300)
def test_two_instances_converge_under_a_duplicate_shuffled_storm(mongo_server):
    uri = mongo_server.uri(f"storm_{uuid.uuid4().hex[:10]}")
    history, deliveries = storm_history(events_for(STORM_DELIVERIES), seed=1)
    with GunicornService(uri, workers=2) as one, GunicornService(uri, workers=2) as two:
        began = time.monotonic()
        storm = Storm(deliveries, [one.url, two.url]).run()
        elapsed = time.monotonic() - began
        problems, lost = compare_with_clerk(
            "storm",
            history,
            storm,
            uri,
            events=len(history.events),
            users=len(history.users),
            deleted=len(history.deleted_ids()),
            moves=history.moves,
            seconds=round(elapsed, 1),
        )
        assert_converged(storm, problems)
        assert not lost, lost[:20]
        assert_only_retryable_failures(storm)
        # The storm did exercise what it is about: repeats, reordering and deletions.
        assert {"applied", "duplicate", "stale", "deleted"} <= set(storm.outcomes())
