"""The processes a benchmark runs: the test database server and the apps under gunicorn.

The database is the one the tests use (``tests.support.mongo_server.MongoServer``: SecantusDB
in a subprocess, or the server named by ``TEST_MONGODB_URI``). The apps are started by
``tests.support.processes.GunicornService`` with the Procfile's command and gunicorn.conf.py;
the baseline only swaps the WSGI app the command names.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from pymongo import MongoClient
from pymongo.database import Database

from bench import procstat
from tests.support.mongo_server import MongoServer
from tests.support.processes import GunicornService

MOCK_URI = "mongodb://127.0.0.1:9/bench_mongomock"  # passes the config check; never dialled
APPS = {
    ("secantus", "service"): None,  # the Procfile's own wsgi:app
    ("secantus", "baseline"): "bench.baseline_app:create_app()",
    ("mongomock", "service"): "bench.mock_wsgi:service()",
    ("mongomock", "baseline"): "bench.mock_wsgi:baseline()",
}


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class TestDatabase:
    """The test server, a fresh database per use, and its command counters."""

    def __init__(self) -> None:
        self.server = MongoServer()
        self.server.start()
        self.client: MongoClient = MongoClient(self.server.uri("admin"), tz_aware=True)
        self.name = "secantus" if self.server.can_restart else "TEST_MONGODB_URI server"
        self._created: list[str] = []

    def new_database(self, purpose: str) -> tuple[str, Database]:
        name = f"bench_{purpose}_{uuid.uuid4().hex[:8]}"
        self._created.append(name)
        return self.server.uri(name), self.client[name]

    def opcounters(self) -> dict[str, int]:
        """serverStatus opcounters: commands run so far by kind (a bulk write counts once)."""
        return {k: int(v) for k, v in self.client.admin.command("serverStatus")["opcounters"].items()}

    def commands(self) -> int:
        return sum(self.opcounters().values())

    def version(self) -> str:
        return str(self.client.admin.command("buildInfo").get("version", "?"))

    def close(self) -> None:
        for name in self._created:
            with suppress(Exception):  # the server may be gone already
                self.client.drop_database(name)
        self.client.close()
        self.server.close()


class RunningApp:
    """One app under gunicorn, with the pids whose CPU time is its cost."""

    def __init__(self, name: str, service: GunicornService) -> None:
        self.name = name
        self.service = service

    @property
    def url(self) -> str:
        return self.service.url

    def pids(self) -> list[int]:
        return [self.service.pid, *self.service.worker_pids()]

    def cpu(self) -> dict[int, float]:
        return procstat.tree_cpu(self.pids())


@contextmanager
def running_app(backend: str, name: str, mongodb_uri: str, *, workers: int, **kwargs) -> Iterator[RunningApp]:
    service = GunicornService(
        mongodb_uri if backend != "mongomock" else MOCK_URI,
        app=APPS[(backend, name)],
        workers=workers,
        **kwargs,
    )
    service.start()
    try:
        yield RunningApp(name, service)
    except BaseException:
        log(f"{name} log tail:\n{service.logs()[-2000:]}")
        raise
    finally:
        service.stop()
