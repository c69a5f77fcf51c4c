"""The watcher's loop: a daemon thread in each gunicorn worker, of which the one holding
the lease runs a pass every ``WATCH_INTERVAL_S``.

It runs in the workers, started after the fork (gunicorn's ``post_worker_init``), never in
the master: a thread running in the master when it forks leaves its locks (the driver's
pools, logging's) held in every child, and a MongoClient does not survive a fork. The
lease makes the workers of every instance one watcher; each tick a non-holder only tries
to take the lease (one small write), and a graceful stop (``worker_exit``) releases it.

A failing pass (Clerk down, the database down) logs one line and leaves the state as it
was: the next pass repeats it. It shares nothing with a delivery or a sync but the
process: its own Clerk client and pacing, its own database commands, each bounded.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ..clerk_api import ClerkUnavailable
from ..metrics import Metrics
from ..mirror.batched import BatchedMirror
from ..store.errors import StoreUnavailable
from .lease import Lease
from .passes import ResourceWatch, Watched, WatchState, watch_resource

log = logging.getLogger("webhook_service.watch")
GRACE_MAX_S = 30.0  # a delivery on its way is given this long (half an interval at most)


class LeaseLost(Exception):
    """Another instance took the lease during a long pass: this one stops."""


@dataclass
class PassReport:
    resources: list[ResourceWatch] = field(default_factory=list)

    def summary(self) -> str:
        return "; ".join(r.summary() for r in self.resources)


class Watcher:
    def __init__(
        self,
        targets: list[tuple[BatchedMirror, Watched]],
        lease: Lease,
        state: WatchState,
        *,
        interval_s: float,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.targets = targets
        self.lease = lease
        self.state = state
        self.interval_s = interval_s
        self.grace_ms = int(min(GRACE_MAX_S, interval_s / 2) * 1000)
        self.metrics = metrics
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renewed_at = 0.0

    def run_once(self) -> PassReport | None:
        """One pass if this process holds (or takes) the lease; None if another holds it.
        Raises ClerkUnavailable, StoreUnavailable or LeaseLost; the state is then unchanged."""
        if not self.lease.acquire():
            return None
        self._renewed_at = self._clock().timestamp()
        report = PassReport()
        for store, source in self.targets:
            state = self.state.load(source.noun)
            watched = watch_resource(
                store, source, state, now=self._clock(), grace_ms=self.grace_ms, renew=self._renew
            )
            self.state.save(source.noun, state)
            report.resources.append(watched)
            self._record(watched)
        if self.metrics is not None:
            self.metrics.watch_succeeded()
        return report

    def _record(self, watched: ResourceWatch) -> None:
        for repair in watched.repairs:
            log.warning(repair.line())
            if self.metrics is not None:
                self.metrics.repaired(repair.resource, repair.kind)
        if self.metrics is not None:
            self.metrics.drift(watched.kind, watched.drift)
        if watched.repairs or watched.walked or watched.drift_changed:
            log.info("watch pass: %s", watched.summary())

    def _renew(self) -> None:
        """Keep the lease through a long pass (at most once an interval)."""
        now = self._clock().timestamp()
        if now - self._renewed_at < self.interval_s:
            return
        if not self.lease.acquire():
            raise LeaseLost("another instance holds the watcher's lease")
        self._renewed_at = now

    # -- the thread -------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="clerk-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and give the lease up at once, so another instance takes over."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            self.lease.release()
        except StoreUnavailable:
            log.warning(
                "watch: the lease could not be released; it lapses in %.0f s", self.lease.ttl.total_seconds()
            )

    def _loop(self) -> None:
        # Workers and instances start together: spread their first tries a little.
        wait = random.uniform(0, min(self.interval_s, 5.0))
        while not self._stop.wait(wait):
            try:
                self.run_once()
            except (ClerkUnavailable, StoreUnavailable, LeaseLost) as exc:
                log.warning(
                    "watch pass failed (%s); the next pass in %.0f s tries again", exc, self.interval_s
                )
            except Exception:  # a bug: say so, and keep watching
                log.exception("watch pass failed unexpectedly")
            wait = self.interval_s
