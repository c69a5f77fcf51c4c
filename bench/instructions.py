"""Instructions per delivery: the service against the baseline, counted by callgrind.

Timed figures on a shared 2-core machine move by tens of percent between runs; the
number of instructions a process executes for the same input does not. Each app runs
in a process of its own (``bench/instructions_worker.py``) under
``valgrind --tool=callgrind``: the app's WSGI callable is called in-process with the same
signed deliveries, one at a time, as gunicorn's worker would call it; the database is the
bench's SecantusDB server, a separate process over loopback, so its instructions are not
counted, and neither is any HTTP server's (the same for both apps).

What is counted, and why it repeats:

* Only the phases: each phase is bracketed by a call of ``getloadavg()``, on which
  callgrind (``--dump-before=getloadavg``) writes what it counted so far to a file of its
  own. The signing of a phase's deliveries falls in the files between phases; start-up,
  imports and the warm-up run before callgrind instruments anything at all
  (``--instr-atstart=no``, switched on through ``vgdb`` before the first phase), which
  makes them about six times faster.
* Every thread of the process, and the event log's writing inside the phase: the
  writer thread is held back during a phase (no once-a-second timer, no wake-up at 100
  records) and each phase ends with ``EventLog.flush()``, which writes the phase's
  records in batches of 100 (a busy service's) from the main thread. A phase writes the
  same batches on every run, and no two threads take the GIL from each other.
* The same deliveries on every run: fixed seeds and ids (``bench/workload.py``, the
  timed bench's streams), ``PYTHONHASHSEED=0``, a fresh database per run, and
  ``gc.collect()`` plus ``gc.freeze()`` before each phase (so a full collection over
  start-up's objects cannot land in one run's phase and not in another's). The Svix
  timestamp changes, the signed length does not.
* No clock-driven work in a phase: pymongo's heartbeat (10 s) and maintenance task (1 s)
  are pushed to an hour, and ``Metrics.delivery``'s last-delivery gauge (at most once a
  second) is held back. They cost per second, not per delivery, and how often a phase
  paid for them would depend on how fast the machine ran it.
* The same heap, as far as it can be: the repository's modules are compiled before a
  worker starts, so no worker compiles one (which changes the layout of the heap, and
  with it which attribute lookups collide in the interpreter's type cache: 0.5-0.9 %
  of a delivery's count, in every phase). Threads that allocate while the main thread
  starts up leave the layout a little different on every run all the same.
* What remains is small: a reply may reach a socket in two reads instead of one.

Per feature (``breakdown``, on unless ``run`` is told otherwise): each phase is run once
more on a fresh stream of the same shape, with each feature's functions called through a
ctypes closure of the feature's own (``Carrier``). Callgrind counts the closure's
trampoline as a function at a fixed address, so its inclusive count is everything the
feature's calls executed (the event log's batches included), exactly. A carrier adds a
fixed count per call, measured in a calibration phase and taken off. The features' own
figures come from these phases; the totals and ratios from the phases without carriers.
"""

from __future__ import annotations

import compileall
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.instructions_worker import BASELINE_FEATURES, SERVICE_FEATURES
from bench.servers import TestDatabase, log
from bench.workload import STREAM_NAMES
from tests.support.processes import REPO_ROOT, without_service_settings
from tests.support.signing import TEST_SECRET

APPS = ("service", "baseline")
STREAMS = ("updates", "realistic", "mixed")
# The later step's goals for the instruction ratios (issue, part 2).
GOALS = {"updates": 1.10, "realistic": 1.25, "mixed": 1.30}
REFERENCE_GROWTH = 0.02  # the update path may grow by at most 2 % against the reference
REFERENCE_LABEL = "before organizations and the watcher"
REPEAT_TOLERANCE = 0.01
REST = "the rest"  # Flask, werkzeug, the route and the handler's own code
DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "instructions"
VALGRIND_HINT = "the instructions part needs valgrind (Debian/Ubuntu: apt-get install valgrind)"


def valgrind() -> str | None:
    return shutil.which("valgrind")


def require_valgrind() -> None:
    if valgrind() is None:
        raise SystemExit(VALGRIND_HINT)


# -- callgrind's output --------------------------------------------------------------


@dataclass(frozen=True)
class Dump:
    """What the figures need of one callgrind dump, so that each dump is read once."""

    total: int
    calls: dict[str, tuple[int, int]]  # per watched function: (calls, inclusive instructions)
    by_object: dict[str, int]  # self instructions per shared object


