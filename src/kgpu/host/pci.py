"""PCI devices from ``/sys/bus/pci/devices``: ids, class, NUMA node, bound driver and BARs.

The ``resource`` file has one line per resource, ``start end flags`` in hex::

    0x00000000fa000000 0x00000000faffffff 0x0000000000040200      <- BAR0, 16 MiB
    0x0000380000000000 0x0000381fffffffff 0x000000000014220c      <- BAR1, 128 GiB, 64-bit prefetchable
    0x0000000000000000 0x0000000000000000 0x0000000000000000      <- upper half of BAR1
    0x0000382000000000 0x0000382001ffffff 0x000000000014220c      <- BAR3, 32 MiB

A BAR the kernel could not place keeps its size but starts at 0 with ``IORESOURCE_UNSET``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kgpu.errors import KgpuError
from kgpu.host.paths import named, under

NVIDIA_VENDOR = 0x10DE
IORESOURCE_MEM = 0x00000200
IORESOURCE_PREFETCH = 0x00002000
IORESOURCE_MEM_64 = 0x00100000
IORESOURCE_UNSET = 0x20000000
IORESOURCE_DISABLED = 0x10000000
_BAR_COUNT = 6
_GPU_CLASSES = (0x0300, 0x0302)  # VGA compatible controller, 3D controller


@dataclass(frozen=True, slots=True)
class PciBar:
    index: int
    start: int
    end: int
    flags: int
    line: str

    @property
    def size(self) -> int:
        return 0 if self.end == 0 and self.start == 0 else self.end - self.start + 1

    @property
    def assigned(self) -> bool:
        return self.size > 0 and self.start != 0 and not self.flags & (IORESOURCE_UNSET | IORESOURCE_DISABLED)

    @property
    def is_64bit(self) -> bool:
        return bool(self.flags & IORESOURCE_MEM_64)


@dataclass(frozen=True, slots=True)
class PciDevice:
    address: str
    """As sysfs names it: ``0000:65:00.0``."""
    vendor: int
    device: int
    class_code: int
    """24-bit class: ``0x030200`` is a 3D controller."""
    numa_node: int | None
    driver: str | None
    bars: tuple[PciBar, ...]

    @property
    def is_nvidia_gpu(self) -> bool:
        return self.vendor == NVIDIA_VENDOR and (self.class_code >> 8) in _GPU_CLASSES

    def bar(self, index: int) -> PciBar | None:
        return next((b for b in self.bars if b.index == index), None)

    @property
    def memory_bars(self) -> tuple[PciBar, ...]:
        """The memory BARs the device exposes, wherever they sit in the resource file.

        Bare metal puts an NVIDIA GPU's registers at index 0 and the framebuffer window at 1, but a
        hypervisor may make every BAR 64-bit (Firecracker: 0, 2, 4), each followed by its empty upper half.
        """
        return tuple(b for b in self.bars if b.size > 0 and b.flags & IORESOURCE_MEM)

    @property
    def framebuffer_bar(self) -> PciBar | None:
        """NVIDIA's "BAR1": the window onto GPU memory, always the largest memory BAR."""
        return max(self.memory_bars, key=lambda b: b.size, default=None)

    def missing_bar_slots(self) -> tuple[PciBar, ...]:
        """Empty slots that are not the upper half of a preceding 64-bit BAR."""
        out = []
        for b in self.bars:
            if b.size or b.flags:
                continue
            previous = self.bar(b.index - 1)
            if previous is not None and previous.is_64bit and previous.size:
                continue
            out.append(b)
        return tuple(out)


def _hex(path: Path) -> int | None:
    try:
        return int(path.read_text().strip(), 16)
    except (OSError, ValueError):
        return None


def parse_resource(text: str) -> tuple[PciBar, ...]:
    """The six standard BARs from a ``resource`` file (ROM and SR-IOV lines are not BARs)."""
    bars = []
    for index, line in enumerate(text.splitlines()[:_BAR_COUNT]):
        fields = line.split()
        if len(fields) != 3:
            continue
        try:
            start, end, flags = (int(f, 16) for f in fields)
        except ValueError:
            continue
        bars.append(PciBar(index, start, end, flags, line.strip()))
    return tuple(bars)


def read_pci_devices(root: Path) -> list[PciDevice] | None:
    """Every device under ``/sys/bus/pci/devices``; ``None`` when that directory is absent."""
    base = under(root, "/sys/bus/pci/devices")
    if not base.is_dir():
        return None
    out = []
    for entry in sorted(base.iterdir()):
        vendor, device, cls = _hex(entry / "vendor"), _hex(entry / "device"), _hex(entry / "class")
        if vendor is None or device is None or cls is None:
            continue
        try:
            numa: int | None = int((entry / "numa_node").read_text().strip())
        except (OSError, ValueError):
            numa = None
        try:
            resource = (entry / "resource").read_text()
        except OSError:
            resource = ""
        driver_link = entry / "driver"
        driver = os.path.basename(os.readlink(driver_link)) if driver_link.is_symlink() else None
        out.append(
            PciDevice(
                address=entry.name,
                vendor=vendor,
                device=device,
                class_code=cls,
                numa_node=numa if numa is not None and numa >= 0 else None,
                driver=driver,
                bars=parse_resource(resource),
            )
        )
    return out


def pcie_root(root: Path, address: str) -> str | None:
    """The PCIe root complex above ``address`` (``0000:65:00.0``) as ``pci<domain>:<bus>`` (``pci0000:64``): the
    first directory under /sys/devices of the path its /sys/bus/pci/devices link resolves to, as Kubernetes'
    ``deviceattribute.GetPCIeRootAttributeByPCIBusID`` reads it. None when sysfs does not say."""
    try:
        target = os.readlink(named(root, f"/sys/bus/pci/devices/{address}"))
    except (OSError, KgpuError):
        return None
    resolved = os.path.normpath(os.path.join("/sys/bus/pci/devices", target))
    parts = resolved.split("/")
    # /sys/devices/pci0000:64/0000:64:00.0/0000:65:00.0
    if len(parts) < 4 or parts[1:3] != ["sys", "devices"] or not parts[3].startswith("pci") or parts[-1] != address:
        return None
    return parts[3]
