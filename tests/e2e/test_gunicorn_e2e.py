"""The service started the way production starts it: the Procfile's ``web:`` command.

gunicorn with gunicorn.conf.py (gthread workers, config checked in the master,
multiprocess metrics), two workers, real HTTP on a free port, the test database.
The launcher is tests/support/processes.GunicornService.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient

from tests.support.fake_clerk import make_clerk_user, make_webhook_event
from tests.support.processes import GunicornService
from tests.support.signing import signed_delivery

pytestmark = pytest.mark.slow

BOOT_TIMEOUT_S = 20.0
WEBHOOK = "/api/webhooks/clerk"


@pytest.fixture
def running(mongo_uri, tmp_path) -> Iterator[GunicornService]:
    """The service as production runs it, without CLERK_SECRET_KEY (webhooks only).

    Like the Procfile, it leaves PROMETHEUS_MULTIPROC_DIR unset, so gunicorn.conf.py
    makes the metrics directory itself (under TMPDIR, here the test's tmp_path).
    """
    env = {"PROMETHEUS_MULTIPROC_DIR": None, "TMPDIR": str(tmp_path)}
    with GunicornService(mongo_uri, workers=2, env=env, boot_timeout_s=BOOT_TIMEOUT_S) as service:
        yield service


@pytest.mark.timeout(60)
def test_procfile_service_applies_webhooks_and_reports(running, mongo_uri):
    user = make_clerk_user(seed="gunicorn-e2e", email="grace@example.com", username="grace")
    body, headers = signed_delivery(make_webhook_event("user.created", user))
    with httpx.Client(base_url=running.url, timeout=10.0) as http:
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

    # Every worker writes its samples to the shared directory, and the master's listener
    # aggregates them; the public port has no /metrics.
    tmp_dir = Path(running.env["TMPDIR"])
    assert list(tmp_dir.glob("clerk-webhook-metrics-*/*.db")), "metrics are not multiprocess"
    public = httpx.get(running.url + "/metrics", timeout=10.0)
    assert public.status_code == 404 and public.json()["error"] == "not found"
    for _ in range(4):
        metrics = httpx.get(running.metrics_url, headers={"Connection": "close"}, timeout=10.0)
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

    assert "Traceback" not in running.logs()


def test_without_clerk_secret_key_it_starts_and_warns_once(running):
    assert httpx.get(running.url + "/healthz", timeout=5.0).json() == {"status": "ok"}
    warnings = [line for line in running.logs().splitlines() if "CLERK_SECRET_KEY" in line]
    assert len(warnings) == 1, running.logs()  # from the master, not once per worker
    assert "WARNING" in warnings[0] and "POST /api/users/sync will answer 503" in warnings[0]
    assert warnings[0].endswith("and the watcher is off")
    sync = httpx.post(running.url + "/api/users/sync", headers={"Authorization": "Bearer x"}, timeout=5.0)
    assert sync.status_code == 503
    assert sync.json()["error"] == "sync not configured"


@pytest.mark.timeout(60)
def test_sigterm_stops_the_service_cleanly(running):
    assert running.stop() == 0  # stop() sends SIGTERM to the process group and waits
    assert "Traceback" not in running.logs()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CLERK_WEBHOOK_SIGNING_SECRET", None),
        ("MONGODB_URI", None),
        ("CLERK_WEBHOOK_SIGNING_SECRET", "sk_test_pastedTheApiKeyByMistake0123"),
        ("MONGODB_URI", "mongodb://127.0.0.1:27017"),  # no database name
        ("METRICS_ADDR", "9464"),  # no host
    ],
    ids=[
        "secret-missing",
        "mongodb-uri-missing",
        "secret-malformed",
        "mongodb-uri-without-db",
        "metrics-addr-without-host",
    ],
)
def test_bad_configuration_exits_nonzero_naming_the_variable(mongo_uri, variable, value):
    # value None: the variable is not set at all.
    service = GunicornService(mongo_uri, env={variable: value}, boot_timeout_s=BOOT_TIMEOUT_S)
    returncode, output = exit_status_of_failed_start(service, f"{variable}={value!r}")
    assert returncode != 0
    assert any(variable in line and "configuration error" in line for line in output.splitlines()), output
    assert "Traceback" not in output


@pytest.mark.timeout(60)
def test_a_taken_metrics_address_stops_the_start_naming_the_variable(mongo_uri):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = GunicornService(mongo_uri, env={"METRICS_ADDR": f"127.0.0.1:{port}"})
        returncode, output = exit_status_of_failed_start(service, "a taken METRICS_ADDR")
    assert returncode != 0
    [line] = [line for line in output.splitlines() if "METRICS_ADDR" in line]
    assert line.startswith(f"configuration error: METRICS_ADDR 127.0.0.1:{port} cannot be served"), output
    assert "Traceback" not in output


def exit_status_of_failed_start(service: GunicornService, what: str) -> tuple[int, str]:
    """Start ``service`` expecting gunicorn to exit on its own; its exit status and output.

    GunicornService.start() raises when the master exits before it is ready (and stops
    whatever is left); if it starts instead, the configuration was wrongly accepted.
    """
    try:
        service.start()
    except RuntimeError as exc:
        assert "exited during start" in str(exc), str(exc)
    else:
        service.stop()
        pytest.fail(f"service kept running with {what}:\n{service.logs()}")
    assert service.process is not None and service.process.returncode is not None
    return service.process.returncode, service.logs()
