"""Every caller tried locally, as the README's quick start does it: ``make run``'s dev
server (embedded database, local Clerk), then a signed webhook, a sync with a token from
``dev-token``, a reconcile dry run, and the Expo client's tests against the live service.

The dev server runs in a data directory of the test's own (``DEV_DATA_DIR``) on free
ports, so a developer's ``.data/`` is never touched.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.examples import ORGANIZATION_FIELDS
from tests.support.helpers import wait_until_ready
from tests.support.mongo_server import free_port
from tests.support.processes import REPO_ROOT
from webhook_service.dev.local_clerk import LocalClerk
from webhook_service.dev.sample_events import sample_users

pytestmark = pytest.mark.slow

ADA, GRACE, ALAN, MARGARET = (u["id"] for u in sample_users())
EXPO = REPO_ROOT / "clients" / "expo"
BOOT_TIMEOUT_S = 60.0


class DevServer:
    """``scripts/dev_server.py`` (what ``make run`` runs) and the variables it exported."""

    def __init__(self, data_dir: Path, **extra_env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.metrics_addr = f"127.0.0.1:{free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLERK_", "MONGODB_", "PROMETHEUS_"))}
        env.update(
            PORT=str(self.port),
            DEV_DB_PORT=str(free_port()),
            DEV_CLERK_PORT=str(free_port()),
            DEV_DATA_DIR=str(data_dir),
            METRICS_ADDR=self.metrics_addr,
            **extra_env,
        )
        self.log = data_dir / "dev-server.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "scripts/dev_server.py"],
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_ready()
        self.env = self._exported()

    def _running(self) -> bool:
        return self.process.poll() is None

    def _wait_ready(self) -> None:
        if wait_until_ready(self.url, BOOT_TIMEOUT_S, request_timeout_s=2, alive=self._running):
            return
        if not self._running():
            raise RuntimeError(f"the dev server exited:\n{self.output()}")
        raise RuntimeError(f"the dev server was not ready in {BOOT_TIMEOUT_S} s:\n{self.output()}")

    def _exported(self) -> dict[str, str]:
        """``.data/dev.env`` as the shell would read it."""
        exported = {}
        for line in (self.data_dir / "dev.env").read_text().splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            exported[name] = shlex.split(value)[0]
        return exported

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``flask --app wsgi ARGS`` from a second terminal, after ``. .data/dev.env``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLERK_", "MONGODB_"))}
        env.update(self.env)
        flask = [sys.executable, "-m", "flask", "--app", "wsgi"]
        return subprocess.run(
            [*flask, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


@pytest.fixture(scope="module")
def dev(tmp_path_factory) -> Iterator[DevServer]:
    server = DevServer(tmp_path_factory.mktemp("dev-data"), WATCH_INTERVAL_S="2")
    try:
        yield server
    finally:
        server.stop()


def token_for(dev: DevServer, user_id: str | None = None) -> str:
    result = dev.command("dev-token", *([user_id] if user_id else []))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def sync(dev: DevServer, token: str) -> httpx.Response:
    return httpx.post(dev.url + "/api/users/sync", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_the_dev_server_says_what_it_started_and_exports_it(dev):
    output = dev.output()
    assert "development database: mongodb://127.0.0.1:" in output
    assert f"local Clerk: {dev.env['CLERK_API_URL']} with 4 sample users: Ada ({ADA})" in output
    assert dev.env["CLERK_SECRET_KEY"].startswith("sk_test_local_")
    assert dev.env["CLERK_JWT_KEY"].startswith("-----BEGIN PUBLIC KEY-----\\n")
    assert set(dev.env) >= {"MONGODB_URI", "CLERK_WEBHOOK_SIGNING_SECRET", "WEBHOOK_URL", "SERVICE_URL"}
    assert "CLERK_SECRET_KEY is not set" not in output
    metrics_url = f"http://{dev.metrics_addr}/metrics"
    assert f"metrics on {metrics_url} (METRICS_ADDR; not on the public port)" in output
    assert "clerk_webhook_started_timestamp_seconds" in httpx.get(metrics_url, timeout=10).text
    assert httpx.get(dev.url + "/metrics", timeout=10).status_code == 404


def test_a_webhook_a_sync_and_a_reconcile_dry_run_tell_one_story(dev):
    webhook = dev.command("send-test-event", "user.created", "--url", dev.env["WEBHOOK_URL"])
    assert webhook.returncode == 0, webhook.stderr
    assert webhook.stdout.startswith(f"user.created for {ADA} (msg_")
    assert webhook.stdout.rstrip().endswith('-> 200 {"outcome":"applied"}')

    ada = sync(dev, token_for(dev))  # Ada by default; the webhook stored her already
    grace = sync(dev, token_for(dev, GRACE))  # new locally

    assert ada.status_code == 200, ada.text
    assert (ada.json()["clerkId"], ada.json()["email"], ada.json()["username"]) == (
        ADA,
        "ada@example.com",
        "ada",
    )
    assert grace.status_code == 201, grace.text
    assert grace.json()["email"] == "grace.hopper@example.com"

    dry_run = dev.command("reconcile", "--dry-run")

    assert dry_run.returncode == 0, dry_run.stderr
    summary = dry_run.stdout.strip().splitlines()[-1]
    assert summary.startswith(
        "dry run: 4 Clerk users in 1 pages: "
        "would be created 2, would be updated 0, unchanged 2, would be deleted 0; 1 Clerk request in "
    ), summary
    assert "CLERK_SECRET_KEY" not in dry_run.stderr


def test_a_change_in_the_local_clerk_with_no_webhook_is_repaired_by_the_watcher(dev):
    from pymongo import MongoClient

    changed = dev.command("dev-change-user", ALAN, "--first-name", "Alonzo")
    assert changed.returncode == 0, changed.stderr
    assert (
        changed.stdout.strip()
        == f"{ALAN} changed (first_name) in the local Clerk, with no webhook: the watcher repairs it"
    )
    with MongoClient(dev.env["MONGODB_URI"], serverSelectionTimeoutMS=5000) as client:
        users = client.get_default_database().users
        deadline = time.monotonic() + 10  # two passes of 2 s, and a start
        repaired = f"watch repaired user {ALAN}: missed its creation"  # logged once the pass is done
        while (users.find_one({"clerkId": ALAN}) or {}).get(
            "firstName"
        ) != "Alonzo" or repaired not in dev.output():
            assert time.monotonic() < deadline, dev.output()
            time.sleep(0.2)


def test_dev_token_refuses_any_clerk_but_the_local_one(dev):
    env = dict(dev.env, CLERK_API_URL="https://api.clerk.com", CLERK_SECRET_KEY="sk_live_realkey")
    flask = [sys.executable, "-m", "flask", "--app", "wsgi", "dev-token"]
    result = subprocess.run(flask, cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True)

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: dev-token only works against the local Clerk that `make run` starts, not https://api.clerk.com"
    ]
    assert result.stdout == ""


def test_dev_token_for_someone_the_local_clerk_does_not_have_names_its_users(dev):
    result = dev.command("dev-token", "user_nobody")

    assert result.returncode == 1
    assert result.stderr.strip().startswith(
        "Error: the local Clerk has no user user_nobody; its sample users are "
    )
    assert ALAN in result.stderr


def test_commands_that_do_not_need_clerk_do_not_warn_about_it(mongo_uri):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLERK_", "MONGODB_"))}
    env.update(MONGODB_URI=mongo_uri, CLERK_WEBHOOK_SIGNING_SECRET="whsec_" + "QUJDREVGR0hJSktMTU5PUA==")
    result = subprocess.run(
        [sys.executable, "-m", "webhook_service", "events"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0 deliveries"
    assert result.stderr == ""


def test_with_the_organization_map_the_local_clerks_teams_reach_the_database(tmp_path_factory):
    """``ORGANIZATION_FIELDS_FILE=docs/examples/organization-fields.toml make run``: the
    local Clerk serves its sample organization, the dev server exports the variable for the
    commands, and a webhook, a sync and a reconcile bring the teams in."""
    org_map = str(ORGANIZATION_FIELDS)
    dev = DevServer(tmp_path_factory.mktemp("dev-orgs"), ORGANIZATION_FIELDS_FILE=org_map)
    try:
        assert "and 1 organization: Analytical Engine Society (org_" in dev.output()
        assert dev.env["ORGANIZATION_FIELDS_FILE"] == org_map
        webhook = dev.command("send-test-event", "organization.created", "--url", dev.env["WEBHOOK_URL"])
        assert webhook.returncode == 0, webhook.stderr
        assert webhook.stdout.rstrip().endswith('-> 200 {"outcome":"applied"}')
        assert sync(dev, token_for(dev, GRACE)).status_code == 201  # and her membership with her

        dry_run = dev.command("reconcile", "--dry-run")

        assert dry_run.returncode == 0, dry_run.stderr
        summary = dry_run.stdout.strip().splitlines()[-1]
        assert "1 Clerk organizations in 1 pages: would be created 0, would be updated 0, unchanged 1" in (
            summary
        )
        assert "2 Clerk memberships in 1 pages: would be created 1, would be updated 0, unchanged 1" in (
            summary
        )
    finally:
        dev.stop()


# -- the Expo client's core, against the live service -----------------------------------------


@pytest.mark.timeout(180)
def test_the_expo_clients_tests_pass_against_the_live_service(dev):
    if shutil.which("npm") is None or not (EXPO / "node_modules").is_dir():
        pytest.skip("clients/expo is not installed: `make test` runs `npm ci` there first")
    signing_key = (dev.data_dir / "local-clerk-signing-key.pem").read_text()
    clerk = LocalClerk(signing_key_pem=signing_key)  # not started: it only signs
    env = dict(
        os.environ,
        SYNC_SERVICE_URL=dev.url,
        SYNC_SESSION_TOKEN=token_for(dev, ALAN),
        SYNC_GONE_TOKEN=clerk.session_token("user_2zzzzzzzzzzzzzzzzzzzzzzzzzz"),
        SYNC_EXPIRED_TOKEN=clerk.session_token(MARGARET, lifetime_s=-120),
    )

    result = subprocess.run(["npm", "test"], cwd=EXPO, env=env, capture_output=True, text=True, timeout=170)

    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert "# fail 0" in report, report
    assert "syncUser against a live service" in report, report
    assert "# SKIP" not in report, report  # the live suite ran rather than skipped
