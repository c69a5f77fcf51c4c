"""``make audit``: known vulnerabilities in the Python locks and in the Expo client's npm lock.

Runs ``pip-audit`` over requirements.txt and requirements-dev.txt (the exact, hashed sets)
and ``npm audit`` over clients/expo/package-lock.json, and fails on any advisory that
``audit-exceptions.toml`` does not excuse. An exception names the advisory, the package,
why it does not apply here and the day that was judged; it lapses after
``EXCEPTION_DAYS``, so every judgement is made again.

A vulnerability service that cannot be reached audits nothing. pip-audit then reports "No
known vulnerabilities found" all the same, with every package skipped, so each tool's
answer is read rather than its exit code: a source that audited nothing is one line saying
it was skipped and why, and with ``AUDIT_STRICT=1`` (a connected CI) it fails instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXPO = ROOT / "clients" / "expo"
EXCEPTIONS_FILE = ROOT / "audit-exceptions.toml"
EXCEPTION_DAYS = 90
PIP_AUDIT = [
    str(Path(sys.executable).with_name("pip-audit")),
    "--requirement", "requirements.txt",
    "--requirement", "requirements-dev.txt",
    "--require-hashes", "--disable-pip", "--format", "json", "--progress-spinner", "off",
]  # fmt: skip
NPM_AUDIT = ["npm", "audit", "--json", "--package-lock-only"]

Run = Callable[[Sequence[str], Path], str]


class ExceptionsFileError(ValueError):
    """audit-exceptions.toml is unreadable or an entry lacks what it must say."""


@dataclass(frozen=True)
class Advisory:
    source: str  # "python" or "npm"
    package: str
    version: str
    ids: frozenset[str]  # the advisory's id and its aliases (PYSEC-, GHSA-, CVE-)
    summary: str

    def line(self) -> str:
        return f"{self.source}: {self.package} {self.version}: {', '.join(sorted(self.ids))}: {self.summary}"


@dataclass
class Findings:
    source: str
    advisories: list[Advisory] = field(default_factory=list)
    skipped: str | None = None  # why nothing was audited


@dataclass(frozen=True)
class Judgement:
    """One entry of audit-exceptions.toml: an advisory judged not to apply here."""

    id: str
    package: str
    reason: str
    judged: date


def pip_findings(output: str) -> Findings:
    """pip-audit's JSON report: advisories per dependency, or the reason it audited none."""
    findings = Findings("python")
    try:
        dependencies = json.loads(output)["dependencies"]
    except (ValueError, KeyError, TypeError):
        findings.skipped = f"pip-audit gave no report ({_first_line(output)})"
        return findings
    audited = [d for d in dependencies if not d.get("skip_reason")]
    if dependencies and not audited:
        reason = dependencies[0]["skip_reason"].split(":")[0]
        findings.skipped = (
            f"pip-audit could not reach its vulnerability service, so none of the {len(dependencies)} "
            f"locked packages was audited (it said: {reason})"
        )
        return findings
    for dependency in audited:
        for vuln in dependency.get("vulns", []):
            findings.advisories.append(
                Advisory(
                    "python",
                    dependency["name"],
                    dependency.get("version", "?"),
                    frozenset([vuln["id"], *vuln.get("aliases", [])]),
                    _fix(vuln.get("fix_versions") or []),
                )
            )
    return findings


