"""The benchmark harness runs end to end (``make bench``), at a tiny size.

Checks that every part runs and reports, and that the work really happened: every
delivery answered 200 for both apps, the service's documents match Clerk's final state,
the reconcile stored every user. No timing is asserted; instruction counts (callgrind)
are, since they repeat: a second run of the instructions part at the same size agrees
with the first within 1 %.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench import instructions, report
from tests.support.processes import REPO_ROOT

pytestmark = pytest.mark.slow

INSTRUCTIONS = 12  # deliveries per stream and app under callgrind (about 15 s for both apps)
# The kernel counts CPU in 10 ms ticks: a round of a dozen deliveries can read 0 for the
# baseline, and a ratio over 0 has no verdict. 48 deliveries a round always have one.
UPDATES = REALISTIC = 48
TINY = [
    "--events", "60", "--rounds", "1", "--concurrency", "4",
    "--update-events", str(UPDATES), "--realistic-events", str(REALISTIC),
    "--reconcile-users", "600", "--reconcile-baseline-users", "100", "--sync-requests", "6",
    "--command-calls", "10", "--scale-sizes", "600,1200", "--scale-ops", "4", "--scale-mock-ops", "2",
    "--burst-events", "100", "--burst-concurrency", "16",
    "--instructions-events", str(INSTRUCTIONS), "--instructions-warmup", "16",
]  # fmt: skip


def bench(*args: str, timeout: float = 360, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


@pytest.fixture(scope="module")
def results_file(tmp_path_factory):
    return tmp_path_factory.mktemp("bench") / "results.json"


@pytest.fixture(scope="module")
def run(results_file):
    # CI installs valgrind (.ci/run); a developer without it is told the package to get.
    assert instructions.valgrind() is not None, instructions.VALGRIND_HINT
    out = results_file.parent / "instructions"
    done = bench(*TINY, "--results", str(results_file), "--instructions-out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(results_file.read_text())


def test_both_apps_take_every_delivery_on_both_databases(run):
    _, results = run
    assert set(results["ingest"]) == {"secantus", "mongomock"}
    for backend, section in results["ingest"].items():
        rounds = {(r["app"], r["kind"]): r for r in section["results"]}
        kinds = ("mixed", "updates", "realistic")
        assert set(rounds) == {(a, k) for a in ("service", "baseline") for k in kinds}, backend
        for r in rounds.values():
            assert r["statuses"] == {"200": r["events"]}, (backend, r)
            # Measured from /proc in 10 ms clock ticks: a tiny round can round down to 0.
            assert isinstance(r["cpu_us_per_event"], float) and r["cpu_us_per_event"] >= 0
        assert sum(rounds[("service", "mixed")]["outcomes"].values()) == 60
        # Four connections at once: two updates of one user can arrive newest first, and the
        # older one is then (rightly) stale. Nothing else may happen to an update.
        updates = rounds[("service", "updates")]["outcomes"]
        assert sum(updates.values()) == UPDATES and set(updates) <= {"applied", "stale"}, updates
        assert updates["applied"] >= UPDATES // 2, updates
        assert sum(rounds[("service", "realistic")]["outcomes"].values()) == REALISTIC
        assert section["realistic_events"] == REALISTIC and section["realistic_stream"]["created"] > 0


def test_the_realistic_stream_is_reported_beside_the_others(run):
    stdout, results = run
    for backend, section in results["ingest"].items():
        realistic = section["summary"]["realistic"]
        figures = ["events_per_s", "p50_ms", "p95_ms", "p99_ms", "cpu_us_per_event"]
        if backend == "secantus":  # commands and end state are read from a server only
            figures += ["db_cmds_per_event", "wrong_state"]
        for key in figures:
            assert set(realistic[key]) == set(section["summary"]["mixed"][key]), (backend, key)
            assert realistic[key]["service"] is not None and realistic[key]["baseline"] is not None, key
        assert realistic["wrong_state"]["service"] in (0, None), backend
    assert stdout.count(f"realistic stream ({REALISTIC} deliveries per round") == 2


def test_the_service_leaves_every_user_as_clerk_has_it(run):
    _, results = run
    for r in results["ingest"]["secantus"]["results"]:
        if r["app"] == "service":
            assert r["wrong_state"] == 0, r["wrong_examples"]
        assert r["db_cmds_per_event"] >= 1


def test_reconcile_and_sync_report_their_figures(run):
    _, results = run
    reconcile = results["reconcile"]
    assert (reconcile["service"]["users"], reconcile["baseline"]["users"]) == (600, 100)
    assert reconcile["service"]["peak_rss_mb"] > 0
    assert reconcile["deletion"]["to_delete"] == 60
    assert "unchanged 600, deleted 60;" in reconcile["deletion"]["output"][-1]
    batching = reconcile["deletion_batching"]
    assert (batching["users"], batching["batch"]) == (60, 100)
    assert batching["batched_per_s"] > 0 and batching["one_at_a_time_per_s"] > 0
    assert (
        reconcile["paced_listing"]["clerk_requests"] == 3 and reconcile["paced_listing"]["predicted_s"] == 1.0
    )
    assert results["sync"]["end_to_end"]["requests"] == 6
    assert set(results["sync"]["parts"]) == {"jwt_verify", "clerk_get_user", "db_upsert_and_read"}


def test_the_commands_part_reports_client_cpu_and_wall_time_per_command(run):
    stdout, results = run
    figures = results["commands"]["figures"]
    assert set(figures) == {"ping", "baseline update", "service update (upsert_if_newer)"}
    for name, f in figures.items():
        assert f["wall_us"] > 0 and f["cpu_us"] >= 0 and len(f["cpu_us_rounds"]) == 5, name
        assert name in stdout
    assert "One command at a time from one client" in stdout


def test_the_table_states_every_target_and_a_rerun_prints_the_change(run):
    stdout, results = run
    assert "Targets:" in stdout
    goals = {(t["measured_on"], t["target"]): t["goal"] for t in results["targets"]}
    # CPU and deliveries/s per stream on each database, commands per delivery on the
    # server, reconcile x2, scale one per operation, burst x4, instruction ratios x3 and
    # the update path against the reference (made by this first run)
    assert len(goals) == 2 * 3 * 2 + 1 + 2 + 5 + 4 + 3 + 1
    cpu = "service CPU per delivery / baseline's, "
    for backend in ("secantus", "mongomock"):
        assert goals[(backend, cpu + "update path")].startswith("<= 1.1 ")
        assert goals[(backend, cpu + "mixed stream")].startswith("<= 1.3 ")
        assert goals[(backend, "service deliveries/s / baseline's, realistic stream")].startswith(">= 0.9 ")
    assert [t for t in results["targets"] if t["met"] not in (True, False)] == []
    change = report.changes(results, results)
    assert "Change against the previous run" in change and "(+0%" in change


def test_the_scale_part_measures_every_operation_at_every_size_on_both_databases(run):
    stdout, results = run
    scale = results["scale"]
    for backend in ("secantus", "mongomock"):
        by_size = scale[backend]["by_size"]
        assert set(by_size) == {"600", "1200"}
        for figures in by_size.values():
            assert set(figures["ops"]) == {"insert", "update", "delete", "sync", "reconcile_page"}
            assert all(op["wall_ms"] > 0 and op["calls"] >= 1 for op in figures["ops"].values())
        assert set(scale[backend]["ratio_largest_to_smallest"]) == set(figures["ops"])
    assert "Scale: one operation at a time, at 600, 1,200 existing users" in stdout


def test_the_burst_part_sends_every_user_created_to_both_apps_and_checks_them(run):
    stdout, results = run
    burst = results["burst"]
    for app in ("service", "baseline"):
        assert burst[app]["statuses"] == {"200": 100}, burst[app]
        assert burst[app]["wrong_state"] == 0, burst[app]["wrong_examples"]
        assert burst[app]["p50_ms"] <= burst[app]["p99_ms"] <= burst[app]["max_ms"]
    assert burst["ratio_deliveries_per_s"] > 0
    assert "Burst: 100 user.created at once, 16 in flight" in stdout


def test_the_instructions_part_prints_three_ratios_and_every_feature(run):
    stdout, results = run
    section = results["instructions"]
    assert "Instructions per delivery (callgrind" in stdout
    for kind, name in instructions.STREAM_NAMES.items():
        figures = section["streams"][kind]
        assert figures["service"] > 0 and figures["baseline"] > 0 and figures["ratio"] > 0, kind
        assert figures["events"] == INSTRUCTIONS
        assert f"    {name} " in stdout
    assert section["streams"]["updates"]["outcomes"]["service"] == {"applied": INSTRUCTIONS}
    service = [name for name, _ in instructions.SERVICE_FEATURES]
    assert service == [
        "verification", "parsing and mapping", "versioned write", "event-log record", "metrics", "log line"
    ]  # fmt: skip
    for kind in instructions.STREAMS:
        rows = section["breakdown"][kind]
        assert list(rows["service"]) == [*service, instructions.REST]
        assert list(rows["baseline"]) == [n for n, _ in instructions.BASELINE_FEATURES] + [instructions.REST]
        for app, features in rows.items():
            for name, row in features.items():
                # every feature was really called through its carrier, and the rest is
                # what the features leave of the total
                assert row["per_delivery"] > 0, (kind, app, name)
    for name in service:
        assert f"      {name} " in stdout
    reference = section["reference"]
    assert reference["label"] == instructions.REFERENCE_LABEL and reference["events"] == INSTRUCTIONS
    assert section["against_reference"]["updates_service_change_pct"] == 0


def test_a_second_instructions_run_at_the_same_size_agrees_within_1pct(run, results_file):
    _, first = run
    # The same sizes and the same directory: the workers' arguments and environment are
    # the same bytes as in the first run.
    sizes = TINY[TINY.index("--instructions-events") :]
    out = f"--instructions-out={results_file.parent / 'instructions'}"
    done = bench("--only", "instructions", *sizes, "--results", str(results_file), out)
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.loads(results_file.read_text())
    repeat = again["instructions"]["repeat"]
    assert repeat["against"] == first["instructions"]["meta"]["started"]
    assert repeat["within_1pct"] and repeat["streams_max_difference_pct"] <= 1.0, repeat
    assert "against the previous run on the same code" in done.stdout
    # Only the instructions section (and the targets) is replaced; the reference stays.
    assert again["ingest"] == first["ingest"] and again["meta"] == first["meta"]
    assert again["instructions"]["reference"] == first["instructions"]["reference"]
    assert len(again["instructions"]["runs"]) == 2


def test_without_valgrind_the_instructions_part_names_the_package(tmp_path):
    results = str(tmp_path / "results.json")
    done = bench("--only", "instructions", "--results", results, env={**os.environ, "PATH": ""}, timeout=60)
    assert done.returncode != 0
    assert "apt-get install valgrind" in done.stderr
