"""gpu.pci-present and gpu.bar-mapped: is the GPU on the bus, and did its memory windows get addresses?"""

from __future__ import annotations

from kgpu.doctor.facts import NodeFacts
from kgpu.doctor.finding import Outcome, failed, passed, skipped
from kgpu.host.pci import IORESOURCE_UNSET, NVIDIA_VENDOR, PciBar, PciDevice

GIB = 1024**3
_CLASS_NAMES = {0x0300: "VGA controller", 0x0302: "3D controller", 0x0403: "audio device", 0x0680: "bridge"}


def human_size(n: int) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} B"


def _describe(dev: PciDevice) -> str:
    kind = _CLASS_NAMES.get(dev.class_code >> 8, f"class 0x{dev.class_code:06x}")
    driver = f", driver {dev.driver}" if dev.driver else ", no driver bound"
    return f"{dev.address} [{dev.vendor:04x}:{dev.device:04x}] {kind}{driver}"


def pci_present(facts: NodeFacts) -> Outcome:
    devices = facts.host.pci_devices
    if devices is None:
        return skipped("PCI bus not readable", "/sys/bus/pci/devices is missing under the root")
    gpus = facts.pci_gpus
    if gpus:
        return passed(f"{len(gpus)} NVIDIA GPU(s) on the PCI bus", *(_describe(g) for g in gpus))
    other = [d for d in devices if d.vendor == NVIDIA_VENDOR]
    evidence = [
        f"/sys/bus/pci/devices: {len(devices)} devices, none with vendor 0x10de and class 0x0300/0x0302"
    ]
    evidence += [f"NVIDIA non-GPU function: {_describe(d)}" for d in other]
    hv = facts.host.virtualization.hypervisor
    if hv:
        fix = (
            f"This is a VM ({hv}): pass the GPU through to it. VMware: VM settings → Add PCI device → "
            "DirectPath I/O device; KVM/libvirt: <hostdev mode='subsystem' type='pci' managed='yes'> "
            "with the GPU's "
            "host address (bind it to vfio-pci on the host); Proxmox: qm set <vmid> -hostpci0 <bus>,pcie=1. "
            "Then check inside the VM: lspci -nn -d 10de:"
        )
    else:
        fix = (
            "No NVIDIA GPU is visible on the bus: check that the card is seated and powered (PCIe power "
            "cables), "
            "that its slot is enabled in the BIOS, and look for it with: lspci -nn -d 10de:"
        )
    return failed("no NVIDIA GPU on the PCI bus", evidence, fix)


# An NVIDIA GPU always exposes three memory BARs: registers (BAR0), the framebuffer window (BAR1)
# and BAR3; fewer means the firmware or kernel dropped one.
_NVIDIA_MEMORY_BARS = 3


def _where(dev: PciDevice, bar: PciBar) -> str:
    return f"/sys/bus/pci/devices/{dev.address}/resource line {bar.index + 1}: {bar.line}"


def _nvidia_name(dev: PciDevice, bar: PciBar) -> str:
    """NVIDIA's names for the three memory BARs, whatever slots the platform put them in."""
    if bar is dev.framebuffer_bar:
        return "BAR1"
    return "BAR0" if bar is _registers(dev) else "BAR3"


def _bar_problems(dev: PciDevice) -> list[str]:
    problems = []
    for bar in dev.memory_bars:
        if not bar.assigned:
            why = "IORESOURCE_UNSET" if bar.flags & IORESOURCE_UNSET else "start address 0"
            problems.append(
                f"{dev.address}: {_nvidia_name(dev, bar)} ({human_size(bar.size)}) not assigned an address, "
                f"{why} ({_where(dev, bar)})"
            )
    if len(dev.memory_bars) < _NVIDIA_MEMORY_BARS:
        empty = ", ".join(_where(dev, b) for b in dev.missing_bar_slots()) or "no empty slot"
        problems.append(
            f"{dev.address}: only {len(dev.memory_bars)} of {_NVIDIA_MEMORY_BARS} memory BARs present; "
            f"BAR1 has size 0 ({empty})"
        )
    return problems


