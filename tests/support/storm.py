"""The storm harness, shared by the storms (tests/reliability/test_storm.py, test_faults.py,
test_stepdowns.py, test_org_storm.py): Svix's side (``Storm``: client threads that send
each delivery until it is acknowledged, re-signed at every attempt, to one of several
services at random), and the users' Clerk side and convergence check (``storm_history``,
``check_convergence``).

``STORM_DELIVERIES`` sets the number of deliveries sent (default 4000), duplicates
included: a fifth of them repeat an earlier delivery (25% on top of the distinct ones).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from pymongo import MongoClient

from tests.support.clerk_history import (
    CROWD,
    Event,
    History,
    RandomChooser,
    final_state_problems,
    generate_history,
    resend_exactly,
)
from tests.support.signing import signed_headers

WEBHOOK = "/api/webhooks/clerk"
STORM_DELIVERIES = int(os.environ.get("STORM_DELIVERIES", "4000"))
DUPLICATE_SHARE = 0.25
CLIENT_THREADS = 16
DELETE_PERCENT = 0.7  # per change: about a tenth of the users end up deleted


# -- Clerk's side, and Svix's deliveries of it ------------------------------------------------


def storm_history(
    n_events: int, *, seed: int, delete_percent: float = DELETE_PERCENT, events_per_user: int = 16
) -> tuple[History, list[Event]]:
    """Clerk's history of ``n_events`` changes to ``n_events // 16`` users (at least 10),
    about a tenth of them deleted (CROWD: hot names and addresses among fresh ones), and
    Svix's deliveries of it: every event once, ``DUPLICATE_SHARE`` of them a second time
    with the same svix-id, shuffled."""
    c = RandomChooser(random.Random(seed))
    history = generate_history(
        c,
        CROWD,
        n_users=max(10, n_events // events_per_user),
        n_events=n_events,
        delete_percent=delete_percent,
        label=f"storm:{seed}",
        t0=1_700_000_000_000,
    )
    deliveries = c.permutation(resend_exactly(c, history.events, int(len(history.events) * DUPLICATE_SHARE)))
    return history, deliveries


def events_for(deliveries: int) -> int:
    """How many distinct events make ``deliveries`` sends once duplicates are added."""
    return round(deliveries / (1 + DUPLICATE_SHARE))


# -- Svix's side: the storm -------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    delivery: Event
    instance: int
    started: float
    ended: float
    status: int | None  # None: no HTTP answer (connection refused, reset, timeout)
    error: str | None = None
    outcome: str | None = None  # the service's verdict on a 2xx: applied, stale, duplicate...

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Storm:
    """Send deliveries from ``threads`` client threads to the given services, retrying
    each until a 2xx answer (re-signed, same svix-id), like Svix compressed in time."""

    deliveries: list[Event]
    urls: list[str]
    threads: int = CLIENT_THREADS
    max_attempts: int = 80
    backoff_s: float = 0.05
    max_backoff_s: float = 0.5
    request_timeout_s: float = 20.0
    seed: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    exhausted: list[Event] = field(default_factory=list)
    finished: int = 0
    started: int = 0

    def __post_init__(self) -> None:
        self._next = iter(self.deliveries)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> Storm:
        self._threads = [
            threading.Thread(target=self._client, args=(i,), name=f"storm-{i}", daemon=True)
            for i in range(self.threads)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def join(self, timeout_s: float = 600.0) -> Storm:
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), "storm clients still running"
        return self

    def run(self) -> Storm:
        return self.start().join()

    def wait_started(self, count: int, timeout_s: float = 600.0) -> None:
        """Block until ``count`` deliveries have been taken up by the clients."""
        deadline = time.monotonic() + timeout_s
        while self.started < count and self.finished < len(self.deliveries):
            assert time.monotonic() < deadline, "storm made no progress"
            time.sleep(0.01)

    def _take(self) -> Event | None:
        with self._lock:
            delivery = next(self._next, None)
            if delivery is not None:
                self.started += 1
            return delivery

    def _client(self, index: int) -> None:
        rng = random.Random(f"{self.seed}:{index}")
        clients = [httpx.Client(base_url=url, timeout=self.request_timeout_s) for url in self.urls]
        try:
            while (delivery := self._take()) is not None:
                self._deliver(delivery, clients, rng)
        finally:
            for client in clients:
                client.close()

    def _deliver(self, delivery: Event, clients: list[httpx.Client], rng: random.Random) -> None:
        body = delivery.body
        for attempt in range(self.max_attempts):
            instance = rng.randrange(len(clients))
            headers = signed_headers(body, msg_id=delivery.msg_id)  # Svix re-signs every attempt
            started = time.monotonic()
            try:
                response = clients[instance].post(WEBHOOK, content=body, headers=headers)
                ended = time.monotonic()
                outcome = response.json().get("outcome") if response.is_success else None
                result = Attempt(delivery, instance, started, ended, response.status_code, None, outcome)
            except httpx.HTTPError as exc:
                result = Attempt(delivery, instance, started, time.monotonic(), None, type(exc).__name__)
            self.attempts.append(result)
            if result.ok:
                break
            time.sleep(min(self.backoff_s * 2**attempt, self.max_backoff_s) * rng.uniform(0.5, 1.0))
        else:
            self.exhausted.append(delivery)
        with self._lock:
            self.finished += 1

    # -- figures -----------------------------------------------------------------------

    def failures(self) -> list[Attempt]:
        return [a for a in self.attempts if not a.ok]

    def acknowledged(self) -> list[Event]:
        return [a.delivery for a in self.attempts if a.ok]

    def answers(self) -> dict[str, int]:
        counts = Counter(str(a.status) if a.status is not None else a.error for a in self.attempts)
        return dict(sorted(counts.items()))

    def outcomes(self) -> dict[str, int]:
        return dict(sorted(Counter(a.outcome for a in self.attempts if a.ok).items()))


# -- the database's side: convergence ------------------------------------------------------


def database_state(uri: str) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """All user documents and all tombstones (by clerk id)."""
    with MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
        db = client.get_default_database()
        users = list(db.users.find({}))
        tombstones = {t["_id"]: t for t in db.deleted_users.find({})}
    return users, tombstones


def check_convergence(history: History, uri: str) -> list[str]:
    """Every way the database differs from Clerk's final state, one line each."""
    users, tombstones = database_state(uri)
    return final_state_problems(history, users, tombstones)


