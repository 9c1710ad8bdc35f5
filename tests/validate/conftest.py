"""Fixture node trees (the files kgpu validate reads under --root) and a compiled fake libcuda."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

T4_UUID = "GPU-c707cd42-1dcd-5307-b9cd-750818912a76"
T4_DRIVER = "570.172.08"

CONTAINERD_V2_NVIDIA_DEFAULT = """\
version = 2
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "nvidia"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]
  BinaryName = "/usr/bin/nvidia-container-runtime"
"""


@dataclass
class NodeTree:
    root: Path

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def remove(self, rel: str) -> None:
        (self.root / rel).unlink()


def make_node(root: Path, *, driver: str = T4_DRIVER, gpus: int = 1) -> NodeTree:
    """A healthy GPU node as Linux lays it out: driver loaded, device nodes, containerd with the
    NVIDIA runtime as default and the Container Toolkit's binaries, the kubelet and kgpu's device plugin sockets."""
    tree = NodeTree(root)
    tree.write(
        "proc/modules",
        "nvidia_uvm 1982464 0 - Live 0x0000000000000000 (POE)\n"
        "nvidia_modeset 1720320 0 - Live 0x0000000000000000 (POE)\n"
        "nvidia 104243200 2 nvidia_uvm,nvidia_modeset, Live 0x0000000000000000 (POE)\n"
        "overlay 212992 12 - Live 0x0000000000000000\n",
    )
    tree.write(
        "proc/driver/nvidia/version",
        f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {driver}  Release Build  "
        "(dvs-builder@U16-I1-N07-12-3)  Sun Jul 27 07:09:48 UTC 2025\n"
        "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n",
    )
    for name in ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", *(f"nvidia{i}" for i in range(gpus))]:
        tree.write(f"dev/{name}", "")
    tree.write("etc/containerd/config.toml", CONTAINERD_V2_NVIDIA_DEFAULT)
    for binary in ("containerd", "nvidia-container-runtime", "nvidia-ctk", "nvidia-container-runtime-hook"):
        tree.write(f"usr/bin/{binary}", "#!/bin/sh\n")
    tree.write("var/lib/kubelet/device-plugins/kubelet.sock", "")
    tree.write("var/lib/kubelet/device-plugins/nvidia-gpu.sock", "")
    return tree


@pytest.fixture
def node(tmp_path: Path) -> NodeTree:
    return make_node(tmp_path / "node")


@pytest.fixture
def node_factory() -> Callable[..., NodeTree]:
    return make_node


@pytest.fixture
def t4_uuid() -> str:
    return T4_UUID


@pytest.fixture(scope="session")
def fake_libcuda(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/validate/fake_libcuda.c built as a shared library (a real dlopen-able libcuda.so.1)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the fake libcuda")
    out = tmp_path_factory.mktemp("fakecuda") / "libcuda.so.1"
    src = Path(__file__).with_name("fake_libcuda.c")
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(src)], check=True)
    return out


@pytest.fixture
def lost_t4_events(tmp_path: Path) -> Path:
    """A health-event file saying the T4 fell off the bus."""
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"uuid": T4_UUID, "kind": "lost"}) + "\n")
    return path
