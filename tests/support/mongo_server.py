"""A real MongoDB wire-protocol server for the tests.

By default a SecantusDB process on a free loopback port, with the test commands MongoDB's
own driver tests use (``configureFailPoint``, ``replSetStepDown``); with ``TEST_MONGODB_URI``
set, that server instead (then tests that stop and restart the server are skipped, and a
real mongod needs ``--setParameter enableTestCommands=1`` for the fault tests).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from pymongo import MongoClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MongoServer:
    def __init__(self) -> None:
        self.external_uri = os.environ.get("TEST_MONGODB_URI")
        self.port = free_port()
        self.storage = tempfile.mkdtemp(prefix="secantus-test-")
        self.process: subprocess.Popen | None = None

    @property
    def can_restart(self) -> bool:
        return self.external_uri is None

    @property
    def base_uri(self) -> str:
        """URI without a database path; append ``/name`` (and options) to use one."""
        if self.external_uri:
            return self.external_uri.split("?")[0].rstrip("/")
        return f"mongodb://127.0.0.1:{self.port}"

    def uri(self, database: str) -> str:
        return f"{self.base_uri}/{database}?directConnection=true"

    def start(self) -> None:
        if self.external_uri or self.process is not None:
            return
        self.process = subprocess.Popen(
            [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port),
             "--storage-path", self.storage, "--log-level", "ERROR", "--enable-test-commands"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with MongoClient(self.uri("admin"), serverSelectionTimeoutMS=300) as client:
                    client.admin.command("ping")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError("test MongoDB server did not start") from None
                time.sleep(0.1)

    def kill(self) -> None:
        """Stop the server abruptly, as a crash or outage would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.storage, ignore_errors=True)
