"""Free space (``statvfs``) and filesystem types (``/proc/mounts``) of paths on the node."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kgpu.host.paths import read_text, under

GIB = 1024**3


@dataclass(frozen=True, slots=True)
class DiskSpace:
    path: str
    """The node path asked about."""
    measured_at: str
    """The closest existing node path that was measured (the path itself, or a parent)."""
    free_bytes: int
    total_bytes: int

    @property
    def free_gib(self) -> float:
        return self.free_bytes / GIB


@dataclass(frozen=True, slots=True)
class Mount:
    device: str
    mountpoint: str
    fstype: str
    options: tuple[str, ...]


def free_space(root: Path, path: str) -> DiskSpace | None:
    """Space available to unprivileged writers (``f_bavail``) at ``path`` or its nearest existing parent."""
    probe = path
    while True:
        try:
            st = os.statvfs(under(root, probe))
            break
        except OSError:
            if probe in ("/", ""):
                return None
            probe = os.path.dirname(probe.rstrip("/")) or "/"
    return DiskSpace(path, probe, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")


def read_mounts(root: Path) -> list[Mount]:
    text = read_text(root, "/proc/mounts") or ""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            out.append(
                Mount(_unescape(fields[0]), _unescape(fields[1]), fields[2], tuple(fields[3].split(",")))
            )
    return out


def mount_of(mounts: list[Mount], path: str) -> Mount | None:
    """The mount holding ``path``: the longest mount point that is a prefix of it (the last one mounted
    wins)."""
    best: Mount | None = None
    for m in mounts:
        mp = m.mountpoint.rstrip("/") or "/"
        if (path == mp or path.startswith(mp + "/") or mp == "/") and (
            best is None or len(mp) >= len(best.mountpoint.rstrip("/") or "/")
        ):
            best = m
    return best
