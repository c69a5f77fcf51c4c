"""Burst: a Clerk bulk import, or a migration through the Backend API, sends one
``user.created`` per user at once.

Each app (the service, then the baseline, each on an empty database of its own) gets
``--burst-events`` (20,000) ``user.created`` deliveries of distinct users, about
``--burst-concurrency`` (64) in flight, against gunicorn's default 2 workers x 4 threads.
Reported: deliveries/s against the baseline's, p50/p99/max latency, every status, and
the users whose document is not what Clerk holds afterwards. Targets: no 5xx, no request
near Svix's 15 s timeout, p99 under 2 s, every user stored right.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from bench import loadgen, workload
from bench.ingest import SETTLE_S, _wrong_state, percentile
from bench.servers import TestDatabase, log, running_app
from tests.support.signing import TEST_SECRET
from tests.support.stores import ensure_service_indexes

NEAR_SVIX_TIMEOUT_S = 10.0
P99_TARGET_S = 2.0


def _template(events: int) -> workload.Template:
    steps = tuple(workload.Step(user=i, kind="created", version=0, delivery=i) for i in range(events))
    return workload.Template(steps=steps, users=events)


def run(database: TestDatabase, *, events: int, concurrency: int, workers: int) -> dict[str, Any]:
    template = _template(events)
    results: dict[str, Any] = {"events": events, "concurrency": concurrency, "workers": workers}
    for name in ("service", "baseline"):
        uri, db = database.new_database(f"burst_{name}")
        if name == "baseline":
            ensure_service_indexes(db)  # the baseline's upsert by clerkId gets the same index
        stream = workload.materialize(template, f"b{name[0]}")
        requests = workload.sign(stream, TEST_SECRET, datetime.now(UTC) + workload.SIGN_AHEAD)
        with running_app("secantus", name, uri, workers=workers) as app:
            log(f"burst: {name}, {events} user.created, {concurrency} in flight")
            # A 60 s client timeout: a request Svix would have given up on still gets counted.
            result = loadgen.drive(
                app.url, workload.WEBHOOK_PATH, requests, concurrency=concurrency, timeout_s=60
            )
            time.sleep(SETTLE_S)
        latencies = sorted(result.latencies_s)
        wrong = _wrong_state(db, stream)
        statuses = Counter({str(k): v for k, v in result.statuses.items()})
        figures = {
            "deliveries_per_s": round(result.per_s, 1),
            "wall_s": round(result.wall_s, 1),
            "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
            "over_10s": sum(1 for s in latencies if s >= NEAR_SVIX_TIMEOUT_S),
            "statuses": dict(statuses),
            "five_xx": sum(v for k, v in statuses.items() if k.startswith("5")),
            "errors": result.errors[:5],
            "wrong_state": len(wrong),
            "wrong_examples": wrong[:5],
        }
        results[name] = figures
        log(f"burst {name}: {figures}")
    results["ratio_deliveries_per_s"] = round(
        results["service"]["deliveries_per_s"] / results["baseline"]["deliveries_per_s"], 3
    )
    return results


def table_lines(section: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"Burst: {section['events']:,} user.created at once, {section['concurrency']} in flight, "
        f"{section['workers']} workers x 4 threads, empty database:",
        f"{'':28}{'service':>10}{'baseline':>10}",
    ]
    for key, label in (
        ("deliveries_per_s", "deliveries/s"),
        ("p50_ms", "latency p50 ms"),
        ("p99_ms", "latency p99 ms"),
        ("max_ms", "latency max ms"),
        ("five_xx", "5xx answers"),
        ("wrong_state", "users left wrong"),
    ):
        lines.append(f"    {label:<24}{section['service'][key]!s:>10}{section['baseline'][key]!s:>10}")
    lines.append(
        f"    statuses: service {section['service']['statuses']}, baseline {section['baseline']['statuses']}"
    )
    return lines


def targets(section: dict[str, Any]) -> list[tuple[str, str, float | None, bool | None, str]]:
    service = section["service"]
    where = f"secantus, {section['events']} deliveries"
    return [
        ("burst: 5xx answers", "0", service["five_xx"], service["five_xx"] == 0, where),
        (
            "burst: slowest delivery, ms",
            f"< {NEAR_SVIX_TIMEOUT_S * 1000:.0f} (Svix gives up at 15 s)",
            service["max_ms"],
            service["max_ms"] is not None and service["max_ms"] < NEAR_SVIX_TIMEOUT_S * 1000,
            where,
        ),
        (
            "burst: latency p99, ms",
            f"< {P99_TARGET_S * 1000:.0f}",
            service["p99_ms"],
            service["p99_ms"] < P99_TARGET_S * 1000,
            where,
        ),
        ("burst: users left wrong", "0", service["wrong_state"], service["wrong_state"] == 0, where),
    ]
