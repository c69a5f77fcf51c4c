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


PURE = [
    "bookkeeping.py",
    "cascade.py",
    "events.py",
    "fieldmap.py",
    "schema.py",
    "values.py",
    "mirror/records.py",
    *(str(p.relative_to(PACKAGE)) for p in PACKAGE.glob("resources/*/mapping.py")),
    *(str(p.relative_to(PACKAGE)) for p in PACKAGE.glob("resources/*/usernames.py")),
    *(str(p.relative_to(PACKAGE)) for p in PACKAGE.glob("resources/*/indexes.py")),
]


@pytest.mark.parametrize("module", PURE)
def test_the_decision_logic_imports_neither_flask_nor_pymongo(module: str) -> None:
    """The pure modules, and every package module they import, stay clear of Flask and the
    database driver: decisions are tested on plain data."""
    graph = import_graph()
    name = module_name(PACKAGE / module)
    reached, todo = {name}, [name]
    while todo:
        for imported in graph[todo.pop()] - reached:
            reached.add(imported)
            todo.append(imported)
    for reached_module in sorted(reached):
        path = PACKAGE.parent / (reached_module.replace(".", "/") + ".py")
        if not path.exists():
            path = path.with_suffix("") / "__init__.py"
        outside = {imported.split(".")[0] for imported in imported_names(path)}
        assert not outside & {"flask", "werkzeug", "pymongo", "bson"}, f"{module} reaches {reached_module}"


def test_one_resource_never_imports_another() -> None:
    """A resource is a declaration over the shared core (mirror/, store/, the value rules):
    what one needs of another is wired in catalog.py, so adding one touches no other."""
    graph = import_graph()
    resource = "webhook_service.resources."
    crossings = [
        f"{module} imports {imported}"
        for module, imports in graph.items()
        if module.startswith(resource)
        for imported in imports
        if imported.startswith(resource) and imported.split(".")[2] != module.split(".")[2]
    ]
    assert crossings == []


def test_the_core_never_imports_a_resource() -> None:
    """mirror/ and store/ serve every resource, and know none of them."""
    graph = import_graph()
    core = ("webhook_service.mirror", "webhook_service.store")
    reaching = [
        f"{module} imports {imported}"
        for module, imports in graph.items()
        if module.startswith(core)
        for imported in imports
        if imported.startswith("webhook_service.resources")
    ]
    assert reaching == []
