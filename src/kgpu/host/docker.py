"""Docker Engine's ``/etc/docker/daemon.json`` and cri-dockerd, read only."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgpu.errors import KgpuError
from kgpu.fsio import read_text
from kgpu.host.containerd import ContainerRuntimeEntry
from kgpu.host.paths import under
from kgpu.host.systemd import UnitState, unit_exec_start, unit_state
from kgpu.host.toolkit import find_binary

DAEMON_JSON = "/etc/docker/daemon.json"


@dataclass(frozen=True, slots=True)
class DockerConfig:
    path: str
    exists: bool
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def runtimes(self) -> dict[str, ContainerRuntimeEntry]:
        raw = self.data.get("runtimes", {})
        out = {}
        if isinstance(raw, dict):
            for name, entry in raw.items():
                path = entry.get("path") if isinstance(entry, dict) else None
                out[name] = ContainerRuntimeEntry(name, "oci", str(path) if path else None, None)
        return out

    @property
    def default_runtime(self) -> str:
        return str(self.data.get("default-runtime", "runc"))

    @property
    def cgroup_driver(self) -> str | None:
        """``native.cgroupdriver`` from ``exec-opts``; ``None`` when not set (docker then picks by
        cgroup version)."""
        opts = self.data.get("exec-opts", [])
        for opt in opts if isinstance(opts, list) else []:
            key, _, value = str(opt).partition("=")
            if key.strip() == "native.cgroupdriver":
                return value.strip()
        return None

    @property
    def data_root(self) -> str:
        return str(self.data.get("data-root", self.data.get("graph", "/var/lib/docker")))


@dataclass(frozen=True, slots=True)
class CriDockerd:
    binary: str | None
    unit: UnitState
    exec_start: str | None

    @property
    def pause_image(self) -> str | None:
        """``--pod-infra-container-image`` from the unit's ExecStart, if set."""
        if not self.exec_start:
            return None
        try:
            words = shlex.split(self.exec_start)
        except ValueError:
            words = self.exec_start.split()
        for i, word in enumerate(words):
            if word.startswith("--pod-infra-container-image="):
                return word.split("=", 1)[1]
            if word == "--pod-infra-container-image" and i + 1 < len(words):
                return words[i + 1]
        return None


@dataclass(frozen=True, slots=True)
class Docker:
    binary: str | None
    config: DockerConfig
    cri_dockerd: CriDockerd

    @property
    def installed(self) -> bool:
        return self.binary is not None


def read_docker(root: Path) -> Docker:
    binary = find_binary(root, "dockerd") or find_binary(root, "docker")
    real = under(root, DAEMON_JSON)
    if real.is_file():
        try:
            data = json.loads(read_text(real, DAEMON_JSON))
            config = (
                DockerConfig(DAEMON_JSON, True, data)
                if isinstance(data, dict)
                else DockerConfig(DAEMON_JSON, True, {}, "top level is not a JSON object")
            )
        except (KgpuError, ValueError) as exc:
            config = DockerConfig(DAEMON_JSON, True, {}, str(exc))
    else:
        config = DockerConfig(DAEMON_JSON, False)
    cri = CriDockerd(
        find_binary(root, "cri-dockerd"),
        unit_state(root, "cri-docker.service"),
        unit_exec_start(root, "cri-docker.service"),
    )
    return Docker(binary, config, cri)