def acknowledged_then_lost(history: History, storm: Storm, uri: str) -> list[str]:
    """Deliveries answered 2xx whose effect is not in the database: an update whose
    version (or a newer one) is not stored, a deletion without its tombstone."""
    users, tombstones = database_state(uri)
    stored = {d["clerkId"]: d.get("clerkUpdatedAt", -1) for d in users}
    lost = []
    for event in {e.msg_id: e for e in storm.acknowledged()}.values():
        if event.user_id in tombstones and event.user_id not in stored:
            continue  # deleted: supersedes every version
        if event.type == "user.deleted" or stored.get(event.user_id, -1) < event.version:
            lost.append(f"{event.msg_id} {event.type} {event.user_id}@{event.version}")
    return lost


def compare_with_clerk(
    label: str, history: History, storm: Storm, uri: str, **extra: Any
) -> tuple[list[str], list[str]]:
    """The differences from Clerk and the acknowledged-then-lost deliveries, after printing
    the storm's figures line (``label: deliveries=... wrong_documents=... outcomes=...``)."""
    problems = check_convergence(history, uri)
    lost = acknowledged_then_lost(history, storm, uri)
    print(f"\n{label}:", figures(storm, problems, **extra, acknowledged_then_lost=len(lost)))
    return problems, lost


def figures(storm: Storm, problems: list[str], **extra: Any) -> str:
    items = {
        "deliveries": len(storm.deliveries),
        "attempts": len(storm.attempts),
        "failures": len(storm.failures()),
        "wrong_documents": len(problems),
        **extra,
        "answers": storm.answers(),
        "outcomes": storm.outcomes(),
    }
    return " ".join(f"{k}={v}" for k, v in items.items())


def assert_only_retryable_failures(storm: Storm) -> None:
    """A delivery may be refused only with 503 (database unavailable or a username clash
    still settling: Svix retries) or cut off by a dying worker; never 4xx, never 500."""
    wrong = [a for a in storm.failures() if a.status is not None and a.status != 503]
    assert not wrong, [(a.status, a.delivery.msg_id) for a in wrong[:10]]


def assert_converged(storm: Storm, problems: list[str]) -> None:
    assert not storm.exhausted, f"{len(storm.exhausted)} deliveries never acknowledged"
    assert not problems, f"{len(problems)} differences from Clerk, e.g.:\n" + "\n".join(problems[:20])


