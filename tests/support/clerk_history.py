"""Clerk's history of a population of users, and how Svix delivers it: the one simulator
behind test_convergence.py (hypothesis) and test_storm.py / test_faults.py (storms).

Clerk's side (``generate_history``): a global timeline of ``n_events`` state changes to
the users ``ids``. Each step picks a user not yet deleted: one not yet created is created,
otherwise it is deleted (``delete_percent``) or updated (names, image, Clerk username set
or cleared, an address added, made primary or removed). Every change is one webhook;
``updated_at`` comes from one clock, so it strictly increases per user. Clerk's uniqueness
rules hold at every instant: a username (case-insensitively) and an email address belong to
at most one user, so a name or an address only *moves* to another user after its holder
released it (``History.moves`` counts those moves).

What the users are made of is a ``Profile``: ``SMALL`` has a few names and addresses that
a handful of users keep competing for (the convergence property); ``CROWD`` has hot names
and addresses for hundreds of users, among fresh unique ones (the storms).

The expected final state: ``History.users`` (Clerk's final user objects, ``deleted``
marked) and ``final_state_problems``, every way the users collection and the tombstones
differ from it.

Svix's side: ``resend_some`` / ``resend_exactly`` (a delivery again with the same svix-id)
and ``jittered`` (roughly in order, some very late); ``Chooser.permutation`` shuffles.

Every choice goes through a ``Chooser``: hypothesis draws (``DataChooser``, so a failing
history shrinks) or a seeded ``random.Random`` (``RandomChooser``).
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from hypothesis import strategies as st

from tests.support.helpers import USER_DOC_FIELDS
from webhook_service.dev.sample_events import clerk_id, make_clerk_user, make_deleted_data, make_webhook_event
from webhook_service.resources.users.usernames import disambiguated_username, fallback_username

T = TypeVar("T")


# -- choices: the same generator runs on hypothesis draws or on a seeded Random -------------


class Chooser(Protocol):
    def integer(self, low: int, high: int) -> int: ...
    def choice(self, options: Sequence[T]) -> T: ...
    def chance(self, percent: float) -> bool: ...
    def permutation(self, items: list[T]) -> list[T]: ...


class RandomChooser:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def choice(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)

    def chance(self, percent: float) -> bool:
        return self.rng.random() * 100 < percent

    def permutation(self, items: list[T]) -> list[T]:
        items = list(items)
        self.rng.shuffle(items)
        return items


class DataChooser:
    """Hypothesis draws, so a failing history shrinks to a small one."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def choice(self, options: Sequence[T]) -> T:
        return self.data.draw(st.sampled_from(options))

    def chance(self, percent: float) -> bool:
        return self.data.draw(st.integers(0, 9999)) < percent * 100

    def permutation(self, items: list[T]) -> list[T]:
        return self.data.draw(st.permutations(items))


