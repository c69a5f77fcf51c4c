"""Ingest: the service and the baseline take turns on the same database, round by round.

Per round and app: a fresh stream of the same shape (its own users), signed just before
the round, sent at the chosen concurrency. Measured: deliveries per second (wall), client
latency, CPU the app's gunicorn processes (master and workers) spent themselves, and
commands the database server ran, per delivery. On a server, the users' final documents
are then compared with what Clerk holds, for both apps.

The order alternates (service first in odd rounds, baseline first in even ones), so a
database that slows as it grows, or a neighbour's load, hits both alike. After its mixed
stream, each app gets N/4 updates to users that now exist, alone: the common path, and
the one the commands-per-delivery target is about. Then a *realistic* stream (N/3 by
default) of new users, shaped as Svix usually delivers: in order but for occasional
neighbour swaps, ~1% resent, ~1% of the users deleted (``workload.REALISTIC``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import loadgen, procstat, profile, workload
from bench.servers import RunningApp, TestDatabase, log, running_app
from tests.support.signing import TEST_SECRET

SETTLE_S = 1.5  # the event log writes within 1 s of a delivery; both apps wait the same
APP_NAMES = ("service", "baseline")


@dataclass
class RoundResult:
    app: str
    round: int
    kind: str  # "mixed", "updates", "realistic" or "profiled"
    events: int
    wall_s: float
    events_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_us_per_event: float
    db_cmds_per_event: float | None
    wrong_state: int | None  # users whose document disagrees with Clerk after the round
    wrong_examples: list[str] = field(default_factory=list)
    db_ops: dict[str, int] = field(default_factory=dict)  # serverStatus opcounters, per kind
    statuses: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def _wrong_state(db, stream: workload.Stream) -> list[str]:
    """Users whose local document disagrees with Clerk's final state."""
    ids = list(stream.users)
    found = db["users"].find({"clerkId": {"$in": ids}}, {"clerkId": 1, "firstName": 1})
    docs = {d["clerkId"]: d for d in found}
    wrong = []
    for user_id, info in stream.users.items():
        doc = docs.get(user_id)
        if (doc is not None) if info.deleted else (doc is None or doc.get("firstName") != info.first_name):
            wrong.append(user_id)
    return wrong


def _shape(template: workload.Template) -> dict[str, int]:
    return {
        "users": template.users,
        "created": template.count("created"),
        "updated": template.count("updated"),
        "deleted": template.count("deleted"),
        "resent": template.duplicates,
    }


def _opcounters(database: TestDatabase | None) -> dict[str, int]:
    return database.opcounters() if database else {}


def run_round(
    app: RunningApp,
    stream: workload.Stream,
    *,
    number: int,
    kind: str,
    concurrency: int,
    database: TestDatabase | None,
    db=None,
) -> RoundResult:
    requests = workload.sign(stream, TEST_SECRET, datetime.now(UTC) + workload.SIGN_AHEAD)
    ops_before = _opcounters(database)
    cpu_before = app.cpu()
    result = loadgen.drive(app.url, workload.WEBHOOK_PATH, requests, concurrency=concurrency)
    time.sleep(SETTLE_S)
    cpu = procstat.cpu_delta(cpu_before, app.cpu())
    ops = {k: v - ops_before[k] for k, v in _opcounters(database).items()}
    if ops:
        ops["command"] -= 1  # the serverStatus that read them
    commands = sum(ops.values()) if database else None
    wrong = _wrong_state(db, stream) if db is not None else None
    bad = {s: n for s, n in result.statuses.items() if s != 200}
    if bad:
        raise RuntimeError(f"{app.name}: non-200 answers {bad}, e.g. {result.errors[:3]}")
    latencies = sorted(result.latencies_s)
    n = result.count
    return RoundResult(
        app=app.name,
        round=number,
        kind=kind,
        events=n,
        wall_s=round(result.wall_s, 3),
        events_per_s=round(result.per_s, 1),
        p50_ms=round(percentile(latencies, 0.50) * 1000, 2),
        p95_ms=round(percentile(latencies, 0.95) * 1000, 2),
        p99_ms=round(percentile(latencies, 0.99) * 1000, 2),
        cpu_us_per_event=round(cpu / n * 1e6, 1),
        db_cmds_per_event=round(commands / n, 3) if commands is not None else None,
        wrong_state=len(wrong) if wrong is not None else None,
        wrong_examples=(wrong or [])[:5],
        db_ops=ops,
        statuses={str(k): v for k, v in result.statuses.items()},
        outcomes=dict(result.outcomes),
    )


