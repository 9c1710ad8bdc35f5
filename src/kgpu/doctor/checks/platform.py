"""host.efi and host.hypervisor: how the (virtual) machine around the GPU was set up."""

from __future__ import annotations

from kgpu.doctor.facts import NodeFacts
from kgpu.doctor.finding import Outcome, failed, passed, skipped, warned

_CONSUMER_BRANDS = {"GeForce", "GeForce RTX", "Titan", "Titan RTX"}


def efi(facts: NodeFacts) -> Outcome:
    virt = facts.host.virtualization
    if not virt.known:
        return skipped("cannot tell a VM from bare metal", "no /proc/cpuinfo, DMI or Xen file under the root")
    if virt.hypervisor is None:
        return skipped("bare metal: EFI only matters for VMs with a passthrough GPU", *virt.evidence)
    if not facts.pci_gpus:
        return skipped(f"VM ({virt.hypervisor}) without a passthrough GPU", "no NVIDIA GPU on the PCI bus")
    if facts.host.efi:
        return passed(f"VM ({virt.hypervisor}) booted with EFI", "/sys/firmware/efi exists")
    mapped = all(
        len(g.memory_bars) >= 3 and all(b.assigned for b in g.memory_bars) for g in facts.pci_gpus
    )
    outcome = warned if mapped else failed
    title = (f"VM ({virt.hypervisor}) with a passthrough GPU booted with legacy BIOS"
             + (" (its BARs are mapped, so it works for now)" if mapped else ""))
    return outcome(
        title,
        ["/sys/firmware/efi is missing: the VM booted with legacy BIOS", *virt.evidence],
        "GPUs with large BARs need EFI firmware in the VM. Power the VM off and switch its firmware to EFI — "
        "VMware: VM Options → Boot Options → Firmware: EFI; libvirt: <os firmware='efi'>; Proxmox: "
        "qm set <vmid> --bios ovmf (plus an EFI disk). An OS installed under BIOS needs its boot loader "
        "reinstalled for EFI (or reinstall the VM).",
    )


def hypervisor(facts: NodeFacts) -> Outcome:
    virt = facts.host.virtualization
    if not virt.known:
        return skipped("cannot tell a VM from bare metal",
                       "/proc/cpuinfo, /sys/class/dmi/id and /sys/hypervisor/type are not readable under the root")
    if virt.hypervisor is None:
        return passed("bare metal", *virt.evidence)
    if not facts.gpus and not facts.pci_gpus:
        return passed(f"VM ({virt.hypervisor}) without a GPU", *virt.evidence)
    consumer = [g for g in facts.gpus if g.brand in _CONSUMER_BRANDS or "GeForce" in g.name]
    evidence = list(virt.evidence)
    if not virt.cpuid_flag:
        evidence.append("the 'hypervisor' CPUID flag is hidden (hypervisor.cpuid.v0 = FALSE or equivalent)")
        return passed(f"VM ({virt.hypervisor}) with the hypervisor hidden from the guest", *evidence)
    fix = (
        "Consumer (GeForce) drivers may refuse to start when they see a hypervisor. Hide it from the guest — "
        'VMware: add hypervisor.cpuid.v0 = "FALSE" to the VM\'s .vmx; libvirt/KVM: <kvm><hidden '
        'state="on"/></kvm> '
        "under <features>. Data center GPUs (A100, H100, L40S, ...) do not need this."
    )
    if consumer:
        evidence += [f"GPU {g.index}: {g.name} (brand {g.brand})" for g in consumer]
        return warned(f"VM ({virt.hypervisor}) with a consumer GPU", evidence, fix)
    if facts.gpu.inventory is None and facts.pci_gpus:
        evidence.append("NVML did not answer, so the GPU's product is unknown")
        return warned(f"VM ({virt.hypervisor}); GPU product unknown", evidence, fix)
    evidence += [f"GPU {g.index}: {g.name}" for g in facts.gpus]
    return passed(f"VM ({virt.hypervisor}) with data center GPU(s)", *evidence)
