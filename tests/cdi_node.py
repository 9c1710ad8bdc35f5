"""Build a GPU node's file tree as the NVIDIA driver lays it out, for CDI tests (no GPU needed)."""

from __future__ import annotations

import platform
from pathlib import Path

from kgpu.gpu.model import Inventory

VERSION = "580.95.05"
LIBS = ("libnvidia-ml.so", "libcuda.so", "libnvidia-ptxjitcompiler.so", "libnvidia-nvvm.so", "libcudadebugger.so")
BINS = ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nvidia-cuda-mps-control", "nvidia-cuda-mps-server")


def multiarch_lib() -> str:
    return "usr/lib/" + {"aarch64": "aarch64-linux-gnu"}.get(platform.machine(), "x86_64-linux-gnu")


def mig_minors_text(gpus: int = 8) -> str:
    """/proc/driver/nvidia-caps/mig-minors as the driver writes it: 15 GIs x 8 CIs per GPU."""
    lines = ["config 1", "monitor 2"]
    minor = 3
    for g in range(gpus):
        for gi in range(15):
            lines.append(f"gpu{g}/gi{gi}/access {minor}")
            minor += 1
            for ci in range(8):
                lines.append(f"gpu{g}/gi{gi}/ci{ci}/access {minor}")
                minor += 1
    return "\n".join(lines) + "\n"


def make_node(
    root: Path,
    inventory: Inventory,
    driver_root: str = "/",
    lib_dir: str | None = None,
    bin_dir: str | None = None,
    hook: bool = True,
    modeset: bool = True,
) -> None:
    """Device nodes (as plain files), the driver's files under ``driver_root``, mig-minors, the hook."""
    dev = root / "dev"
    (dev / "nvidia-caps").mkdir(parents=True, exist_ok=True)
    names = ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"] + (["nvidia-modeset"] if modeset else [])
    for name in names:
        (dev / name).touch()
    minors = {}
    for line in mig_minors_text().splitlines():
        key, value = line.split()
        minors[key] = int(value)
    for gpu in inventory.gpus:
        (dev / f"nvidia{gpu.minor}").touch()
        for mig in gpu.mig_devices:
            gi = f"gpu{gpu.minor}/gi{mig.gpu_instance_id}/access"
            ci = f"gpu{gpu.minor}/gi{mig.gpu_instance_id}/ci{mig.compute_instance_id}/access"
            (dev / "nvidia-caps" / f"nvidia-cap{minors[gi]}").touch()
            (dev / "nvidia-caps" / f"nvidia-cap{minors[ci]}").touch()
    proc = root / "proc/driver/nvidia-caps"
    proc.mkdir(parents=True, exist_ok=True)
    (proc / "mig-minors").write_text(mig_minors_text())

    base = root / driver_root.lstrip("/")
    libs = base / (lib_dir or multiarch_lib())
    bins = base / (bin_dir or "usr/bin")
    libs.mkdir(parents=True, exist_ok=True)
    bins.mkdir(parents=True, exist_ok=True)
    for stem in LIBS:
        (libs / f"{stem}.{VERSION}").write_bytes(b"\x7fELF")
        (libs / f"{stem}.1").symlink_to(f"{stem}.{VERSION}")
    (libs / "libnvidia-ml.so").symlink_to("libnvidia-ml.so.1")
    for name in BINS:
        (bins / name).write_text("#!/bin/sh\n")
    fw = base / "lib/firmware/nvidia" / VERSION
    fw.mkdir(parents=True, exist_ok=True)
    for name in ("gsp_ga10x.bin", "gsp_tu10x.bin"):
        (fw / name).write_bytes(b"\0")
    if hook:
        (root / "usr/bin").mkdir(parents=True, exist_ok=True)
        (root / "usr/bin/nvidia-cdi-hook").write_text("#!/bin/sh\n")