# -- what users are made of ------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """The values a history draws from. Usernames and addresses come from the contested
    pools (only the free ones), or, ``fresh_percent`` of the time or when none is free and
    ``fresh_percent`` > 0, are fresh ones nobody else ever holds."""

    first_names: tuple[str | None, ...]
    last_names: tuple[str | None, ...]
    images: tuple[str | None, ...]
    usernames: tuple[str, ...]  # spellings of one name are one name to Clerk
    addresses: tuple[str, ...]
    updates: tuple[str, ...]  # the kinds of update, weighted by repetition
    fresh_percent: float = 0
    no_email_percent: float = 33  # a phone-only user
    most_emails_at_create: int = 2
    most_emails: int = 8  # adding one more drops the oldest that is not primary
    username_at_create_percent: float = 50
    clock_step: tuple[int, int] = (1, 5000)  # ms between two changes
    domains: tuple[str, ...] = ("example.com",)  # for fresh addresses


SMALL = Profile(
    first_names=(None, "Ada", "Bob", "Carol", "Zoë"),
    last_names=(None, "Lovelace", "Smith", "O'Brien"),
    images=(None, "https://img.clerk.com/a.png", "https://img.clerk.com/b.png"),
    # Three names in several spellings, few enough that users keep competing for them.
    usernames=("bob", "Bob", "BOB", "carol", "Carol", "ada_l"),
    # Derived usernames: bob x3, carol, ada_l, dave_99, eve, alexandra_konstantinopoulou_sm.
    addresses=(
        "bob@example.com",
        "Bob@other.example",
        "bob+news@example.com",
        "carol@example.com",
        "ada.l@example.com",
        "dave-99@example.com",
        "eve@example.com",
        "alexandra.konstantinopoulou.smith@example.com",
    ),
    updates=(
        "names",
        "image",
        "username",
        "username",
        "username",
        "clear_username",
        "add_email",
        "add_email",
        "primary",
        "remove_email",
        "touch",
    ),
)

# Names that several users hold over time, as Clerk usernames or email local parts.
_HOT = ("ada", "grace", "alan", "linus", "margaret", "ken", "barbara", "dennis", "edsger", "frances")
_CROWD_DOMAINS = ("example.com", "mail.example.org", "work.example.net")
CROWD = Profile(
    first_names=("Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Edsger")
    + ("Zoë", "José", None),
    last_names=("Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Thompson", "Liskov", "O'Brien")
    + ("Núñez", None),
    images=(None, *(f"https://img.clerk.com/{i:032x}.png" for i in range(1, 9))),
    usernames=_HOT,
    addresses=tuple(f"{n}{tag}@{d}" for n in _HOT for tag in ("", "+news", "+work") for d in _CROWD_DOMAINS),
    # names 25%, image 15%, a new primary address 20%, one more 5%, username set 25%, cleared 10%
    updates=(*["names"] * 5, *["image"] * 3, *["new_primary"] * 4, "add_email", *["username"] * 5)
    + ("clear_username",) * 2,
    fresh_percent=50,
    no_email_percent=5,
    most_emails_at_create=1,
    most_emails=3,
    username_at_create_percent=40,
    clock_step=(1, 40),
    domains=_CROWD_DOMAINS,
)


def derived_username(address: str) -> str:
    """The username the service derives from an address (as the README states it): the
    local part without ``+tag``, lower-cased, other than [a-z0-9_] squeezed to one ``_``,
    at most 30 characters."""
    local = address.split("@")[0].split("+")[0].lower()
    return re.sub("[^a-z0-9_]+", "_", local).strip("_")[:30].rstrip("_")


# -- Clerk -----------------------------------------------------------------------------------


@dataclass
class ClerkUser:
    """One user as Clerk holds it; ``data()`` is the full User object of its current version."""

    id: str
    created_at: int
    updated_at: int
    first_name: str | None
    last_name: str | None
    image_url: str | None
    emails: list[str]
    primary: str | None
    username: str | None
    primary_first: bool  # whether the primary address comes first in email_addresses
    deleted: bool = False

    @property
    def email(self) -> str | None:
        return self.primary

    def data(self) -> dict[str, Any]:
        return make_clerk_user(
            self.id,
            email=self.primary,
            extra_emails=[e for e in self.emails if e != self.primary],
            primary_first=self.primary_first,
            phone_only=not self.emails,
            username=self.username,
            first_name=self.first_name,
            last_name=self.last_name,
            image_url=self.image_url,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


@dataclass(frozen=True)
class Event:
    """One webhook Clerk sends, with the svix-id Svix gives it (a resend repeats it)."""

    index: int
    msg_id: str
    type: str
    user_id: str
    version: int  # Clerk's updated_at; for user.deleted the time of deletion
    body: str


@dataclass
class History:
    ids: list[str]
    users: dict[str, ClerkUser] = field(default_factory=dict)  # every user Clerk created, final state
    events: list[Event] = field(default_factory=list)
    last_msg: dict[str, str] = field(default_factory=dict)  # user -> svix-id of its last event
    claims: dict[str, set[str]] = field(default_factory=dict)  # user -> lower-cased names it held
    moves: int = 0  # usernames/addresses that passed from one user to another

    def live(self) -> list[ClerkUser]:
        return [u for u in self.users.values() if not u.deleted]

    def deleted_ids(self) -> set[str]:
        return {u.id for u in self.users.values() if u.deleted}

    def contested_names(self) -> set[str]:
        """Usernames that more than one user held or derived at some point: a derived name
        on one of these may legitimately be the disambiguated one (the holder kept it)."""
        holders = Counter(name for names in self.claims.values() for name in names)
        return {name for name, count in holders.items() if count > 1}


class Clerk:
    """Clerk's side: unique usernames and addresses at every instant, one event per change."""

    def __init__(self, c: Chooser, profile: Profile, ids: list[str], delete_percent: float, t0: int) -> None:
        self.c = c
        self.p = profile
        self.history = History(ids)
        self.users = self.history.users
        self.usernames: dict[str, str] = {}  # lower-cased name -> holder
        self.addresses: dict[str, str] = {}  # lower-cased address -> holder
        self.previous_holder: dict[str, str] = {}  # "name:bob" / "email:x@y" -> last holder
        self.clock = t0
        self.delete_percent = delete_percent

    def step(self) -> bool:
        live = [i for i in self.history.ids if i not in self.users or not self.users[i].deleted]
        if not live:
            return False
        uid = self.c.choice(live)
        self.clock += self.c.integer(*self.p.clock_step)
        if uid not in self.users:
            self.create(uid)
        elif self.c.chance(self.delete_percent):
            self.delete(self.users[uid])
        else:
            self.update(self.users[uid], self.c.choice(self.p.updates))
        return True

    # -- names and addresses ---------------------------------------------------------------

    def take(self, kind: str, key: str, uid: str) -> None:
        if self.previous_holder.get(f"{kind}:{key}", uid) != uid:
            self.history.moves += 1
        self.previous_holder[f"{kind}:{key}"] = uid
        (self.usernames if kind == "name" else self.addresses)[key] = uid

    def free_username(self, name: str, uid: str) -> bool:
        return self.usernames.get(name.lower(), uid) == uid

    def free_address(self, address: str) -> bool:
        return address.lower() not in self.addresses

    def _fresh(self) -> bool:
        return self.p.fresh_percent > 0 and self.c.chance(self.p.fresh_percent)

    def pick_username(self, uid: str) -> str | None:
        c = self.c
        free = [n for n in self.p.usernames if self.free_username(n, uid)]
        if self._fresh() or (not free and self.p.fresh_percent > 0):
            return f"{c.choice(self.p.usernames).lower()}_{c.integer(0, 0xFFFFF):05x}"
        return c.choice(free) if free else None

    def pick_address(self, user: ClerkUser) -> str | None:
        c = self.c
        free = [a for a in self.p.addresses if self.free_address(a) and a not in user.emails]
        if self._fresh() or (not free and self.p.fresh_percent > 0):
            parts = [re.sub("[^a-z]", "", p.lower()) for p in (user.first_name, user.last_name) if p]
            address = f"{'.'.join(p for p in parts if p) or 'user'}.{c.integer(0, 0xFFFFFF):06x}"
            address += f"@{c.choice(self.p.domains)}"
            return address if self.free_address(address) else None
        return c.choice(free) if free else None

    def set_username(self, user: ClerkUser, name: str | None) -> None:
        if user.username:
            del self.usernames[user.username.lower()]
        user.username = name
        if name:
            self.take("name", name.lower(), user.id)

    def add_address(self, user: ClerkUser, address: str) -> None:
        user.emails.append(address)
        self.take("email", address.lower(), user.id)
        if len(user.emails) > self.p.most_emails:
            self.remove_address(user, next(a for a in user.emails if a != user.primary and a != address))

    def remove_address(self, user: ClerkUser, address: str) -> None:
        user.emails.remove(address)
        del self.addresses[address.lower()]

    # -- the changes -----------------------------------------------------------------------

    def create(self, uid: str) -> None:
        c, p = self.c, self.p
        names, image = (c.choice(p.first_names), c.choice(p.last_names)), c.choice(p.images)
        user = ClerkUser(uid, self.clock, self.clock, *names, image, [], None, None, c.chance(50))
        self.users[uid] = user
        if not c.chance(p.no_email_percent):
            for _ in range(c.integer(1, p.most_emails_at_create)):
                if address := self.pick_address(user):
                    self.add_address(user, address)
        user.primary = c.choice(user.emails) if user.emails else None
        if c.chance(p.username_at_create_percent):
            self.set_username(user, self.pick_username(uid))
        self.emit(user, "user.created")

    def update(self, user: ClerkUser, what: str) -> None:
        c, p = self.c, self.p
        if what == "names":
            user.first_name, user.last_name = c.choice(p.first_names), c.choice(p.last_names)
        elif what == "image":
            user.image_url = c.choice(p.images)
        elif what == "username":
            self.set_username(user, self.pick_username(user.id))
        elif what == "clear_username":
            self.set_username(user, None)
        elif what in ("add_email", "new_primary"):
            if address := self.pick_address(user):
                self.add_address(user, address)
                if what == "new_primary" or user.primary is None or c.chance(60):
                    user.primary = address
        elif what == "primary" and len(user.emails) > 1:
            user.primary = c.choice([a for a in user.emails if a != user.primary])
        elif what == "remove_email":
            removable = [a for a in user.emails if a != user.primary]
            if removable:
                self.remove_address(user, c.choice(removable))
        user.updated_at = self.clock  # "touch" and no-op choices still bump the version
        self.emit(user, "user.updated")

    def delete(self, user: ClerkUser) -> None:
        user.deleted = True
        self.set_username(user, None)
        for address in list(user.emails):
            del self.addresses[address.lower()]
        self.record(user.id, "user.deleted", self.clock, make_deleted_data(user.id))

    def emit(self, user: ClerkUser, event_type: str) -> None:
        name = user.username or (derived_username(user.primary) if user.primary else None)
        if name:
            self.history.claims.setdefault(user.id, set()).add(name.lower())
        self.record(user.id, event_type, user.updated_at, user.data())

    def record(self, uid: str, event_type: str, version: int, data: dict[str, Any]) -> None:
        body = json.dumps(make_webhook_event(event_type, data, timestamp_ms=version))
        events = self.history.events
        events.append(Event(len(events), f"msg_{uuid.uuid4().hex[:27]}", event_type, uid, version, body))
        self.history.last_msg[uid] = events[-1].msg_id


