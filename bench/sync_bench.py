"""Sync: ``POST /api/users/sync`` end to end, and its three parts timed in-process.

The service runs under gunicorn with ``CLERK_JWT_KEY`` (networkless verification of
RS256 session tokens minted here) and a FakeClerkAPI as Clerk's Backend API. Each user
syncs twice: the first call creates the local user (201), the second refreshes it (200).
Requests go one at a time, so latency has no queueing in it.

The parts are then timed in this process, on the same kinds of input, with the classes
the route uses: ``SessionTokenVerifier.verify`` (JWT), ``UserSource.get`` (Clerk call,
through the SDK) and ``UserStore.upsert_if_newer`` plus the ``get`` that reads the user
back (the database). What the three do not account for is HTTP, Flask and gunicorn.
"""

from __future__ import annotations

import time
from typing import Any

from bench import loadgen
from bench.ingest import percentile
from bench.servers import TestDatabase, log, running_app
from tests.support.fake_clerk import FakeClerkAPI, make_users
from tests.support.stores import user_store, xclone_user
from tests.support.tokens_util import KeyPair, bearer, mint_token
from webhook_service.clerk_api import ClerkAPI
from webhook_service.resources.users.clerk import UserSource
from webhook_service.store.mongo import connect
from webhook_service.tokens import SessionTokenVerifier

SYNC_PATH = "/api/users/sync"


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 3),
        "p95_ms": round(percentile(ordered, 0.95) * 1000, 3),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 3),
    }


def _timed(samples: list[float], call, *args):
    began = time.perf_counter()
    value = call(*args)
    samples.append(time.perf_counter() - began)
    return value


def run(database: TestDatabase, *, requests: int) -> dict[str, Any]:
    users = make_users(max(1, requests // 2), seed="sync")
    ids = [u["id"] for u in users]
    keys = KeyPair.generate()
    with FakeClerkAPI(users=users) as fake:
        uri, _ = database.new_database("sync")
        with running_app(
            "secantus",
            "service",
            uri,
            workers=2,
            clerk_secret_key=fake.secret_key,
            clerk_api_url=fake.url,
            clerk_jwt_key=keys.public_pem,
        ) as service:
            warm = [
                (b"", {"Authorization": bearer(mint_token(keys, sub=fake_id, lifetime_s=600))})
                for fake_id in ("user_warmup_a", "user_warmup_b")
            ]
            loadgen.drive(service.url, SYNC_PATH, warm, concurrency=1)  # 404s: Clerk has no such user
            calls = [
                (b"", {"Authorization": bearer(mint_token(keys, sub=user_id, lifetime_s=600))})
                for _ in range(2)
                for user_id in ids
            ][:requests]
            result = loadgen.drive(service.url, SYNC_PATH, calls, concurrency=1)
        bad = {s: n for s, n in result.statuses.items() if s not in (200, 201)}
        if bad:
            raise RuntimeError(f"sync: unexpected answers {bad}, e.g. {result.errors[:3]}")
        end_to_end = dict(
            _ms(result.latencies_s),
            requests=result.count,
            statuses={str(k): v for k, v in result.statuses.items()},
        )
        log(f"sync end to end: {end_to_end}")

        verifier = SessionTokenVerifier(jwt_key=keys.public_pem)
        parts_uri, _ = database.new_database("sync_parts")
        store = user_store(connect(parts_uri))  # the service's client settings and write concern
        clerk = UserSource(ClerkAPI(fake.secret_key, fake.url + "/v1"), store.fields)
        store.indexes.ensure()
        jwt_s: list[float] = []
        clerk_s: list[float] = []
        db_s: list[float] = []
        for i in range(len(calls)):
            user_id = ids[i % len(ids)]
            header = bearer(mint_token(keys, sub=user_id, lifetime_s=600))
            _timed(jwt_s, verifier.verify, header)
            clerk_user = _timed(clerk_s, clerk.get, user_id)
            began = time.perf_counter()
            store.upsert_if_newer(xclone_user(clerk_user))
            store.get(user_id)
            db_s.append(time.perf_counter() - began)
    parts = {"jwt_verify": _ms(jwt_s), "clerk_get_user": _ms(clerk_s), "db_upsert_and_read": _ms(db_s)}
    log(f"sync parts: {parts}")
    return {"requests": len(calls), "end_to_end": end_to_end, "parts": parts}
