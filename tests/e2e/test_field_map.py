"""A bad field map (USER_FIELDS_FILE) stops the processes at start with one line:
``flask init-db --check`` and gunicorn started with the Procfile's command. The map's
pure functions are tested in tests/unit/test_field_map.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_gunicorn_e2e import exit_status_of_failed_start
from tests.support.processes import GunicornService
from tests.support.signing import TEST_SECRET

ROOT = Path(__file__).resolve().parents[2]


def write_map(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "user_fields.toml"
    path.write_text(text, encoding="utf-8")
    return path


def service_env(mongo_uri: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLERK_", "MONGODB_", "USER_FIELDS"))}
    env.update(MONGODB_URI=mongo_uri, CLERK_WEBHOOK_SIGNING_SECRET=TEST_SECRET, **extra)
    return env


def test_init_db_check_with_a_bad_map_fails_with_one_line(tmp_path, mongo_uri):
    path = write_map(tmp_path, '[fields]\nphone = "$phone"\n')
    flask = Path(sys.executable).with_name("flask")
    result = subprocess.run(
        [str(flask), "--app", "wsgi", "init-db", "--check"],
        cwd=ROOT,
        env=service_env(mongo_uri, USER_FIELDS_FILE=str(path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"configuration error: USER_FIELDS_FILE: {path}: fields.phone: unknown source '$phone' "
        "(known: $primary_email, $primary_phone, $username, $full_name)"
    ]


@pytest.mark.timeout(60)
def test_a_bad_map_stops_gunicorn_at_start_with_one_line(tmp_path, mongo_uri):
    path = write_map(tmp_path, '[fields]\n"a.b" = "image_url"\n')
    service = GunicornService(mongo_uri, env={"USER_FIELDS_FILE": str(path)})
    returncode, output = exit_status_of_failed_start(service, "a bad USER_FIELDS_FILE")
    assert returncode != 0
    lines = [line for line in output.splitlines() if "USER_FIELDS_FILE" in line]
    assert lines and all(line.startswith("configuration error: USER_FIELDS_FILE: ") for line in lines), output
    assert "fields.a.b: field name 'a.b' may not contain '.'" in lines[0]
    assert "Traceback" not in output


def test_init_db_check_with_a_bad_organization_map_fails_with_one_line(tmp_path, mongo_uri):
    path = tmp_path / "organization_fields.toml"
    path.write_text('[fields]\nname = "name"\n[memberships]\nuser = "clerkOrgId"\n', encoding="utf-8")
    flask = Path(sys.executable).with_name("flask")
    result = subprocess.run(
        [str(flask), "--app", "wsgi", "init-db", "--check"],
        cwd=ROOT,
        env=service_env(mongo_uri, ORGANIZATION_FIELDS_FILE=str(path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        f"configuration error: ORGANIZATION_FIELDS_FILE: {path}: memberships.user: "
        "'clerkOrgId' is the organization field too"
    ]


@pytest.mark.timeout(60)
def test_a_bad_organization_map_stops_gunicorn_at_start_with_one_line(tmp_path, mongo_uri):
    path = tmp_path / "organization_fields.toml"
    path.write_text('cascade = "projects.orgId:delete"\n[fields]\nname = "name"\n', encoding="utf-8")
    service = GunicornService(mongo_uri, env={"ORGANIZATION_FIELDS_FILE": str(path)})
    returncode, output = exit_status_of_failed_start(service, "a bad ORGANIZATION_FIELDS_FILE")
    assert returncode != 0
    lines = [line for line in output.splitlines() if "ORGANIZATION_FIELDS_FILE" in line]
    assert lines and all(line.startswith("configuration error: ORGANIZATION_FIELDS_FILE: ") for line in lines)
    assert "cascade must be a list of rules collection.field:action" in lines[0]
    assert "Traceback" not in output
