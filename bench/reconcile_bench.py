"""Reconcile: ``python -m webhook_service reconcile`` against a fake Clerk with many users.

Both commands run as subprocesses into an empty database of their own (a first
backfill: every user is created), against the same FakeClerkAPI and its pages of 500.
Measured: wall time, users per second, the command's peak RSS and CPU time (``wait4``
in ``bench/rusage.py``), and the commands the database server ran. The baseline
(``bench/baseline_reconcile.py``) upserts one user at a time; on a slow server it may
be given fewer users (``--reconcile-baseline-users``), so compare users per second.

Then, on the service's database: a tenth as many local users again, whom Clerk does not
have, and a second run (``--max-rps 0``) that lists everyone and deletes them, timed
with its peak RSS; and a dry run at the default pacing (2 requests/s), whose listing
time is set against what pages / rate predicts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pymongo.database import Database

from bench.servers import TestDatabase, log
from tests.support.fake_clerk import FakeClerkAPI, make_users
from tests.support.processes import REPO_ROOT
from tests.support.signing import TEST_SECRET
from tests.support.stores import user_store, xclone_user
from webhook_service.cli.reconcile import DEFAULT_MAX_RPS
from webhook_service.resources.users.clerk import EXISTING_IDS_CHUNK as DELETION_BATCH


def _run(argv: list[str], env: dict[str, str], database: TestDatabase) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        out, err, usage = Path(tmp, "out"), Path(tmp, "err"), Path(tmp, "usage.json")
        commands_before = database.commands()
        began = time.perf_counter()
        with out.open("wb") as stdout, err.open("wb") as stderr:
            code = subprocess.call(
                [sys.executable, "-m", "bench.rusage", str(usage), *argv],
                cwd=REPO_ROOT, env=env, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        wall = time.perf_counter() - began
        commands = database.commands() - commands_before - 1
        if code != 0:
            raise RuntimeError(f"{argv} exited {code}:\n{err.read_text()[-3000:]}")
        figures = json.loads(usage.read_text())
        return {
            "wall_s": round(wall, 2),
            "peak_rss_mb": round(figures["peak_rss_kb"] / 1024, 1),
            "cpu_s": round(figures["cpu_s"], 2),
            "db_commands": commands,
            "output": out.read_text().strip().splitlines()[-1:],
        }


def run(database: TestDatabase, *, users: int, baseline_users: int) -> dict[str, Any]:
    log(f"reconcile: building {users} fake Clerk users")
    with FakeClerkAPI(users=make_users(users, seed="bench")) as fake:
        base_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("CLERK_", "MONGODB_", "PROMETHEUS_"))
        }
        base_env.update(
            CLERK_WEBHOOK_SIGNING_SECRET=TEST_SECRET, CLERK_SECRET_KEY=fake.secret_key, CLERK_API_URL=fake.url
        )
        results: dict[str, Any] = {"users": users}
        for name, argv, count in (
            # Unpaced: the fake has no rate limit, and the baseline has no pacing either.
            ("service", [sys.executable, "-m", "webhook_service", "reconcile", "--max-rps", "0"], users),
            (
                "baseline",
                [sys.executable, "-m", "bench.baseline_reconcile", str(baseline_users)],
                baseline_users,
            ),
        ):
            uri, db = database.new_database(f"reconcile_{name}")
            if name == "baseline":
                from tests.support.stores import ensure_service_indexes

                ensure_service_indexes(db)  # the service creates its own on first write
            log(f"reconcile: {name}, {count} users")
            figures = _run(argv, dict(base_env, MONGODB_URI=uri), database)
            stored = db["users"].count_documents({})
            if stored != count:
                raise RuntimeError(f"reconcile {name}: {stored} users stored, expected {count}")
            figures.update(
                users=count,
                users_per_s=round(count / figures["wall_s"], 1),
                db_cmds_per_user=round(figures["db_commands"] / count, 4),
            )
            results[name] = figures
            log(f"reconcile {name}: {figures}")
            if name == "service":
                results["deletion"] = _deletion_run(db, base_env, uri, database, users)
                results["deletion_batching"] = _batched_against_one_at_a_time(db, min(2000, users // 10))
                results["paced_listing"] = _paced_listing(base_env, uri, database, users)
    return results


def _deletion_run(
    db, base_env: dict[str, str], uri: str, database: TestDatabase, users: int
) -> dict[str, Any]:
    """A tenth as many local users as Clerk has, whom Clerk does not have: all deleted."""
    gone = max(1, users // 10)
    store = user_store(db)
    extra = make_users(gone, seed="bench-gone")
    for start in range(0, gone, 5000):
        store.insert_new([xclone_user(u) for u in extra[start : start + 5000]], {})
    log(f"reconcile: service again, {users} in Clerk and {gone} more locally to delete")
    argv = [sys.executable, "-m", "webhook_service", "reconcile", "--max-rps", "0"]
    figures = _run(argv, dict(base_env, MONGODB_URI=uri), database)
    left = db["users"].count_documents({"clerkId": {"$in": [u["id"] for u in extra[:1000]]}})
    if left or db["users"].count_documents({}) != users:
        raise RuntimeError(
            f"reconcile deletion: {db['users'].count_documents({})} users left, expected {users}"
        )
    figures.update(to_delete=gone, deleted_per_s=round(gone / figures["wall_s"], 1))
    log(f"reconcile deletion: {figures}")
    return figures


def _batched_against_one_at_a_time(db: Database[Any], count: int) -> dict[str, Any]:
    """The deletion phase's database work alone, in-process, on the database reconcile
    just filled: ``count`` users deleted in reconcile's batches, against as many more
    deleted one at a time, as ``user.deleted`` deletes them (the phase before batching)."""
    store = user_store(db)
    seconds: dict[str, float] = {}
    for way in ("one_at_a_time", "batched"):
        gone = make_users(count, seed=f"bench-gone-{way}")
        ids = [u["id"] for u in gone]
        store.insert_new([xclone_user(u) for u in gone], {})
        log(f"reconcile: deleting {count} users {way.replace('_', ' ')}")
        began = time.perf_counter()
        if way == "batched":
            for start in range(0, count, DELETION_BATCH):
                store.delete_many(ids[start : start + DELETION_BATCH])
        else:
            for clerk_id in ids:
                store.delete(clerk_id)
        seconds[way] = time.perf_counter() - began
        if db["users"].count_documents({"clerkId": {"$in": ids}}):
            raise RuntimeError(f"reconcile deletion {way}: users left")
    figures = {
        "users": count,
        "batch": DELETION_BATCH,
        **{f"{way}_per_s": round(count / s, 1) for way, s in seconds.items()},
        "speedup": round(seconds["one_at_a_time"] / seconds["batched"], 2),
    }
    log(f"reconcile deletion batching: {figures}")
    return figures


def _paced_listing(base_env: dict[str, str], uri: str, database: TestDatabase, users: int) -> dict[str, Any]:
    """A dry run at the default pacing: its time against pages / rate."""
    argv = [sys.executable, "-m", "webhook_service", "reconcile", "--dry-run"]
    log(f"reconcile: dry run at the default {DEFAULT_MAX_RPS}/s")
    figures = _run(argv, dict(base_env, MONGODB_URI=uri), database)
    requests = -(-users // 500) + 1  # pages, the last one short or empty, and nothing to recheck
    predicted = (requests - 1) / DEFAULT_MAX_RPS
    figures.update(
        max_rps=DEFAULT_MAX_RPS,
        clerk_requests=requests,
        predicted_s=round(predicted, 1),
        ratio_to_predicted=round(figures["wall_s"] / predicted, 3) if predicted else None,
    )
    log(f"reconcile paced listing: {figures}")
    return figures