def generate_history(
    c: Chooser,
    profile: Profile,
    *,
    n_users: int,
    n_events: int,
    delete_percent: float,
    label: str,
    t0: int = 1_735_000_000_000,
) -> History:
    """Up to ``n_events`` changes (fewer only if every user got deleted) to ``n_users``
    users, whose ids are derived from ``label``."""
    ids = [clerk_id("user", f"{label}-{i}", timestamp_ms=t0) for i in range(n_users)]
    clerk = Clerk(c, profile, ids, delete_percent, t0)
    for _ in range(n_events):
        if not clerk.step():
            break
    return clerk.history


# -- Svix's side -----------------------------------------------------------------------------


def resend_some(c: Chooser, events: list[Event], percent: float, most: int = 1) -> list[Event]:
    """Every event, and ``percent`` of them again 1 to ``most`` more times, in Clerk's order."""
    copies = []
    for event in events:
        copies.extend([event] * (1 + (c.integer(1, most) if c.chance(percent) else 0)))
    return copies


def resend_exactly(c: Chooser, events: list[Event], count: int) -> list[Event]:
    """Every event, then ``count`` distinct ones of them a second time."""
    return [*events, *c.permutation(events)[:count]]


def jittered(c: Chooser, deliveries: list[Event]) -> list[Event]:
    """Roughly in the given order, as Svix tends to deliver: each delivery late by a random
    amount and some very late (then intermediate states, such as a name held by one user
    while another already claims it, really occur in the database)."""
    keyed = []
    for i, sent in enumerate(deliveries):
        lateness = c.choice((0, 2, 8, 8, len(deliveries)))
        keyed.append((i + c.integer(0, lateness), i, sent))
    return [sent for _, _, sent in sorted(keyed, key=lambda k: (k[0], k[1]))]


