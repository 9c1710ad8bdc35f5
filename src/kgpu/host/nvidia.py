"""The NVIDIA kernel driver as the node shows it: ``/proc/driver/nvidia/version``, ``/dev/nvidia*``
device nodes, their character-device numbers (``/proc/devices``) and ``/dev/char`` links."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from kgpu.host.paths import named, read_text, under

_VERSION_RE = re.compile(r"\b(\d{3,}\.\d+(?:\.\d+)?)\b")
_CONTROL_MINORS = {"nvidiactl": 255, "nvidia-modeset": 254}
_UVM_MINORS = {"nvidia-uvm": 0, "nvidia-uvm-tools": 1}


@dataclass(frozen=True, slots=True)
class KernelDriver:
    version: str | None
    first_line: str


def read_kernel_driver(root: Path) -> KernelDriver | None:
    """``NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build ...``."""
    text = read_text(root, "/proc/driver/nvidia/version")
    if text is None:
        return None
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    match = _VERSION_RE.search(first.partition(":")[2])
    return KernelDriver(match.group(1) if match else None, first)


def list_device_nodes(root: Path) -> tuple[str, ...]:
    """Names of ``/dev/nvidia*`` entries (``nvidia0``, ``nvidiactl``, ``nvidia-uvm``, ``nvidia-caps``,
    ...)."""
    dev = under(root, "/dev")
    try:
        return tuple(sorted(e.name for e in dev.iterdir() if e.name.startswith("nvidia")))
    except OSError:
        return ()


def read_char_majors(root: Path) -> dict[str, int]:
    """Character-device majors from ``/proc/devices``: ``{"nvidia-frontend": 195, "nvidia-uvm": 509,
    ...}``."""
    text = read_text(root, "/proc/devices") or ""
    out: dict[str, int] = {}
    in_char = False
    for line in text.splitlines():
        if line.startswith("Character devices"):
            in_char = True
            continue
        if line.startswith("Block devices"):
            break
        fields = line.split()
        if in_char and len(fields) == 2 and fields[0].isdigit():
            out.setdefault(fields[1], int(fields[0]))
    return out


def device_number(root: Path, name: str, majors: dict[str, int]) -> tuple[int, int] | None:
    """(major, minor) of ``/dev/<name>``: from the node itself when it is a real character device,
    else from the driver's numbering (``nvidiaN`` = 195:N, ``nvidiactl`` = 195:255, ``nvidia-uvm`` =
    uvm:0)."""
    try:
        st = os.stat(under(root, f"/dev/{name}"))
        if stat.S_ISCHR(st.st_mode):
            return os.major(st.st_rdev), os.minor(st.st_rdev)
    except OSError:
        pass
    frontend = majors.get("nvidia-frontend", majors.get("nvidia"))
    if name in _CONTROL_MINORS and frontend is not None:
        return frontend, _CONTROL_MINORS[name]
    if name in _UVM_MINORS and "nvidia-uvm" in majors:
        return majors["nvidia-uvm"], _UVM_MINORS[name]
    digits = name.removeprefix("nvidia")
    if digits.isdigit() and frontend is not None:
        return frontend, int(digits)
    return None


def char_link_exists(root: Path, number: tuple[int, int]) -> bool:
    """Whether ``/dev/char/MAJOR:MINOR`` exists (systemd's device cgroup rules resolve devices through it)."""
    return os.path.lexists(named(root, f"/dev/char/{number[0]}:{number[1]}"))
