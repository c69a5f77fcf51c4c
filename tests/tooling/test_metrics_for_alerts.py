"""The metrics deploy/prometheus/alerts.yml relies on exist and behave as the rules assume.

- ``clerk_webhook_last_delivery_timestamp_seconds`` is the time of the last verified delivery
  (a bad signature does not count), and ``clerk_webhook_started_timestamp_seconds`` when the
  service started; under gunicorn (multiprocess mode) a dead worker's last delivery is kept
  and the start time is never the 0 a process writes before it sets it.
- ``clerk_api_requests_total`` carries ``status`` and a bounded ``caller``.
- Every metric and label an alert's expression names is one the service exports, every
  recorded name is recorded in the file, and every alert has a promtool test and a README
  section: renaming a metric or a label breaks this file, not a silent alert.

The rules themselves are tested by promtool: ``promtool test rules deploy/prometheus/alerts_test.yml``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fake_clerk import make_webhook_event
from tests.support.helpers import WEBHOOK, clerk_user, deliver, metrics_text, new_id
from tests.support.signing import signed_delivery
from webhook_service.events import Outcome
from webhook_service.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"

# Sample names a family of each type exports, from the family's name.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
}
# Labels Prometheus adds when it scrapes, not the service.
TARGET_LABELS = {"job", "instance"}


def scrape() -> dict[str, list[dict[str, str]]]:
    """Every sample name a scrape of the metrics listener shows, with the label sets of its
    samples (none yet for a labelled metric never used)."""
    out: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(metrics_text()):
        for suffix in SUFFIXES.get(family.type, ("",)):
            out.setdefault(family.name + suffix, [])
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample.labels)
    return out


def value(name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(metrics_text()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


# -- the timestamps -----------------------------------------------------------------------------


def test_a_delivery_sets_the_last_delivery_timestamp_to_now(client):
    before = time.time()
    assert deliver(client, "user.created", clerk_user(new_id(), 1)) == "applied"
    after = time.time()
    stamp = value("clerk_webhook_last_delivery_timestamp_seconds")
    assert stamp is not None and before <= stamp <= after


def test_any_verified_outcome_counts_but_a_bad_signature_does_not(client):
    user = clerk_user(new_id(), 2)
    deliver(client, "user.created", user)
    first = value("clerk_webhook_last_delivery_timestamp_seconds")
    time.sleep(1.05)  # the gauge is set at most once a second
    assert deliver(client, "user.created", dict(user, updated_at=user["updated_at"] - 1)) == "stale"
    stale = value("clerk_webhook_last_delivery_timestamp_seconds")
    assert stale > first

    body, headers = signed_delivery(make_webhook_event("user.created", clerk_user(new_id(), 1)))
    headers["svix-signature"] = "v1,bm90IHRoZSBzaWduYXR1cmU="
    assert client.post(WEBHOOK, data=body, headers=headers).status_code == 400
    assert value("clerk_webhook_last_delivery_timestamp_seconds") == stale


def test_the_start_timestamp_is_set(client):
    started = value("clerk_webhook_started_timestamp_seconds")
    assert started is not None and 0 < started <= time.time()


MULTIPROCESS_SCRIPT = textwrap.dedent(
    """
    import os, sys, tempfile, time
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp()
    from prometheus_client import generate_latest, multiprocess
    from prometheus_client.parser import text_string_to_metric_families
    from webhook_service import metrics  # the gunicorn master imports it before forking
    master = time.time()
    time.sleep(0.05)
    delivered = []
    for worker in range(2):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            metrics.DB_ERRORS.inc()  # a first update after the fork writes 0 for every metric
            m = metrics.Metrics()  # what create_app does in each worker
            if worker == 0:
                m.delivery("user.created", "applied", 0.001)
                os.write(write, str(time.time()).encode())
            os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        delivered.append(os.read(read, 64).decode())
        multiprocess.mark_process_dead(pid)  # what gunicorn.conf.py's child_exit does
    values = {
        s.name: s.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry()).decode())
        for s in family.samples
    }
    print(master, float(delivered[0]), values["clerk_webhook_started_timestamp_seconds"],
          values["clerk_webhook_last_delivery_timestamp_seconds"])
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="needs fork, as gunicorn does")
def test_under_gunicorn_workers_a_dead_workers_delivery_is_kept_and_the_start_is_the_masters():
    result = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS_SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    master, delivered_by, started, last = map(float, result.stdout.split())
    assert started <= master  # the earliest process, not the 0 a worker writes first
    assert started > 0
    assert last >= delivered_by - 1  # the first worker's delivery, though that worker is gone
    assert last > started


