"""Facts about the node outside NVML that GFD labels: machine type (DMI) and the GPUs' PCI class.

Everything is read under a filesystem root so tests run against fixture trees.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kgpu.gpu.model import sysfs_bus_id

MACHINE_TYPE_FILE = "sys/class/dmi/id/product_name"
"""GFD's default ``--machine-type-file`` (``/sys/class/dmi/id/product_name``), relative to the root."""

UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class HostFacts:
    machine_type: str = UNKNOWN
    """DMI product name, trimmed; ``unknown`` when unreadable (as GFD)."""
    pci_classes: dict[str, str] = field(default_factory=dict)
    """sysfs bus id (``0000:65:00.0``) → PCI class as sysfs spells it (``0x030200``)."""
    machine_type_problem: str | None = None
    """Why the machine type is ``unknown`` (the file and the error), for the caller to report once."""

    def pci_class(self, nvml_bus_id: str) -> str | None:
        return self.pci_classes.get(sysfs_bus_id(nvml_bus_id))


def read_machine_type(path: Path) -> tuple[str, str | None]:
    """The machine type in ``path``, or ``unknown`` and why (a VM or container without DMI)."""
    try:
        # DMI strings come from the firmware: a vendor's odd bytes must not stop labelling
        return path.read_text(errors="replace").strip(), None
    except OSError as exc:
        return UNKNOWN, f"{path}: {exc.strerror or exc}"


def read_pci_class(root: Path, nvml_bus_id: str) -> str | None:
    path = root / "sys/bus/pci/devices" / sysfs_bus_id(nvml_bus_id) / "class"
    try:
        return path.read_text(errors="replace").strip().lower()
    except OSError:
        return None


def read_host_facts(root: Path, bus_ids: Iterable[str], machine_type_file: Path | None = None) -> HostFacts:
    """Read the machine type and each GPU's PCI class under ``root``.

    ``machine_type_file`` (GFD's ``--machine-type-file``) is used as given; by default the DMI
    product name under ``root``.
    """
    machine, problem = read_machine_type(machine_type_file or root / MACHINE_TYPE_FILE)
    classes: dict[str, str] = {}
    for bus_id in bus_ids:
        cls = read_pci_class(root, bus_id)
        if cls is not None:
            classes[sysfs_bus_id(bus_id)] = cls
    return HostFacts(machine_type=machine, pci_classes=classes, machine_type_problem=problem)
