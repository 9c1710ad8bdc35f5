"""What the doctor knows about a node: host facts from the filesystem plus GPU facts from the backend."""

from __future__ import annotations

from dataclasses import dataclass

from kgpu.gpu.model import GPU, Inventory
from kgpu.host.facts import HostFacts
from kgpu.host.pci import PciDevice


@dataclass(frozen=True, slots=True)
class GpuFacts:
    backend: str
    """``nvml`` or ``simulated``."""
    inventory: Inventory | None
    error: str | None
    """Why the backend could not be opened or read (NVML's message, with the library paths tried)."""
    library: str | None
    """Where NVML was loaded from, or the simulated fixture's name."""


@dataclass(frozen=True, slots=True)
class NodeFacts:
    host: HostFacts
    gpu: GpuFacts

    @property
    def container_note(self) -> str | None:
        """Why /etc and systemd here say nothing about the node, when the inspected root is a container's."""
        marker = self.host.container
        if marker is None:
            return None
        return (f"{marker} exists: this root is a container's, so its /etc, systemd units and network namespace "
                "are not the node's; mount the node's / (e.g. at /host) and run kgpu doctor --root /host")

    @property
    def pci_gpus(self) -> list[PciDevice]:
        return [d for d in self.host.pci_devices or [] if d.is_nvidia_gpu]

    @property
    def gpus(self) -> tuple[GPU, ...]:
        return self.gpu.inventory.gpus if self.gpu.inventory is not None else ()

    @property
    def gpu_count(self) -> int:
        """GPUs the node has, by NVML when it answers, else by the PCI bus."""
        return len(self.gpus) if self.gpu.inventory is not None else len(self.pci_gpus)
