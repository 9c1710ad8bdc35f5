"""The NVIDIA Container Toolkit: its binaries and its ``config.toml`` (read only)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgpu.errors import KgpuError
from kgpu.fsio import read_text
from kgpu.host.paths import under

TOOLKIT_BINARIES = ("nvidia-container-runtime", "nvidia-ctk", "nvidia-container-runtime-hook")
_OPTIONAL_BINARIES = ("nvidia-container-toolkit", "nvidia-container-cli", "nvidia-cdi-hook")
# The GPU Operator installs the toolkit under /usr/local/nvidia/toolkit.
BINARY_DIRS = ("/usr/bin", "/usr/local/bin", "/usr/local/nvidia/toolkit", "/usr/sbin", "/bin")
CONFIG_PATHS = (
    "/etc/nvidia-container-runtime/config.toml",
    "/usr/local/nvidia/toolkit/.config/nvidia-container-runtime/config.toml",
)


@dataclass(frozen=True, slots=True)
class ToolkitConfig:
    path: str
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def accepts_envvar_unprivileged(self) -> bool:
        """``accept-nvidia-visible-devices-envvar-when-unprivileged``; the toolkit's default is true."""
        return bool(self.data.get("accept-nvidia-visible-devices-envvar-when-unprivileged", True))

    @property
    def accepts_volume_mounts(self) -> bool:
        return bool(self.data.get("accept-nvidia-visible-devices-as-volume-mounts", False))

    @property
    def mode(self) -> str:
        """``[nvidia-container-runtime] mode``: ``auto`` (default), ``legacy``, ``cdi`` or ``csv``."""
        section = self.data.get("nvidia-container-runtime", {})
        return str(section.get("mode", "auto")) if isinstance(section, dict) else "auto"


@dataclass(frozen=True, slots=True)
class Toolkit:
    binaries: dict[str, str]
    """Name → node path of each toolkit binary found."""
    config: ToolkitConfig | None

    def missing(self) -> list[str]:
        return [b for b in TOOLKIT_BINARIES if b not in self.binaries]


def find_binary(root: Path, name: str, dirs: tuple[str, ...] = BINARY_DIRS) -> str | None:
    for d in dirs:
        if under(root, f"{d}/{name}").is_file():
            return f"{d}/{name}"
    return None


def read_toolkit(root: Path) -> Toolkit:
    binaries = {}
    for name in (*TOOLKIT_BINARIES, *_OPTIONAL_BINARIES):
        found = find_binary(root, name)
        if found:
            binaries[name] = found
    config = None
    for path in CONFIG_PATHS:
        real = under(root, path)
        if real.is_file():
            try:
                config = ToolkitConfig(path, tomllib.loads(read_text(real, path)))
            except (KgpuError, tomllib.TOMLDecodeError) as exc:
                config = ToolkitConfig(path, {}, str(exc))
            break
    return Toolkit(binaries, config)