def _registers(dev: PciDevice) -> PciBar | None:
    """BAR0 (registers, 16 MiB) is the first memory BAR; it needs no room above 4 GB."""
    return dev.memory_bars[0] if dev.memory_bars else None


def _next_pow2_gib(n_bytes: int) -> int:
    gib = max(1, -(-n_bytes // GIB))
    return 1 << (gib - 1).bit_length()


def bar_mapped(facts: NodeFacts) -> Outcome:
    gpus = facts.pci_gpus
    if not gpus:
        return skipped("no NVIDIA GPU on the PCI bus", "see gpu.pci-present")
    problems: list[str] = []
    seen: list[str] = []
    total64 = 0
    unknown_bar1 = False
    for dev in gpus:
        problems.extend(_bar_problems(dev))
        fb = dev.framebuffer_bar
        if fb is not None and len(dev.memory_bars) >= _NVIDIA_MEMORY_BARS:
            seen.append(
                f"{dev.address}: BAR1 {human_size(fb.size)}"
                + (f" (resource index {fb.index})" if fb.index != 1 else "")
                + (" (64-bit)" if fb.is_64bit else "")
            )
        else:
            unknown_bar1 = True
        total64 += sum(b.size for b in dev.memory_bars if b.is_64bit and b is not _registers(dev))
    if not problems:
        detail = [
            f"{d.address}: "
            + ", ".join(
                f"{_nvidia_name(d, b)} {human_size(b.size)} at 0x{b.start:x}"
                + (f" (resource index {b.index})" if _nvidia_name(d, b) != f"BAR{b.index}" else "")
                for b in d.memory_bars
            )
            for d in gpus
        ]
        return passed("GPU BARs have addresses", *detail)
    estimate = ""
    if unknown_bar1:
        mem = max((g.memory_total_mib for g in facts.gpus), default=0) * 1024**2
        if mem:
            per_gpu = 1 << (mem - 1).bit_length()
            total64 = max(total64, len(gpus) * per_gpu)
            estimate = (f"BAR1 size unknown: estimated from GPU memory ({mem // 1024**3} GiB, BAR1 usually the "
                        f"next power of two: {human_size(per_gpu)} per GPU)")
    size_text = (
        f"{_next_pow2_gib(total64)}"
        if total64
        else "<GPU count x BAR1 size in GB, rounded up to a power of two>"
    )
    hv = facts.host.virtualization.hypervisor
    lines = [
        "The firmware did not give the GPU's memory window (BAR1) an address: 64-bit MMIO above 4 GB is off "
        "or too small.",
    ]
    if hv == "vmware" or hv is None or hv == "unknown":
        lines.append(
            "VMware: power off the VM and add to its advanced configuration (.vmx):\n"
            '  pciPassthru.use64bitMMIO = "TRUE"\n'
            f'  pciPassthru.64bitMMIOSizeGB = "{size_text}"'
        )
    if hv in ("kvm", "unknown") or hv is None:
        lines.append(
            "KVM/QEMU with OVMF: boot the VM with EFI and give the 64-bit PCI hole room, e.g. "
            f"-fw_cfg "
            f"name=opt/ovmf/X-PciMmio64Mb,string={int(size_text) * 1024 if size_text.isdigit() else 262144}"
        )
    if hv is None:
        lines.append(
            'Bare metal: enable "Above 4G Decoding" (a.k.a. "MMIO above 4GB") in the BIOS/UEFI setup.'
        )
    evidence = problems + seen
    if estimate:
        evidence.append(estimate)
    if total64:
        evidence.append(
            f"64-bit BARs of all GPUs add up to {human_size(total64)}: MMIO size to set ≥ {size_text} GB"
        )
    return failed("GPU BAR not mapped", evidence, "\n".join(lines))
