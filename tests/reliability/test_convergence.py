"""Convergence: whatever order Svix delivers a history in, the users collection ends up
equal to Clerk's final state.

A generated history (tests/support/clerk_history.py, profile ``SMALL``) is a global Clerk
timeline for 3-6 users: each is created, then updated (names, image, emails
added/removed/made primary, Clerk username set, changed or cleared) and sometimes
deleted. Clerk's uniqueness rules are modelled: at every instant a username
(case-insensitively) and an email address belong to at most one user, so a name or
address can only *move* to another user after its holder released it. Every Clerk state
change is one event; ``updated_at`` comes from one global clock, so it strictly
increases per user.

The deliveries are the events in any order, some redelivered with the same svix-id (as a
Svix resend does, freshly signed), and anything answered with a non-2xx redelivered
later until it gets a 2xx (bounded, as Svix's retry schedule is). They go through the
real route (Flask test client of ``create_app``) into the real test database, emptied
before each example (indexes kept). Right after a user's document first appears, follow
edges between it and the other existing documents are written straight into the
database, as the app would.

Afterwards, for every user: deleted in Clerk -> no document and a tombstone; otherwise
the document carries Clerk's final clerkId, primary email, names, image, version and
delivery id; its username is the final Clerk username when Clerk set one, else the
derived base (email local part, or the ``user_<hash>`` fallback), possibly with its
deterministic suffix when another user held or derived that name; usernames are unique
case-insensitively; follow lists hold exactly the edges between surviving users
(app-owned data survives Clerk updates, and nothing points at a deleted user); and the
event log counts every delivery.

Knobs: RELIABILITY_EXAMPLES (default 25) sets the hypothesis example count, e.g.
``RELIABILITY_EXAMPLES=500 pytest tests/reliability/test_convergence.py`` for a long run;
CONVERGENCE_SEED (default 4242) seeds the two deterministic ~500-delivery tests (one long
history; many short ones). The counts of cases and deliveries appear under "reliability
figures" at the end of the run (and are printed as they happen, visible with ``-s``).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.clerk_history import (
    SMALL,
    Chooser,
    DataChooser,
    Event,
    History,
    RandomChooser,
    final_state_problems,
    generate_history,
    jittered,
    resend_some,
)
from tests.support.fake_clerk import DEFAULT_SECRET_KEY
from tests.support.hygiene import signing_secret_forms, summary_line, watch
from tests.support.signing import TEST_SECRET, signed_headers

URL = "/api/webhooks/clerk"
EXAMPLES = int(os.environ.get("RELIABILITY_EXAMPLES", "25"))
SEED = int(os.environ.get("CONVERGENCE_SEED", "4242"))
MAX_ATTEMPTS = 8  # Svix: an immediate try and seven retries
RESEND_PERCENT = 30  # events delivered more than once (one or two more times)


def small_history(c: Chooser, n_users: int, n_events: int, delete_percent: float) -> History:
    return generate_history(
        c, SMALL, n_users=n_users, n_events=n_events, delete_percent=delete_percent, label="convergence"
    )


def schedule(c: Chooser, events: list[Event], mode: str | None = None) -> list[Event]:
    """Every event at least once, about a third more than once; either in any order at all,
    or as Svix tends to, roughly in Clerk's order with some deliveries late."""
    copies = resend_some(c, events, RESEND_PERCENT, most=2)
    if (mode or c.choice(["shuffled", "jittered"])) == "shuffled":
        return c.permutation(copies)
    return jittered(c, copies)


# -- delivering ------------------------------------------------------------------------------


@dataclass
class Figures:
    cases: int = 0
    events: int = 0
    deliveries: int = 0
    retries: int = 0
    moves: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)

    def saw_every_outcome(self) -> bool:
        return all(self.outcomes[o] > 0 for o in ("applied", "stale", "duplicate", "deleted"))


@contextmanager
def watched_app(make_app) -> Iterator[tuple[Flask, Any]]:
    """An app with a production-shaped config (the Clerk secret key is set, so a leak of it
    would show), and the hygiene watch over its answers, asserted clean on the way out."""
    app = make_app(clerk_secret_key=DEFAULT_SECRET_KEY, clerk_api_url="http://127.0.0.1:9")
    with watch([*signing_secret_forms(TEST_SECRET), DEFAULT_SECRET_KEY]) as hygiene:
        yield app, hygiene
        hygiene.assert_clean()


