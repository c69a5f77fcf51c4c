"""Observability of the service as production runs it (Procfile command under gunicorn).

- ``/metrics`` on the master's own listener (``METRICS_ADDR``, never the public port):
  Prometheus text from prometheus_client, aggregated across two gunicorn workers
  (multiprocess mode), so every scrape shows the whole service.
- Logs: one line per delivery with its svix id, event type, user, outcome and duration;
  human-readable by default, one JSON object per line with ``LOG_FORMAT=json``.
- Hygiene: nothing the service writes contains the signing secret, Clerk's secret key, a
  session token, a delivery's body or an email address that only a payload carried.

Each scenario starts a real gunicorn (tests/support/processes.GunicornService) once per module,
drives it over HTTP, scrapes it, stops it and keeps its output; the tests assert on that.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fake_clerk import FakeClerkAPI, make_clerk_user, make_deleted_data, make_webhook_event
from tests.support.helpers import fresh_database
from tests.support.hygiene import MIN_SECRET_LEN, signing_secret_forms
from tests.support.mongo_server import free_port
from tests.support.processes import GunicornService
from tests.support.signing import TEST_SECRET, signed_delivery, signed_headers
from tests.support.tokens_util import DEFAULT_AZP, bearer, instance_keys, mint_token, other_keys

pytestmark = pytest.mark.slow

WEBHOOK = "/api/webhooks/clerk"
SYNC = "/api/users/sync"
SCRAPES = 8
# A valid whsec_ secret that is not the service's: deliveries signed with it must be refused.
WRONG_SECRET = "whsec_" + "QmFkU2lnbmluZ1NlY3JldEZvclRlc3RzMDEyMzQ1Ng=="

# The samples a scrape is compared on (every sample of these families).
FAMILIES = (
    "clerk_webhook_deliveries",
    "clerk_webhook_handling_seconds",
    "clerk_webhook_signature_rejections",
    "clerk_webhook_db_errors",
    "clerk_api_requests",
    "clerk_user_sync_requests",
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- helpers --------------------------------------------------------------------------


@dataclass
class Delivery:
    """One POST to the webhook route and what the service said."""

    svix_id: str
    body: str
    headers: dict[str, str]
    event_type: str | None
    user_id: str | None
    status: int = 0
    answer: dict[str, Any] = field(default_factory=dict)


def delivery(event: dict[str, Any], *, secret: str = TEST_SECRET) -> Delivery:
    body, headers = signed_delivery(event, secret=secret)
    data = event.get("data")
    user_id = data.get("id") if isinstance(data, dict) and event["type"].startswith("user.") else None
    return Delivery(headers["svix-id"], body, headers, event["type"], user_id)


def malformed_delivery(body: str) -> Delivery:
    """Correctly signed, but not a usable Clerk event."""
    headers = signed_headers(body)
    return Delivery(headers["svix-id"], body, headers, None, None)


def post(url: str, d: Delivery) -> Delivery:
    """POST on a connection of its own, so gunicorn may hand it to any worker."""
    response = httpx.post(
        url + WEBHOOK, content=d.body, headers={**d.headers, "Connection": "close"}, timeout=15.0
    )
    d.status, d.answer = response.status_code, response.json()
    assert "Traceback" not in response.text
    return d


def post_all(url: str, deliveries: list[Delivery]) -> list[Delivery]:
    """Send independent deliveries concurrently, to keep both workers busy."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda d: post(url, d), deliveries))


def sync(url: str, authorization: str | None) -> httpx.Response:
    headers = {"Connection": "close"}
    if authorization is not None:
        headers["Authorization"] = authorization
    response = httpx.post(url + SYNC, headers=headers, timeout=15.0)
    assert "Traceback" not in response.text
    return response


