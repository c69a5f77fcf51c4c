"""DELETE_CASCADE under a fault: a worker SIGKILLed mid-cascade (the database frozen so
the kill lands inside it) never answers, and Svix's redelivery of the deletion finishes it.
The cascade's rules on a healthy server are tested in tests/integration/test_delete_cascade.py.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from tests.support.fake_clerk import make_clerk_user, make_deleted_data, make_webhook_event
from tests.support.helpers import WEBHOOK
from tests.support.processes import GunicornService
from tests.support.signing import signed_headers
from tests.support.xclone import XCLONE_CASCADE, seed_app_data


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_cascade_interrupted_by_a_killed_worker_is_finished_by_the_redelivery(mongo_server, mongo_uri):
    if not mongo_server.can_restart:
        pytest.skip("freezes the test database server")
    copies = 1500
    a = make_clerk_user(seed="cascade-kill-a", email="a.kill@example.com")
    b = make_clerk_user(seed="cascade-kill-b", email="b.kill@example.com")
    client = MongoClient(mongo_uri)
    db = client.get_default_database()
    with GunicornService(mongo_uri, workers=1, env={"DELETE_CASCADE": XCLONE_CASCADE}) as service:
        for user in (a, b):
            body = json.dumps(make_webhook_event("user.created", user))
            response = httpx.post(service.url + WEBHOOK, content=body, headers=signed_headers(body))
            assert response.status_code == 200
        a_doc, b_doc = (db.users.find_one({"clerkId": u["id"]}) for u in (a, b))
        seed_app_data(db, a_doc["_id"], b_doc["_id"], a["id"], copies=copies)
        deletion = json.dumps(make_webhook_event("user.deleted", make_deleted_data(a["id"])))
        svix_id = "msg_cascade_kill_0000000000000"
        [worker] = service.worker_pids()
        answer: dict[str, Any] = {}

        def send() -> None:
            try:
                answer["status"] = httpx.post(
                    service.url + WEBHOOK, content=deletion, headers=signed_headers(deletion, msg_id=svix_id),
                    timeout=30,
                ).status_code
            except httpx.HTTPError as exc:
                answer["error"] = type(exc).__name__

        sender = threading.Thread(target=send)
        sender.start()
        deadline = time.monotonic() + 20
        while db.posts.count_documents({"user": a_doc["_id"]}) == copies and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(mongo_server.process.pid, signal.SIGSTOP)  # the cascade is under way: freeze it
        try:
            os.kill(worker, signal.SIGKILL)
        finally:
            os.kill(mongo_server.process.pid, signal.SIGCONT)
        sender.join(30)
        service.wait_for_workers(exclude={worker})
        time.sleep(0.5)
        interrupted = db.users.find_one({"clerkId": a["id"]}) is not None
        started = db.posts.count_documents({"user": a_doc["_id"]}) < copies
        left = db.notifications.count_documents({"from": a_doc["_id"]})

        headers = signed_headers(deletion, msg_id=svix_id)
        redelivered = httpx.post(service.url + WEBHOOK, content=deletion, headers=headers, timeout=30)

    assert "status" not in answer, f"the killed worker answered: {answer}"
    assert started and interrupted and left > 0, "precondition: the worker died mid-cascade"
    assert redelivered.status_code == 200 and redelivered.json() == {"outcome": "deleted"}
    assert db.users.find_one({"clerkId": a["id"]}) is None
    references = (("posts", "user"), ("comments", "user"), ("notifications", "from"), ("notifications", "to"))
    for name, field in references:
        assert db[name].count_documents({field: a_doc["_id"]}) == 0, name
    assert db.posts.count_documents({"likes": a_doc["_id"]}) == 0
    assert db.posts.count_documents({"user": b_doc["_id"]}) == copies
    assert db.comments.count_documents({"user": b_doc["_id"]}) == copies
    assert db.notifications.count_documents({"from": b_doc["_id"], "to": b_doc["_id"]}) == copies
    client.close()
