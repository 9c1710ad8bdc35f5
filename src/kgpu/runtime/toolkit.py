"""The NVIDIA Container Toolkit's own config: where it finds the driver, and whether it is installed.

``/etc/nvidia-container-runtime/config.toml`` tells the toolkit where the driver lives through
``[nvidia-container-cli] root`` — ``/run/nvidia/driver`` under the GPU Operator, ``/usr/local/nvidia``
on GKE-style images. ``--driver-root`` other than ``/`` records it there.
"""

from __future__ import annotations

from pathlib import Path

from kgpu.runtime import _toml
from kgpu.runtime.checks import check_toolkit
from kgpu.runtime.plan import NVIDIA_RUNTIME_PATH, ConfigureRequest, FileChange, host_path, read_node

TOOLKIT_CONFIG = "/etc/nvidia-container-runtime/config.toml"


def plan_driver_root(driver_root: str | None, root: Path) -> tuple[FileChange, ...]:
    """Record ``driver_root`` for the toolkit (unconfigure leaves it: every runtime on the node shares it)."""
    if driver_root is None or driver_root.rstrip("/") == "":
        return ()
    where, old = read_node(root, TOOLKIT_CONFIG)
    doc = _toml.parse(old, TOOLKIT_CONFIG)
    check_toolkit(_toml.plain(doc), TOOLKIT_CONFIG)
    if _toml.get_path(doc, ["nvidia-container-cli", "root"]) == driver_root:
        return (FileChange.of(where, old, old),)
    _toml.set_key(_toml.ensure_table(doc, ["nvidia-container-cli"]), "root", driver_root)
    return (FileChange.of(where, old, _toml.dumps(doc)),)


def missing_runtime_notes(req: ConfigureRequest, root: Path) -> list[str]:
    """Warn when the runtime binary the config points at is not on the node."""
    wanted = req.runtime_path or (NVIDIA_RUNTIME_PATH if req.runtime != "docker" else "nvidia-container-runtime")
    candidates = [wanted] if wanted.startswith("/") else [f"/usr/bin/{wanted}", f"/usr/local/bin/{wanted}"]
    if any(host_path(root, c).exists() for c in candidates):
        return []
    return [
        f"{candidates[0]} is not installed: install nvidia-container-toolkit first, or every GPU pod fails "
        f"with 'fork/exec {candidates[0]}: no such file or directory'"
    ]