def deliver_all(
    app, c: Chooser, history: History, hygiene, figures: Figures, mode: str | None = None
) -> tuple[Counter[str], set]:
    """Deliver the schedule, redelivering non-2xx answers; seed follow edges as docs appear."""
    client = app.test_client()
    db = app.extensions["webhook_service"].db
    pending = deque(schedule(c, history.events, mode))
    delivered: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    seeded: set[str] = set()
    edges: set[tuple[str, str]] = set()  # (follower, followee) clerk ids
    while pending:
        sent = pending.popleft()
        resp = client.post(URL, data=sent.body, headers=signed_headers(sent.body, msg_id=sent.msg_id))
        hygiene.saw(resp, payload=sent.body)
        delivered[sent.msg_id] += 1
        figures.deliveries += 1
        figures.statuses[resp.status_code] += 1
        if not 200 <= resp.status_code < 300:
            failures[sent.msg_id] += 1
            last = f"{resp.status_code} {resp.get_data(as_text=True)}"
            assert failures[sent.msg_id] < MAX_ATTEMPTS, (
                f"{sent.type} {sent.msg_id} never got a 2xx; last: {last}"
            )
            figures.retries += 1
            pending.insert(c.integer(0, len(pending)), sent)
            continue
        figures.outcomes[resp.get_json()["outcome"]] += 1
        if sent.user_id not in seeded and sent.type != "user.deleted":
            doc = db.users.find_one({"clerkId": sent.user_id}, {"_id": 1})
            if doc is not None:
                seeded.add(sent.user_id)
                seed_follow_edges(db, c, sent.user_id, doc["_id"], edges)
    return delivered, edges


def seed_follow_edges(db, c: Chooser, uid: str, oid, edges: set[tuple[str, str]]) -> None:
    """Follow edges between a newly appeared user and the others present, as the app writes them."""
    others = db.users.find({"clerkId": {"$ne": uid}}, {"_id": 1, "clerkId": 1}).sort("clerkId", 1)
    for other in others:
        if c.chance(40):
            db.users.update_one({"_id": oid}, {"$addToSet": {"following": other["_id"]}})
            db.users.update_one({"_id": other["_id"]}, {"$addToSet": {"followers": oid}})
            edges.add((uid, other["clerkId"]))
        if c.chance(40):
            db.users.update_one({"_id": other["_id"]}, {"$addToSet": {"following": oid}})
            db.users.update_one({"_id": oid}, {"$addToSet": {"followers": other["_id"]}})
            edges.add((other["clerkId"], uid))


# -- the property ----------------------------------------------------------------------------


def assert_converged(app, history: History, delivered: Counter[str], edges: set[tuple[str, str]]) -> None:
    services = app.extensions["webhook_service"]
    db = services.db
    docs = {d["clerkId"]: d for d in db.users.find({})}
    tombstones = {t["_id"] for t in db.deleted_users.find({}, {"_id": 1})}
    problems = final_state_problems(history, docs.values(), tombstones)
    assert not problems, f"{len(problems)} differences from Clerk:\n" + "\n".join(problems[:20])

    alive = {u.id for u in history.live()}
    oid_of = {uid: doc["_id"] for uid, doc in docs.items()}
    for uid, doc in sorted(docs.items()):
        following = {oid_of[b] for a, b in edges if a == uid and b in alive}
        followers = {oid_of[a] for a, b in edges if b == uid and a in alive}
        assert sorted(doc["following"]) == sorted(following), f"{uid} following"
        assert sorted(doc["followers"]) == sorted(followers), f"{uid} followers"

    services.events.flush()
    records = {r["_id"]: r["attempts"] for r in db.events.find({}, {"attempts": 1})}
    assert records == dict(delivered), "the event log must count every delivery"


def empty_database(app) -> None:
    """Start an example from nothing, keeping the indexes (the store created them once)."""
    services = app.extensions["webhook_service"]
    services.events.flush()
    for name in ("users", "deleted_users", "events"):
        services.db[name].delete_many({})


def run_case(app, c: Chooser, history: History, hygiene, figures: Figures, mode: str | None = None) -> None:
    delivered, edges = deliver_all(app, c, history, hygiene, figures, mode)
    assert_converged(app, history, delivered, edges)
    figures.cases += 1
    figures.events += len(history.events)
    figures.moves += history.moves


