"""What one database command costs the process that sends it, against the server's time.

The ingest figures charge each app's worker for its CPU. On this machine that charge grows
with how long the server takes to answer, not only with what the client does: the same
pymongo call costs the client more CPU when the server (here a Python process on the same
2 cores) runs longer in between, which leaves the client's caches cold. This part sends,
one at a time from this process, on one database that has the service's indexes:

* ``ping``: the cheapest command there is;
* the baseline's write: ``update_one({clerkId}, {$set: mapped fields}, upsert=True)``;
* the service's write: ``UserStore.upsert_if_newer``, one ``update_one`` with the version
  filter (its update path, nothing else);

and reports, per command, the client's CPU and the wall time (the server's answer).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.baseline_app import mapped_fields
from bench.servers import TestDatabase, log
from tests.support.stores import ensure_service_indexes, user_store, xclone_user
from webhook_service.dev.sample_events import make_clerk_user

USERS = 200
_T0 = 1_767_225_600_000


def run(database: TestDatabase, *, calls: int = 300, rounds: int = 5) -> dict[str, Any]:
    _, db = database.new_database("commands")
    ensure_service_indexes(db)
    store = user_store(db)
    service_users = [make_clerk_user(f"user_svc{i:05d}", updated_at=_T0) for i in range(USERS)]
    baseline_users = [make_clerk_user(f"user_base{i:05d}", updated_at=_T0) for i in range(USERS)]
    for user in service_users:
        store.upsert_if_newer(xclone_user(user), f"msg_first_{user['id']}")
    for user in baseline_users:
        db.users.update_one({"clerkId": user["id"]}, {"$set": mapped_fields(user)}, upsert=True)
    version = iter(range(1, 10**9))

    def newer(user: dict[str, Any]) -> dict[str, Any]:
        n = next(version)
        return {**user, "updated_at": _T0 + n, "first_name": f"v{n}"}

    def service_write(i: int) -> None:
        user = newer(service_users[i % USERS])
        store.upsert_if_newer(xclone_user(user), f"msg_{user['updated_at']}")

    def baseline_write(i: int) -> None:
        user = newer(baseline_users[i % USERS])
        db.users.update_one({"clerkId": user["id"]}, {"$set": mapped_fields(user)}, upsert=True)

    kinds: dict[str, Callable[[int], Any]] = {
        "ping": lambda i: db.command("ping"),
        "baseline update": baseline_write,
        "service update (upsert_if_newer)": service_write,
    }
    samples: dict[str, dict[str, list[float]]] = {k: {"cpu_us": [], "wall_us": []} for k in kinds}
    for number in range(rounds):
        for name, call in kinds.items() if number % 2 else reversed(kinds.items()):
            cpu, wall = time.process_time(), time.perf_counter()
            for i in range(calls):
                call(i)
            samples[name]["cpu_us"].append((time.process_time() - cpu) / calls * 1e6)
            samples[name]["wall_us"].append((time.perf_counter() - wall) / calls * 1e6)
    figures = {
        name: {key: round(statistics.median(values), 1) for key, values in s.items()}
        | {"cpu_us_rounds": [round(v) for v in s["cpu_us"]]}
        for name, s in samples.items()
    }
    log(f"commands: {figures}")
    return {"calls": calls, "rounds": rounds, "figures": figures}
