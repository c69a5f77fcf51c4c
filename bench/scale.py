"""Scale: what one operation costs as the collection grows.

At 1,000, 10,000 and 100,000 existing users (``--scale-sizes``), in xClone's shape: each
user follows five others and is followed by five, wrote one post liked by two others, one
comment liked by one, and sent one notification. ``init-db``'s plan is made first
(``ensure_indexes`` with xClone's ``DELETE_CASCADE``, which adds the cascade's indexes).

Then, one at a time and in this process, with the classes the service uses and its
client settings, ``--scale-ops`` of each operation:

* ``insert``: ``upsert_if_newer`` of a user not stored (a first ``user.created``);
* ``update``: ``upsert_if_newer`` of a newer version of a stored user;
* ``delete``: ``delete`` of a stored user, with the cascade (follow lists, posts, likes,
  comments, notifications);
* ``sync``: ``sync_user``, which asks the fake Clerk (in this process) and writes;
* ``reconcile_page``: a page of 500 stored users at newer versions, through reconcile's
  own page function (``--scale-ops`` / 20 pages at every size; where the collection is
  small, the same users come round again at a newer version).

Per operation: the median wall time, the CPU this process spent (the service's side) and
the CPU the database server spent, and the ratio of each at the largest size to the
smallest. Target, on SecantusDB: at most 1.5x. mongomock (``bench/mockdb.py``'s, with
hash lookups on the service's own keys) is reported beside it without a target: it has
no indexes on the app's collections and scans them.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import mongomock
from bson import ObjectId
from pymongo import UpdateOne
from pymongo.database import Database

from bench import procstat
from bench.mockdb import indexed_mongomock
from bench.servers import TestDatabase, log
from tests.support.fake_clerk import FakeClerkAPI, make_users
from tests.support.stores import ensure_service_indexes, user_store, xclone_user
from webhook_service.clerk_api import ClerkAPI
from webhook_service.config import delete_cascade_rules
from webhook_service.mirror.reconcile import ResourcePass, ResourceReport, Target
from webhook_service.resources.users.clerk import UserSource
from webhook_service.store.mongo import connect
from webhook_service.sync import sync_user

XCLONE_CASCADE = delete_cascade_rules(
    "posts.user:delete,comments.user:delete,notifications.from:delete,notifications.to:delete,"
    "posts.likes:pull,comments.likes:pull"
)
OPERATIONS = ("insert", "update", "delete", "sync", "reconcile_page")
PAGE = 500
FOLLOWS = 5
SEED_CHUNK = 5000
TARGET_RATIO = 1.5


class _Clock:
    """Per operation: each call's wall time, and the CPU this process and the database
    server spent over the whole batch of calls (the kernel counts CPU in 10 ms ticks, too
    coarse for one call), divided by the calls."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.walls: dict[str, list[float]] = {op: [] for op in OPERATIONS}
        self.cpu: dict[str, tuple[float, float]] = {}

    def _server_cpu(self) -> float:
        return procstat.cpu_seconds(self.server_pid) if self.server_pid else 0.0

    def settle(self, idle_share: float = 0.05, limit_s: float = 180.0) -> float:
        """Wait until the server is idle (under ``idle_share`` of a core for a second), so
        that any background work left by seeding is not counted against the operations
        measured next (in the runs so far it was idle within the first second). Returns
        the seconds waited."""
        began = time.monotonic()
        while self.server_pid and time.monotonic() - began < limit_s:
            before = self._server_cpu()
            time.sleep(1.0)
            if self._server_cpu() - before < idle_share:
                break
        return time.monotonic() - began

    def batch(self, op: str, calls: list[Callable[[], object]]) -> None:
        server, cpu = self._server_cpu(), time.process_time()
        for call in calls:
            began = time.perf_counter()
            call()
            self.walls[op].append(time.perf_counter() - began)
        self.cpu[op] = ((time.process_time() - cpu) / len(calls), (self._server_cpu() - server) / len(calls))

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            op: {
                "wall_ms": round(statistics.median(walls) * 1000, 3),
                "cpu_us": round(self.cpu[op][0] * 1e6, 1),
                "db_cpu_us": round(self.cpu[op][1] * 1e6, 1),
                "calls": len(walls),
            }
            for op, walls in self.walls.items()
            if walls
        }