def read_dump(path: Path, functions: set[str]) -> Dump:
    """The total instruction count of a callgrind dump; for each function named in
    ``functions``, (calls, inclusive instructions) summed over every call site; and the
    instructions that ran in each shared object (self cost).

    A call arc is a ``cfn=`` line, a ``calls=<count> <target position>`` line and one
    cost line whose second field is the inclusive cost of those calls, not a self cost.
    The dumps are written with ``--compress-strings=no``, so names appear in full on
    every line.
    """
    total = 0
    found: dict[str, list[int]] = {}
    by_object: dict[str, int] = {}
    obj = "?"
    target: str | None = None
    calls = 0
    cost_of_call = False
    with path.open() as lines:
        for line in lines:
            if cost_of_call:
                cost_of_call = False
                if target in functions:
                    entry = found.setdefault(target, [0, 0])
                    entry[0] += calls
                    entry[1] += int(line.split()[1])
            elif line.startswith("ob="):
                obj = re.sub(r"\.cpython-.*$|\.so(\.\d+)*$", "", line[3:].strip().rsplit("/", 1)[-1]) or "?"
            elif line.startswith("cfn="):
                target = line[4:].strip()
            elif line.startswith("calls="):
                calls = int(line[6:].split()[0])
                cost_of_call = True
            elif line.startswith("summary:"):
                total = int(line.split()[1])
            elif line[:1].isdigit() or line[:1] in "+-*":
                fields = line.split()
                if len(fields) > 1:
                    by_object[obj] = by_object.get(obj, 0) + int(fields[1])
    return Dump(total, {name: (c, i) for name, (c, i) in found.items()}, by_object)


def per_delivery_by_object(by_object: dict[str, int], deliveries: int, top: int = 6) -> dict[str, float]:
    """Instructions per delivery by the shared object they ran in (self cost): the
    interpreter, OpenSSL, the json and bson C extensions, libc..."""
    ranked = sorted(by_object.items(), key=lambda item: -item[1])
    result = {name: round(cost / deliveries, 1) for name, cost in ranked[:top]}
    result["other"] = round(sum(cost for _, cost in ranked[top:]) / deliveries, 1)
    return result


# -- running the workers -------------------------------------------------------------


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    except OSError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


# What the figures depend on besides the interpreter and the installed packages: the
# service's code, and the harness (the app entry point, the streams, the baseline).
SERVICE_CODE = ("webhook_service",)
HARNESS_CODE = (
    "wsgi.py",
    "bench/baseline_app.py",
    "bench/instructions.py",
    "bench/instructions_worker.py",
    "bench/workload.py",
)


def content_hash(paths: tuple[str, ...]) -> str:
    """SHA-256 over the names and contents of the .py and .toml files under ``paths``, as
    they are on disk (committed or not)."""
    digest = hashlib.sha256()
    for top in paths:
        root = REPO_ROOT / top
        files = [root] if root.is_file() else sorted(root.rglob("*"))
        for path in files:
            if path.suffix in (".py", ".toml") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def code_identity() -> dict[str, Any]:
    """Which code was measured: HEAD, the last commit that changed the service's code and
    whether it has uncommitted changes (labels), and hashes of the service's and the
    harness's files as they were (what a repeat is matched on)."""
    return {
        "commit": _git("rev-parse", "HEAD"),
        "service_commit": _git("log", "-1", "--format=%H", "--", *SERVICE_CODE),
        "service_dirty": bool(_git("status", "--porcelain", "--", *SERVICE_CODE)),
        "service_hash": content_hash(SERVICE_CODE),
        "harness_hash": content_hash(HARNESS_CODE),
    }


def _worker_env(uri: str, metrics_dir: Path) -> dict[str, str]:
    """The service's variables as the bench sets them and nobody else's; no PYTHON*
    setting of the caller's (a hash seed, a path, buffering) reaches the worker."""
    env = {k: v for k, v in without_service_settings(os.environ).items() if not k.startswith("PYTHON")}
    env.update(
        MONGODB_URI=uri,
        CLERK_WEBHOOK_SIGNING_SECRET=TEST_SECRET,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),  # as gunicorn.conf.py sets it
        PYTHONHASHSEED="0",
    )
    return env