def npm_findings(output: str) -> Findings:
    """npm audit's JSON report (auditReportVersion 2), or the error it answered instead."""
    findings = Findings("npm")
    try:
        report = json.loads(output)
    except ValueError:
        findings.skipped = f"npm audit gave no report ({_first_line(output)})"
        return findings
    if not isinstance(report, dict) or "vulnerabilities" not in report:
        error = report.get("error") if isinstance(report, dict) else None
        message = report.get("message") if isinstance(report, dict) else None
        if not message and isinstance(error, dict):
            message = error.get("summary") or error.get("code")
        findings.skipped = f"the npm registry's audit endpoint could not be used ({message or 'no report'})"
        return findings
    for name, entry in report["vulnerabilities"].items():
        for via in entry.get("via", []):
            if not isinstance(via, dict):
                continue  # the name of another vulnerable package this one pulls in
            url = str(via.get("url", ""))
            ids = {url.rsplit("/", 1)[-1]} if url else {str(via.get("source"))}
            summary = f"{via.get('severity', '?')}: {via.get('title', '')} (affects {via.get('range', '?')})"
            findings.advisories.append(
                Advisory("npm", name, str(entry.get("range", "?")), frozenset(ids), summary)
            )
    return findings


def load_exceptions(path: Path) -> list[Judgement]:
    """The judged exceptions; ExceptionsFileError names the first entry that is not whole."""
    if not path.exists():
        return []
    try:
        entries = tomllib.loads(path.read_text()).get("exception", [])
    except tomllib.TOMLDecodeError as exc:
        raise ExceptionsFileError(f"{path.name} is not valid TOML: {exc}") from None
    exceptions = []
    for number, entry in enumerate(entries, start=1):
        missing = [key for key in ("id", "package", "reason", "judged") if not entry.get(key)]
        if missing:
            raise ExceptionsFileError(f"{path.name}: exception {number} has no {', '.join(missing)}")
        if not isinstance(entry["judged"], date):
            raise ExceptionsFileError(
                f"{path.name}: exception {number}'s judged must be a date, e.g. 2026-12-06"
            )
        exceptions.append(
            Judgement(str(entry["id"]), str(entry["package"]), str(entry["reason"]), entry["judged"])
        )
    return exceptions


def verdict(
    sources: list[Findings], exceptions: list[Judgement], today: date, strict: bool = False
) -> tuple[list[str], int]:
    """The lines to print and the exit status: 1 when an advisory is not excused (or, when
    strict, a source audited nothing)."""
    lines: list[str] = []
    failed = False
    lapse = timedelta(days=EXCEPTION_DAYS)
    for findings in sources:
        if findings.skipped:
            lines.append(f"{findings.source} audit {'FAILED' if strict else 'skipped'}: {findings.skipped}")
            failed = failed or strict
            continue
        open_ones = []
        for advisory in findings.advisories:
            excuse = next(
                (e for e in exceptions if e.id in advisory.ids and e.package == advisory.package), None
            )
            if excuse is None:
                open_ones.append(advisory)
            elif today - excuse.judged > lapse:
                lines.append(
                    f"VULNERABLE {advisory.line()} (its exception, judged {excuse.judged}, is older than "
                    f"{EXCEPTION_DAYS} days: judge it again)"
                )
                failed = True
            else:
                lines.append(f"excepted   {advisory.line()} (judged {excuse.judged}: {excuse.reason})")
        for advisory in open_ones:
            lines.append(f"VULNERABLE {advisory.line()}")
        failed = failed or bool(open_ones)
        if not findings.advisories:
            lines.append(f"{findings.source} audit: no known vulnerabilities")
    return lines, int(failed)


def run_command(command: Sequence[str], cwd: Path) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    return result.stdout or result.stderr


def main(run: Run = run_command, env: Mapping[str, str] = os.environ, today: date | None = None) -> int:
    try:
        exceptions = load_exceptions(EXCEPTIONS_FILE)
    except ExceptionsFileError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    sources = [pip_findings(run(PIP_AUDIT, ROOT)), npm_findings(run(NPM_AUDIT, EXPO))]
    lines, status = verdict(sources, exceptions, today or date.today(), strict=env.get("AUDIT_STRICT") == "1")
    for line in lines:
        print(line)
    return status


def _fix(versions: list[str]) -> str:
    return f"fixed in {', '.join(versions)}" if versions else "no fixed version yet"


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or ["no output"])[0][:200]


if __name__ == "__main__":
    sys.exit(main())