def _seed(db: Database, users: list[dict[str, Any]]) -> list[ObjectId]:
    """Store ``users`` as the service does, then give them xClone's follow lists, posts,
    comments and notifications (made by the app, as in production)."""
    store = user_store(db, cascade=XCLONE_CASCADE)
    for start in range(0, len(users), SEED_CHUNK):
        store.insert_new([xclone_user(u) for u in users[start : start + SEED_CHUNK]], {})
    by_clerk = {d["clerkId"]: d["_id"] for d in db.users.find({}, {"clerkId": 1})}
    oids = [by_clerk[u["id"]] for u in users]
    n = len(oids)
    for start in range(0, n, SEED_CHUNK):
        ops = [
            UpdateOne(
                {"_id": oids[i]},
                {
                    "$set": {
                        "following": [oids[(i + k) % n] for k in range(1, FOLLOWS + 1)],
                        "followers": [oids[(i - k) % n] for k in range(1, FOLLOWS + 1)],
                    }
                },
            )
            for i in range(start, min(n, start + SEED_CHUNK))
        ]
        db.users.bulk_write(ops, ordered=False)
        chunk = range(start, min(n, start + SEED_CHUNK))
        db.posts.insert_many(
            [
                {"user": oids[i], "content": f"post {i}", "likes": [oids[(i + 1) % n], oids[(i + 2) % n]]}
                for i in chunk
            ]
        )
        db.comments.insert_many(
            [
                {"user": oids[i], "post": None, "content": f"comment {i}", "likes": [oids[(i + 3) % n]]}
                for i in chunk
            ]
        )
        db.notifications.insert_many(
            [{"from": oids[i], "to": oids[(i + 1) % n], "type": "follow"} for i in chunk]
        )
    return oids


def _newer(user: dict[str, Any], ms: int) -> dict[str, Any]:
    return dict(user, updated_at=user["updated_at"] + ms, first_name=f"{user['first_name'] or 'x'}{ms}")


