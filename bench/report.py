"""Turn raw figures into the summary, the targets, the printed table and the comparison."""

from __future__ import annotations

import math
import statistics
from typing import Any

from bench import burst, instructions, scale
from bench.workload import STREAM_NAMES

# (key, label, better): "higher" or "lower" is better, for the change against a previous run
INGEST_METRICS = (
    ("events_per_s", "deliveries/s", "higher"),
    ("p50_ms", "latency p50 ms", "lower"),
    ("p95_ms", "latency p95 ms", "lower"),
    ("p99_ms", "latency p99 ms", "lower"),
    ("cpu_us_per_event", "CPU us/delivery", "lower"),
    ("db_cmds_per_event", "DB commands/delivery", "lower"),
    ("wrong_state", "users left wrong", "lower"),
)


INGEST_KINDS = ("mixed", "updates", "realistic")


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def summarize_ingest(section: dict[str, Any]) -> dict[str, Any]:
    """Per metric: each app's median over rounds, and service/baseline ratio (same round)
    with its min, median and max over rounds."""
    summary: dict[str, Any] = {}
    for kind in INGEST_KINDS:
        rows = [r for r in section["results"] if r["kind"] == kind]
        if not rows:
            continue
        by_round: dict[int, dict[str, dict[str, Any]]] = {}
        for r in rows:
            by_round.setdefault(r["round"], {})[r["app"]] = r
        metrics: dict[str, Any] = {}
        for key, _, _ in INGEST_METRICS:
            service = [pair["service"][key] for pair in by_round.values() if pair["service"][key] is not None]
            baseline = [
                pair["baseline"][key] for pair in by_round.values() if pair["baseline"][key] is not None
            ]
            ratios = [
                x
                for pair in by_round.values()
                if (x := _ratio(pair["service"][key], pair["baseline"][key])) is not None
            ]
            metrics[key] = {
                "service": _median(service),
                "baseline": _median(baseline),
                "ratio_min": min(ratios) if ratios else None,
                "ratio_median": _median(ratios),
                "ratio_max": max(ratios) if ratios else None,
            }
        summary[kind] = metrics
    return summary