def run(
    backend: str,
    *,
    events: int,
    concurrency: int,
    rounds: int,
    workers: int,
    database: TestDatabase | None = None,
    update_events: int | None = None,
    realistic_events: int | None = None,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Every round for both apps on ``backend`` ("secantus" or "mongomock"); with
    ``profile_dir``, then one more update-only round per app under py-spy."""
    template = workload.build_template(events)
    realistic = workload.build_template(realistic_events or max(1, events // 3), **workload.REALISTIC)
    warmup = workload.build_template(min(300, events), seed=99)
    uri, db = database.new_database("ingest") if database else ("", None)
    if db is not None:
        from tests.support.stores import ensure_service_indexes

        ensure_service_indexes(db)  # the baseline's upsert by clerkId gets the same index
    results: list[RoundResult] = []
    last_stream: dict[str, workload.Stream] = {}
    with (
        running_app(backend, "service", uri, workers=workers) as service,
        running_app(backend, "baseline", uri, workers=workers) as baseline,
    ):
        apps = {"service": service, "baseline": baseline}
        for app in apps.values():
            stream = workload.materialize(warmup, f"w{backend[0]}{app.name[0]}")
            loadgen.drive(
                app.url,
                workload.WEBHOOK_PATH,
                workload.sign(stream, TEST_SECRET, datetime.now(UTC)),
                concurrency=concurrency,
            )
        count = update_events or max(1, events // 4)

        def measured(name: str, stream: workload.Stream, number: int, kind: str) -> None:
            result = run_round(
                apps[name],
                stream,
                number=number,
                kind=kind,
                concurrency=concurrency,
                database=database,
                db=db,
            )
            results.append(result)
            log(
                f"{backend} round {number} {name} {kind}: {result.events_per_s} ev/s, "
                f"{result.cpu_us_per_event} us CPU/ev, {result.db_cmds_per_event} cmds/ev, "
                f"p50 {result.p50_ms} ms, wrong {result.wrong_state}, {result.outcomes}"
            )

        for number in range(1, rounds + 1):
            order = APP_NAMES if number % 2 else APP_NAMES[::-1]
            for name in order:
                stream = workload.materialize(template, f"{backend[0]}{number}{name[0]}")
                last_stream[name] = stream
                measured(name, stream, number, "mixed")
                # Then only updates to users that now exist: the common path on its own.
                measured(name, workload.update_stream(stream, count), number, "updates")
                # Then new users as Svix usually delivers them: in order, few resends.
                realistic_stream = workload.materialize(realistic, f"{backend[0]}{number}{name[0]}r")
                measured(name, realistic_stream, number, "realistic")
        profiles = {}
        for name in APP_NAMES if profile_dir is not None else ():
            stream = workload.update_stream(last_stream[name], count)
            with profile.sampling(
                apps[name].service.worker_pids(), profile_dir / f"{backend}-{name}"
            ) as files:
                result = run_round(
                    apps[name],
                    stream,
                    number=0,
                    kind="profiled",
                    concurrency=concurrency,
                    database=database,
                    db=db,
                )
            profiles[name] = profile.breakdown(files, result.cpu_us_per_event)
            log(f"{backend} profile {name}: {profiles[name]}")
    return {
        "backend": backend,
        "events": events,
        "update_events": count,
        "concurrency": concurrency,
        "rounds": rounds,
        "workers": workers,
        "realistic_events": len(realistic.steps),
        "stream": _shape(template),
        "realistic_stream": _shape(realistic),
        "results": [asdict(r) for r in results],
        "profile": profiles,
    }