# Generation, then up to Hypothesis's five minutes of shrinking should a case fail.
@pytest.mark.timeout(EXAMPLES * 3 + 600)
def test_any_delivery_order_converges_to_clerks_final_state(make_app, pytestconfig):
    figures = Figures()
    started = time.perf_counter()
    with watched_app(make_app) as (app, hygiene):

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(st.data())
        def one(data):
            c = DataChooser(data)
            n_users = c.integer(3, 6)
            history = small_history(c, n_users, c.integer(n_users, n_users * 8), delete_percent=10)
            empty_database(app)
            run_case(app, c, history, hygiene, figures)

        one()
    assert figures.cases >= 1
    summary_line(
        pytestconfig,
        f"convergence (hypothesis, max_examples={EXAMPLES}): {figures.cases} cases, "
        f"{figures.events} events, {figures.moves} name/address moves, {figures.deliveries} deliveries "
        f"({figures.retries} retried), in {time.perf_counter() - started:.1f}s; "
        f"outcomes {dict(figures.outcomes)}",
    )


def test_fixed_seed_long_history_of_about_500_deliveries_converges(make_app, pytestconfig):
    """One long history: long version chains per user, many moves, few deletes."""
    figures = Figures()
    started = time.perf_counter()
    c = RandomChooser(random.Random(SEED))
    history = small_history(c, n_users=6, n_events=360, delete_percent=0.5)
    with watched_app(make_app) as (app, hygiene):
        run_case(app, c, history, hygiene, figures, mode="jittered")
    # The history is rich enough to mean something: moves, every outcome, deletes.
    assert figures.deliveries >= 450
    assert history.moves >= 10
    assert figures.saw_every_outcome(), figures.outcomes
    summary_line(
        pytestconfig,
        f"convergence (seed {SEED}): {len(history.events)} events, {history.moves} name/address moves, "
        f"{figures.deliveries} deliveries ({figures.retries} retried) for {len(history.users)} users, "
        f"in {time.perf_counter() - started:.1f}s; outcomes {dict(figures.outcomes)}",
    )


def test_fixed_seed_many_short_histories_of_about_500_deliveries_converge(make_app, pytestconfig):
    """Many short histories, so many final states are checked: a wrong tie-break between
    two users claiming one name shows up in the end state far more often than in one
    long history, where later events paper over it."""
    figures = Figures()
    started = time.perf_counter()
    c = RandomChooser(random.Random(SEED + 1))
    users = 0
    with watched_app(make_app) as (app, hygiene):
        while figures.deliveries < 500:
            n_users = c.integer(3, 6)
            history = small_history(c, n_users, n_users * 5, delete_percent=8)
            empty_database(app)
            run_case(app, c, history, hygiene, figures)
            users += len(history.users)
    assert figures.moves >= 10
    assert figures.saw_every_outcome(), figures.outcomes
    summary_line(
        pytestconfig,
        f"convergence (seed {SEED + 1}, short histories): {figures.cases} histories, {users} users, "
        f"{figures.events} events, {figures.moves} name/address moves, {figures.deliveries} deliveries "
        f"({figures.retries} retried), in {time.perf_counter() - started:.1f}s; "
        f"outcomes {dict(figures.outcomes)}",
    )


def test_a_document_that_differs_from_clerk_fails_the_check(make_app):
    """The check can fail: a converged history, then one Clerk-owned field changed behind
    the service's back, or one follow edge dropped."""
    c = RandomChooser(random.Random(SEED + 2))
    history = small_history(c, n_users=4, n_events=16, delete_percent=0)
    with watched_app(make_app) as (app, hygiene):
        delivered, edges = deliver_all(app, c, history, hygiene, Figures(), mode="shuffled")
    assert_converged(app, history, delivered, edges)
    users = app.extensions["webhook_service"].db.users
    uid = history.live()[0].id
    users.update_one({"clerkId": uid}, {"$set": {"firstName": "Mallory"}})
    with pytest.raises(AssertionError, match=f"{uid}: firstName is 'Mallory'"):
        assert_converged(app, history, delivered, edges)
    users.update_one({"clerkId": uid}, {"$set": {"firstName": history.users[uid].first_name or ""}})
    assert_converged(app, history, delivered, edges)
    users.update_many({}, {"$set": {"following": [], "followers": []}})
    with pytest.raises(AssertionError, match="following|followers"):
        assert_converged(app, history, delivered, edges | {(uid, history.live()[1].id)})
