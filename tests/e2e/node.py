"""The lab node's own files: a driver root laid out as the NVIDIA installer leaves one, and health events.

The simulated backend never loads NVML, but the toolkit-free install mounts the driver's files into GPU pods
and checks they are there, so the node gets a driver root with the real layout (GKE's /usr/local/nvidia:
lib64/ with versioned libraries and their soname links, bin/ with the driver's tools) plus dev/ with the
device nodes, as a driver container has them. The "device nodes" are character devices with /dev/null's
numbers: a pod that opens one gets nothing, but the kubelet and runc handle them exactly like a GPU's.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

from cluster import REPO

from kgpu.gpu.model import Inventory
from kgpu.gpu.simulated import SimulatedBackend

# lab-values.yaml's driverRoot; the chart's KGPU_SIMULATE_EVENTS on a simulated node
DRIVER_ROOT = Path("/var/lib/kgpu-e2e/nvidia")
EVENTS_FILE = Path("/run/kgpu/simulated-events.jsonl")
MPS_ROOT = Path("/run/kgpu/mps")  # the chart's --mps-root
SIMULATED = "h100x8"

LIBRARIES = ("libnvidia-ml.so", "libcuda.so", "libnvidia-ptxjitcompiler.so", "libnvidia-nvvm.so", "libnvidia-cfg.so")
BINARIES = ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nvidia-cuda-mps-control",
            "nvidia-cuda-mps-server")
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")
MPS_CONTROL_FAKE = REPO / "tests" / "fakes" / "nvidia-cuda-mps-control"


def inventory() -> Inventory:
    """The simulated node's inventory, as kgpu's components on the node read it."""
    backend = SimulatedBackend.open(SIMULATED)
    try:
        return backend.inventory()
    finally:
        backend.close()


def simulated_gpus() -> list[tuple[int, str]]:
    """(minor, UUID) of each GPU of the simulated node."""
    return [(g.minor, g.uuid) for g in inventory().gpus]


def driver_version() -> str:
    return str(inventory().driver_version)


def lay_out_driver_root(root: Path = DRIVER_ROOT) -> Path:
    """A driver root at ``root`` for the simulated node's driver version (replaces an older one)."""
    shutil.rmtree(root, ignore_errors=True)
    version = driver_version()
    (root / "lib64").mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "dev").mkdir()
    for stem in LIBRARIES:
        (root / "lib64" / f"{stem}.{version}").write_bytes(b"\x7fELF not a real library: kgpu e2e driver root\n")
        (root / "lib64" / f"{stem}.1").symlink_to(f"{stem}.{version}")
    for name in BINARIES:
        tool = root / "bin" / name
        if name == "nvidia-cuda-mps-control":
            # The simulated GPUs run no CUDA: the MPS control daemon is the unit tests' stand-in (Python,
            # standard library only, run by the image's python3), so kgpu mps-daemon supervises a live one.
            shutil.copyfile(MPS_CONTROL_FAKE, tool)
        else:
            tool.write_text(f"#!/bin/sh\necho '{name}: kgpu e2e driver root, no real driver' >&2\nexit 1\n")
        tool.chmod(0o755)
    null = os.stat("/dev/null").st_rdev
    for name in (*CONTROL_NODES, *(f"nvidia{minor}" for minor, _ in simulated_gpus())):
        os.mknod(root / "dev" / name, 0o666 | stat.S_IFCHR, null)
    return root


def remove_driver_root(root: Path = DRIVER_ROOT) -> None:
    shutil.rmtree(root.parent if root.parent.name == "kgpu-e2e" else root, ignore_errors=True)


def inject_event(event: dict[str, object]) -> None:
    """Append a health event to the simulated node's events file, as README "The inventory" shows."""
    EVENTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    with EVENTS_FILE.open("a") as f:
        f.write(json.dumps(event) + "\n")


def reset_events() -> None:
    EVENTS_FILE.unlink(missing_ok=True)


def kgpu_files_left() -> list[str]:
    """Files kgpu's components write on the node that are still there (empty directories are not files)."""
    left = []
    for top in (Path("/run/kgpu"), Path("/var/lib/kubelet/device-plugins")):
        if not top.exists():
            continue
        for path in sorted(top.rglob("*")):
            if path.is_dir() or path == EVENTS_FILE:
                continue  # the suite's own health events (inject_event), standing in for the GPUs
            if top.name == "device-plugins" and (path.name == "kubelet.sock" or path.name.startswith("kubelet_")):
                continue  # the kubelet's own socket and checkpoint
            if top.name == "device-plugins" and not path.name.startswith("nvidia"):
                continue  # other plugins' sockets
            left.append(str(path))
    return left


if __name__ == "__main__":
    # By hand, as the README's "Install on a cluster" does on the lab: lay out (or, with "remove", remove) the
    # driver root that ci/lab-values.yaml names.
    import sys

    if sys.argv[1:] == ["remove"]:
        remove_driver_root(DRIVER_ROOT)
    elif not sys.argv[1:]:
        print(lay_out_driver_root(DRIVER_ROOT))
    else:
        sys.exit(f"usage: {sys.argv[0]} [remove]: lay out (or remove) the lab's driver root at {DRIVER_ROOT}")


def serving_mps_daemons() -> set[str]:
    """The GPUs whose MPS control daemon kgpu mps-daemon reports running, in a status checked in the last 15 s
    (what the device plugin requires of a GPU's slices to call them healthy)."""
    serving = set()
    for path in MPS_ROOT.glob("*/status.json"):
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # replaced atomically; gone between glob and read
        if status.get("state") == "running" and time.time() - float(status.get("updated", 0)) < 15:
            serving.add(str(status.get("uuid")))
    return serving
