"""The load generator: pre-built requests sent at a fixed concurrency over keep-alive.

Each of ``concurrency`` threads holds one persistent ``http.client`` connection, opened
before the clock starts, and takes the next request from a shared counter, so the
stream goes out in order with at most ``concurrency`` requests in flight. Everything
is signed beforehand: the only work inside the timed loop is the HTTP exchange.
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

_RETRYABLE = (http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine)


@dataclass
class DriveResult:
    wall_s: float
    latencies_s: list[float]
    statuses: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.latencies_s)

    @property
    def per_s(self) -> float:
        return self.count / self.wall_s if self.wall_s else 0.0


def drive(
    base_url: str,
    path: str,
    requests: Sequence[tuple[bytes, dict[str, str]]],
    *,
    concurrency: int,
    method: str = "POST",
    timeout_s: float = 30.0,
) -> DriveResult:
    """Send every request once; return wall time, per-request latency and statuses."""
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    claim = itertools.count()
    stop = threading.Event()  # set on Ctrl-C: the threads take no further request
    start = threading.Barrier(concurrency + 1, timeout=timeout_s)  # a thread that cannot connect breaks it
    lock = threading.Lock()
    result = DriveResult(0.0, [])

    def connect() -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        conn.connect()
        return conn

    def send(conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()

    def worker() -> None:
        latencies: list[float] = []
        statuses: Counter = Counter()
        outcomes: Counter = Counter()
        errors: list[str] = []
        reconnects = 0
        conn = connect()
        start.wait()
        while not stop.is_set() and (i := next(claim)) < len(requests):
            body, headers = requests[i]
            began = time.perf_counter()
            try:
                status, payload = send(conn, body, headers)
            except _RETRYABLE:  # the server closed an idle keep-alive connection: reconnect once
                conn.close()
                conn = connect()
                reconnects += 1
                try:
                    status, payload = send(conn, body, headers)
                except (OSError, http.client.HTTPException) as exc:
                    status, payload = 0, repr(exc).encode()
            latencies.append(time.perf_counter() - began)
            statuses[status] += 1
            if status == 200 and payload.startswith(b'{"outcome"'):
                outcomes[json.loads(payload)["outcome"]] += 1
            elif status >= 300 or status == 0:
                errors.append(f"{status} {payload[:200]!r}")
        conn.close()
        with lock:
            result.latencies_s.extend(latencies)
            result.statuses.update(statuses)
            result.outcomes.update(outcomes)
            result.errors.extend(errors[:5])
            result.reconnects += reconnects

    threads = [threading.Thread(target=worker, name=f"load-{i}", daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
    except BaseException:
        stop.set()
        raise
    result.wall_s = time.perf_counter() - began
    return result
