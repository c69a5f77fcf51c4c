"""gunicorn started on a database as xClone leaves it (see tests/support/xclone.py): one
warning per conflicting index at start, naming the fix, and the service serves.
"""

from __future__ import annotations

import httpx
import pytest
from pymongo import MongoClient

from tests.support.processes import GunicornService
from tests.support.xclone import prepare_xclone

MIGRATE = "flask --app wsgi init-db --migrate"


@pytest.mark.slow
def test_gunicorn_warns_once_per_conflict_at_start_and_serves(mongo_uri):
    with MongoClient(mongo_uri) as client:
        prepare_xclone(client.get_default_database())
    with GunicornService(mongo_uri, workers=2) as service:
        ready = httpx.get(service.url + "/readyz", timeout=5)
        logs = service.logs()

    assert ready.status_code == 200
    warnings = [line for line in logs.splitlines() if "conflicts with the service" in line]
    assert len(warnings) == 1, logs
    assert "WARNING" in warnings[0] and "users.email_1" in warnings[0] and MIGRATE in warnings[0]
    assert "Traceback" not in logs