# -- clerk_api_requests_total ---------------------------------------------------------------------


def test_clerk_calls_are_counted_by_status_and_caller(client):
    def count(status: str, caller: str) -> float:
        return value("clerk_api_requests_total", status=status, caller=caller) or 0.0

    before = {c: count("429", c) for c in ("reconcile", "sync", "other")}
    metrics = Metrics()
    metrics.clerk_call(429, caller="reconcile")
    metrics.clerk_call("429")  # the sync route's call: on_status passes the status alone
    metrics.clerk_call(429, caller="anything else")  # bounded: never a new label value
    assert count("429", "reconcile") == before["reconcile"] + 1
    assert count("429", "sync") == before["sync"] + 1
    assert count("429", "other") == before["other"] + 1
    callers = {labels["caller"] for labels in scrape()["clerk_api_requests_total"]}
    assert callers <= {"sync", "reconcile", "watch", "other"}


# -- the rules name only what the service exports ------------------------------------------------


def rule_exprs(text: str) -> list[str]:
    """The ``expr`` of every rule in a rules file: one line, or a ``|`` / ``>`` block."""
    exprs = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"^(\s*)expr:\s*(.*?)\s*$", lines[i])
        i += 1
        if not match:
            continue
        indent, rest = len(match[1]), match[2]
        if rest[:1] in ("|", ">"):
            block = []
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > indent):
                block.append(lines[i].strip())
                i += 1
            rest = " ".join(block)
        exprs.append(rest.strip("'\""))
    return exprs


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def names(expr: str) -> set[str]:
    """The metric and recorded names an expression reads (the service's all start with clerk_)."""
    return set(re.findall(r"\bclerk_[a-z0-9_:]*[a-z0-9_]", expr))


def labels_used(expr: str) -> set[str]:
    """Label names in matchers ``{a="x"}`` and in ``by (...)`` / ``without (...)``."""
    used = set()
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        used |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    for grouping in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        used |= {label.strip() for label in grouping.split(",") if label.strip()}
    return used


@pytest.fixture
def exported(client) -> dict[str, list[dict[str, str]]]:
    """``/metrics`` after every labelled metric the rules read has samples."""
    deliver(client, "user.created", clerk_user(new_id(), 1))
    metrics = Metrics()
    metrics.clerk_call(200)
    metrics.repaired("user", "created")
    metrics.drift("user", 0)
    return scrape()


def test_the_rules_file_is_read_whole():
    text = ALERTS.read_text()
    exprs = rule_exprs(text)
    rules = re.findall(r"^\s*- (?:alert|record):", text, re.M)
    assert len(exprs) == len(rules) >= 7
    # Each reads a metric, but the threshold, a constant.
    constants = [expr for expr in exprs if not names(expr)]
    assert len(constants) == 1 and re.fullmatch(r"vector\(\d+\)", constants[0]), constants


def test_every_metric_an_alert_reads_is_exported(exported):
    text = ALERTS.read_text()
    recorded = set(re.findall(r"^\s*- record:\s*(\S+)", text, re.M))
    assert recorded, "the threshold's recording rule is gone"
    for expr in rule_exprs(text):
        for name in names(expr):
            if ":" in name:
                assert name in recorded, f"{name} is read but never recorded"
            else:
                assert name in exported, f"alerts.yml reads {name}, which /metrics does not export"


def test_every_label_an_alert_reads_is_on_the_metric(exported):
    for expr in rule_exprs(ALERTS.read_text()):
        wanted = labels_used(expr) - TARGET_LABELS
        for name in names(expr) - {n for n in names(expr) if ":" in n}:
            have = set().union(*(labels.keys() for labels in exported[name])) if exported[name] else set()
            assert wanted <= have, f"{expr!r}: {name} has no label {wanted - have}"


def test_the_outcomes_the_rules_match_are_outcomes():
    for outcome in re.findall(r'outcome="(\w+)"', ALERTS.read_text()):
        Outcome(outcome)


def test_every_alert_has_a_promtool_test_and_a_readme_section():
    alerts = re.findall(r"^\s*- alert:\s*(\w+)", ALERTS.read_text(), re.M)
    assert len(alerts) == len(set(alerts)) == 9
    tests = (PROMETHEUS / "alerts_test.yml").read_text()
    readme = (PROMETHEUS / "README.md").read_text()
    for alert in alerts:
        assert re.search(rf"alertname: {alert}\n\s*exp_alerts:\n\s*- exp_labels:", tests), alert
        assert re.search(rf"alertname: {alert}\n\s*exp_alerts: \[\]", tests), alert
        assert f"### {alert}" in readme, alert
