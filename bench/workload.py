"""The delivery stream: what Svix sends for a population of Clerk users.

A *template* fixes the shape of a stream once: which user each delivery is about, whether
it is the ``user.created``, the k-th ``user.updated`` or the ``user.deleted``, and which
deliveries are resent. Every round and both apps get the same shape, each with users of
its own (``materialize`` with a different prefix), so their figures are comparable and no
app sees the other's users.

Shape, per user: created, then 2-5 updates, deleted with probability 0.1. Users start at
random times and their events follow with random gaps, so users interleave. 10% of the
deliveries are sent twice (the copy up to 200 positions later, as a Svix retry), and the
whole stream is then shuffled within a window of 8 positions, as Svix's concurrent
delivery reorders neighbours.

The *realistic* shape (``REALISTIC``) is what Svix usually delivers: the same per-user
histories, deleted with probability 0.01, 1% of the deliveries resent (up to 200 positions
later), and the stream in Clerk's order but for occasional swaps of two neighbours (each
delivery trades places with the next one with probability 0.02).
"""

from __future__ import annotations

import json
import random
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from webhook_service.dev.sample_events import clerk_id, make_clerk_user, make_webhook_event, signed_headers

WEBHOOK_PATH = "/api/webhooks/clerk"
_FIRST = ("Ada", "Grace", "Alan", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Edsger", "Frances")
_BASE_MS = 1_767_225_600_000  # 2026-01-01
# build_template(n, **REALISTIC): mostly in order, ~1% resent, ~1% of the users deleted.
REALISTIC: dict[str, float] = {"duplicate_rate": 0.01, "delete_rate": 0.01, "window": 0.0, "swap_rate": 0.02}
# The streams' names in every report: update_stream's, REALISTIC's and the default (mixed) template's.
STREAM_NAMES = {"updates": "update path", "realistic": "realistic stream", "mixed": "mixed stream"}


@dataclass(frozen=True)
class Step:
    user: int
    kind: str  # "created", "updated" or "deleted"
    version: int  # 0 for created, k for the k-th update, -1 for deleted
    delivery: int  # the original delivery; a resend repeats its number


@dataclass(frozen=True)
class Template:
    steps: tuple[Step, ...]
    users: int

    def count(self, kind: str) -> int:
        return sum(1 for s in self.steps if s.kind == kind)

    @property
    def duplicates(self) -> int:
        return len(self.steps) - len({s.delivery for s in self.steps})


def build_template(
    n: int,
    *,
    seed: int = 1,
    duplicate_rate: float = 0.10,
    delete_rate: float = 0.10,
    updates: tuple[int, int] = (2, 5),
    window: float = 8.0,
    resend_within: int = 200,
    swap_rate: float = 0.0,
) -> Template:
    """A stream of exactly ``n`` deliveries (the last users' histories are cut short)."""
    per_user = (1 + sum(updates) / 2 + delete_rate) * (1 + duplicate_rate)
    users = int(n / per_user * 1.1) + 2
    while True:
        rng = random.Random(seed)
        steps = _steps(rng, users, duplicate_rate, delete_rate, updates, resend_within)
        if len(steps) >= n:
            break
        users = users * 5 // 4 + 1
    keyed = sorted((i + rng.uniform(0, window), s) for i, s in enumerate(steps))
    ordered = [s for _, s in keyed]
    if swap_rate:
        for i in range(len(ordered) - 1):
            if rng.random() < swap_rate:
                ordered[i], ordered[i + 1] = ordered[i + 1], ordered[i]
    kept = tuple(ordered[:n])
    return Template(kept, len({s.user for s in kept}))


def _steps(rng, users, duplicate_rate, delete_rate, updates, resend_within) -> list[Step]:
    timeline: list[tuple[float, int, str, int]] = []
    for user in range(users):
        t = rng.uniform(0, users)
        timeline.append((t, user, "created", 0))
        for version in range(1, rng.randint(*updates) + 1):
            t += rng.expovariate(1 / 6)
            timeline.append((t, user, "updated", version))
        if rng.random() < delete_rate:
            timeline.append((t + rng.expovariate(1 / 6), user, "deleted", -1))
    timeline.sort()
    steps: list[Step] = [Step(u, kind, v, i) for i, (_, u, kind, v) in enumerate(timeline)]
    for i in range(len(steps)):
        if rng.random() < duplicate_rate:
            steps.insert(min(len(steps), i + rng.randint(1, resend_within)), steps[i])
    return steps


@dataclass
class Delivery:
    msg_id: str
    body: str
    user_id: str
    kind: str


@dataclass
class UserFinal:
    """What Clerk holds for a user once the whole stream happened."""

    created_at: int
    username: str | None
    version: int = -1
    deleted: bool = False
    first_name: str = ""
    updated_at: int = 0


@dataclass
class Stream:
    prefix: str
    deliveries: list[Delivery]
    users: dict[str, UserFinal] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.deliveries)


