"""``make audit`` (scripts/audit.py) on the reports pip-audit and npm audit really give.

The tools themselves are not run here (their services are remote); their JSON reports are,
shaped as each tool writes them: what a known vulnerability does to the exit status, what
an exception excuses and for how long, and what an unreachable service looks like.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import pytest

from scripts import audit

TODAY = date(2026, 12, 6)

PIP_UNREACHABLE = json.dumps(
    {
        "dependencies": [
            {"name": n, "skip_reason": f"Dependency not found on PyPI and could not be audited: {n} (1.0)"}
            for n in ("flask", "svix", "pymongo")
        ],
        "fixes": [],
    }
)
PIP_CLEAN = json.dumps({"dependencies": [{"name": "flask", "version": "3.1.3", "vulns": []}], "fixes": []})
PIP_VULNERABLE = json.dumps(
    {
        "dependencies": [
            {"name": "flask", "version": "3.1.3", "vulns": []},
            {
                "name": "werkzeug",
                "version": "3.0.1",
                "vulns": [
                    {
                        "id": "PYSEC-2023-221",
                        "fix_versions": ["3.0.1", "2.3.8"],
                        "aliases": ["CVE-2023-46136", "GHSA-hrfv-mqp8-q5rw"],
                        "description": "Werkzeug multipart data parser needs to find a boundary ...",
                    }
                ],
            },
        ],
        "fixes": [],
    }
)
NPM_CLEAN = json.dumps(
    {
        "auditReportVersion": 2,
        "vulnerabilities": {},
        "metadata": {
            "vulnerabilities": {"info": 0, "low": 0, "moderate": 0, "high": 0, "critical": 0, "total": 0}
        },
    }
)
NPM_VULNERABLE = json.dumps(
    {
        "auditReportVersion": 2,
        "vulnerabilities": {
            "semver": {
                "name": "semver",
                "severity": "high",
                "isDirect": False,
                "via": [
                    {
                        "source": 1101088,
                        "name": "semver",
                        "dependency": "semver",
                        "title": "semver vulnerable to Regular Expression Denial of Service",
                        "url": "https://github.com/advisories/GHSA-c2qf-rxjj-qqgw",
                        "severity": "high",
                        "cwe": ["CWE-1333"],
                        "range": ">=7.0.0 <7.5.2",
                    }
                ],
                "effects": ["make-dir"],
                "range": "7.0.0 - 7.5.1",
                "nodes": ["node_modules/semver"],
                "fixAvailable": True,
            },
            "make-dir": {
                "name": "make-dir",
                "severity": "high",
                "isDirect": False,
                "via": ["semver"],
                "effects": [],
                "range": "3.0.0 - 3.1.0",
                "nodes": ["node_modules/make-dir"],
                "fixAvailable": True,
            },
        },
        "metadata": {"vulnerabilities": {"high": 2, "total": 2}},
    }
)
NPM_ENDPOINT_REFUSED = json.dumps(
    {"message": "405 Method Not Allowed - POST .../-/npm/v1/security/advisories/bulk", "statusCode": 405}
)


def run_with(pip_output: str, npm_output: str):
    def run(command: Sequence[str], cwd: Path) -> str:
        return npm_output if command[0] == "npm" else pip_output

    return run


@pytest.fixture
def exceptions_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "audit-exceptions.toml"
    monkeypatch.setattr(audit, "EXCEPTIONS_FILE", path)
    return path


def test_unreachable_services_are_one_line_each_and_do_not_fail(exceptions_file, capsys) -> None:
    assert audit.main(run_with(PIP_UNREACHABLE, NPM_ENDPOINT_REFUSED), env={}, today=TODAY) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "python audit skipped: pip-audit could not reach its vulnerability service, so none of the 3 "
        "locked packages was audited (it said: Dependency not found on PyPI and could not be audited)",
        "npm audit skipped: the npm registry's audit endpoint could not be used "
        "(405 Method Not Allowed - POST .../-/npm/v1/security/advisories/bulk)",
    ]


def test_strict_mode_fails_when_a_service_audited_nothing(exceptions_file, capsys) -> None:
    status = audit.main(run_with(PIP_UNREACHABLE, NPM_CLEAN), env={"AUDIT_STRICT": "1"}, today=TODAY)
    assert status == 1
    out = capsys.readouterr().out
    assert out.startswith("python audit FAILED: pip-audit could not reach")
    assert "npm audit: no known vulnerabilities" in out


def test_clean_reports_pass(exceptions_file, capsys) -> None:
    assert audit.main(run_with(PIP_CLEAN, NPM_CLEAN), env={"AUDIT_STRICT": "1"}, today=TODAY) == 0
    assert capsys.readouterr().out.splitlines() == [
        "python audit: no known vulnerabilities",
        "npm audit: no known vulnerabilities",
    ]


@pytest.mark.parametrize(
    ("pip_output", "npm_output", "named"),
    [
        (
            PIP_VULNERABLE,
            NPM_CLEAN,
            "python: werkzeug 3.0.1: CVE-2023-46136, GHSA-hrfv-mqp8-q5rw, PYSEC-2023-221",
        ),
        (
            PIP_CLEAN,
            NPM_VULNERABLE,
            "npm: semver 7.0.0 - 7.5.1: GHSA-c2qf-rxjj-qqgw: high: semver vulnerable",
        ),
    ],
    ids=["python", "npm"],
)
def test_a_known_vulnerability_fails_and_is_named(
    exceptions_file, capsys, pip_output, npm_output, named
) -> None:
    assert audit.main(run_with(pip_output, npm_output), env={}, today=TODAY) == 1
    vulnerable = [line for line in capsys.readouterr().out.splitlines() if line.startswith("VULNERABLE")]
    assert len(vulnerable) == 1 and vulnerable[0].startswith(f"VULNERABLE {named}")


def test_a_judged_exception_excuses_exactly_its_advisory(exceptions_file, capsys) -> None:
    exceptions_file.write_text(
        '[[exception]]\nid = "CVE-2023-46136"\npackage = "werkzeug"\n'
        'reason = "multipart bodies never reach the parser: the webhook route reads raw bytes"\n'
        "judged = 2026-11-20\n"
    )
    assert audit.main(run_with(PIP_VULNERABLE, NPM_VULNERABLE), env={}, today=TODAY) == 1
    out = capsys.readouterr().out.splitlines()
    assert any(
        line.startswith("excepted   python: werkzeug") and "(judged 2026-11-20: multipart" in line
        for line in out
    )
    assert [line for line in out if line.startswith("VULNERABLE")] == [
        "VULNERABLE npm: semver 7.0.0 - 7.5.1: GHSA-c2qf-rxjj-qqgw: high: semver vulnerable to Regular "
        "Expression Denial of Service (affects >=7.0.0 <7.5.2)"
    ]


def test_an_exception_for_another_package_excuses_nothing(exceptions_file, capsys) -> None:
    exceptions_file.write_text(
        '[[exception]]\nid = "CVE-2023-46136"\npackage = "flask"\nreason = "x"\njudged = 2026-11-20\n'
    )
    assert audit.main(run_with(PIP_VULNERABLE, NPM_CLEAN), env={}, today=TODAY) == 1


def test_an_exception_lapses_after_ninety_days(exceptions_file, capsys) -> None:
    exceptions_file.write_text(
        '[[exception]]\nid = "PYSEC-2023-221"\npackage = "werkzeug"\nreason = "x"\njudged = 2026-09-01\n'
    )
    assert audit.main(run_with(PIP_VULNERABLE, NPM_CLEAN), env={}, today=TODAY) == 1
    assert "is older than 90 days: judge it again" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[exception]]\nid = "X"\npackage = "p"\njudged = 2026-12-01\n', "exception 1 has no reason"),
        ('[[exception]]\nid = "X"\npackage = "p"\nreason = "r"\njudged = "soon"\n', "judged must be a date"),
        ("[[exception]\n", "is not valid TOML"),
    ],
)
def test_a_malformed_exceptions_file_is_one_line_and_exit_2(exceptions_file, capsys, text, message) -> None:
    exceptions_file.write_text(text)
    assert audit.main(run_with(PIP_CLEAN, NPM_CLEAN), env={}, today=TODAY) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_the_repository_exceptions_file_is_well_formed() -> None:
    audit.load_exceptions(audit.ROOT / "audit-exceptions.toml")
