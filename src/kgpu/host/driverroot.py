"""Where the NVIDIA driver's user-space files live under a driver root.

Real nodes put the driver in different places: the distro's ``/usr/lib/x86_64-linux-gnu``,
GPU Operator containers under ``/run/nvidia/driver``, GKE and many images under
``/usr/local/nvidia`` with ``lib64`` and ``bin``. Every lookup here takes the root explicitly.
"""

from __future__ import annotations

import platform
from pathlib import Path

NVML_SONAME = "libnvidia-ml.so.1"
CUDA_SONAME = "libcuda.so.1"

# Searched, in order, when no --driver-root is given and the dynamic loader cannot find a library.
WELL_KNOWN_DRIVER_ROOTS: tuple[Path, ...] = (
    Path("/"),
    Path("/usr/local/nvidia"),
    Path("/run/nvidia/driver"),
    Path("/home/kubernetes/bin/nvidia"),
)


def _multiarch() -> str:
    machine = platform.machine()
    return {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu", "arm64": "aarch64-linux-gnu"}.get(
        machine, f"{machine}-linux-gnu"
    )


def library_dirs(root: Path) -> list[Path]:
    """Directories under ``root`` where driver libraries may be, most specific first."""
    arch = _multiarch()
    rel = [
        "lib64",
        "lib",
        f"lib/{arch}",
        "usr/lib64",
        f"usr/lib/{arch}",
        "usr/lib",
        f"usr/lib/{arch}/nvidia/current",
    ]
    return [root / r for r in rel]


def binary_dirs(root: Path) -> list[Path]:
    return [root / r for r in ("bin", "usr/bin", "usr/local/bin", "sbin", "usr/sbin")]


def find_library(root: Path, soname: str) -> Path | None:
    for d in library_dirs(root):
        candidate = d / soname
        if candidate.exists():
            return candidate
    return None


def find_binary(root: Path, name: str) -> Path | None:
    for d in binary_dirs(root):
        candidate = d / name
        if candidate.is_file():
            return candidate
    return None
