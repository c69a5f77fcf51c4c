"""DELETE_CASCADE at gunicorn's start: one warning per missing cascade index, naming the
command that creates it."""

from __future__ import annotations

import httpx

from tests.support.processes import GunicornService


def test_gunicorn_warns_once_at_start_for_each_missing_cascade_index(mongo_uri):
    with GunicornService(mongo_uri, env={"DELETE_CASCADE": "posts.user:delete,posts.likes:pull"}) as service:
        ready = httpx.get(service.url + "/readyz", timeout=5)
        logs = service.logs()

    assert ready.status_code == 200
    warnings = [line for line in logs.splitlines() if "DELETE_CASCADE" in line]
    assert [w.split(" is missing")[0].split("index ")[-1] for w in warnings] == [
        "posts.user_1 (user)",
        "posts.likes_1 (likes)",
    ]
    assert all("WARNING" in w and "flask --app wsgi init-db" in w for w in warnings)