def scrape(url: str) -> Samples:
    """One scrape of the metrics listener, parsed by prometheus_client's own parser."""
    response = httpx.get(url, headers={"Connection": "close"}, timeout=10.0)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        if family.name in FAMILIES:
            for s in family.samples:
                samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series was never created (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def by_label(samples: Samples, name: str, *label_names: str) -> dict[tuple[str, ...], float]:
    """Every series of ``name`` with a non-zero value, keyed by the values of ``label_names``."""
    out = {}
    for (sample_name, labels), v in samples.items():
        if sample_name == name and v:
            d = dict(labels)
            out[tuple(d[n] for n in label_names)] = v
    return out


def per_worker_deliveries(metrics_dir: Path, pids: list[int]) -> dict[int, float]:
    """Deliveries each worker counted, from that worker's own multiprocess file."""
    counts = {}
    for pid in pids:
        path = metrics_dir / f"counter_{pid}.db"
        total = 0.0
        if path.exists():
            for metric in MultiProcessCollector.merge([str(path)], accumulate=False):
                if metric.name == "clerk_webhook_deliveries":
                    total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
        counts[pid] = total
    return counts


def assert_nothing_leaked(output: str, secrets: dict[str, str]) -> None:
    """No line of ``output`` contains any of ``secrets`` (description -> value)."""
    for what, secret in secrets.items():
        assert len(secret) >= MIN_SECRET_LEN, f"{what} is too short to prove anything"
        leaking = [line for line in output.splitlines() if secret in line]
        assert not leaking, f"{what} appears in the service's output: {leaking[0][:300]!r}"


def token_secrets(name: str, token: str) -> dict[str, str]:
    return {f"{name} session token": token, f"{name} token signature": token.rsplit(".", 1)[1]}


def emails_of(user: dict[str, Any]) -> list[str]:
    return [e["email_address"] for e in user["email_addresses"]]


def session_event(seed: str) -> dict[str, Any]:
    """A Clerk event type the service does not act on."""
    return make_webhook_event(
        "session.created",
        {
            "id": f"sess_{uuid.uuid5(uuid.NAMESPACE_URL, seed).hex[:27]}",
            "object": "session",
            "status": "active",
            "user_id": f"user_{seed}",
            "client_id": "client_2pWx4Yqk7TzL0mN3bV8cR1sD5fG",
        },
    )


@pytest.fixture(scope="module")
def database_uri(mongo_server) -> Iterator[str]:
    """A fresh database for the module (the scenarios run once per module)."""
    with fresh_database(mongo_server, "t_obs") as uri:
        yield uri


def clerk_wired(fake: FakeClerkAPI, **env: str) -> dict[str, Any]:
    """GunicornService arguments pointing the service at ``fake`` for sync."""
    return dict(
        clerk_secret_key=fake.secret_key,
        clerk_api_url=fake.url,
        clerk_jwt_key=instance_keys().public_pem,
        env={"CLERK_AUTHORIZED_PARTIES": DEFAULT_AZP, "CLERK_RETRY_BUDGET_MS": "200", **env},
    )


# -- scenario 1: two workers, default (text) logs ----------------------------------------

N_CREATED = 12


@dataclass
class TextRun:
    handled: list[Delivery]  # every delivery with a verified signature
    bad_signature: list[Delivery]
    expected_deliveries: dict[tuple[str, str], int]  # (type label, outcome) -> count
    sync_statuses: list[int]
    scrapes: list[Samples]
    per_worker: dict[int, float]
    workers_before: list[int]
    workers_after: list[int]
    clerk_user_requests: int
    output: str
    secrets: dict[str, str]


@pytest.fixture(scope="module")
def text_run(database_uri) -> TextRun:
    fake_only = make_clerk_user(seed="obs-sync-new", email="sync.only.in.clerk@example.com")
    created_users = [
        make_clerk_user(seed=f"obs-{i}", email=f"payload.only.{i}@example.com") for i in range(N_CREATED)
    ]
    webhook_and_clerk = created_users[0]  # in the database (via webhook) and in Clerk
    missing_id = make_clerk_user(seed="obs-nobody")["id"]  # Clerk has never heard of it

    with FakeClerkAPI(users=[fake_only, webhook_and_clerk]) as fake:
        service = GunicornService(database_uri, workers=2, **clerk_wired(fake))
        with service:
            url = service.url
            metrics_dir = Path(service.env["PROMETHEUS_MULTIPROC_DIR"])
            workers_before = service.worker_pids()

            created = post_all(url, [delivery(make_webhook_event("user.created", u)) for u in created_users])

            duplicates = [
                Delivery(d.svix_id, d.body, d.headers, d.event_type, d.user_id) for d in created[:4]
            ]
            newer = [
                delivery(make_webhook_event("user.updated", dict(u, updated_at=u["updated_at"] + 1000)))
                for u in created_users[4:7]
            ]
            stale = [
                delivery(make_webhook_event("user.updated", dict(u, updated_at=u["updated_at"] - 1000)))
                for u in created_users[7:9]
            ]
            deleted = [
                delivery(make_webhook_event("user.deleted", make_deleted_data(created_users[9]["id"])))
            ]
            ignored = [delivery(session_event(f"obs-{i}")) for i in range(3)]
            malformed = [malformed_delivery(json.dumps({"type": "user.created", "data": "not an object"}))]
            bad_signature = [
                delivery(make_webhook_event("user.created", u), secret=WRONG_SECRET)
                for u in created_users[10:12]
            ] + [delivery(make_webhook_event("user.created", fake_only), secret=WRONG_SECRET)]
            post_all(url, duplicates + newer + stale + deleted + ignored + malformed + bad_signature)

            good_token = mint_token(sub=fake_only["id"])
            refresh_token = mint_token(sub=webhook_and_clerk["id"])
            gone_token = mint_token(sub=missing_id)
            forged_token = mint_token(other_keys(), sub=fake_only["id"])
            sync_statuses = [
                sync(url, bearer(good_token)).status_code,  # new locally: 201
                sync(url, bearer(refresh_token)).status_code,  # already there: 200
                sync(url, bearer(gone_token)).status_code,  # Clerk says 404: 404
                sync(url, bearer(forged_token)).status_code,  # wrong key: 401
                sync(url, None).status_code,  # no token: 401
            ]

            scrapes = [scrape(service.metrics_url) for _ in range(SCRAPES)]
            public_metrics = httpx.get(url + "/metrics", timeout=10.0).status_code
            workers_after = service.worker_pids()
            per_worker = per_worker_deliveries(metrics_dir, workers_after)
        output = service.logs()  # after stop: everything, flushed
        # By id only: the watcher's passes (its first within 5 s of start) list and count users.
        clerk_user_requests = fake.request_count("/v1/users/user_")

    assert public_metrics == 404, "the public port serves /metrics"
    for d in created + newer + deleted:
        assert d.status == 200, d.answer
    handled = created + duplicates + newer + stale + deleted + ignored + malformed
    assert [d.answer["outcome"] for d in created] == ["applied"] * N_CREATED
    assert [d.answer["outcome"] for d in duplicates] == ["duplicate"] * len(duplicates)
    assert [d.answer["outcome"] for d in newer] == ["applied"] * len(newer)
    assert [d.answer["outcome"] for d in stale] == ["stale"] * len(stale)
    assert [d.answer["outcome"] for d in deleted] == ["deleted"]
    assert [d.answer["outcome"] for d in ignored] == ["ignored"] * len(ignored)
    assert [(d.status, d.answer["error"]) for d in malformed] == [(400, "malformed event")]
    assert [(d.status, d.answer["error"]) for d in bad_signature] == [(400, "invalid signature")] * 3

    secrets = {
        "signing secret": signing_secret_forms(TEST_SECRET)[0],
        "signing secret's base64 key": signing_secret_forms(TEST_SECRET)[1],
        "CLERK_SECRET_KEY": fake.secret_key,
        **token_secrets("valid", good_token),
        **token_secrets("refresh", refresh_token),
        **token_secrets("gone user's", gone_token),
        **token_secrets("forged", forged_token),
    }
    for d in handled + bad_signature:
        secrets[f"body of delivery {d.svix_id}"] = d.body
    for user in [*created_users, fake_only]:
        for email in emails_of(user):
            secrets[f"email {email}"] = email

    return TextRun(
        handled=handled,
        bad_signature=bad_signature,
        expected_deliveries={
            ("user.created", "applied"): N_CREATED,
            ("user.created", "duplicate"): len(duplicates),
            ("user.updated", "applied"): len(newer),
            ("user.updated", "stale"): len(stale),
            ("user.deleted", "deleted"): 1,
            ("session.created", "ignored"): len(ignored),
            ("none", "rejected"): 1,
        },
        sync_statuses=sync_statuses,
        scrapes=scrapes,
        per_worker=per_worker,
        workers_before=workers_before,
        workers_after=workers_after,
        clerk_user_requests=clerk_user_requests,
        output=output,
        secrets=secrets,
    )


def test_both_workers_handled_deliveries(text_run):
    # No worker was replaced during the run, and each one counted some of the deliveries
    # in its own multiprocess file: the aggregate below really spans two processes.
    assert len(text_run.workers_before) == 2
    assert text_run.workers_after == text_run.workers_before
    assert all(n > 0 for n in text_run.per_worker.values()), text_run.per_worker
    assert sum(text_run.per_worker.values()) == len(text_run.handled)


def test_every_scrape_shows_the_same_totals_whichever_worker_answers(text_run):
    first, *rest = text_run.scrapes
    assert len(rest) == SCRAPES - 1
    for other in rest:
        assert other == first


def test_deliveries_are_counted_by_type_and_outcome(text_run):
    samples = text_run.scrapes[0]
    assert by_label(samples, "clerk_webhook_deliveries_total", "type", "outcome") == {
        k: float(v) for k, v in text_run.expected_deliveries.items()
    }
    assert (
        value(samples, "clerk_webhook_deliveries_total", type="user.created", outcome="applied") == N_CREATED
    )


def test_handling_duration_is_observed_once_per_verified_delivery(text_run):
    samples = text_run.scrapes[0]
    verified = len(text_run.handled)
    assert verified == sum(text_run.expected_deliveries.values())
    assert value(samples, "clerk_webhook_handling_seconds_count") == verified
    assert value(samples, "clerk_webhook_handling_seconds_bucket", le="+Inf") == verified
    assert value(samples, "clerk_webhook_handling_seconds_sum") > 0


def test_bad_signatures_are_counted_and_nothing_else_is(text_run):
    samples = text_run.scrapes[0]
    assert value(samples, "clerk_webhook_signature_rejections_total") == len(text_run.bad_signature)
    assert value(samples, "clerk_webhook_db_errors_total") == 0


def test_sync_requests_and_clerk_calls_are_counted_by_status(text_run):
    assert text_run.sync_statuses == [201, 200, 404, 401, 401]
    samples = text_run.scrapes[0]
    assert by_label(samples, "clerk_user_sync_requests_total", "status") == {
        ("201",): 1.0,
        ("200",): 1.0,
        ("404",): 1.0,
        ("401",): 2.0,
    }
    # Only the three requests with a valid token reached Clerk: two users found, one not.
    assert text_run.clerk_user_requests == 3
    sync_calls = {
        k: v
        for k, v in by_label(samples, "clerk_api_requests_total", "caller", "status").items()
        if k[0] == "sync"
    }
    assert sync_calls == {("sync", "200"): 2.0, ("sync", "404"): 1.0}


TEXT_DELIVERY_LINE = re.compile(
    r" (?:INFO|WARNING) webhook_service\.delivery: delivery (?P<svix_id>\S+)"
    r" type=(?P<type>\S+) user=(?P<user>\S+)"
    r" outcome=(?P<outcome>\w+) status=(?P<status>\d+) duration_ms=(?P<duration>\d+\.\d)(?: error=.+)?$"
)


def test_default_logs_are_readable_lines_one_per_delivery(text_run):
    lines = text_run.output.splitlines()
    ours = [line for line in lines if "webhook_service" in line]
    assert ours, text_run.output
    assert not [line for line in ours if line.lstrip().startswith("{")], "text format wrote JSON"

    logged = Counter(
        (m["svix_id"], m["type"], m["user"], m["outcome"], int(m["status"]))
        for m in map(TEXT_DELIVERY_LINE.search, lines)
        if m
    )
    sent = Counter(
        (d.svix_id, str(d.event_type), str(d.user_id), d.answer.get("outcome", "rejected"), d.status)
        for d in text_run.handled
    )
    assert logged == sent, "one line per verified delivery, with its svix-id, type, user and outcome"
    rejected = [line for line in lines if "webhook_service.delivery: delivery rejected:" in line]
    assert len(rejected) == len(text_run.bad_signature)
    assert "Traceback" not in text_run.output


def test_text_run_output_leaks_no_secret_token_or_payload(text_run):
    assert_nothing_leaked(text_run.output, text_run.secrets)


# -- scenario 2: the database is down ---------------------------------------------------


@dataclass
class DownRun:
    deliveries: list[Delivery]
    sync_status: int
    scrapes: list[Samples]
    output: str
    secrets: dict[str, str]


@pytest.fixture(scope="module")
def down_run() -> DownRun:
    user = make_clerk_user(seed="obs-down-sync", email="down.sync@example.com")
    created_users = [make_clerk_user(seed=f"obs-down-{i}") for i in range(4)]
    nothing_listens = f"mongodb://127.0.0.1:{free_port()}/obs_down"
    with FakeClerkAPI(users=[user]) as fake:
        service = GunicornService(nothing_listens, workers=2, db_timeout_ms=500, **clerk_wired(fake))
        with service:
            deliveries = post_all(
                service.url, [delivery(make_webhook_event("user.created", u)) for u in created_users]
            )
            token = mint_token(sub=user["id"])
            sync_status = sync(service.url, bearer(token)).status_code
            scrapes = [scrape(service.metrics_url) for _ in range(SCRAPES)]
        output = service.logs()
    secrets = {
        "signing secret": TEST_SECRET,
        "signing secret's base64 key": signing_secret_forms(TEST_SECRET)[1],
        "CLERK_SECRET_KEY": fake.secret_key,
        **token_secrets("valid", token),
        **{f"body of delivery {d.svix_id}": d.body for d in deliveries},
        **{f"email {e}": e for u in [user, *created_users] for e in emails_of(u)},
    }
    return DownRun(deliveries, sync_status, scrapes, output, secrets)


def test_database_down_answers_503_and_counts_db_errors(down_run):
    assert [(d.status, d.answer["error"]) for d in down_run.deliveries] == [
        (503, "database unavailable")
    ] * len(down_run.deliveries)
    assert down_run.sync_status == 503

    first, *rest = down_run.scrapes
    assert all(other == first for other in rest)
    n = len(down_run.deliveries)
    # Every failed delivery and the failed sync write counted once each.
    assert value(first, "clerk_webhook_db_errors_total") == n + 1
    assert by_label(first, "clerk_webhook_deliveries_total", "type", "outcome") == {
        ("user.created", "failed"): float(n)
    }
    assert value(first, "clerk_webhook_handling_seconds_count") == n
    assert by_label(first, "clerk_user_sync_requests_total", "status") == {("503",): 1.0}
    # The sync's interval claim is its first database command, so a down database
    # spends none of the app's Clerk rate limit.
    assert by_label(first, "clerk_api_requests_total", "status") == {}


def test_database_down_logs_failed_deliveries_without_secrets(down_run):
    failed = re.findall(
        r"webhook_service\.delivery: delivery (\S+) .* outcome=failed status=503 ", down_run.output
    )
    assert sorted(failed) == sorted(d.svix_id for d in down_run.deliveries)
    assert_nothing_leaked(down_run.output, down_run.secrets)


# -- scenario 3: LOG_FORMAT=json ---------------------------------------------------------


@dataclass
class JsonRun:
    expected: list[tuple[str, str | None, str | None, str, int]]  # svix id, type, user, outcome, status
    bad_signature_id: str
    synced_user: str
    sync_statuses: list[int]
    output: str
    secrets: dict[str, str]


@pytest.fixture(scope="module")
def json_run(database_uri) -> JsonRun:
    alice = make_clerk_user(seed="obs-json-a", email="json.payload.alice@example.com")
    bob = make_clerk_user(seed="obs-json-b", email="json.payload.bob@example.com")
    clerk_only = make_clerk_user(seed="obs-json-sync", email="json.sync.clerk@example.com")
    marker = "only.in.a.malformed.payload@example.com"

    applied = delivery(make_webhook_event("user.created", alice))
    duplicate = Delivery(applied.svix_id, applied.body, applied.headers, "user.created", alice["id"])
    stale = delivery(make_webhook_event("user.updated", dict(alice, updated_at=alice["updated_at"] - 1)))
    bob_created = delivery(make_webhook_event("user.created", bob))
    bob_deleted = delivery(make_webhook_event("user.deleted", make_deleted_data(bob["id"])))
    ignored = delivery(session_event("obs-json"))
    malformed = malformed_delivery(json.dumps({"type": "user.updated", "data": {"email": marker}}))
    forged = delivery(make_webhook_event("user.created", clerk_only), secret=WRONG_SECRET)
    sequence = [applied, duplicate, stale, bob_created, bob_deleted, ignored, malformed, forged]

    with FakeClerkAPI(users=[clerk_only]) as fake:
        service = GunicornService(database_uri, workers=2, **clerk_wired(fake, LOG_FORMAT="json"))
        with service:
            for d in sequence:
                post(service.url, d)
            good_token = mint_token(sub=clerk_only["id"])
            forged_token = mint_token(other_keys(), sub=clerk_only["id"])
            sync_statuses = [
                sync(service.url, bearer(good_token)).status_code,
                sync(service.url, bearer(forged_token)).status_code,
            ]
        output = service.logs()

    assert [d.status for d in sequence] == [200, 200, 200, 200, 200, 200, 400, 400]
    expected = [
        (applied.svix_id, "user.created", alice["id"], "applied", 200),
        (applied.svix_id, "user.created", alice["id"], "duplicate", 200),
        (stale.svix_id, "user.updated", alice["id"], "stale", 200),
        (bob_created.svix_id, "user.created", bob["id"], "applied", 200),
        (bob_deleted.svix_id, "user.deleted", bob["id"], "deleted", 200),
        (ignored.svix_id, "session.created", None, "ignored", 200),
        (malformed.svix_id, "user.updated", None, "rejected", 400),  # its type's check refused it
    ]
    secrets = {
        "signing secret": TEST_SECRET,
        "signing secret's base64 key": signing_secret_forms(TEST_SECRET)[1],
        "CLERK_SECRET_KEY": fake.secret_key,
        **token_secrets("valid", good_token),
        **token_secrets("forged", forged_token),
        **{f"body of delivery {d.svix_id}": d.body for d in sequence},
        **{f"email {e}": e for u in (alice, bob, clerk_only) for e in emails_of(u)},
        "email only in a malformed payload": marker,
    }
    return JsonRun(expected, forged.svix_id, clerk_only["id"], sync_statuses, output, secrets)


def json_records(output: str) -> list[dict[str, Any]]:
    """Every line that starts with "{", parsed; a line that does not parse fails the test."""
    records = []
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except ValueError:
                pytest.fail(f"a log line starting with '{{' is not JSON: {line[:300]!r}")
    return records


def test_json_logs_are_one_object_per_line(json_run):
    records = json_records(json_run.output)
    ours = [r for r in records if str(r.get("logger", "")).startswith("webhook_service")]
    assert ours, json_run.output
    for record in ours:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
    # Everything our loggers wrote is JSON: no text-format line of ours slipped through.
    text_lines = [line for line in json_run.output.splitlines() if not line.startswith("{")]
    assert not [line for line in text_lines if "webhook_service" in line], text_lines
    assert "Traceback" not in json_run.output


def test_json_delivery_lines_carry_the_delivery_fields(json_run):
    records = [r for r in json_records(json_run.output) if r.get("logger") == "webhook_service.delivery"]
    handled = [r for r in records if "duration_ms" in r]
    fields = ("svix_id", "event_type", "user_id", "outcome", "status")
    logged = Counter(tuple(r[f] for f in fields) for r in handled)
    assert logged == Counter(json_run.expected), "one line per delivery, with its fields"
    for record in handled:
        assert record["level"] == "INFO"
        assert isinstance(record["duration_ms"], (int, float)) and record["duration_ms"] >= 0
        assert record["svix_id"] in record["message"]
    malformed = next(r for r in handled if r["outcome"] == "rejected")
    assert malformed["error"] == "user event has no string 'data.id'"

    refused = [r for r in records if "duration_ms" not in r]
    assert [(r["svix_id"], r["outcome"], r["status"]) for r in refused] == [
        (json_run.bad_signature_id, "rejected", 400)
    ]


def test_json_sync_lines(json_run):
    assert json_run.sync_statuses == [201, 401]
    records = [r for r in json_records(json_run.output) if r.get("logger") == "webhook_service.sync"]
    assert [r["message"] for r in records] == [f"sync user={json_run.synced_user} outcome=created"]


def test_json_run_output_leaks_no_secret_token_or_payload(json_run):
    assert_nothing_leaked(json_run.output, json_run.secrets)
