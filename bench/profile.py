"""Where the CPU goes, per delivery: py-spy samples of the gunicorn workers, by category.

``--profile`` samples both apps' workers during their update-only round with
``py-spy record --gil`` (only the thread holding the GIL is sampled, so samples track
Python CPU) and splits each app's measured CPU per delivery by the share of samples in
each category below. py-spy is not a project dependency: ``pip install py-spy``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# First match wins, tried against the whole stack of a sample.
CATEGORIES = (
    ("event log writer (background thread)", r"EventLog\._run"),
    ("per-delivery log line", r"Logger\.info|Logger\._log"),
    ("prometheus metrics", r"Metrics\.delivery|prometheus_client"),
    ("svix signature check", r"WebhookVerifier\.verify|Webhook\.verify"),
    ("JSON parse and checks", r"parse_event|json/__init__"),
    ("mapping the Clerk user", r"map_clerk_user|mapped_fields"),
    ("user write: driver (pymongo / mongomock)", r"pymongo/|mongomock/"),
    ("user write: store code", r"UserStore|apply_user_event"),
    ("route and handler code", r"DeliveryHandler|receive_clerk_event|clerk_webhook"),
    ("Flask and werkzeug", r"flask/|werkzeug/"),
    ("gunicorn (HTTP, worker loop)", r"gunicorn/"),
)


def py_spy() -> str | None:
    """py-spy beside this interpreter (the venv's) or on PATH."""
    return shutil.which(
        "py-spy", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    )


@contextmanager
def sampling(pids: list[int], out: Path, rate: int = 1000) -> Iterator[list[Path]]:
    """Record every pid with py-spy while the block runs; yields the raw output files."""
    out.parent.mkdir(parents=True, exist_ok=True)
    files = [out.with_name(f"{out.name}.{pid}.txt") for pid in pids]
    spies = [
        subprocess.Popen(
            [
                py_spy() or "py-spy",
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--gil",
                "--nonblocking",
                "--output",
                str(path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, path in zip(pids, files, strict=True)
    ]
    time.sleep(1.0)  # py-spy attaches
    try:
        yield files
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()


def breakdown(files: list[Path], cpu_us_per_event: float) -> dict[str, float]:
    """CPU microseconds per delivery by category (measured total x share of samples)."""
    counts: Counter = Counter()
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            stack, _, number = line.rpartition(" ")
            if not stack:
                continue
            name = next((n for n, pattern in CATEGORIES if re.search(pattern, stack)), "other")
            counts[name] += int(number)
    total = sum(counts.values())
    if not total:
        return {}
    names = [n for n, _ in CATEGORIES] + ["other"]
    shares = {n: round(counts[n] / total * cpu_us_per_event, 1) for n in names}
    shares["samples"] = total
    return shares
