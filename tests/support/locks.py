"""Reading the dependency locks, and what makes one drift from its ``.in`` file or the venv.

Each check returns its problems as lines that name the file, the package and the fix, so a
failing test says what to do (usually ``make lock``). The files are read with
pip-requirements-parser, which is pip's own grammar for requirements files.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from pip_requirements_parser import RequirementsFile

REPO_ROOT = Path(__file__).resolve().parents[2]
# Each direct-dependency file and the lock `make lock` resolves it into.
LOCKS = {"requirements.in": "requirements.txt", "requirements-dev.in": "requirements-dev.txt"}


def direct_requirements(in_file: Path) -> list[tuple[str, Requirement]]:
    """The requirements an ``.in`` file asks for, with those of the files it ``-r``
    includes, each with the name of the file it is written in. ``-c`` constraints are
    not requirements and are left out."""
    parsed = RequirementsFile.from_file(str(in_file), include_nested=True)
    found = []
    for line in parsed.requirements:
        if line.req is None or line.is_constraint:
            continue
        found.append((Path(line.requirement_line.filename).name, Requirement(str(line.req))))
    return found


def locked_versions(lock_file: Path) -> dict[NormalizedName, str]:
    """Every package a lock pins, by canonical name, with its pinned version."""
    return {
        canonicalize_name(line.name): str(line.get_pinned_version)
        for line in RequirementsFile.from_file(str(lock_file)).requirements
        if line.name
    }


def unsatisfied(in_file: Path, lock_file: Path) -> list[str]:
    """Requirements of ``in_file`` that no version in ``lock_file`` satisfies."""
    locked = locked_versions(lock_file)
    problems = []
    for written_in, requirement in direct_requirements(in_file):
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = locked.get(canonicalize_name(requirement.name))
        if version is None:
            problems.append(f"{written_in}: {requirement} is not in {lock_file.name}; run `make lock`")
        elif not requirement.specifier.contains(version, prereleases=True):
            problems.append(
                f"{written_in}: {requirement} is not satisfied by {requirement.name}=={version} "
                f"in {lock_file.name}; run `make lock`"
            )
    return problems


def unhashed(lock_file: Path) -> list[str]:
    """Lines of a lock that pin no exact version or carry no hash."""
    problems = []
    for line in RequirementsFile.from_file(str(lock_file)).requirements:
        where = f"{lock_file.name}:{line.requirement_line.line_number}"
        if not line.is_pinned:
            problems.append(f"{where}: {line.name} is not pinned to one version (==)")
        if not line.hash_options:
            problems.append(f"{where}: {line.name} has no --hash")
    return problems


def disagreeing(runtime_lock: Path, dev_lock: Path) -> list[str]:
    """Runtime packages the dev lock leaves out or pins to another version: tests must run
    on exactly what production installs."""
    dev = locked_versions(dev_lock)
    return [
        f"{dev_lock.name} pins {name}=={dev.get(name)} but {runtime_lock.name} pins {version}"
        for name, version in locked_versions(runtime_lock).items()
        if dev.get(name) != version
    ]


def installed_versions() -> dict[NormalizedName, str]:
    """What this interpreter's environment holds, by canonical name."""
    return {
        canonicalize_name(dist.metadata["Name"]): dist.version for dist in importlib.metadata.distributions()
    }


def venv_drift(locked: Mapping[NormalizedName, str], installed: Mapping[NormalizedName, str]) -> list[str]:
    """Packages installed but not locked, locked but not installed, or at another version."""
    problems = []
    for name in sorted(set(locked) | set(installed)):
        want, have = locked.get(name), installed.get(name)
        if want == have:
            continue
        if want is None:
            problems.append(f"{name}=={have} is installed but not in the lock")
        elif have is None:
            problems.append(f"{name}=={want} is locked but not installed")
        else:
            problems.append(f"{name} is installed at {have} but locked at {want}")
    return problems


def all_problems(root: Path = REPO_ROOT, installed: Mapping[NormalizedName, str] | None = None) -> list[str]:
    """Every way the locks under ``root`` drift; ``installed`` defaults to this venv."""
    problems: list[str] = []
    for in_name, lock_name in LOCKS.items():
        problems += unsatisfied(root / in_name, root / lock_name)
        problems += unhashed(root / lock_name)
    problems += disagreeing(root / "requirements.txt", root / "requirements-dev.txt")
    dev_lock = locked_versions(root / "requirements-dev.txt")
    problems += venv_drift(dev_lock, installed_versions() if installed is None else installed)
    return problems


def copy_project_files(root: Path, target: Path, names: Iterable[str] | None = None) -> None:
    """Copy the ``.in`` files and locks into ``target`` (to try a change on the copies)."""
    for name in names or [*LOCKS, *LOCKS.values()]:
        (target / name).write_text((root / name).read_text())
