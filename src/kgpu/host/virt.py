"""How the node runs: under which hypervisor (if any), booted with EFI or not, inside a container or not."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kgpu.host.paths import read_text, under

# DMI sys_vendor / product_name substrings that name a hypervisor even when the CPUID flag is hidden
# (as it is with VMware's hypervisor.cpuid.v0 = FALSE).
_DMI_HYPERVISORS = (
    ("VMware", "vmware"),
    ("QEMU", "kvm"),
    ("KVM", "kvm"),
    ("Microsoft Corporation|Virtual Machine", "hyper-v"),
    ("Xen", "xen"),
    ("innotek", "virtualbox"),
    ("VirtualBox", "virtualbox"),
    ("Parallels", "parallels"),
    ("Nutanix", "nutanix-ahv"),
    ("OpenStack", "kvm"),
    ("Google Compute Engine", "kvm"),
)


# Bare-metal cloud instances keep their cloud's DMI vendor, so only these vendors prove a VM on their own.
_ONLY_VIRTUAL = ("vmware", "virtualbox", "parallels")


@dataclass(frozen=True, slots=True)
class Virtualization:
    hypervisor: str | None
    """``kvm``, ``vmware``, ``hyper-v``, ``xen``, ... or ``None`` on bare metal."""
    cpuid_flag: bool
    """``hypervisor`` is among the CPU flags in ``/proc/cpuinfo`` (hidden when cpuid.v0 = FALSE)."""
    sys_vendor: str
    product_name: str
    evidence: tuple[str, ...]
    """What was read, negatives included (``/proc/cpuinfo: no 'hypervisor' CPU flag``); never more."""
    known: bool = True
    """False when nothing that tells a VM from bare metal could be read (no cpuinfo, no DMI, no Xen)."""


def _cpuinfo_has_hypervisor_flag(text: str) -> bool:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return "hypervisor" in value.split()
    return False


def read_virtualization(root: Path) -> Virtualization:
    evidence: list[str] = []
    xen = (read_text(root, "/sys/hypervisor/type") or "").strip()
    cpuinfo = read_text(root, "/proc/cpuinfo")
    flag = _cpuinfo_has_hypervisor_flag(cpuinfo or "")
    vendor_text = read_text(root, "/sys/class/dmi/id/sys_vendor")
    product_text = read_text(root, "/sys/class/dmi/id/product_name")
    vendor = (vendor_text or "").strip()
    product = (product_text or "").strip()
    dmi_name = None
    for needle, name in _DMI_HYPERVISORS:
        if "|" in needle:
            v, p = needle.split("|")
            if v in vendor and p in product:
                dmi_name = name
                break
        elif needle in vendor or needle in product:
            dmi_name = name
            break
    if xen:
        evidence.append(f"/sys/hypervisor/type: {xen}")
    if flag:
        evidence.append("/proc/cpuinfo: 'hypervisor' CPU flag set")
    elif cpuinfo is not None:
        evidence.append("/proc/cpuinfo: no 'hypervisor' CPU flag")
    if vendor or product:
        evidence.append(f"/sys/class/dmi/id: sys_vendor={vendor!r} product_name={product!r}")
    elif vendor_text is None and product_text is None:
        evidence.append("/sys/class/dmi/id/sys_vendor, product_name: not there (no DMI tables)")
    hypervisor: str | None = None
    if xen:
        hypervisor = xen
    elif flag:
        hypervisor = dmi_name or "unknown"
    elif dmi_name in _ONLY_VIRTUAL or "QEMU" in vendor + product:
        # The CPU flag can be hidden (VMware's hypervisor.cpuid.v0 = FALSE); these vendors never make
        # hardware.
        hypervisor = dmi_name
    known = bool(xen) or cpuinfo is not None or vendor_text is not None or product_text is not None
    return Virtualization(hypervisor, flag, vendor, product, tuple(evidence), known)


def efi_booted(root: Path) -> bool:
    return under(root, "/sys/firmware/efi").is_dir()


def container_marker(root: Path) -> str | None:
    """The file that says this root is a container's, if any (``/.dockerenv``, ``/run/.containerenv``)."""
    for marker in ("/.dockerenv", "/run/.containerenv"):
        if under(root, marker).exists():
            return marker
    return None