# -- the expected final state ----------------------------------------------------------------


def final_state_problems(
    history: History, docs: Iterable[Mapping[str, Any]], tombstones: Iterable[str]
) -> list[str]:
    """Every way the user documents and the tombstoned clerk ids differ from Clerk's final
    state, one line each: deleted -> no document and a tombstone; live -> one document with
    Clerk's primary email, names, image, version and last delivery id, and its username
    (Clerk's when set, else the derived one, possibly disambiguated when contested, else
    the fallback); usernames unique case-insensitively; no document Clerk never had."""
    docs, tombstones = list(docs), set(tombstones)
    by_id: dict[str, list[Mapping[str, Any]]] = {}
    for doc in docs:
        by_id.setdefault(doc.get("clerkId"), []).append(doc)
    contested = history.contested_names()
    problems: list[str] = []
    for user in history.users.values():
        found = by_id.pop(user.id, [])
        if user.deleted:
            if found:
                problems.append(f"{user.id}: deleted in Clerk but {len(found)} document(s) remain")
            if user.id not in tombstones:
                problems.append(f"{user.id}: deleted in Clerk but no tombstone")
            continue
        if len(found) != 1:
            problems.append(f"{user.id}: {len(found)} documents")
            continue
        if user.id in tombstones:
            problems.append(f"{user.id}: live in Clerk but tombstoned")
        problems.extend(f"{user.id}: {p}" for p in _document_problems(history, user, found[0], contested))
    problems.extend(f"{cid}: document for a user Clerk never had" for cid in by_id)
    lowered = Counter(d.get("usernameLower") for d in docs)
    problems.extend(f"username {n!r} held {c} times" for n, c in lowered.items() if c > 1)
    return problems


def _document_problems(
    history: History, user: ClerkUser, doc: Mapping[str, Any], contested: set[str]
) -> list[str]:
    expected = {
        "email": user.primary,
        "firstName": user.first_name or "",
        "lastName": user.last_name or "",
        "profilePicture": user.data()["image_url"],
        "clerkUpdatedAt": user.updated_at,
        "lastDeliveryId": history.last_msg[user.id],
    }
    problems = [
        f"{name} is {doc.get(name)!r}, Clerk has {value!r}"
        for name, value in expected.items()
        if doc.get(name) != value
    ]
    if user.username is not None:
        allowed, source = {user.username}, "clerk"
    elif user.primary is not None:
        base = derived_username(user.primary)
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