def _command(app: str, out: Path, *, events: int, warmup: int, breakdown: bool) -> list[str]:
    return [
        valgrind() or "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",  # switched on before the first phase (the worker's --instrument)
        f"--callgrind-out-file={out / f'{app}.callgrind.out'}",
        "--dump-before=getloadavg",
        "--compress-strings=no",
        "--compress-pos=no",
        f"--log-file={out / f'{app}.valgrind.log'}",
        sys.executable,
        "-m",
        "bench.instructions_worker",
        "--app",
        app,
        "--events",
        str(events),
        "--warmup",
        str(warmup),
        "--manifest",
        str(out / f"{app}.json"),
        "--instrument",
        *(["--breakdown"] if breakdown else []),
    ]


def _compile_sources() -> None:
    """Write the bytecode of the repository's modules before a worker imports them.

    A worker that compiles a module (its .pyc missing or stale) leaves its heap laid out
    differently from one that loads it, and with it which attribute lookups collide in
    the interpreter's type cache: up to 0.9 % more or fewer instructions per delivery
    in every phase after it. (The installed packages and the standard library have
    their bytecode from installation.)
    """
    for package in ("bench", "tests", "webhook_service"):
        compileall.compile_dir(REPO_ROOT / package, quiet=1)
    compileall.compile_file(REPO_ROOT / "wsgi.py", quiet=1)


