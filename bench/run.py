"""Run the benchmarks and report service/baseline ratios.

    python -m bench                  # the full run (make bench)
    python -m bench --quick          # a small one, about two minutes
    python -m bench --only ingest --backends mongomock --events 5000
    python -m bench --only instructions   # instructions per delivery, under callgrind

Prints a table, writes it with every raw figure to bench/results.json (``--results``),
and, when that file already exists, prints the change against it first. A run of the
instructions part alone replaces only the ``instructions`` section of an existing
results file (and its targets): the timed sections stay as the run that made them left
them, and its ``meta`` with them (the instructions section has a ``meta`` of its own).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench import (
    burst,
    commands,
    ingest,
    instructions,
    procstat,
    profile,
    reconcile_bench,
    report,
    scale,
    sync_bench,
)
from bench.servers import TestDatabase, log

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results.json"
PROFILE_DIR = Path(__file__).resolve().parent / "out"
QUICK = {
    "events": 2000,
    "rounds": 2,
    "reconcile_users": 10_000,
    "reconcile_baseline_users": 2000,
    "sync_requests": 100,
    "scale_sizes": "1000,10000",
    "scale_ops": 20,
    "burst_events": 2000,
    "instructions_events": 200,
    "instructions_warmup": 50,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: " + ", ".join(f"{k}={v}" for k, v in QUICK.items())
    )
    parser.add_argument("--events", type=int, default=20_000, help="deliveries per round (N)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (C)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per app and database")
    parser.add_argument(
        "--update-events", type=int, default=None, help="deliveries in the update-only round (default N/4)"
    )
    parser.add_argument(
        "--realistic-events",
        type=int,
        default=None,
        help="deliveries in the realistic round: in order, ~1%% resent, ~1%% deleted (default N/3)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="gunicorn workers on a server (WEB_CONCURRENCY)"
    )
    parser.add_argument(
        "--mock-workers",
        type=int,
        default=1,
        help="gunicorn workers on mongomock (each worker has its own in-memory database)",
    )
    parser.add_argument(
        "--backends", default="secantus,mongomock", help="databases for ingest, comma-separated"
    )
    parser.add_argument("--reconcile-users", type=int, default=100_000, help="users the fake Clerk serves")
    parser.add_argument(
        "--reconcile-baseline-users",
        type=int,
        default=5_000,
        help="users the one-at-a-time baseline upserts (compare users/s)",
    )
    parser.add_argument("--sync-requests", type=int, default=400, help="POST /api/users/sync calls")
    parser.add_argument(
        "--command-calls", type=int, default=300, help="calls per command and round in the commands part"
    )
    parser.add_argument(
        "--scale-sizes", default="1000,10000,100000", help="existing users in the scale part, comma-separated"
    )
    parser.add_argument("--scale-ops", type=int, default=100, help="operations of each kind per size (scale)")
    parser.add_argument(
        "--scale-mock-ops", type=int, default=10, help="operations of each kind per size on mongomock (scale)"
    )
    parser.add_argument(
        "--burst-events", type=int, default=20_000, help="user.created deliveries in the burst part"
    )
    parser.add_argument("--burst-concurrency", type=int, default=64, help="requests in flight (burst)")
    parser.add_argument(
        "--instructions-events",
        type=int,
        default=1000,
        help="deliveries per stream and app in the instructions part (callgrind)",
    )
    parser.add_argument(
        "--instructions-warmup",
        type=int,
        default=100,
        help="deliveries before the measured ones (instructions)",
    )
    parser.add_argument(
        "--instructions-out",
        type=Path,
        default=instructions.DEFAULT_OUT,
        help="where the instructions part leaves its callgrind files (emptied first)",
    )
    parser.add_argument(
        "--only",
        default="instructions,ingest,reconcile,sync,commands,scale,burst",
        help="parts to run, comma-separated",
    )
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="where to write the results")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="add an update-only round per app under py-spy (pip install py-spy) and split "
        "CPU per delivery by category; raw samples go to bench/out/",
    )
    args = parser.parse_args(argv)
    if args.quick:
        given = {a.lstrip("-").replace("-", "_").split("=")[0] for a in (argv or sys.argv[1:])}
        for key, value in QUICK.items():
            if key not in given:
                setattr(args, key, value)
    args.reconcile_baseline_users = min(args.reconcile_baseline_users, args.reconcile_users)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so gunicorn and the database server are stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    parts = set(args.only.split(","))
    if "instructions" in parts:
        instructions.require_valgrind()  # before anything runs, not after the timed parts
    if args.profile and not profile.py_spy():
        raise SystemExit("--profile needs py-spy on PATH: pip install py-spy")
    backends = [b for b in args.backends.split(",") if b]
    if unknown := set(backends) - {"secantus", "mongomock"}:
        raise SystemExit(f"unknown backend(s): {', '.join(sorted(unknown))}")
    results: dict[str, Any] = {
        "meta": {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "cores": os.cpu_count(),
            "cpu": procstat.cpu_model(),
            "python": platform.python_version(),
            "command": "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        }
    }
    previous: dict[str, Any] | None = None
    if args.results.exists():
        try:
            previous = json.loads(args.results.read_text())
        except ValueError as exc:
            log(f"cannot read {args.results}: {exc!r}")
    began = time.monotonic()
    database = TestDatabase()
    try:
        results["meta"]["database"] = f"{database.name} (reports MongoDB {database.version()})"
        if "instructions" in parts:
            results["instructions"] = instructions.run(
                database,
                events=args.instructions_events,
                warmup=args.instructions_warmup,
                out=args.instructions_out,
                previous=(previous or {}).get("instructions"),
                command=results["meta"]["command"],
            )
        if "ingest" in parts:
            results["ingest"] = {}
            for backend in backends:
                section = ingest.run(
                    backend,
                    events=args.events,
                    concurrency=args.concurrency,
                    rounds=args.rounds,
                    workers=args.workers if backend != "mongomock" else args.mock_workers,
                    database=database if backend != "mongomock" else None,
                    update_events=args.update_events,
                    realistic_events=args.realistic_events,
                    profile_dir=PROFILE_DIR if args.profile else None,
                )
                section["database"] = (
                    results["meta"]["database"]
                    if backend != "mongomock"
                    else "mongomock (in each worker; indexed lookups, see bench/mockdb.py)"
                )
                section["summary"] = report.summarize_ingest(section)
                results["ingest"][backend] = section
        if "reconcile" in parts:
            results["reconcile"] = reconcile_bench.run(
                database, users=args.reconcile_users, baseline_users=args.reconcile_baseline_users
            )
        if "sync" in parts:
            results["sync"] = sync_bench.run(database, requests=args.sync_requests)
        if "commands" in parts:
            results["commands"] = commands.run(database, calls=args.command_calls)
        if "scale" in parts:
            results["scale"] = scale.run(
                database,
                sizes=tuple(int(n) for n in str(args.scale_sizes).split(",")),
                ops=args.scale_ops,
                mock_ops=args.scale_mock_ops,
                backends=tuple(backends),
            )
        if "burst" in parts:
            results["burst"] = burst.run(
                database, events=args.burst_events, concurrency=args.burst_concurrency, workers=args.workers
            )
    finally:
        database.close()
    results["meta"]["duration_s"] = round(time.monotonic() - began, 1)
    results["targets"] = report.targets(results)
    if previous is not None:
        try:
            change = report.changes(previous, results)
            if change:
                print(change)
                print()
        except (ValueError, KeyError, TypeError) as exc:
            log(f"cannot compare with {args.results}: {exc!r}")
    print(report.table(results))
    written = results
    if previous is not None and parts == {"instructions"}:
        written = {**previous, "instructions": results["instructions"]}
        written["targets"] = report.targets(written)
    args.results.write_text(json.dumps(written, indent=1) + "\n")
    log(f"results written to {args.results} ({results['meta']['duration_s']} s)")
    return 0
