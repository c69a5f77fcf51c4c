"""CPU time that processes spent themselves, read from /proc (not wall time).

``utime + stime`` of a process covers all of its threads (gunicorn's request threads
and the event log's writer alike). A worker that exits takes its counters with it, so
the harness checks the set of pids is unchanged over a round.
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (all threads), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rfind(")") + 2 :].split()
    # after "pid (comm) ": state=0 ppid=1 ... utime=11 stime=12 (stat fields 14 and 15)
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def tree_cpu(pids: list[int]) -> dict[int, float]:
    return {pid: cpu_seconds(pid) for pid in pids}


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two readings of the same processes."""
    if set(before) != set(after):
        raise RuntimeError(f"processes changed during the measurement: {sorted(before)} -> {sorted(after)}")
    return sum(after[pid] - before[pid] for pid in before)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
