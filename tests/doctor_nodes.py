"""Fixture node roots for doctor tests: copy a healthy node, break one thing, run the checks on it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from kgpu.doctor import Finding, gather, run_checks, select
from kgpu.doctor.facts import NodeFacts
from kgpu.errors import KgpuError
from kgpu.gpu.backend import GPUBackend, open_backend

NODES = Path(__file__).parent / "fixtures" / "nodes"
# Each fixture root matches a built-in simulated node: same GPUs, bus ids and minors.
SIMULATED = {"ubuntu-h100": "h100x8", "rocky-a100": "a100-mig", "ubuntu-a30": "a30",
             "firecracker-h100": str(Path(__file__).parent / "fixtures" / "simulated" / "firecracker-h100.yaml")}


class Node:
    """A writable copy of a fixture node root, with small helpers to break it."""

    def __init__(self, tmp_path: Path, name: str) -> None:
        self.name = name
        self.root = tmp_path / name
        shutil.copytree(NODES / name, self.root, symlinks=True)
        self.simulate: str | None = SIMULATED[name]
        self.backend_error: str | None = None

    def path(self, node_path: str) -> Path:
        return self.root / node_path.lstrip("/")

    def read(self, node_path: str) -> str:
        return self.path(node_path).read_text()

    def write(self, node_path: str, text: str, mode: int = 0o644) -> None:
        p = self.path(node_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink():
            p.unlink()
        p.write_text(text)
        p.chmod(mode)

    def append(self, node_path: str, text: str) -> None:
        self.write(node_path, (self.read(node_path) if self.path(node_path).exists() else "") + text)

    def replace(self, node_path: str, old: str, new: str) -> None:
        text = self.read(node_path)
        assert old in text, f"{old!r} not in {node_path}"
        self.write(node_path, text.replace(old, new))

    def drop_lines(self, node_path: str, needle: str) -> None:
        self.write(node_path, "".join(ln for ln in self.read(node_path).splitlines(True) if needle not in ln))

    def remove(self, node_path: str) -> None:
        p = self.path(node_path)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()

    def link(self, node_path: str, target: str) -> None:
        p = self.path(node_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink() or p.exists():
            p.unlink()
        p.symlink_to(target)

    def program(self, node_path: str, output: str = "") -> None:
        self.write(node_path, "#!/bin/sh\n" + (f"echo '{output}'\n" if output else "exit 0\n"), 0o755)

    def _backend(self) -> GPUBackend:
        if self.backend_error is not None:
            raise KgpuError(self.backend_error)
        return open_backend("simulated", simulate=self.simulate)

    def facts(self) -> NodeFacts:
        return gather(self.root, self._backend)

    def findings(self, *ids: str) -> dict[str, Finding]:
        checks = select(list(ids) if ids else None)
        return {f.id: f for f in run_checks(self.facts(), checks)}

    def check(self, check_id: str) -> Finding:
        return self.findings(check_id)[check_id]


def run_on(facts: NodeFacts, check_id: str) -> Finding:
    return run_checks(facts, select([check_id]))[0]


Mutation = Callable[[Node], None]
