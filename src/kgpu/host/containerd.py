"""containerd's configuration as containerd itself would see it (read only; kgpu.runtime writes it).

Config version 1 (``plugins.cri``), 2 (``plugins."io.containerd.grpc.v1.cri"``) and 3 (containerd 2.x,
``plugins."io.containerd.cri.v1.runtime"``), with ``imports`` merged the way containerd before 2.1 merges
them: an imported file replaces whole plugin tables by key. k3s and RKE2 keep their own generated
config under ``/var/lib/rancher/{k3s,rke2}/agent/etc/containerd/``.
"""

from __future__ import annotations

import glob
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgpu.errors import KgpuError
from kgpu.fsio import read_text
from kgpu.host.paths import node_path, under
from kgpu.host.tomlread import table
from kgpu.host.toolkit import find_binary

CONFIG_PATHS = (
    "/etc/containerd/config.toml",
    "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
    "/var/lib/rancher/rke2/agent/etc/containerd/config.toml",
)
_BINARY_DIRS = ("/usr/bin", "/usr/local/bin", "/usr/sbin", "/var/lib/rancher/rke2/bin")
_DATA_ROOTS = {"k3s": "/var/lib/rancher/k3s/agent/containerd", "rke2": "/var/lib/rancher/rke2/agent/containerd"}
_CRI_PLUGIN = {1: ("cri",), 2: ("io.containerd.grpc.v1.cri",), 3: ("io.containerd.cri.v1.runtime",)}


@dataclass(frozen=True, slots=True)
class ContainerRuntimeEntry:
    """One entry of containerd's ``runtimes`` table (or CRI-O's, or docker's ``runtimes``)."""

    name: str
    runtime_type: str
    binary: str | None
    """``options.BinaryName`` (containerd), ``runtime_path`` (CRI-O), ``path`` (docker); ``None`` =
    default."""
    systemd_cgroup: bool | None


@dataclass(frozen=True, slots=True)
class ContainerdConfig:
    path: str
    """Node path of the main config file read."""
    exists: bool
    version: int
    runtimes: dict[str, ContainerRuntimeEntry] = field(default_factory=dict)
    default_runtime: str = "runc"
    enable_cdi: bool = False
    cdi_spec_dirs: tuple[str, ...] = ("/etc/cdi", "/var/run/cdi")
    data_root: str = "/var/lib/containerd"
    imported: tuple[str, ...] = ()
    error: str | None = None
    disabled_plugins: tuple[str, ...] = ()
    flavour: str = "containerd"
    """``containerd``, ``k3s`` or ``rke2``."""

    @property
    def nvidia(self) -> ContainerRuntimeEntry | None:
        return self.runtimes.get("nvidia")

    @property
    def cri_disabled(self) -> bool:
        """Docker's containerd.io package ships ``disabled_plugins = ["cri"]``: no kubelet can use it."""
        names = {"cri", "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"}
        return bool(names & set(self.disabled_plugins))


@dataclass(frozen=True, slots=True)
class Containerd:
    binary: str | None
    config: ContainerdConfig | None

    @property
    def installed(self) -> bool:
        return self.binary is not None or (self.config is not None and self.config.exists)


def _load(real: Path, shown: str) -> dict[str, Any]:
    return tomllib.loads(read_text(real, shown))


def _merge_imports(root: Path, main_real: Path, data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    imported: list[str] = []
    patterns = data.get("imports", [])
    if not isinstance(patterns, list):
        return data, imported
    merged = dict(data)
    base_dir = node_path(root, main_real.parent)
    for pattern in patterns:
        if not isinstance(pattern, str):
            continue
        node_pattern = pattern if pattern.startswith("/") else f"{base_dir.rstrip('/')}/{pattern}"
        for match in sorted(glob.glob(str(under(root, node_pattern)))):
            shown = node_path(root, Path(match))
            sub = _load(under(root, shown), shown)  # links in conf.d resolve under the root too
            imported.append(shown)
            for key, value in sub.items():
                if key == "plugins" and isinstance(value, dict):
                    plugins = dict(table(merged, "plugins"))
                    plugins.update(value)
                    merged["plugins"] = plugins
                elif key not in ("version", "imports"):
                    merged[key] = value
    return merged, imported


def _runtimes(cri: dict[str, Any]) -> dict[str, ContainerRuntimeEntry]:
    out = {}
    for name, entry in table(cri, "containerd", "runtimes").items():
        if not isinstance(entry, dict):
            continue
        options = table(entry, "options")
        systemd = options.get("SystemdCgroup")
        out[name] = ContainerRuntimeEntry(
            name=name,
            runtime_type=str(entry.get("runtime_type", "")),
            binary=str(options["BinaryName"]) if "BinaryName" in options else None,
            systemd_cgroup=bool(systemd) if systemd is not None else None,
        )
    return out


def parse_containerd_config(root: Path, path: str, flavour: str = "containerd") -> ContainerdConfig:
    real = under(root, path)
    if not real.is_file():
        return ContainerdConfig(path=path, exists=False, version=2, flavour=flavour)
    try:
        data = _load(real, path)
        data, imported = _merge_imports(root, real, data)
    except (KgpuError, tomllib.TOMLDecodeError) as exc:
        return ContainerdConfig(path=path, exists=True, version=0, error=str(exc), flavour=flavour)
    raw_version = data.get("version", 1)
    version = raw_version if isinstance(raw_version, int) and raw_version in _CRI_PLUGIN else 1
    cri = table(data, "plugins", *_CRI_PLUGIN[version])
    default = str(table(cri, "containerd").get("default_runtime_name", "runc"))
    cdi_default = version == 3  # containerd 2.x enables CDI by default
    cdi_dirs = cri.get("cdi_spec_dirs", ["/etc/cdi", "/var/run/cdi"])
    return ContainerdConfig(
        path=path,
        exists=True,
        version=version,
        runtimes=_runtimes(cri),
        default_runtime=default,
        enable_cdi=bool(cri.get("enable_cdi", cdi_default)),
        cdi_spec_dirs=tuple(str(d) for d in cdi_dirs) if isinstance(cdi_dirs, list) else (),
        data_root=str(data.get("root", _DATA_ROOTS.get(flavour, "/var/lib/containerd"))),
        imported=tuple(imported),
        disabled_plugins=tuple(str(p) for p in data.get("disabled_plugins", []) if isinstance(p, str)),
        flavour=flavour,
    )


def read_containerd(root: Path) -> Containerd:
    binary = find_binary(root, "containerd", _BINARY_DIRS)
    for path in CONFIG_PATHS:
        flavour = "k3s" if "/k3s/" in path else "rke2" if "/rke2/" in path else "containerd"
        if under(root, path).is_file():
            if flavour != "containerd" and binary is None:
                binary = find_binary(root, flavour, ("/usr/local/bin", "/usr/bin"))
            return Containerd(binary, parse_containerd_config(root, path, flavour))
    if binary is None:
        return Containerd(None, None)
    return Containerd(binary, parse_containerd_config(root, CONFIG_PATHS[0]))
