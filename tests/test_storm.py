"""A delivery storm against two production-started services sharing one database.

Clerk's side is simulated: users are created, renamed, change avatar, primary email
and username (Clerk usernames move between users, as they do when one user frees a
name another then takes), and some are deleted. Every change is a webhook. Svix's
side too: each delivery may arrive twice with the same ``svix-id`` (re-signed at send
time), order is shuffled, 16 client threads send to either instance at random, and a
delivery answered with anything but 2xx is sent again until it is acknowledged.

The end state must equal Clerk's: one document per live user with Clerk's fields,
no document and a tombstone for every deleted user. The helpers here (``Clerk``,
``Storm``, ``check_convergence``) are reused by test_faults.py.

``STORM_DELIVERIES`` sets the number of deliveries sent (default 5000), duplicates
included: a fifth of them repeat an earlier delivery (25% on top of the distinct ones).
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from tests.helpers import USER_DOC_FIELDS
from tests.processes import GunicornService
from tests.signing import signed_headers
from webhook_service.domain import disambiguated_username, fallback_username
from webhook_service.sample_events import (
    clerk_id,
    make_clerk_user,
    make_deleted_data,
    make_webhook_event,
)

pytestmark = pytest.mark.slow

WEBHOOK = "/api/webhooks/clerk"
STORM_DELIVERIES = int(os.environ.get("STORM_DELIVERIES", "5000"))
DUPLICATE_SHARE = 0.25
CLIENT_THREADS = 16

# Names that several users hold over time, as Clerk usernames or email local parts.
_HOT_NAMES = ("ada", "grace", "alan", "linus", "margaret", "ken", "barbara", "dennis", "edsger", "frances")
_FIRST = ("Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Edsger", "Zoë", "José")
_LAST = ("Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Thompson", "Liskov", "O'Brien", "Núñez")
_DOMAINS = ("example.com", "mail.example.org", "work.example.net")


# -- Clerk's side: user histories ---------------------------------------------------------


@dataclass
class ClerkUser:
    """One user as Clerk holds it; ``data()`` is the full User object of its current version."""

    id: str
    created_at: int
    updated_at: int
    first_name: str | None
    last_name: str | None
    email: str | None  # primary address, or None for a phone-only user
    extra_emails: tuple[str, ...] = ()
    username: str | None = None
    image_url: str | None = None
    deleted: bool = False

    def data(self) -> dict[str, Any]:
        return make_clerk_user(
            self.id,
            email=self.email,
            phone_only=self.email is None,
            username=self.username,
            first_name=self.first_name,
            last_name=self.last_name,
            image_url=self.image_url,
            created_at=self.created_at,
            updated_at=self.updated_at,
            extra_emails=self.extra_emails,
            primary_first=len(self.extra_emails) % 2 == 0,  # the primary is not always [0]
        )


@dataclass(frozen=True)
class Event:
    """One webhook Clerk sends: the user it concerns and the version it carries."""

    index: int
    type: str
    user_id: str
    version: int  # Clerk's updated_at; for user.deleted the time of deletion
    body: str


@dataclass(frozen=True)
class Delivery:
    """One HTTP delivery Svix makes (a duplicate shares ``svix_id`` and ``body``)."""

    svix_id: str
    event: Event


class Clerk:
    """Simulated Clerk: generates events for ``n_events`` changes to a population of users.

    Clerk usernames are unique among live users at every instant, so a name moves
    only after its holder gave it up; email addresses are not unique.
    """

    def __init__(self, n_events: int, *, seed: int = 0, delete_share: float = 0.1) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.users: dict[str, ClerkUser] = {}
        self.events: list[Event] = []
        self._held: dict[str, str] = {}  # username -> holder id
        self._clock = 1_700_000_000_000
        n_users = max(10, n_events // 16)
        to_delete = int(n_users * delete_share)
        for i in range(n_users):
            self._create(i)
        alive = list(self.users)
        while len(self.events) < n_events:
            remaining = n_events - len(self.events)
            if to_delete and self.rng.random() < to_delete / remaining:
                user = self.users[alive.pop(self.rng.randrange(len(alive)))]
                self._delete(user)
                to_delete -= 1
            else:
                self._change(self.users[self.rng.choice(alive)])

    # -- the changes users make --------------------------------------------------------

    def _tick(self) -> int:
        self._clock += self.rng.randint(1, 40)
        return self._clock

    def _new_email(self, first: str | None, last: str | None) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.3:  # a hot local part: derived usernames clash
            local = rng.choice(_HOT_NAMES)
        elif roll < 0.45:
            local = f"{rng.choice(_HOT_NAMES)}+{rng.choice(('news', 'work', 'x'))}"
        else:
            local = ".".join(re.sub("[^a-z]", "", p.lower()) for p in (first, last) if p) or "user"
            local = f"{local}.{rng.getrandbits(24):06x}"
        return f"{local}@{rng.choice(_DOMAINS)}"

    def _free_username(self, user: ClerkUser) -> str | None:
        rng = self.rng
        if rng.random() < 0.5:
            candidates = [n for n in _HOT_NAMES if self._held.get(n) in (None, user.id)]
            if candidates:
                return rng.choice(candidates)
        return f"{rng.choice(_HOT_NAMES)}_{rng.getrandbits(20):05x}"

    def _set_username(self, user: ClerkUser, name: str | None) -> None:
        if user.username is not None:
            self._held.pop(user.username, None)
        if name is not None:
            self._held[name] = user.id
        user.username = name

    def _create(self, i: int) -> None:
        rng = self.rng
        now = self._tick()
        first = rng.choice(_FIRST) if rng.random() < 0.9 else None
        last = rng.choice(_LAST) if rng.random() < 0.8 else None
        user = ClerkUser(
            id=clerk_id("user", f"storm:{self.seed}:{i}", timestamp_ms=now),
            created_at=now,
            updated_at=now,
            first_name=first,
            last_name=last,
            email=None if rng.random() < 0.05 else self._new_email(first, last),
        )
        self.users[user.id] = user
        if user.email is not None and rng.random() < 0.4:
            self._set_username(user, self._free_username(user))
        self._emit("user.created", user)

    def _change(self, user: ClerkUser) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.25:
            user.first_name = rng.choice(_FIRST)
            user.last_name = rng.choice(_LAST) if rng.random() < 0.9 else None
        elif roll < 0.4:
            user.image_url = f"https://img.clerk.com/{uuid.UUID(int=rng.getrandbits(128)).hex}.png"
        elif roll < 0.6 and user.email is not None:
            user.email = self._new_email(user.first_name, user.last_name)
        elif roll < 0.65 and user.email is not None:
            user.extra_emails = (*user.extra_emails, self._new_email(None, None))[-2:]
        elif roll < 0.9:
            self._set_username(user, self._free_username(user))
        else:
            self._set_username(user, None)
        user.updated_at = self._tick()
        self._emit("user.updated", user)

    def _delete(self, user: ClerkUser) -> None:
        self._set_username(user, None)
        user.deleted = True
        self.events.append(
            self._event("user.deleted", user.id, self._tick(), make_deleted_data(user.id))
        )

    def _emit(self, event_type: str, user: ClerkUser) -> None:
        self.events.append(self._event(event_type, user.id, user.updated_at, user.data()))

    def _event(self, event_type: str, user_id: str, version: int, data: dict[str, Any]) -> Event:
        body = json.dumps(make_webhook_event(event_type, data, timestamp_ms=version))
        return Event(len(self.events), event_type, user_id, version, body)

    # -- Svix's side -------------------------------------------------------------------

    def deliveries(self, duplicate_share: float = DUPLICATE_SHARE) -> list[Delivery]:
        """Every event once with its own svix-id, a share of them twice, shuffled."""
        firsts = [Delivery(f"msg_{self.rng.getrandbits(128):032x}"[:31], e) for e in self.events]
        again = self.rng.sample(firsts, int(len(firsts) * duplicate_share))
        sends = firsts + again
        self.rng.shuffle(sends)
        return sends

    def live_users(self) -> list[ClerkUser]:
        return [u for u in self.users.values() if not u.deleted]

    def deleted_ids(self) -> set[str]:
        return {u.id for u in self.users.values() if u.deleted}

    def contested_bases(self) -> set[str]:
        """Usernames that more than one user held or derived at some point: a derived name
        on one of these may legitimately be the disambiguated one (the holder kept it)."""
        claims: dict[str, set[str]] = {}
        for user in self.users.values():
            claims.setdefault(user.id, set())
        for event in self.events:
            if event.type == "user.deleted":
                continue
            data = json.loads(event.body)["data"]
            name = data.get("username") or (
                expected_email_username(_primary(data)) if _primary(data) else None
            )
            if name:
                claims[event.user_id].add(name.lower())
        holders: Counter[str] = Counter()
        for names in claims.values():
            holders.update(names)
        return {name for name, count in holders.items() if count > 1}


def events_for(deliveries: int) -> int:
    """How many distinct events make ``deliveries`` sends once duplicates are added."""
    return round(deliveries / (1 + DUPLICATE_SHARE))


def _primary(data: dict[str, Any]) -> str | None:
    for address in data.get("email_addresses", []):
        if address["id"] == data.get("primary_email_address_id"):
            return address["email_address"]
    return None


def expected_email_username(email: str) -> str:
    """The derived username for the addresses generated here (local part, no +tag, . -> _)."""
    return email.split("@")[0].split("+")[0].lower().replace(".", "_")


# -- Svix's side: the storm -------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    delivery: Delivery
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

    deliveries: list[Delivery]
    urls: list[str]
    threads: int = CLIENT_THREADS
    max_attempts: int = 80
    backoff_s: float = 0.05
    max_backoff_s: float = 0.5
    request_timeout_s: float = 20.0
    seed: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    exhausted: list[Delivery] = field(default_factory=list)
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

    def _take(self) -> Delivery | None:
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

    def _deliver(self, delivery: Delivery, clients: list[httpx.Client], rng: random.Random) -> None:
        body = delivery.event.body
        for attempt in range(self.max_attempts):
            instance = rng.randrange(len(clients))
            headers = signed_headers(body, msg_id=delivery.svix_id)  # Svix re-signs every attempt
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

    def acknowledged(self) -> list[Delivery]:
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


def check_convergence(clerk: Clerk, uri: str) -> list[str]:
    """Every way the database differs from Clerk's final state, one line each."""
    users, tombstones = database_state(uri)
    problems: list[str] = []
    by_id: dict[str, list[dict[str, Any]]] = {}
    for doc in users:
        by_id.setdefault(doc.get("clerkId"), []).append(doc)
    contested = clerk.contested_bases()
    for user in clerk.users.values():
        docs = by_id.pop(user.id, [])
        if user.deleted:
            if docs:
                problems.append(f"{user.id}: deleted in Clerk but {len(docs)} document(s) remain")
            if user.id not in tombstones:
                problems.append(f"{user.id}: deleted in Clerk but no tombstone")
            continue
        if len(docs) != 1:
            problems.append(f"{user.id}: {len(docs)} documents")
            continue
        if user.id in tombstones:
            problems.append(f"{user.id}: live in Clerk but tombstoned")
        problems.extend(f"{user.id}: {p}" for p in _document_problems(user, docs[0], contested))
    problems.extend(f"{cid}: document for a user Clerk never had" for cid in by_id)
    lowered = Counter(d.get("usernameLower") for d in users)
    problems.extend(f"username {n!r} held {c} times" for n, c in lowered.items() if c > 1)
    return problems


