"""The house's import graph: no package of kgpu imports another that imports it back, nor does any module.

Every import counts, at the top of a module or inside a function (a cycle hidden in a function is
still a cycle), under ``TYPE_CHECKING`` too: the graph is what a reader follows.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import kgpu

SRC = Path(kgpu.__file__).parent


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


KNOWN = frozenset(m for m, _ in modules())


def imports(name: str, path: Path, known: frozenset[str] = KNOWN) -> set[str]:
    """The kgpu modules ``name`` imports (``from kgpu.x import y`` counts as kgpu.x.y when that is a module)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known)
    return {m for m in found if m in known and m != name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def top(module: str) -> str:
    """The package (or top-level module) a module belongs to: kgpu.deviceplugin.devices → kgpu.deviceplugin."""
    return ".".join(module.split(".")[:2])


PACKAGES_BEING_UNTANGLED = [
    # kgpu.gpu.migstate (the simulated backend's MIG layout) reads kgpu.mig.profiles' tables, which import
    # kgpu.gpu.model: the tables are GPU facts and belong under kgpu.gpu.
    ["kgpu.gpu", "kgpu.mig"],
]
"""Cycles other work brought in, listed exactly (a new one, or a larger one, still fails); reported."""


@pytest.fixture(scope="module")
def imported() -> dict[str, set[str]]:
    """Each kgpu module → the kgpu modules it imports (every source file parsed once for the module's tests)."""
    return {name: imports(name, path) for name, path in modules()}


def test_no_package_imports_another_that_imports_it_back(imported: dict[str, set[str]]) -> None:
    graph: dict[str, set[str]] = {}
    for name, targets in imported.items():
        graph.setdefault(top(name), set()).update(top(m) for m in targets if top(m) != top(name))
    assert [c for c in cycles(graph) if c not in PACKAGES_BEING_UNTANGLED] == []


def test_no_module_imports_another_that_imports_it_back(imported: dict[str, set[str]]) -> None:
    graph = {name: {m for m in targets if not name.startswith(m + ".")} for name, targets in imported.items()}
    assert cycles(graph) == []


def test_the_walk_sees_imports_hidden_in_functions(tmp_path: Path) -> None:
    # A check that cannot fail proves nothing: a cycle through a function-local import is found.
    graph = {"kgpu.a": {"kgpu.b"}, "kgpu.b": {"kgpu.a"}, "kgpu.c": {"kgpu.a"}}
    assert cycles(graph) == [["kgpu.a", "kgpu.b"]]
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from kgpu.deviceplugin import devices\n")
    assert imports("kgpu.x", source) == {"kgpu.deviceplugin", "kgpu.deviceplugin.devices"}
