"""Start the service the way production does, for end-to-end tests and benchmarks.

``GunicornService`` runs the Procfile's ``web:`` command (``$PORT`` filled with a free
port) from the repository root, with a clean environment built from its arguments,
in a session of its own so that the master and its workers can be signalled together.
Output goes to files and can be read back with :meth:`GunicornService.logs`.

    with GunicornService(mongo_uri, workers=2) as service:
        httpx.post(service.url + "/api/webhooks/clerk", ...)
        os.kill(service.worker_pids()[0], signal.SIGKILL)  # gunicorn starts another
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Self

import httpx

from tests.support.lifecycle import Running
from tests.support.mongo_server import free_port
from tests.support.signing import TEST_SECRET
from webhook_service.config import SETTINGS

REPO_ROOT = Path(__file__).resolve().parents[2]

# Variables the service reads: its configuration's, gunicorn.conf.py's and the Procfile's.
# Inherited values are dropped, so that only a process's own settings count.
_SERVICE_PREFIXES = ("CLERK_", "MONGODB_", "PROMETHEUS_", "GUNICORN_")
_SERVICE_NAMES = frozenset(SETTINGS) | {"PORT", "WEB_CONCURRENCY"}


def without_service_settings(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` less every variable the service would read from it."""
    return {k: v for k, v in env.items() if not k.startswith(_SERVICE_PREFIXES) and k not in _SERVICE_NAMES}


def procfile_command(port: int, procfile: Path = REPO_ROOT / "Procfile", app: str | None = None) -> list[str]:
    """The Procfile's ``web:`` command as an argument list, with ``$PORT`` filled in.

    ``app`` (``module:variable`` or ``module:factory()``) replaces the WSGI app it names,
    so another app (the benchmark's baseline) runs under the very same command and settings.
    """
    for line in procfile.read_text().splitlines():
        if line.startswith("web:"):
            command = line.removeprefix("web:").strip()
            args = shlex.split(command.replace("${PORT}", str(port)).replace("$PORT", str(port)))
            if app is not None:
                position = next(i for i, arg in enumerate(args) if i > 0 and not arg.startswith("-"))
                args[position] = app
            return args
    raise RuntimeError(f"{procfile} has no web: line")


class GunicornService(Running):
    """The service under gunicorn, as the Procfile starts it. A context manager; one use."""

    def __init__(
        self,
        mongodb_uri: str,
        *,
        workers: int = 2,
        db_timeout_ms: int | None = None,
        clerk_secret_key: str | None = None,
        clerk_api_url: str | None = None,
        clerk_jwt_key: str | None = None,
        signing_secret: str = TEST_SECRET,
        env: Mapping[str, str] | None = None,
        boot_timeout_s: float = 30.0,
        app: str | None = None,
    ) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.app = app  # another WSGI app under the same command (see procfile_command)
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.boot_timeout_s = boot_timeout_s
        self._dir = Path(tempfile.mkdtemp(prefix="gunicorn-service-"))
        self._stdout = self._dir / "stdout.log"
        self._stderr = self._dir / "stderr.log"
        self._final_logs: str | None = None
        self.process: subprocess.Popen[bytes] | None = None

        values = {
            "MONGODB_URI": mongodb_uri,
            "CLERK_WEBHOOK_SIGNING_SECRET": signing_secret,
            "CLERK_SECRET_KEY": clerk_secret_key,
            "CLERK_API_URL": clerk_api_url,
            "CLERK_JWT_KEY": clerk_jwt_key,
            "WEB_CONCURRENCY": str(workers),
            "DB_TIMEOUT_MS": None if db_timeout_ms is None else str(db_timeout_ms),
            "PROMETHEUS_MULTIPROC_DIR": str(self._dir / "metrics"),
            "PORT": str(self.port),
            "METRICS_ADDR": f"127.0.0.1:{self.metrics_port}",
            # gunicorn's control socket goes to $XDG_RUNTIME_DIR/gunicorn.ctl (else one path
            # under $HOME); a directory per instance keeps concurrent instances apart.
            "XDG_RUNTIME_DIR": str(self._dir),
            **(env or {}),
        }
        self.env = without_service_settings(os.environ)
        self.env.update({k: v for k, v in values.items() if v is not None})
        self.env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Self:
        """Start gunicorn and wait until /healthz answers and every worker is up."""
        (self._dir / "metrics").mkdir(exist_ok=True)
        with self._stdout.open("wb") as stdout, self._stderr.open("wb") as stderr:
            self.process = subprocess.Popen(
                procfile_command(self.port, app=self.app),
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop(timeout_s=5.0)
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.boot_timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited during start:\n{self.logs()}")
            if len(self.worker_pids()) >= self.workers and self.healthy():
                return
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn not ready after {self.boot_timeout_s} s:\n{self.logs()}")

    def healthy(self) -> bool:
        try:
            return httpx.get(self.url + "/healthz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM the process group; SIGKILL it if gunicorn has not exited in time.

        Returns the master's exit status (None if it was never started).
        """
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=5.0)
        _signal_group(process.pid, signal.SIGKILL)  # any worker the master left behind
        if self._final_logs is None:
            self._final_logs = self._read_logs()
            shutil.rmtree(self._dir, ignore_errors=True)
        return process.returncode

    # -- inspection ----------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The gunicorn master's pid."""
        if self.process is None:
            raise RuntimeError("service not started")
        return self.process.pid

    def worker_pids(self) -> list[int]:
        """The live worker processes (children of the master), sorted."""
        if self.process is None:
            return []
        return sorted(pid for pid in _children(self.pid) if _alive(pid))

    def wait_for_workers(self, exclude: Collection[int] = (), timeout_s: float = 30.0) -> list[int]:
        """Wait until the master runs its full count of workers, none of them in ``exclude``
        (e.g. workers just killed); return their pids."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pids = [p for p in self.worker_pids() if p not in exclude]
            if len(pids) >= self.workers:
                return pids
            time.sleep(0.05)
        raise RuntimeError(f"workers not back after {timeout_s} s:\n{self.logs()}")

    def logs(self) -> str:
        """Everything the service wrote so far, stderr (gunicorn's and the app's logs) first."""
        return self._final_logs if self._final_logs is not None else self._read_logs()

    def _read_logs(self) -> str:
        parts = []
        for path in (self._stderr, self._stdout):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _children(pid: int) -> set[int]:
    """Child pids of ``pid``, from /proc/<pid>/task/*/children or, without it, by scanning /proc."""
    files = list(Path(f"/proc/{pid}/task").glob("*/children"))
    if files:
        found: set[int] = set()
        for path in files:
            with contextlib.suppress(OSError):
                found.update(int(p) for p in path.read_text().split())
        return found
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat_fields(stat)
        if fields is not None and fields[1] == str(pid):
            children.add(int(stat.parent.name))
    return children


def _stat_fields(path: Path) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name: state, ppid, ..."""
    try:
        text = path.read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def _alive(pid: int) -> bool:
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return fields is not None and fields[0] not in ("Z", "X")