def _document_problems(user: ClerkUser, doc: dict[str, Any], contested: set[str]) -> list[str]:
    data = user.data()
    expected = {
        "email": user.email,
        "firstName": user.first_name or "",
        "lastName": user.last_name or "",
        "profilePicture": data["image_url"],
        "clerkUpdatedAt": user.updated_at,
    }
    problems = [
        f"{name} is {doc.get(name)!r}, Clerk has {value!r}"
        for name, value in expected.items()
        if doc.get(name) != value
    ]
    if user.username is not None:
        allowed, source = {user.username}, "clerk"
    elif user.email is not None:
        base = expected_email_username(user.email)
        allowed, source = {base}, "email"
        if base in contested:
            allowed.add(disambiguated_username(base, user.id))
    else:
        allowed, source = {fallback_username(user.id)}, "fallback"
    if doc.get("username") not in allowed or doc.get("usernameSource") != source:
        problems.append(
            f"username {doc.get('username')!r} ({doc.get('usernameSource')}), expected one of "
            f"{sorted(allowed)} ({source})"
        )
    if doc.get("usernameLower") != (doc.get("username") or "").lower():
        problems.append(f"usernameLower {doc.get('usernameLower')!r} does not match username")
    if set(doc) - USER_DOC_FIELDS:
        problems.append(f"unexpected fields {sorted(set(doc) - USER_DOC_FIELDS)}")
    return problems


