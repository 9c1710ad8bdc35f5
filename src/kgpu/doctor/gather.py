"""Collect a node's facts: the host's from its filesystem root, the GPUs' from the backend (I/O edge)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kgpu.doctor.facts import GpuFacts, NodeFacts
from kgpu.errors import KgpuError
from kgpu.host.facts import read_host_facts
from kgpu.host.kubelet import DEFAULT_CONFIG

if TYPE_CHECKING:
    from kgpu.gpu.backend import GPUBackend


def gpu_facts(open_backend: Callable[[], GPUBackend]) -> GpuFacts:
    """Open the backend and read its inventory; any failure becomes ``GpuFacts.error``, never an exception."""

    try:
        backend = open_backend()
    except KgpuError as exc:
        return GpuFacts("nvml", None, str(exc), None)
    try:
        inventory = backend.inventory()
    except KgpuError as exc:
        return GpuFacts(backend.name, None, str(exc), getattr(backend, "library", None))
    finally:
        backend.close()
    library = getattr(backend, "library", None) or getattr(backend, "source", None) or backend.name
    return GpuFacts(backend.name, inventory, None, str(library))


def gather(
    root: Path, open_backend: Callable[[], GPUBackend], kubelet_config: str = DEFAULT_CONFIG
) -> NodeFacts:
    return NodeFacts(host=read_host_facts(root, kubelet_config), gpu=gpu_facts(open_backend))