def _user_version(user_id: str, info: UserFinal, version: int) -> dict[str, Any]:
    updated_at = info.created_at + version * 60_000
    return make_clerk_user(
        user_id,
        username=info.username,
        first_name=_FIRST[(zlib.crc32(user_id.encode()) + version) % len(_FIRST)],
        created_at=info.created_at,
        updated_at=updated_at,
        last_sign_in_at=updated_at,
    )


def materialize(template: Template, prefix: str) -> Stream:
    """Real payloads for ``template``, with user ids and svix ids unique to ``prefix``."""
    rng = random.Random(prefix)
    stream = Stream(prefix, [])
    ids: dict[int, str] = {}
    bodies: dict[int, Delivery] = {}
    for step in template.steps:
        if step.delivery in bodies:
            stream.deliveries.append(bodies[step.delivery])
            continue
        user_id = ids.get(step.user)
        if user_id is None:
            created_at = _BASE_MS + step.user * 1000
            user_id = ids[step.user] = clerk_id("user", f"{prefix}:{step.user}", timestamp_ms=created_at)
            username = f"{prefix}_{step.user}" if rng.random() < 0.3 else None
            stream.users[user_id] = UserFinal(created_at=created_at, username=username)
        info = stream.users[user_id]
        if step.kind == "deleted":
            data: dict[str, Any] = {"deleted": True, "id": user_id, "object": "user"}
            info.deleted = True
            timestamp = info.created_at + 3_600_000
        else:
            data = _user_version(user_id, info, step.version)
            timestamp = data["updated_at"]
            if step.version > info.version:
                info.version = step.version
                info.first_name = data["first_name"]
                info.updated_at = data["updated_at"]
        event = make_webhook_event(f"user.{step.kind}", data, timestamp_ms=timestamp)
        msg_id = clerk_id("msg", f"{prefix}:{step.delivery}", timestamp_ms=timestamp)
        bodies[step.delivery] = Delivery(msg_id, json.dumps(event), user_id, step.kind)
        stream.deliveries.append(bodies[step.delivery])
    return stream


def update_stream(stream: Stream, count: int) -> Stream:
    """``count`` fresh ``user.updated`` deliveries for users that exist after ``stream``:
    the update-an-existing-user path, and nothing else."""
    updates = Stream(stream.prefix + "u", [])
    alive = [(uid, info) for uid, info in stream.users.items() if not info.deleted and info.version >= 0]
    for i in range(count):
        user_id, info = alive[i % len(alive)]
        info.version += 1
        data = _user_version(user_id, info, info.version)
        info.first_name, info.updated_at = data["first_name"], data["updated_at"]
        event = make_webhook_event("user.updated", data, timestamp_ms=data["updated_at"])
        msg_id = clerk_id("msg", f"{updates.prefix}:{i}", timestamp_ms=data["updated_at"])
        updates.deliveries.append(Delivery(msg_id, json.dumps(event), user_id, "updated"))
        updates.users[user_id] = info
    return updates


# Svix accepts a timestamp up to 5 min off: deliveries signed 4 min ahead may be sent for 9 min.
SIGN_AHEAD = timedelta(minutes=4)


def sign(stream: Stream, secret: str, at: datetime) -> list[tuple[bytes, dict[str, str]]]:
    """Request bodies and Svix headers, all signed with timestamp ``at``."""
    return [
        (d.body.encode(), signed_headers(d.body, secret, msg_id=d.msg_id, at=at)) for d in stream.deliveries
    ]
