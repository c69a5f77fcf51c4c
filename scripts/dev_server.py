"""``make run``: serve the service locally on an embedded development database.

Without ``MONGODB_URI`` it starts SecantusDB (a dev-only MongoDB wire-protocol
server) with its data under ``.data/``. Without ``CLERK_WEBHOOK_SIGNING_SECRET`` it
makes a development secret, keeps it in ``.data/`` and prints it, so signed sample
events can be sent with ``send-test-event``. Then it runs the Procfile's gunicorn
command, bound to 127.0.0.1.
"""

from __future__ import annotations

import base64
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from webhook_service.dev.local_clerk import LocalClerk, generate_signing_key, public_pem_of  # noqa: E402
from webhook_service.dev.sample_events import sample_users  # noqa: E402
from webhook_service.dev.sample_organizations import sample_organizations  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("DEV_DATA_DIR") or ROOT / ".data")  # the tests give their own
DB_PORT = int(os.environ.get("DEV_DB_PORT", "27018"))
CLERK_PORT = int(os.environ.get("DEV_CLERK_PORT", "8001"))
SHARED_SETTINGS = (
    "USER_FIELDS_FILE",
    "ORGANIZATION_FIELDS_FILE",
    "DELETE_CASCADE",
    "INSERT_ONLY_FIELDS",
    "WATCH_INTERVAL_S",
)


def start_dev_database() -> tuple[subprocess.Popen, str]:
    storage = DATA / "secantus"
    storage.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(DB_PORT),
         "--storage-path", str(storage), "--log-level", "ERROR"],
    )
    uri = f"mongodb://127.0.0.1:{DB_PORT}/xclone?directConnection=true"
    deadline = time.monotonic() + 30
    while True:
        try:
            with MongoClient(uri, serverSelectionTimeoutMS=300) as client:
                client.admin.command("ping")
            return process, uri
        except Exception:
            if process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the development database did not start on port {DB_PORT} (taken? set DEV_DB_PORT)")
            time.sleep(0.2)


def dev_signing_secret() -> str:
    path = DATA / "dev-signing-secret"
    if path.exists():
        return path.read_text().strip()
    DATA.mkdir(exist_ok=True)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    path.write_text(secret + "\n")
    return secret


def start_local_clerk() -> LocalClerk:
    """The local Clerk on CLERK_PORT, signing with a key kept in .data/ across restarts."""
    path = DATA / "local-clerk-signing-key.pem"
    if not path.exists():
        DATA.mkdir(exist_ok=True)
        path.write_text(generate_signing_key())
        path.chmod(0o600)
    organizations, memberships = sample_organizations()
    clerk = LocalClerk(
        users=sample_users(),
        organizations=organizations,
        memberships=memberships,
        signing_key_pem=path.read_text(),
        port=CLERK_PORT,
    )
    try:
        return clerk.start()
    except OSError:
        sys.exit(f"the local Clerk could not listen on port {CLERK_PORT} (is it taken? set DEV_CLERK_PORT)")


def main() -> None:
    env = dict(os.environ)
    env.setdefault("PORT", "8000")
    env.setdefault("METRICS_ADDR", "127.0.0.1:9464")
    env.setdefault("WATCH_INTERVAL_S", "15")  # a repair to watch within half a minute
    database = None
    if not env.get("MONGODB_URI"):
        database, env["MONGODB_URI"] = start_dev_database()
        where = DATA / "secantus"
        shown = where.relative_to(ROOT) if where.is_relative_to(ROOT) else where
        print(f"development database: {env['MONGODB_URI']} (data in {shown})")
    if not env.get("CLERK_WEBHOOK_SIGNING_SECRET"):
        env["CLERK_WEBHOOK_SIGNING_SECRET"] = dev_signing_secret()
        print(f"development signing secret: {env['CLERK_WEBHOOK_SIGNING_SECRET']}")
    exported = ["MONGODB_URI", "CLERK_WEBHOOK_SIGNING_SECRET"]
    if not env.get("CLERK_SECRET_KEY"):
        clerk = start_local_clerk()
        env["CLERK_API_URL"] = clerk.url
        env["CLERK_SECRET_KEY"] = clerk.secret_key
        env["CLERK_JWT_KEY"] = public_pem_of(clerk.signing_key_pem or "").replace("\n", "\\n")
        exported += ["CLERK_API_URL", "CLERK_SECRET_KEY", "CLERK_JWT_KEY"]
        people = ", ".join(f"{u['first_name']} ({u['id']})" for u in sample_users())
        print(f"local Clerk: {clerk.url} with {len(clerk.users)} sample users: {people}")
        teams = ", ".join(f"{o['name']} ({o['id']})" for o in clerk.orgs.organizations.values())
        print(f"  and {len(clerk.orgs.organizations)} organization: {teams}, with Ada and Grace")
        print("  CLERK_API_URL, CLERK_SECRET_KEY and CLERK_JWT_KEY point the service at it")
    url = f"http://127.0.0.1:{env['PORT']}"
    env["WEBHOOK_URL"] = f"{url}/api/webhooks/clerk"
    env["SERVICE_URL"] = url
    DATA.mkdir(exist_ok=True)
    # The settings the commands run from dev.env (reconcile, watch) must share with the service.
    shared = [n for n in SHARED_SETTINGS if env.get(n)]
    names = [*exported, *shared, "WEBHOOK_URL", "SERVICE_URL"]
    (DATA / "dev.env").write_text("".join(f"export {n}={shlex.quote(env[n])}\n" for n in names))
    print(f"metrics on http://{env['METRICS_ADDR']}/metrics (METRICS_ADDR; not on the public port)")
    print(f"serving on {url}; from another terminal, after `. .data/dev.env`:")
    print("  make sample-event                                   # a signed user.created for Ada")
    print('  curl -X POST -H "Authorization: Bearer $(.venv/bin/flask --app wsgi dev-token)" '
          "$SERVICE_URL/api/users/sync")
    print("  .venv/bin/flask --app wsgi reconcile --dry-run")
    print(f"  .venv/bin/flask --app wsgi dev-change-user --first-name Augusta   # no webhook: the watcher "
          f"(every {env['WATCH_INTERVAL_S']} s) repairs it")
    sys.stdout.flush()
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen(
        [str(bin_dir / "gunicorn"), "wsgi:app", "--bind", f"127.0.0.1:{env['PORT']}"], cwd=ROOT, env=env
    )
    signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    try:
        code = server.wait()
    except KeyboardInterrupt:
        server.terminate()
        code = server.wait()
    finally:
        if database is not None:
            database.terminate()
            database.wait()
    sys.exit(code)


if __name__ == "__main__":
    main()
