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


def _bar_problem(dev: PciDevice, bar: PciBar | None, index: int) -> str | None:
    where = f"/sys/bus/pci/devices/{dev.address}/resource line {index + 1}"
    if bar is None or bar.size == 0:
        return f"{dev.address}: BAR{index} has size 0 ({where}: {bar.line if bar else 'missing'})"
    if not bar.assigned:
        why = "IORESOURCE_UNSET" if bar.flags & IORESOURCE_UNSET else "start address 0"
        return (
            f"{dev.address}: BAR{index} ({human_size(bar.size)}) not assigned an address, {why} "
            f"({where}: {bar.line})"
        )
    return None


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
        bars = {i: dev.bar(i) for i in (0, 1, 3)}
        for index in (0, 1):
            problem = _bar_problem(dev, bars[index], index)
            if problem:
                problems.append(problem)
        bar3 = bars[3]
        if bar3 is not None and bar3.size and not bar3.assigned:
            problems.append(_bar_problem(dev, bar3, 3) or "")
        bar1 = bars[1]
        if bar1 is not None and bar1.size:
            seen.append(
                f"{dev.address}: BAR1 {human_size(bar1.size)}" + (" (64-bit)" if bar1.is_64bit else "")
            )
        else:
            unknown_bar1 = True
        total64 += sum(b.size for b in (bars[1], bars[3]) if b is not None and b.is_64bit)
    if not problems:
        detail = [
            f"{d.address}: "
            + ", ".join(
                f"BAR{b.index} {human_size(b.size)} at 0x{b.start:x}"
                for b in d.bars
                if b.size and b.index in (0, 1, 3)
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