def _measure_size(
    db: Database,
    size: int,
    ops: int,
    server_pid: int | None,
    fake: FakeClerkAPI,
    seed_db: Database | None = None,
) -> dict[str, Any]:
    """``seed_db``: the same database through a client without the service's 5 s bound on
    each command (seeding writes in large batches)."""
    rng = random.Random(size)
    users = make_users(size, seed=f"scale{size}")
    began = time.perf_counter()
    seed_db = seed_db if seed_db is not None else db
    _seed(seed_db, users)
    ensure_service_indexes(seed_db, XCLONE_CASCADE)  # init-db's plan, the cascade's indexes included
    seeded_s = time.perf_counter() - began
    log(f"scale: {size} users seeded in {seeded_s:.1f} s")
    store = user_store(db, cascade=XCLONE_CASCADE)
    clerk = UserSource(ClerkAPI(fake.secret_key, fake.url + "/v1"), store.fields)
    clock = _Clock(server_pid)
    fresh = make_users(ops, seed=f"scale{size}new", start_ms=users[-1]["created_at"] + 1000)
    page_calls = max(1, ops // 20)
    page_count = min(page_calls, (size - 3 * ops) // PAGE)
    if page_count < 1:
        raise ValueError(f"scale: {size} users cannot hold {ops} operations of each kind and a page")
    picked = rng.sample(range(size), 3 * ops + PAGE * page_count)
    to_update = [users[i] for i in picked[:ops]]
    to_delete = [users[i] for i in picked[ops : 2 * ops]]
    to_sync = [users[i] for i in picked[2 * ops : 3 * ops]]
    page_users = [users[i] for i in picked[3 * ops :]]
    fake.users = [_newer(u, 2000) for u in to_sync]
    warm = make_users(1, seed=f"scale{size}warm", start_ms=users[-1]["created_at"] + 500)[0]
    fake.add_user(warm)
    sync_user(store, clerk, warm["id"])  # connections, the SDK's first call, index checks
    log(f"scale: the server settled after {clock.settle():.0f} s")
    clock.batch("insert", [partial(store.upsert_if_newer, xclone_user(u)) for u in fresh])
    clock.batch(
        "update", [partial(store.upsert_if_newer, xclone_user(_newer(u, 1000))) for u in to_update]
    )
    clock.batch("delete", [partial(store.delete, u["id"]) for u in to_delete])
    clock.batch("sync", [partial(sync_user, store, clerk, u["id"]) for u in to_sync])
    # As many page calls at every size: a small collection's pages come round again, newer.
    groups = [page_users[i : i + PAGE] for i in range(0, len(page_users), PAGE)]
    pages = [[_newer(u, 3000 + 1000 * k) for u in groups[k % len(groups)]] for k in range(page_calls)]
    reports = [ResourceReport("users") for _ in pages]
    target = Target(store, clerk)
    passes = [ResourcePass(target, report, dry_run=False, refresh=False) for report in reports]
    clock.batch(
        "reconcile_page", [partial(run.apply_page, page) for run, page in zip(passes, pages, strict=True)]
    )
    if any(r.updated != PAGE for r in reports):
        raise RuntimeError(f"scale: reconcile pages updated {[r.updated for r in reports]} of {PAGE} each")
    for user in to_delete:
        if store.get(user["id"]) is not None:
            raise RuntimeError(f"scale: {user['id']} still stored after its deletion")
    return {"users": size, "seed_s": round(seeded_s, 1), "ops": clock.summary()}


def _ratios(sizes: dict[int, dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    small, large = sizes[min(sizes)]["ops"], sizes[max(sizes)]["ops"]
    out: dict[str, dict[str, float | None]] = {}
    for op in OPERATIONS:
        if op not in small or op not in large:
            continue
        out[op] = {}
        for key in ("wall_ms", "cpu_us", "db_cpu_us"):
            a, b = small[op][key], large[op][key]
            out[op][key] = round(b / a, 2) if a else None
    return out


def run(
    database: TestDatabase, *, sizes: tuple[int, ...], ops: int, backends: tuple[str, ...], mock_ops: int
) -> dict[str, Any]:
    results: dict[str, Any] = {"sizes": list(sizes), "ops": ops, "target_ratio": TARGET_RATIO}
    with FakeClerkAPI() as fake:
        for backend in backends:
            per_size: dict[int, dict[str, Any]] = {}
            for size in sizes:
                if backend == "mongomock":
                    per_size[size] = _on_mongomock(size, mock_ops, fake)
                else:
                    uri, seed_db = database.new_database(f"scale{size}")
                    db = connect(uri)
                    pid = database.server.process.pid if database.server.process else None
                    try:
                        per_size[size] = _measure_size(db, size, ops, pid, fake, seed_db)
                    finally:
                        seed_db.client.drop_database(seed_db.name)
                        db.client.close()
                log(f"scale {backend} {size}: {per_size[size]['ops']}")
            results[backend] = {
                "by_size": {str(k): v for k, v in per_size.items()},
                "ratio_largest_to_smallest": _ratios(per_size),
            }
            log(f"scale {backend} ratios: {results[backend]['ratio_largest_to_smallest']}")
    return results


def _on_mongomock(size: int, ops: int, fake: FakeClerkAPI) -> dict[str, Any]:
    with indexed_mongomock():
        db = mongomock.MongoClient().get_database(f"scale{size}")
        return _measure_size(db, size, ops, None, fake)


def table_lines(section: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Scale: one operation at a time, at {', '.join(f'{n:,}' for n in section['sizes'])} existing users "
        "(xClone's shape and cascade; medians; CPU per call over the batch):",
    ]
    for backend in ("secantus", "mongomock"):
        if backend not in section:
            continue
        by_size, ratios = section[backend]["by_size"], section[backend]["ratio_largest_to_smallest"]
        sizes = list(by_size)
        lines.append(
            f"  {backend}: wall ms / service CPU ms / database CPU ms per call, then largest/smallest"
        )
        for op in OPERATIONS:
            cells = [
                "{:.4g} / {:.4g} / {:.4g}".format(f["wall_ms"], f["cpu_us"] / 1000, f["db_cpu_us"] / 1000)
                for n in sizes
                if (f := by_size[n]["ops"].get(op))
            ]
            ratio = ratios.get(op, {})
            lines.append(
                f"    {op:<16}"
                + "".join(f"  {c:>24}" for c in cells)
                + f"   x{ratio.get('wall_ms')} / x{ratio.get('cpu_us')} / x{ratio.get('db_cpu_us')}"
            )
    return lines


def targets(section: dict[str, Any]) -> list[tuple[str, str, float | None, bool | None, str]]:
    """Per operation on SecantusDB: the largest size's cost over the smallest's, wall time
    and the database's CPU, each at most 1.5x."""
    found: list[tuple[str, str, float | None, bool | None, str]] = []
    if "secantus" not in section:
        return found
    sizes = section["sizes"]
    for op, ratio in section["secantus"]["ratio_largest_to_smallest"].items():
        worst = max((r for r in (ratio["wall_ms"], ratio["db_cpu_us"]) if r is not None), default=None)
        found.append(
            (
                f"{op} at {max(sizes):,} users / at {min(sizes):,} (wall, database CPU; worse of the two)",
                f"<= {TARGET_RATIO}",
                worst,
                None if worst is None else worst <= TARGET_RATIO,
                "secantus",
            )
        )
    return found
