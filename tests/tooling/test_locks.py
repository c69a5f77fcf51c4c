"""The dependency locks: complete, hashed, in step with the ``.in`` files and with this venv.

The first test checks the repository as it is; the others make each kind of drift on a copy
of the files and show that the check names it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.support.locks import (
    REPO_ROOT,
    all_problems,
    copy_project_files,
    installed_versions,
    locked_versions,
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    copy_project_files(REPO_ROOT, tmp_path)
    return tmp_path


def test_the_locks_match_their_in_files_and_the_installed_packages() -> None:
    assert all_problems() == []


def test_every_runtime_package_is_pinned_with_hashes_and_the_verifier_is_locked() -> None:
    text = (REPO_ROOT / "requirements.txt").read_text()
    # svix leaves standardwebhooks (the code that verifies signatures) unpinned: the lock pins it.
    assert re.search(r"^standardwebhooks==\S+ \\\n    --hash=sha256:[0-9a-f]{64}", text, re.M)
    assert len(locked_versions(REPO_ROOT / "requirements.txt")) > 11  # transitive ones too


def test_a_package_added_to_requirements_in_without_relocking_fails(project: Path) -> None:
    with (project / "requirements.in").open("a") as f:
        f.write("orjson>=3.10\n")
    problems = all_problems(project, installed=locked_versions(project / "requirements-dev.txt"))
    assert problems == [
        "requirements.in: orjson>=3.10 is not in requirements.txt; run `make lock`",
        "requirements.in: orjson>=3.10 is not in requirements-dev.txt; run `make lock`",
    ]


def test_a_range_the_locked_version_falls_outside_fails(project: Path) -> None:
    path = project / "requirements-dev.in"
    path.write_text(path.read_text().replace("pytest>=9.2.0,<10", "pytest>=10"))
    problems = all_problems(project, installed=locked_versions(project / "requirements-dev.txt"))
    assert len(problems) == 1
    assert re.fullmatch(
        r"requirements-dev\.in: pytest>=10 is not satisfied by pytest==\S+ in requirements-dev\.txt; "
        r"run `make lock`",
        problems[0],
    )


def test_a_locked_line_without_a_hash_fails(project: Path) -> None:
    path = project / "requirements.txt"
    text = path.read_text()
    unhashed = re.sub(r"(?m)^(svix==\S+) \\\n(    --hash=\S+ \\\n)*    --hash=\S+\n", r"\1\n", text)
    assert unhashed != text
    path.write_text(unhashed)
    problems = all_problems(project, installed=locked_versions(project / "requirements-dev.txt"))
    assert len(problems) == 1 and re.fullmatch(r"requirements\.txt:\d+: svix has no --hash", problems[0])


def test_a_dev_lock_that_pins_a_runtime_package_differently_fails(project: Path) -> None:
    path = project / "requirements-dev.txt"
    version = locked_versions(path)[canonicalize_name("pymongo")]
    path.write_text(path.read_text().replace(f"pymongo=={version}", "pymongo==4.0.0"))
    installed = locked_versions(path)
    assert all_problems(project, installed=installed) == [
        "requirements.in: pymongo<5,>=4.20.1 is not satisfied by pymongo==4.0.0 in requirements-dev.txt; "
        "run `make lock`",
        f"requirements-dev.txt pins pymongo==4.0.0 but requirements.txt pins {version}",
    ]


def test_installed_packages_that_differ_from_the_lock_fail(project: Path) -> None:
    installed = dict(installed_versions())
    installed[canonicalize_name("left-pad")] = "1.0"
    installed[canonicalize_name("flask")] = "0.1"
    del installed[canonicalize_name("svix")]
    locked = locked_versions(project / "requirements-dev.txt")
    assert all_problems(project, installed=installed) == [
        f"flask is installed at 0.1 but locked at {locked[canonicalize_name('flask')]}",
        "left-pad==1.0 is installed but not in the lock",
        f"svix=={locked[canonicalize_name('svix')]} is locked but not installed",
    ]