def _run_workers(
    database: TestDatabase, out: Path, *, events: int, warmup: int, breakdown: bool
) -> dict[str, dict[str, Any]]:
    """Both apps' workers at once (counts do not depend on timing), each on a fresh
    database with the service's indexes (the baseline's upsert by clerkId needs one)."""
    from tests.support.stores import ensure_service_indexes

    _compile_sources()
    processes: dict[str, subprocess.Popen[bytes]] = {}
    with ExitStack() as stack:
        for app in APPS:
            uri, db = database.new_database(f"instructions_{app}")
            ensure_service_indexes(db)
            metrics_dir = out / f"{app}-metrics"
            metrics_dir.mkdir()
            stderr = stack.enter_context((out / f"{app}.stderr.log").open("wb"))
            processes[app] = subprocess.Popen(
                _command(app, out, events=events, warmup=warmup, breakdown=breakdown),
                cwd=REPO_ROOT,
                env=_worker_env(uri, metrics_dir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            for app, process in processes.items():
                if process.wait() != 0:
                    tail = (out / f"{app}.stderr.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"instructions: the {app} worker exited {process.returncode}:\n{tail}")
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
    return {app: json.loads((out / f"{app}.json").read_text()) for app in APPS}


def _shown(path: Path) -> str:
    """A path relative to the repository when it is inside it."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _phase_files(out: Path, app: str, count: int) -> list[Path]:
    """Phase k (0-based) is dump 2k+2: dump 1 ends at the first phase's start."""
    paths = [out / f"{app}.callgrind.out.{2 * k + 2}" for k in range(count)]
    for path in paths:
        if not path.exists():
            raise RuntimeError(f"instructions: {path} is missing (callgrind wrote fewer dumps)")
    return paths


# -- the figures ---------------------------------------------------------------------


def _app_figures(out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    app = manifest["app"]
    features = {f["address"]: f["name"] for f in manifest["features"]}
    watched = set(features) | {manifest["calibration"]}
    phases = manifest["phases"]
    paths = _phase_files(out, app, len(phases))
    dumps = [read_dump(path, watched) for path in paths]
    overhead = call_cost = None
    for phase, dump in zip(phases, dumps, strict=True):
        if phase["kind"] == "calibration":
            count, inclusive = dump.calls[manifest["calibration"]]
            if count != phase["events"]:
                raise RuntimeError(f"instructions: calibration counted {count} calls, made {phase['events']}")
            overhead = inclusive / count  # inside the closure: what a feature's count includes
            call_cost = dump.total / count  # all a carried call adds to the phase's total
    figures: dict[str, Any] = {"streams": {}, "features": {}, "files": {}}
    for phase, path, dump in zip(phases, paths, dumps, strict=True):
        kind = phase["kind"]
        if kind == "calibration":
            continue
        if phase["statuses"] != {"200 OK": phase["events"]}:
            raise RuntimeError(f"instructions: {app} {kind}: answers {phase['statuses']}")
        n, total, calls = phase["events"], dump.total, dump.calls
        if not phase["wrapped"]:
            if calls:  # nothing else in the app may call a carrier's closure
                raise RuntimeError(
                    f"instructions: {app} {kind}: carriers called outside the features {calls}"
                )
            figures["streams"][kind] = {
                "per_delivery": round(total / n, 1),
                "events": n,
                "total": total,
                "outcomes": phase.get("outcomes", {}),
                "seconds": phase.get("seconds"),
            }
            figures["files"][kind] = path
            if kind == "updates":
                figures["by_object"] = per_delivery_by_object(dump.by_object, n)
            continue
        assert overhead is not None
        per_feature: dict[str, dict[str, float]] = {}
        for address, name in features.items():
            count, inclusive = calls.get(address, (0, 0))
            per_feature[name] = {
                "per_delivery": round((inclusive - count * overhead) / n, 1),
                "calls_per_delivery": round(count / n, 3),
            }
        # The carriers change nothing else: the phase with them, less what its carried
        # calls add, comes to the phase without them (a check, in percent).
        carried = sum(count for count, _ in calls.values())
        assert call_cost is not None
        unwrapped = figures["streams"][kind]["per_delivery"]
        figures["features"][kind] = {
            "features": per_feature,
            "wrapped_total_per_delivery": round(total / n, 1),
            "check_pct": round(((total - carried * call_cost) / n - unwrapped) / unwrapped * 100, 3),
        }
    figures["carrier_overhead"] = round(overhead, 1) if overhead is not None else None
    figures["carried_call_cost"] = round(call_cost, 1) if call_cost is not None else None
    figures["seconds"] = manifest.get("seconds")
    return figures


def _breakdown(apps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per stream and app: each feature per delivery and its share of the app's total
    (from the phase without carriers), and the rest."""
    result: dict[str, Any] = {}
    for kind in STREAMS:
        result[kind] = {}
        for app, figures in apps.items():
            if kind not in figures["features"]:
                continue
            total = figures["streams"][kind]["per_delivery"]
            rows: dict[str, dict[str, float]] = {}
            for name, f in figures["features"][kind]["features"].items():
                rows[name] = {"per_delivery": f["per_delivery"], "share": round(f["per_delivery"] / total, 4)}
            rest = total - sum(r["per_delivery"] for r in rows.values())
            rows[REST] = {"per_delivery": round(rest, 1), "share": round(rest / total, 4)}
            result[kind][app] = rows
    return result


def _compact(section: dict[str, Any]) -> dict[str, Any]:
    """One run's headline figures, for the history and the repeat check."""
    return {
        "started": section["meta"]["started"],
        "commit": section["meta"]["code"]["commit"],
        "service_hash": section["meta"]["code"]["service_hash"],
        "harness_hash": section["meta"]["code"]["harness_hash"],
        "events": section["meta"]["events"],
        "warmup": section["meta"]["warmup"],
        "streams": {
            kind: {k: s[k] for k in ("service", "baseline", "ratio")}
            for kind, s in section["streams"].items()
        },
        "features": {
            kind: {app: {name: r["per_delivery"] for name, r in rows.items()} for app, rows in apps.items()}
            for kind, apps in section.get("breakdown", {}).items()
        },
    }


def _same_setup(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("service_hash", "harness_hash", "events", "warmup"))


def _difference(before: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """Largest relative difference between two runs' figures, for the totals and for
    the features."""

    def pairs(key: str) -> Iterator[tuple[str, float, float]]:
        if key == "streams":
            for kind, s in now["streams"].items():
                for app in APPS:
                    old = before["streams"].get(kind, {}).get(app)
                    if old:
                        yield f"{kind} {app}", old, s[app]
        else:
            for kind, apps in now.get("features", {}).items():
                for app, rows in apps.items():
                    for name, value in rows.items():
                        old = before.get("features", {}).get(kind, {}).get(app, {}).get(name)
                        if old:
                            yield f"{kind} {app} {name}", old, value

    out: dict[str, Any] = {"against": before["started"]}
    for key in ("streams", "features"):
        diffs = sorted(((abs(b - a) / a, name) for name, a, b in pairs(key)), reverse=True)
        if diffs:
            out[f"{key}_max_difference_pct"] = round(diffs[0][0] * 100, 3)
            out[f"{key}_largest"] = diffs[0][1]
    out["within_1pct"] = out.get("streams_max_difference_pct", 100.0) <= REPEAT_TOLERANCE * 100
    return out


def _reference(section: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """The figure the later 2 % rule is held to: kept from the previous results once it
    exists; made from this run otherwise."""
    if previous and previous.get("reference"):
        return previous["reference"]
    code = section["meta"]["code"]
    return {
        "label": REFERENCE_LABEL,
        "commit": code["commit"],
        "service_commit": code["service_commit"],
        "service_dirty": code["service_dirty"],
        "service_hash": code["service_hash"],
        "harness_hash": code["harness_hash"],
        "measured": section["meta"]["started"],
        "events": section["meta"]["events"],
        "warmup": section["meta"]["warmup"],
        "python": section["meta"]["python"],
        "streams": {
            k: {a: s[a] for a in ("service", "baseline", "ratio")} for k, s in section["streams"].items()
        },
        "rule": "the service's update path may grow by at most 2 % against streams.updates.service",
    }


def run(
    database: TestDatabase,
    *,
    events: int = 1000,
    warmup: int = 100,
    breakdown: bool = True,
    out: Path = DEFAULT_OUT,
    previous: dict[str, Any] | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Both apps under callgrind; the section of results.json. ``previous`` is the
    section of the last results, for the repeat check and the reference."""
    require_valgrind()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    code = code_identity()  # as it is when the workers start
    began = time.monotonic()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    log(f"instructions: both apps under callgrind, {events} deliveries per phase (files in {out})")
    manifests = _run_workers(database, out, events=events, warmup=warmup, breakdown=breakdown)
    apps = {app: _app_figures(out, manifests[app]) for app in APPS}
    streams = {}
    for kind in STREAMS:
        s, b = apps["service"]["streams"][kind], apps["baseline"]["streams"][kind]
        streams[kind] = {
            "service": s["per_delivery"],
            "baseline": b["per_delivery"],
            "ratio": round(s["per_delivery"] / b["per_delivery"], 4),
            "events": s["events"],
            "outcomes": {"service": s["outcomes"]},
        }
    version = subprocess.run([valgrind() or "valgrind", "--version"], capture_output=True, text=True)
    section: dict[str, Any] = {
        "meta": {
            "started": started,
            "command": command,
            "code": code,
            "events": events,
            "warmup": warmup,
            "python": platform.python_version(),
            "valgrind": version.stdout.strip(),
            "database": database.name,
            "duration_s": round(time.monotonic() - began, 1),
            "worker_seconds": {app: apps[app]["seconds"] for app in APPS},
        },
        "streams": streams,
        "features": {
            "service": [{"name": n, "wraps": w} for n, w in SERVICE_FEATURES],
            "baseline": [{"name": n, "wraps": w} for n, w in BASELINE_FEATURES],
        },
        "carrier_overhead": {app: apps[app]["carrier_overhead"] for app in APPS},
        "carried_call_cost": {app: apps[app]["carried_call_cost"] for app in APPS},
        "updates_by_object": {app: apps[app]["by_object"] for app in APPS},
        "files": {app: {kind: _shown(path) for kind, path in apps[app]["files"].items()} for app in APPS},
    }
    if breakdown:
        section["breakdown"] = _breakdown(apps)
        section["carrier_check_pct"] = {
            app: {k: v["check_pct"] for k, v in apps[app]["features"].items()} for app in APPS
        }
    current = _compact(section)
    history = [r for r in (previous or {}).get("runs", []) if isinstance(r, dict)]
    earlier = next((r for r in reversed(history) if _same_setup(r, current)), None)
    if earlier is not None:
        section["repeat"] = _difference(earlier, current)
    section["runs"] = (history + [current])[-10:]
    section["reference"] = _reference(section, previous)
    ref = section["reference"]
    if ref.get("events") == events and ref.get("warmup") == warmup:
        then = ref["streams"]["updates"]["service"]
        section["against_reference"] = {
            "updates_service_change_pct": round((streams["updates"]["service"] - then) / then * 100, 3)
            + 0.0,  # never -0.0
            "limit_pct": REFERENCE_GROWTH * 100,
            # A changed harness (streams, baseline, worker) moves the figure by itself.
            "same_harness": ref.get("harness_hash") == section["meta"]["code"]["harness_hash"],
        }
    log(
        "instructions: "
        + ", ".join(f"{STREAM_NAMES[k]} x{s['ratio']:.3f}" for k, s in streams.items())
        + f" ({section['meta']['duration_s']} s)"
    )
    return section


# -- reporting -----------------------------------------------------------------------


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def table_lines(section: dict[str, Any]) -> list[str]:
    meta = section["meta"]
    code = meta["code"]
    lines = [
        "",
        f"Instructions per delivery (callgrind, in-process WSGI; {meta['events']} deliveries per stream, "
        f"the same for both apps; service code {code['service_commit'][:10]}"
        + (" + uncommitted changes" if code["service_dirty"] else "")
        + "):",
        f"{'':28}{'service':>12}{'baseline':>12}{'ratio':>9}   goal",
    ]
    for kind in STREAMS:
        s = section["streams"][kind]
        lines.append(
            f"    {STREAM_NAMES[kind]:<24}{_n(s['service']):>12}{_n(s['baseline']):>12}"
            f"{s['ratio']:>9.3f}   <= {GOALS[kind]:.2f}"
        )
    ref = section.get("reference")
    if ref:
        against = section.get("against_reference")
        change = (
            f"{against['updates_service_change_pct']:+.2f} %" if against else "not comparable (other sizes)"
        )
        if ref.get("measured") == meta["started"]:
            change = "this run is the reference"
        if against and not against["same_harness"]:
            change += ", and the harness has changed since"
        lines.append(
            f"  update path against the reference ({ref['label']}; service code "
            f"{ref['service_commit'][:10]}, {_n(ref['streams']['updates']['service'])}): "
            f"{change} (limit +2 %)"
        )
    repeat = section.get("repeat")
    if repeat:
        lines.append(
            f"  against the previous run on the same code ({repeat['against']}): totals within "
            f"{repeat.get('streams_max_difference_pct', 0):.3f} %, features within "
            f"{repeat.get('features_max_difference_pct', 0):.3f} % ({repeat.get('features_largest', '-')})"
        )
    breakdown = section.get("breakdown")
    if breakdown:
        lines += [
            "",
            "  Per feature, instructions per delivery (share of the app's total); the rest is Flask, "
            "werkzeug, the route and the handler's own code:",
            f"    {'':<26}" + "".join(f"{STREAM_NAMES[k]:>30}" for k in STREAMS),
        ]
        for app in APPS:
            lines.append(f"    {app}:")
            for name in breakdown[STREAMS[0]][app]:
                cells = []
                for kind in STREAMS:
                    row = breakdown[kind][app][name]
                    cells.append(f"{_n(row['per_delivery']):>19} ({row['share'] * 100:5.1f} %)")
                lines.append(f"      {name:<24}" + "".join(f"{c:>30}" for c in cells))
        checks = [abs(v) for app in section.get("carrier_check_pct", {}).values() for v in app.values()]
        if checks:
            lines.append(
                "  The carriers change nothing else: each phase with them, less what their calls add, "
                f"is within {max(checks):.2f} % of the phase without them."
            )
    by_object = section.get("updates_by_object")
    if by_object:
        lines.append("  Update path by where the instructions ran (self cost per delivery):")
        for app in APPS:
            parts = ", ".join(f"{name} {_n(value)}" for name, value in by_object[app].items())
            lines.append(f"    {app}: {parts}")
    return lines


def targets(section: dict[str, Any]) -> list[tuple[str, str, float | None, bool | None, str]]:
    where = f"callgrind, {section['meta']['events']} deliveries"
    found = [
        (
            f"service instructions per delivery / baseline's, {STREAM_NAMES[kind]}",
            f"<= {GOALS[kind]:.2f}",
            section["streams"][kind]["ratio"],
            section["streams"][kind]["ratio"] <= GOALS[kind],
            where,
        )
        for kind in STREAMS
    ]
    against = section.get("against_reference")
    if against:
        change = against["updates_service_change_pct"]
        found.append(
            (
                f"service instructions per update-path delivery against the reference, % "
                f"({section['reference']['label']})",
                f"<= +{REFERENCE_GROWTH * 100:.0f}",
                change,
                change <= REFERENCE_GROWTH * 100,
                where,
            )
        )
    repeat = section.get("repeat")
    if repeat and "streams_max_difference_pct" in repeat:
        found.append(
            (
                "instructions: largest difference from the previous run on the same code, %",
                f"<= {REPEAT_TOLERANCE * 100:.0f}",
                repeat["streams_max_difference_pct"],
                repeat["within_1pct"],
                where,
            )
        )
    return found
