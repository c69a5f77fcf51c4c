"""The package's layout: imports run one way, and development-only code stays apart.

Read from the source with ``ast``, every ``import`` inside the package counts, at module
level or inside a function, so a deferred import cannot hide a circle.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "webhook_service"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every module name ``path`` imports, with relative imports made absolute."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Each module of the package and the package's modules it imports."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in imported_names(path) if m in modules and m != name}
    return graph


def test_there_are_no_import_circles() -> None:
    graph = import_graph()
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        pytest.fail(f"import circle: {' -> '.join(exc.args[1])}")


def test_development_code_is_only_registered_by_the_app() -> None:
    graph = import_graph()
    importers = {
        module
        for module, imports in graph.items()
        if not module.startswith("webhook_service.dev")
        and any(m.startswith("webhook_service.dev") for m in imports)
    }
    assert importers == {"webhook_service.app"}


@pytest.mark.parametrize("module", ["domain.py", "schema.py"])
def test_the_decision_logic_imports_neither_flask_nor_pymongo(module: str) -> None:
    outside = {name.split(".")[0] for name in imported_names(PACKAGE / module)}
    assert not outside & {"flask", "werkzeug", "pymongo", "bson"}
