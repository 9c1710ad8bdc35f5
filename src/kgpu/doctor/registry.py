"""Every check, under its stable id, in the order the doctor reports them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kgpu.doctor.checks import cdi, cuda, disk, driver, gpu, k8s, kubelet, platform, runtime
from kgpu.doctor.facts import NodeFacts
from kgpu.doctor.finding import Finding, Outcome, Status
from kgpu.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Check:
    id: str
    catches: str
    run: Callable[[NodeFacts], Outcome]


CHECKS: tuple[Check, ...] = (
    Check("gpu.pci-present", "no NVIDIA device on the PCI bus", gpu.pci_present),
    Check("gpu.bar-mapped", "a GPU BAR of size 0 or without an address (MMIO above 4 GB)", gpu.bar_mapped),
    Check("host.efi", "a VM with a passthrough GPU booted without EFI", platform.efi),
    Check("host.hypervisor", "a hypervisor that consumer GPU drivers refuse", platform.hypervisor),
    Check("driver.nouveau", "nouveau / nova_core / nova_drm loaded or not blacklisted", driver.nouveau),
    Check("driver.loaded", "the nvidia kernel module not loaded", driver.loaded),
    Check("driver.nvml", "NVML does not initialise", driver.nvml),
    Check("driver.device-nodes", "/dev/nvidia* device nodes missing", driver.device_nodes),
    Check("cuda.toolkit-compat", "a CUDA toolkit newer than the driver supports", cuda.toolkit_compat),
    Check("disk.root-free", "less than 50 GiB free on / or the runtime's data root", disk.root_free),
    Check("disk.fs-type", "the filesystem of the runtime's data root", disk.fs_type),
    Check("k8s.swap", "swap on, or on at boot", k8s.swap),
    Check("k8s.kernel-modules", "overlay / br_netfilter not loaded or not persisted", k8s.kernel_modules),
    Check("k8s.sysctl", "ip_forward / bridge-nf-call-ip(6)tables not 1", k8s.sysctl),
    Check("k8s.selinux", "SELinux enforcing", k8s.selinux),
    Check("k8s.firewall", "firewalld active", k8s.firewall),
    Check("k8s.time-sync", "no time sync service", k8s.time_sync),
    Check("k8s.version-compat", "a kubelet too old for the device plugin / GPU Operator", k8s.version_compat),
    Check("runtime.toolkit", "nvidia-container-toolkit missing", runtime.toolkit),
    Check(
        "runtime.containerd",
        "containerd without nvidia runtime or with mismatched cgroups",
        runtime.containerd,
    ),
    Check("runtime.docker", "docker without nvidia runtime or with mismatched cgroups", runtime.docker),
    Check("runtime.crio", "CRI-O without an nvidia runtime", runtime.crio),
    Check("runtime.visible-all", "pods that ask for no GPU see all GPUs", runtime.visible_all),
    Check(
        "runtime.systemd-cgroup-devices",
        "GPU access lost on systemctl daemon-reload",
        runtime.systemd_cgroup_devices,
    ),
    Check("runtime.dockershim", "Kubernetes ≥ 1.24 on Docker without cri-dockerd", runtime.dockershim),
    Check("kubelet.device-plugins", "no kubelet.sock for device plugins", kubelet.device_plugins),
    Check("kubelet.cgroup-driver", "kubelet and runtime cgroup drivers differ", kubelet.cgroup_driver),
    Check("cdi.spec", "CDI spec absent, invalid or naming missing paths", cdi.spec),
)
CHECK_IDS: tuple[str, ...] = tuple(c.id for c in CHECKS)


def select(only: Iterable[str] | None) -> tuple[Check, ...]:
    """The checks named in ``only`` (all when ``None``); an unknown id is a ConfigError listing the
    valid ones."""
    if only is None:
        return CHECKS
    wanted = [i.strip() for i in only if i.strip()]
    unknown = [i for i in wanted if i not in CHECK_IDS]
    if unknown:
        raise ConfigError(
            f"--only: unknown check id {', '.join(repr(u) for u in unknown)}; "
            f"valid ids: {', '.join(CHECK_IDS)}"
        )
    return tuple(c for c in CHECKS if c.id in wanted)


def run_checks(facts: NodeFacts, checks: Iterable[Check] = CHECKS) -> list[Finding]:
    """Run each check; a check that raises becomes a failing finding instead of ending the run."""
    out = []
    for check in checks:
        try:
            o = check.run(facts)
        except Exception as exc:  # a bug in one check must not hide the others' findings
            o = Outcome(
                Status.FAIL,
                f"check crashed: {type(exc).__name__}",
                str(exc),
                "Please report this as a kgpu bug, with the evidence above",
            )
        out.append(Finding(check.id, o.status, o.title, o.evidence, o.fix))
    return out
