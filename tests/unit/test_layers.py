"""The project's layering, read from the code's own imports: no import circle between project
modules, shared/ imports no service, and no service imports another service's internals
(only its client module, `services.resource.client`)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("shared", "services", "jarvis")
CLIENT_MODULES = {"services.resource.client"}


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def _runtime_imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Project modules `path` imports when it runs (imports under `if TYPE_CHECKING:` are
    annotations only, and are left out)."""
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if "TYPE_CHECKING" in ast.unparse(node.test):
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(a.name for a in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)

    Visitor().visit(ast.parse(path.read_text()))
    return {m for m in found if m in known}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _runtime_imports(path, mods) - {name} for name, path in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_between_project_modules():
    assert _cycles(_graph()) == []


def test_shared_imports_no_service_and_services_no_other_services_internals():
    bad = []
    for module, imports in _graph().items():
        for dep in imports:
            if module.startswith("shared") and dep.startswith(("services", "jarvis")):
                bad.append((module, dep))
            other_service = dep.startswith("services.") and dep.split(".")[1] != module.split(".")[1]
            if module.startswith("services.") and other_service and dep not in CLIENT_MODULES:
                bad.append((module, dep))
    assert bad == []


def test_the_layer_check_sees_a_circle_when_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