# Issue 12's goals: CPU per delivery against the baseline's, per stream; the realistic
# stream (new users and their updates, in order) is held to the mixed stream's bound.
CPU_GOALS = {"updates": 1.10, "mixed": 1.30, "realistic": 1.30}
RATE_GOAL = 0.9


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The product's goals, each with the measured value and whether it is met."""
    found: list[dict[str, Any]] = []

    def add(name: str, goal: str, value: float | None, ok: bool | None, where: str) -> None:
        found.append({"target": name, "goal": goal, "value": value, "met": ok, "measured_on": where})

    for backend, section in results.get("ingest", {}).items():
        for kind, cpu_goal in CPU_GOALS.items():
            figures = section["summary"].get(kind)
            if figures is None:
                continue
            cpu = figures["cpu_us_per_event"]["ratio_median"]
            add(
                f"service CPU per delivery / baseline's, {STREAM_NAMES[kind]}",
                f"<= {cpu_goal} (median over rounds)",
                cpu,
                None if cpu is None else cpu <= cpu_goal,
                backend,
            )
            rate = figures["events_per_s"]["ratio_median"]
            add(
                f"service deliveries/s / baseline's, {STREAM_NAMES[kind]}",
                f">= {RATE_GOAL} (median over rounds)",
                rate,
                None if rate is None else rate >= RATE_GOAL,
                backend,
            )
        commands = section["summary"]["updates"]["db_cmds_per_event"]["service"]
        if commands is not None:
            add(
                "DB commands per delivery, update of an existing user",
                "<= 1.2",
                commands,
                commands <= 1.2,
                backend,
            )
    reconcile = results.get("reconcile")
    if reconcile:
        speedup = _ratio(reconcile["service"]["users_per_s"], reconcile["baseline"]["users_per_s"])
        add(
            f"reconcile users/s / one-at-a-time baseline's ({reconcile['users']} users)",
            ">= 5",
            speedup,
            None if speedup is None else speedup >= 5,
            "secantus",
        )
        rss = reconcile["service"]["peak_rss_mb"]
        add(f"reconcile peak RSS MB ({reconcile['users']} users)", "< 200", rss, rss < 200, "secantus")
    for name, section_targets in (
        ("instructions", instructions.targets),
        ("scale", scale.targets),
        ("burst", burst.targets),
    ):
        if name in results:
            for target in section_targets(results[name]):
                add(*target)
    return found


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def table(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"Machine: {meta['cores']} cores ({meta['cpu']}), Python {meta['python']}, {meta['started']}",
        f"Command: {meta['command']}",
    ]
    if "instructions" in results:
        lines += instructions.table_lines(results["instructions"])
    for section in results.get("ingest", {}).values():
        summary = section["summary"]
        lines += [
            "",
            f"Ingest on {section['database']}: N={section['events']} deliveries per round, "
            f"C={section['concurrency']}, {section['rounds']} rounds per app, gunicorn "
            f"{section['workers']} worker(s) x 4 threads; stream: {section['stream']}"
            + (f"; realistic stream: {section['realistic_stream']}" if "realistic_stream" in section else ""),
            f"{'':28}{'service':>10}{'baseline':>10}   ratio min / median / max",
        ]
        titles = {
            "mixed": "mixed stream",
            "updates": f"update of an existing user only ({section['update_events']} deliveries per round)",
            "realistic": f"realistic stream ({section.get('realistic_events')} deliveries per round: "
            "in order but for neighbour swaps, ~1% resent, ~1% deleted)",
        }
        for kind, title in titles.items():
            if kind not in summary:
                continue
            lines.append(f"  {title}")
            for key, label, _ in INGEST_METRICS:
                m = summary[kind][key]
                if m["service"] is None and m["baseline"] is None:
                    continue
                ratios = " / ".join(_fmt(m[k]) for k in ("ratio_min", "ratio_median", "ratio_max"))
                lines.append(f"    {label:<24}{_fmt(m['service']):>10}{_fmt(m['baseline']):>10}   {ratios}")
    for backend, section in results.get("ingest", {}).items():
        if section.get("profile"):
            service, baseline = section["profile"].get("service", {}), section["profile"].get("baseline", {})
            width = max(map(len, service), default=0) + 2
            lines += [
                "",
                f"Where the CPU goes, update of an existing user ({backend}; py-spy, us/delivery):",
                f"    {'':<{width}}{'service':>10}{'baseline':>10}",
            ]
            for name in service:
                lines.append(
                    f"    {name:<{width}}{_fmt(service.get(name)):>10}{_fmt(baseline.get(name)):>10}"
                )
    reconcile = results.get("reconcile")
    if reconcile:
        lines += [
            "",
            f"Reconcile from FakeClerkAPI ({reconcile['users']} users, pages of 500), empty database:",
        ]
        lines.append(f"{'':28}{'service':>10}{'baseline':>10}   ratio")
        for key, label in (
            ("users", "users"),
            ("wall_s", "wall s"),
            ("users_per_s", "users/s"),
            ("peak_rss_mb", "peak RSS MB"),
            ("cpu_s", "CPU s"),
            ("db_cmds_per_user", "DB commands/user"),
        ):
            s, b = reconcile["service"][key], reconcile["baseline"][key]
            lines.append(f"    {label:<24}{_fmt(s):>10}{_fmt(b):>10}   {_fmt(_ratio(s, b))}")
        if "deletion" in reconcile:
            d = reconcile["deletion"]
            lines.append(
                f"  then {d['to_delete']:,} more local users to delete, --max-rps 0: {d['wall_s']} s, "
                f"peak RSS {d['peak_rss_mb']} MB, {d['output'][-1:]}"
            )
        if "deletion_batching" in reconcile:
            b = reconcile["deletion_batching"]
            lines.append(
                f"  deleting {b['users']:,} users in batches of {b['batch']}: {b['batched_per_s']}/s, "
                f"one at a time: {b['one_at_a_time_per_s']}/s (batched x{b['speedup']})"
            )
        if "paced_listing" in reconcile:
            p = reconcile["paced_listing"]
            lines.append(
                f"  dry run at the default {p['max_rps']}/s: {p['wall_s']} s for {p['clerk_requests']} Clerk "
                f"requests, pages / rate predicts {p['predicted_s']} s (x{p['ratio_to_predicted']})"
            )
    sync = results.get("sync")
    if sync:
        lines += ["", f"POST /api/users/sync, {sync['requests']} requests one at a time (ms):"]
        lines.append(f"{'':28}{'p50':>10}{'p95':>10}{'p99':>10}")
        for label, figures in [("end to end (HTTP)", sync["end_to_end"])] + [
            (f"  {name}", figures) for name, figures in sync["parts"].items()
        ]:
            lines.append(
                f"    {label:<24}"
                + "".join(f"{_fmt(figures[k]):>10}" for k in ("p50_ms", "p95_ms", "p99_ms"))
            )
    commands = results.get("commands")
    if commands:
        lines += [
            "",
            f"One command at a time from one client, {commands['calls']} calls x {commands['rounds']} rounds "
            "(medians, us per command):",
            f"{'':40}{'client CPU':>12}{'wall':>10}",
        ]
        for name, figures in commands["figures"].items():
            lines.append(f"    {name:<36}{_fmt(figures['cpu_us']):>12}{_fmt(figures['wall_us']):>10}")
    if "scale" in results:
        lines += scale.table_lines(results["scale"])
    if "burst" in results:
        lines += burst.table_lines(results["burst"])
    lines += ["", "Targets:"]
    for t in results["targets"]:
        verdict = {True: "met", False: "NOT MET", None: "n/a"}[t["met"]]
        lines.append(
            f"  [{verdict:^7}] {t['target']} = {_fmt(t['value'])} (goal {t['goal']}; {t['measured_on']})"
        )
    return "\n".join(lines)


def changes(previous: dict[str, Any], current: dict[str, Any]) -> str:
    """Headline figures against a previous results.json; "" when no section of both compares
    (an instructions-only run, say), so that a caller prints nothing rather than a heading."""
    lines: list[str] = []
    for backend, section in current.get("ingest", {}).items():
        old = previous.get("ingest", {}).get(backend)
        if not old:
            continue
        for key, label, better in INGEST_METRICS:
            for field in ("ratio_median", "service"):
                now = section["summary"]["mixed"][key][field]
                then = old.get("summary", {}).get("mixed", {}).get(key, {}).get(field)
                if now is None or then in (None, 0):
                    continue
                name = f"{label} ({'ratio' if field == 'ratio_median' else 'service'})"
                lines.append(
                    f"  {backend:<9} {name:<38} {_fmt(then):>8} -> {_fmt(now):>8}  "
                    f"({(now - then) / then * 100:+.0f}%, {better} is better)"
                )
    old_rec, new_rec = previous.get("reconcile"), current.get("reconcile")
    if old_rec and new_rec:
        for key in ("users_per_s", "peak_rss_mb"):
            then, now = old_rec["service"][key], new_rec["service"][key]
            lines.append(f"  reconcile service {key:<31} {_fmt(then):>8} -> {_fmt(now):>8}")
    if not lines:
        return ""
    started = previous.get("meta", {}).get("started", "?")
    return "\n".join([f"Change against the previous run ({started}):", *lines])
