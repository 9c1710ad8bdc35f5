"""The house's import graph: no package of kgpu imports another that imports it back, nor does any module.

Every import counts, at the top of a module or inside a function (a cycle hidden in a function is
still a cycle), under ``TYPE_CHECKING`` too: the graph is what a reader follows.
"""

from __future__ import annotations

import ast
import sys
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


OPTIONAL_IMPORTS: dict[str, str] = {
    "lightkube": "the API server's client (with httpx: ~7 MB resident, a third of a second): only for what talks "
                 "to the API server, never in the device plugin or exporter without dynamic shares",
    "kgpu.scheduler.kube": "the device plugin's API client, with dynamic shares only (lightkube)",
    "kopf": "the operator's framework, loaded by `kgpu operator` alone",
    "rich": "tables on a terminal, loaded by the commands that print one",
    "prometheus_client": "only for programs that plug the exporter's collector into their own registry",
    "kgpu.gpu.nvml": "the NVML backend (pynvml, libnvidia-ml), loaded when asked for",
    "kgpu.gpu.simulated": "the simulated backend (pydantic fixtures), loaded when asked for",
}
"""What may be imported inside a function, and why: optional, heavy dependencies. Anything else imported in a
function only hides the import graph."""
HIDDEN_CYCLE = ("kgpu.gpu.migstate", "kgpu.mig.profiles")
"""The import behind PACKAGES_BEING_UNTANGLED's one cycle (at the top it would be a circular import)."""


def function_local_imports(path: Path) -> Iterator[tuple[int, str]]:
    for fn in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and not node.level:
                    yield node.lineno, node.module or ""
                elif isinstance(node, ast.Import):
                    yield from ((node.lineno, a.name) for a in node.names)


def test_function_local_imports_are_optional_heavy_dependencies_only() -> None:
    # kgpu.cli's command modules are all imported to build `kgpu --help`: each imports its implementation
    # (kgpu's modules, third-party libraries) when the command runs; the standard library goes at the top.
    hidden = []
    for name, path in modules():
        for line, imported in function_local_imports(path):
            if any(imported == o or imported.startswith(o + ".") for o in OPTIONAL_IMPORTS):
                continue
            if (name, imported) == HIDDEN_CYCLE:
                continue
            if name.startswith("kgpu.cli.") and imported.split(".")[0] not in sys.stdlib_module_names:
                continue
            hidden.append(f"{path.relative_to(SRC.parent)}:{line}: {imported}")
    assert hidden == []


def test_the_local_import_check_sees_a_hidden_import(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("import os\n\ndef f():\n    import json\n    from kgpu.errors import KgpuError\n")
    assert list(function_local_imports(source)) == [(4, "json"), (5, "kgpu.errors")]
