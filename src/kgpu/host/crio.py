"""CRI-O's configuration: ``/etc/crio/crio.conf`` then ``/etc/crio/crio.conf.d/*`` in name order, merged
key by key (read only), and OCI hooks that inject the NVIDIA hook."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgpu.errors import KgpuError
from kgpu.fsio import read_text
from kgpu.host.containerd import ContainerRuntimeEntry
from kgpu.host.paths import under
from kgpu.host.tomlread import deep_merge, table
from kgpu.host.toolkit import find_binary

MAIN_CONFIG = "/etc/crio/crio.conf"
DROP_IN_DIR = "/etc/crio/crio.conf.d"
HOOK_DIRS = ("/usr/share/containers/oci/hooks.d", "/etc/containers/oci/hooks.d")


@dataclass(frozen=True, slots=True)
class CrioConfig:
    files: tuple[str, ...]
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def runtime(self) -> dict[str, Any]:
        return table(self.data, "crio", "runtime")

    @property
    def runtimes(self) -> dict[str, ContainerRuntimeEntry]:
        out = {}
        for name, entry in table(self.runtime, "runtimes").items():
            if isinstance(entry, dict):
                path = entry.get("runtime_path")
                out[name] = ContainerRuntimeEntry(
                    name, str(entry.get("runtime_type", "oci")), str(path) if path else None, None
                )
        return out

    @property
    def default_runtime(self) -> str:
        return str(self.runtime.get("default_runtime", "crun"))

    @property
    def cgroup_manager(self) -> str:
        return str(self.runtime.get("cgroup_manager", "systemd"))

    @property
    def data_root(self) -> str:
        return str(table(self.data, "crio").get("root", "/var/lib/containers/storage"))


@dataclass(frozen=True, slots=True)
class Crio:
    binary: str | None
    config: CrioConfig
    nvidia_hooks: tuple[str, ...]

    @property
    def installed(self) -> bool:
        return self.binary is not None


def read_crio(root: Path) -> Crio:
    files: list[tuple[str, Path]] = []
    if under(root, MAIN_CONFIG).is_file():
        files.append((MAIN_CONFIG, under(root, MAIN_CONFIG)))
    drop_dir = under(root, DROP_IN_DIR)
    if drop_dir.is_dir():
        files.extend((f"{DROP_IN_DIR}/{p.name}", p) for p in sorted(drop_dir.iterdir()) if p.is_file())
    merged: dict[str, Any] = {}
    error = None
    for shown, real in files:
        try:
            merged = deep_merge(merged, tomllib.loads(read_text(real, shown)))
        except (KgpuError, tomllib.TOMLDecodeError) as exc:
            error = f"{shown}: {exc}"
    hooks = []
    for d in HOOK_DIRS:
        directory = under(root, d)
        if directory.is_dir():
            for hook in sorted(directory.glob("*.json")):
                try:
                    if "nvidia" in hook.read_text(errors="replace"):
                        hooks.append(f"{d}/{hook.name}")
                except OSError:
                    continue
    binary = find_binary(root, "crio")
    return Crio(binary, CrioConfig(tuple(s for s, _ in files), merged, error), tuple(hooks))
