"""Everything the doctor needs to know about a node, read once from a filesystem root.

Example::

    facts = read_host_facts(Path("/"))
    facts.os_release.family        # 'debian'
    "nvidia" in (facts.loaded_modules or {})
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from kgpu.host.cdi import CdiSpecFile, read_cdi_specs
from kgpu.host.containerd import Containerd, read_containerd
from kgpu.host.crio import Crio, read_crio
from kgpu.host.cuda import CudaToolkit, find_cuda_toolkits
from kgpu.host.disk import DiskSpace, Mount, free_space, read_mounts
from kgpu.host.docker import Docker, read_docker
from kgpu.host.kubelet import DEFAULT_CONFIG, Kubelet, read_kubelet
from kgpu.host.modules import (
    InstalledModules,
    LoadedModule,
    Setting,
    kernel_release,
    read_blacklist,
    read_installed_modules,
    read_loaded_modules,
    read_persisted_modules,
)
from kgpu.host.nvidia import KernelDriver, list_device_nodes, read_char_majors, read_kernel_driver
from kgpu.host.osrelease import OsRelease, read_os_release
from kgpu.host.paths import read_text, under
from kgpu.host.pci import PciDevice, read_pci_devices
from kgpu.host.selinux import SELinux, read_selinux
from kgpu.host.swap import FstabEntry, SwapArea, read_active_swaps, read_fstab
from kgpu.host.sysctl import read_live_sysctl, read_persisted_sysctls
from kgpu.host.systemd import UnitState, systemd_booted, unit_state
from kgpu.host.toolkit import Toolkit, read_toolkit
from kgpu.host.virt import Virtualization, container_marker, efi_booted, read_virtualization

K8S_SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
)
K8S_MODULES = ("overlay", "br_netfilter")
TIME_SYNC_UNITS = (
    "chronyd.service",
    "chrony.service",
    "systemd-timesyncd.service",
    "ntpd.service",
    "ntp.service",
    "ntpsec.service",
    "openntpd.service",
)
FIREWALL_UNITS = ("firewalld.service",)


@dataclass(frozen=True, slots=True)
class HostFacts:
    root: Path
    os_release: OsRelease | None
    virtualization: Virtualization
    efi: bool
    container: str | None
    kernel_release: str | None
    arch: str
    """``uname -m``: ``x86_64`` or ``aarch64``."""
    loaded_modules: dict[str, LoadedModule] | None
    sys_modules: frozenset[str]
    """Entries of ``/sys/module``: loaded modules and built-in ones that have parameters."""
    installed_modules: InstalledModules | None
    persisted_modules: dict[str, Setting]
    blacklist: dict[str, Setting]
    swaps: list[SwapArea] | None
    fstab: list[FstabEntry]
    sysctl_live: dict[str, str | None]
    sysctl_persisted: dict[str, Setting]
    pci_devices: list[PciDevice] | None
    kernel_driver: KernelDriver | None
    device_nodes: tuple[str, ...]
    char_majors: dict[str, int]
    cuda_toolkits: list[CudaToolkit]
    mounts: list[Mount]
    disk: dict[str, DiskSpace]
    selinux: SELinux
    systemd: bool
    units: dict[str, UnitState]
    cgroup_v2: bool
    toolkit: Toolkit
    containerd: Containerd
    docker: Docker
    crio: Crio
    kubelet: Kubelet
    cdi_specs: list[CdiSpecFile]

    @property
    def family(self) -> str:
        return self.os_release.family if self.os_release else "unknown"

    def module_loaded(self, name: str) -> bool:
        return self.loaded_modules is not None and name in self.loaded_modules

    def module_available_now(self, name: str) -> bool:
        """Loaded as a module, or built into the kernel."""
        builtin = self.installed_modules is not None and name in self.installed_modules.builtin
        return self.module_loaded(name) or builtin or name in self.sys_modules

    def runtime_data_roots(self) -> dict[str, str]:
        """Where each installed container runtime keeps its images: ``{"containerd":
        "/var/lib/containerd"}``."""
        out = {}
        if self.containerd.installed and self.containerd.config is not None:
            out["containerd"] = self.containerd.config.data_root
        if self.docker.installed:
            out["docker"] = self.docker.config.data_root
        if self.crio.installed:
            out["crio"] = self.crio.config.data_root
        return out


def _sys_modules(root: Path) -> frozenset[str]:
    try:
        return frozenset(e.name for e in under(root, "/sys/module").iterdir())
    except OSError:
        return frozenset()


def read_host_facts(root: Path = Path("/"), kubelet_config: str = DEFAULT_CONFIG) -> HostFacts:
    release = kernel_release(root)
    containerd, docker, crio = read_containerd(root), read_docker(root), read_crio(root)
    disk_paths = ["/"]
    if containerd.installed and containerd.config is not None:
        disk_paths.append(containerd.config.data_root)
    if docker.installed:
        disk_paths.append(docker.config.data_root)
    if crio.installed:
        disk_paths.append(crio.config.data_root)
    disk = {p: d for p in disk_paths if (d := free_space(root, p)) is not None}
    return HostFacts(
        root=root,
        os_release=read_os_release(root),
        virtualization=read_virtualization(root),
        efi=efi_booted(root),
        container=container_marker(root),
        kernel_release=release,
        arch=(read_text(root, "/proc/sys/kernel/arch") or platform.machine()).strip(),
        loaded_modules=read_loaded_modules(root),
        sys_modules=_sys_modules(root),
        installed_modules=read_installed_modules(root, release),
        persisted_modules=read_persisted_modules(root),
        blacklist=read_blacklist(root),
        swaps=read_active_swaps(root),
        fstab=read_fstab(root),
        sysctl_live={key: read_live_sysctl(root, key) for key in K8S_SYSCTLS},
        sysctl_persisted=read_persisted_sysctls(root),
        pci_devices=read_pci_devices(root),
        kernel_driver=read_kernel_driver(root),
        device_nodes=list_device_nodes(root),
        char_majors=read_char_majors(root),
        cuda_toolkits=find_cuda_toolkits(root),
        mounts=read_mounts(root),
        disk=disk,
        selinux=read_selinux(root),
        systemd=systemd_booted(root),
        units={u: unit_state(root, u) for u in (*TIME_SYNC_UNITS, *FIREWALL_UNITS)},
        cgroup_v2=under(root, "/sys/fs/cgroup/cgroup.controllers").is_file(),
        toolkit=read_toolkit(root),
        containerd=containerd,
        docker=docker,
        crio=crio,
        kubelet=read_kubelet(root, kubelet_config),
        cdi_specs=read_cdi_specs(root),
    )