def acknowledged_then_lost(clerk: Clerk, storm: Storm, uri: str) -> list[str]:
    """Deliveries answered 2xx whose effect is not in the database: an update whose
    version (or a newer one) is not stored, a deletion without its tombstone."""
    users, tombstones = database_state(uri)
    stored = {d["clerkId"]: d.get("clerkUpdatedAt", -1) for d in users}
    lost = []
    for delivery in {d.svix_id: d for d in storm.acknowledged()}.values():
        event = delivery.event
        if event.user_id in tombstones and event.user_id not in stored:
            continue  # deleted: supersedes every version
        if event.type == "user.deleted" or stored.get(event.user_id, -1) < event.version:
            lost.append(f"{delivery.svix_id} {event.type} {event.user_id}@{event.version}")
    return lost


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
    assert not wrong, [(a.status, a.delivery.svix_id) for a in wrong[:10]]


def assert_converged(storm: Storm, problems: list[str]) -> None:
    assert not storm.exhausted, f"{len(storm.exhausted)} deliveries never acknowledged"
    assert not problems, f"{len(problems)} differences from Clerk, e.g.:\n" + "\n".join(problems[:20])


# -- the test ---------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_two_instances_converge_under_a_duplicate_shuffled_storm(mongo_server):
    uri = mongo_server.uri(f"storm_{uuid.uuid4().hex[:10]}")
    clerk = Clerk(events_for(STORM_DELIVERIES), seed=1)
    deliveries = clerk.deliveries()
    with GunicornService(uri, workers=2) as one, GunicornService(uri, workers=2) as two:
        began = time.monotonic()
        storm = Storm(deliveries, [one.url, two.url]).run()
        elapsed = time.monotonic() - began
        problems = check_convergence(clerk, uri)
        lost = acknowledged_then_lost(clerk, storm, uri)
        print(
            "\nstorm:",
            figures(
                storm,
                problems,
                events=len(clerk.events),
                users=len(clerk.users),
                deleted=len(clerk.deleted_ids()),
                acknowledged_then_lost=len(lost),
                seconds=round(elapsed, 1),
            ),
        )
        assert_converged(storm, problems)
        assert not lost, lost[:20]
        assert_only_retryable_failures(storm)
        # The storm did exercise what it is about: repeats, reordering and deletions.
        assert {"applied", "duplicate", "stale", "deleted"} <= set(storm.outcomes())
