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
import signal
import subprocess
import sys
import time
from pathlib import Path

from pymongo import MongoClient

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / ".data"
DB_PORT = int(os.environ.get("DEV_DB_PORT", "27018"))


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
                sys.exit(f"the development database did not start on port {DB_PORT} (is the port taken?)")
            time.sleep(0.2)


def dev_signing_secret() -> str:
    path = DATA / "dev-signing-secret"
    if path.exists():
        return path.read_text().strip()
    DATA.mkdir(exist_ok=True)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    path.write_text(secret + "\n")
    return secret


def main() -> None:
    env = dict(os.environ)
    env.setdefault("PORT", "8000")
    database = None
    if not env.get("MONGODB_URI"):
        database, env["MONGODB_URI"] = start_dev_database()
        print(f"development database: {env['MONGODB_URI']} (data in .data/secantus)")
    if not env.get("CLERK_WEBHOOK_SIGNING_SECRET"):
        env["CLERK_WEBHOOK_SIGNING_SECRET"] = dev_signing_secret()
        print(f"development signing secret: {env['CLERK_WEBHOOK_SIGNING_SECRET']}")
    url = f"http://127.0.0.1:{env['PORT']}"
    DATA.mkdir(exist_ok=True)
    (DATA / "dev.env").write_text(
        f"export MONGODB_URI='{env['MONGODB_URI']}'\n"
        f"export CLERK_WEBHOOK_SIGNING_SECRET='{env['CLERK_WEBHOOK_SIGNING_SECRET']}'\n"
        f"export WEBHOOK_URL='{url}/api/webhooks/clerk'\n"
    )
    print(f"serving on {url}")
    print("send a signed sample event from another terminal:  make sample-event")
    print("  (or: . .data/dev.env && .venv/bin/flask --app wsgi send-test-event user.created "
          "--url $WEBHOOK_URL --email ada@example.com)")
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
