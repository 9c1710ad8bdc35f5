"""Installed CUDA toolkits: ``/usr/local/cuda*/version.json`` (``version.txt`` before CUDA 11.1), or the
version ``nvcc --version`` prints for a distribution-packaged toolkit."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from kgpu.host.paths import node_path, under
from kgpu.host.run import program_output

_RELEASE_RE = re.compile(r"release (\d+\.\d+)")
_TXT_RE = re.compile(r"CUDA Version (\d+\.\d+(?:\.\d+)?)")


@dataclass(frozen=True, slots=True)
class CudaToolkit:
    version: str
    """``12.4.1`` (full, from version.json) or ``12.4`` (from nvcc)."""
    source: str
    """The file or program the version was read from, as a node path."""

    @property
    def major_minor(self) -> tuple[int, int]:
        parts = self.version.split(".")
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0


def _from_dir(root: Path, directory: Path) -> CudaToolkit | None:
    vjson = directory / "version.json"
    try:
        version = json.loads(vjson.read_text(errors="replace"))["cuda"]["version"]
        return CudaToolkit(str(version), node_path(root, vjson))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    vtxt = directory / "version.txt"
    try:
        match = _TXT_RE.search(vtxt.read_text(errors="replace"))
    except OSError:
        match = None
    if match:
        return CudaToolkit(match.group(1), node_path(root, vtxt))
    return None


def find_cuda_toolkits(root: Path) -> list[CudaToolkit]:
    """Every toolkit found, newest first (a node often keeps several ``/usr/local/cuda-X.Y``)."""
    found: dict[str, CudaToolkit] = {}
    local = under(root, "/usr/local")
    try:
        dirs = sorted(d for d in local.iterdir() if d.name.startswith("cuda") and d.is_dir())
    except OSError:
        dirs = []
    for directory in dirs:
        toolkit = _from_dir(root, directory)
        if toolkit is not None and toolkit.version not in found:
            found[toolkit.version] = toolkit
    if not found:
        for nvcc in ("/usr/bin/nvcc", "/usr/local/bin/nvcc"):
            program = under(root, nvcc)
            if program.is_file():
                match = _RELEASE_RE.search(program_output(program, "--version") or "")
                if match:
                    found[match.group(1)] = CudaToolkit(match.group(1), f"{nvcc} --version")
                    break
    return sorted(found.values(), key=lambda t: t.major_minor, reverse=True)
