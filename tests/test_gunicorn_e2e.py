"""The service started the way production starts it: the Procfile's ``web:`` command.

gunicorn with gunicorn.conf.py (gthread workers, config checked in the master,
multiprocess metrics), two workers, real HTTP on a free port, the test database.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from tests.fake_clerk import make_clerk_user, make_webhook_event
from tests.mongo_server import free_port
from tests.signing import TEST_SECRET, signed_delivery

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
BOOT_TIMEOUT_S = 20.0
WEBHOOK = "/api/webhooks/clerk"


def procfile_command(port: int) -> list[str]:
    """The Procfile's ``web:`` command with ``$PORT`` filled in."""
    for line in (REPO_ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            command = line.removeprefix("web:").strip()
            return shlex.split(command.replace("${PORT}", str(port)).replace("$PORT", str(port)))
    raise AssertionError("Procfile has no web: line")


def service_env(tmp_path: Path, **values: str | None) -> dict[str, str]:
    """A clean environment: the venv's bin first on PATH, no stray service variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLERK_", "MONGODB_", "PROMETHEUS_", "GUNICORN_"))
        and k not in ("PORT", "WEB_CONCURRENCY", "LOG_FORMAT")
    }
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["TMPDIR"] = str(tmp_path)  # where gunicorn.conf.py puts the metrics directory
    env["XDG_RUNTIME_DIR"] = str(tmp_path)  # gunicorn's control socket, one per test
    env["WEB_CONCURRENCY"] = "2"
    for name, value in values.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@dataclass
class Service:
    process: subprocess.Popen
    base_url: str
    stderr_path: Path

    @property
    def tmp_dir(self) -> Path:
        return self.stderr_path.parent

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 25.0) -> int:
        """Signal the whole process group and wait; SIGKILL if it will not go."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
                raise
            except ProcessLookupError:
                pass
        return self.process.wait(timeout=5)


def start_service(env: dict[str, str], stderr_path: Path) -> Service:
    port = free_port()
    stdout_path = stderr_path.with_suffix(".stdout")
    with stderr_path.open("wb") as stderr, stdout_path.open("wb") as stdout:
        process = subprocess.Popen(
            procfile_command(port),
            cwd=REPO_ROOT,
            env=dict(env, PORT=str(port)),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    return Service(process, f"http://127.0.0.1:{port}", stderr_path)


def wait_healthy(service: Service) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT_S
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise AssertionError(f"service exited {service.process.returncode}:\n{service.stderr()}")
        try:
            if httpx.get(service.base_url + "/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    service.stop(signal.SIGKILL)
    raise AssertionError(f"service did not answer /healthz in {BOOT_TIMEOUT_S} s:\n{service.stderr()}")


@pytest.fixture
def running(mongo_uri, tmp_path) -> Iterator[Service]:
    """The service as production runs it, without CLERK_SECRET_KEY (webhooks only)."""
    env = service_env(tmp_path, MONGODB_URI=mongo_uri, CLERK_WEBHOOK_SIGNING_SECRET=TEST_SECRET)
    service = start_service(env, tmp_path / "service.stderr")
    try:
        wait_healthy(service)
        yield service
    finally:
        service.stop()


@pytest.mark.timeout(60)
def test_procfile_service_applies_webhooks_and_reports(running, mongo_uri):
    user = make_clerk_user(seed="gunicorn-e2e", email="grace@example.com", username="grace")
    body, headers = signed_delivery(make_webhook_event("user.created", user))
    with httpx.Client(base_url=running.base_url, timeout=10.0) as http:
        response = http.post(WEBHOOK, content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json() == {"outcome": "applied"}

        with MongoClient(mongo_uri, serverSelectionTimeoutMS=3000) as client:
            doc = client.get_default_database().users.find_one({"clerkId": user["id"]})
        assert doc is not None
        assert doc["email"] == "grace@example.com"
        assert doc["username"] == "grace"

        ready = http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ready"

        unsigned = http.post(WEBHOOK, content=body, headers={"content-type": "application/json"})
        assert unsigned.status_code == 400
        assert unsigned.json()["error"] == "invalid signature"

    # Every worker writes its samples to the shared directory; ask on fresh connections
    # a few times so whichever worker answers, the applied delivery is in the aggregate.
    assert list(running.tmp_dir.glob("clerk-webhook-metrics-*")), "metrics are not multiprocess"
    for _ in range(4):
        metrics = httpx.get(running.base_url + "/metrics", headers={"Connection": "close"}, timeout=10.0)
        assert metrics.status_code == 200
        assert "clerk_webhook_deliveries_total" in metrics.text
        applied = re.search(
            r'^clerk_webhook_deliveries_total\{(?=[^}]*outcome="applied")(?=[^}]*type="user\.created")'
            r"[^}]*\} (\S+)$",
            metrics.text,
            re.MULTILINE,
        )
        assert applied is not None, metrics.text
        assert float(applied.group(1)) == 1.0
        assert re.search(r"^clerk_webhook_signature_rejections_total(\{\})? 1\.0$", metrics.text, re.M)

    assert "Traceback" not in running.stderr()


def test_without_clerk_secret_key_it_starts_and_warns(running):
    assert httpx.get(running.base_url + "/healthz", timeout=5.0).json() == {"status": "ok"}
    warnings = [line for line in running.stderr().splitlines() if "CLERK_SECRET_KEY" in line]
    assert warnings and all("WARNING" in line for line in warnings), running.stderr()
    sync = httpx.post(
        running.base_url + "/api/users/sync", headers={"Authorization": "Bearer x"}, timeout=5.0
    )
    assert sync.status_code == 503
    assert sync.json()["error"] == "sync not configured"


@pytest.mark.timeout(60)
def test_sigterm_stops_the_service_cleanly(running):
    assert running.stop(signal.SIGTERM) == 0
    assert "Traceback" not in running.stderr()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CLERK_WEBHOOK_SIGNING_SECRET", None),
        ("MONGODB_URI", None),
        ("CLERK_WEBHOOK_SIGNING_SECRET", "sk_test_pastedTheApiKeyByMistake0123"),
        ("MONGODB_URI", "mongodb://127.0.0.1:27017"),  # no database name
    ],
    ids=["secret-missing", "mongodb-uri-missing", "secret-malformed", "mongodb-uri-without-db"],
)
def test_bad_configuration_exits_nonzero_naming_the_variable(mongo_uri, tmp_path, variable, value):
    values = {"MONGODB_URI": mongo_uri, "CLERK_WEBHOOK_SIGNING_SECRET": TEST_SECRET, variable: value}
    service = start_service(service_env(tmp_path, **values), tmp_path / "service.stderr")
    try:
        returncode = service.process.wait(timeout=BOOT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        service.stop(signal.SIGKILL)
        pytest.fail(f"service kept running with {variable}={value!r}:\n{service.stderr()}")
    stderr = service.stderr()
    assert returncode != 0
    assert any(variable in line and "configuration error" in line for line in stderr.splitlines()), stderr
    assert "Traceback" not in stderr
