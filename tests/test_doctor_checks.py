"""Every doctor check on real node layouts: given a healthy node broken in one place, the check says so.

Each case copies a fixture node root (tests/fixtures/nodes, written by scripts/gen_node_fixtures.py),
changes one thing the way it goes wrong in the field, and runs the doctor on it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from doctor_nodes import Mutation, Node, run_on

from kgpu.doctor import CHECK_IDS
from kgpu.host.disk import DiskSpace

GIB = 1024**3


def nothing(node: Node) -> None:
    """The healthy node as generated."""


# -- mutations: one field failure each -----------------------------------------------------------------

def no_gpu_on_bus(n: Node) -> None:
    for dev in n.path("/sys/bus/pci/devices").iterdir():
        if (dev / "class").read_text().startswith("0x0302"):
            n.remove(f"/sys/bus/pci/devices/{dev.name}")


def bar1_unassigned(n: Node) -> None:
    lines = n.read("/sys/bus/pci/devices/0000:18:00.0/resource").splitlines(True)
    lines[1] = "0x0000000000000000 0x0000001fffffffff 0x000000002014220c\n"  # size kept, IORESOURCE_UNSET
    n.write("/sys/bus/pci/devices/0000:18:00.0/resource", "".join(lines))


def bar1_zero(n: Node) -> None:
    for dev in ("0000:07:00.0", "0000:0f:00.0"):
        lines = n.read(f"/sys/bus/pci/devices/{dev}/resource").splitlines(True)
        lines[1] = lines[3] = "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
        n.write(f"/sys/bus/pci/devices/{dev}/resource", "".join(lines))


def legacy_bios(n: Node) -> None:
    n.remove("/sys/firmware/efi")


def legacy_bios_and_no_bar(n: Node) -> None:
    legacy_bios(n)
    bar1_zero(n)


def in_a_container(n: Node) -> None:
    n.write("/.dockerenv", "")


def in_a_container_with_nouveau(n: Node) -> None:
    in_a_container(n)
    nouveau_loaded(n)


def in_a_container_with_swap(n: Node) -> None:
    in_a_container(n)
    swap_active(n)


def in_a_container_without_br_netfilter(n: Node) -> None:
    in_a_container(n)
    br_netfilter_unloaded(n)
    modules_not_persisted(n)


def nouveau_loaded(n: Node) -> None:
    n.append("/proc/modules", "nouveau 3096576 0 - Live 0x0000000000000000\n")


def nova_loaded(n: Node) -> None:
    n.append("/proc/modules", "nova_core 98304 1 nova_drm, Live 0x0000000000000000\n"
             "nova_drm 16384 0 - Live 0x0000000000000000\n")


def nouveau_not_blacklisted(n: Node) -> None:
    n.remove("/usr/lib/modprobe.d/nvidia-graphics-drivers.conf")


def blacklist_file_removed(n: Node) -> None:
    n.remove("/etc/modprobe.d/blacklist-nouveau.conf")


def driver_unloaded(n: Node) -> None:
    n.remove("/proc/driver/nvidia/version")
    n.drop_lines("/proc/modules", "nvidia")


def driver_never_installed(n: Node) -> None:
    driver_unloaded(n)
    n.drop_lines("/lib/modules/5.14.0-503.14.1.el9_5.x86_64/modules.dep", "nvidia")


def nvml_version_mismatch(n: Node) -> None:
    n.backend_error = ("NVML (/usr/lib64/libnvidia-ml.so.1) failed to initialise: Driver/library version mismatch")


def gpu3_node_missing(n: Node) -> None:
    n.remove("/dev/nvidia3")


def uvm_node_missing(n: Node) -> None:
    n.remove("/dev/nvidia-uvm")


def mig_caps_missing(n: Node) -> None:
    n.remove("/dev/nvidia-caps")


def cuda_minor_newer(n: Node) -> None:
    n.write("/usr/local/cuda-13.1/version.json", '{"cuda": {"name": "CUDA SDK", "version": "13.1.0"}}\n')


def toolkit_not_installed_nothing_uses_it(n: Node) -> None:
    for name in ("nvidia-container-runtime", "nvidia-ctk", "nvidia-container-runtime-hook", "nvidia-container-cli",
                 "nvidia-cdi-hook"):
        n.remove(f"/usr/bin/{name}")
    n.remove("/etc/containerd/conf.d/99-nvidia.toml")


def cuda_major_newer_on_535(n: Node) -> None:
    n.backend_error = "NVML library libnvidia-ml.so.1 not found"
    n.replace("/proc/driver/nvidia/version", "580.95.05", "535.230.02")


def containerd_on_nfs(n: Node) -> None:
    n.replace("/proc/mounts", "/dev/nvme1n1 /var/lib/containerd xfs",
              "fs01:/export/containerd /var/lib/containerd nfs4")


def containerd_on_root_ext4(n: Node) -> None:
    n.drop_lines("/proc/mounts", "/var/lib/containerd")


def swap_active(n: Node) -> None:
    n.append("/proc/swaps", "/swap.img                               file\t\t8388604\t\t0\t\t-2\n")


def swap_in_fstab(n: Node) -> None:
    n.replace("/etc/fstab", "#/swap.img", "/swap.img")


def swap_tolerated(n: Node) -> None:
    swap_active(n)
    n.append("/var/lib/kubelet/config.yaml", "failSwapOn: false\nmemorySwap:\n  swapBehavior: LimitedSwap\n")


def br_netfilter_unloaded(n: Node) -> None:
    n.drop_lines("/proc/modules", "br_netfilter")
    n.remove("/proc/sys/net/bridge")


def modules_not_persisted(n: Node) -> None:
    n.remove("/etc/modules-load.d/k8s.conf")


def modules_in_etc_modules(n: Node) -> None:
    n.remove("/etc/modules-load.d/k8s.conf")
    n.write("/etc/modules", "# /etc/modules: kernel modules to load at boot time.\noverlay\nbr_netfilter\n")


def ip_forward_off(n: Node) -> None:
    n.write("/proc/sys/net/ipv4/ip_forward", "0\n")


def ip_forward_overridden_later(n: Node) -> None:
    n.write("/etc/sysctl.d/zz-hardening.conf", "# CIS benchmark\nnet.ipv4.ip_forward = 0\n")


def ip_forward_commented_earlier(n: Node) -> None:
    # 99-sysctl.conf -> ../sysctl.conf sorts before k8s.conf, so k8s.conf still wins.
    n.append("/etc/sysctl.conf", "net.ipv4.ip_forward=0\n")


def selinux_enforcing(n: Node) -> None:
    n.write("/sys/fs/selinux/enforce", "1")
    n.replace("/etc/selinux/config", "SELINUX=permissive", "SELINUX=enforcing")


def selinux_enforcing_after_reboot(n: Node) -> None:
    n.replace("/etc/selinux/config", "SELINUX=permissive", "SELINUX=enforcing")


def firewalld_enabled(n: Node) -> None:
    n.link("/etc/systemd/system/multi-user.target.wants/firewalld.service",
           "/usr/lib/systemd/system/firewalld.service")


def firewalld_masked(n: Node) -> None:
    firewalld_enabled(n)
    n.link("/etc/systemd/system/firewalld.service", "/dev/null")


def chronyd_disabled(n: Node) -> None:
    n.remove("/etc/systemd/system/multi-user.target.wants/chronyd.service")


def timesyncd_disabled(n: Node) -> None:
    n.remove("/etc/systemd/system/sysinit.target.wants/systemd-timesyncd.service")


def timesyncd_disabled_in_container(n: Node) -> None:
    timesyncd_disabled(n)
    n.remove("/run/systemd/system")


def runtime_binary_missing(n: Node) -> None:
    n.remove("/usr/bin/nvidia-container-runtime")


def nvidia_dropin_missing(n: Node) -> None:
    n.remove("/etc/containerd/conf.d/99-nvidia.toml")


def nvidia_cgroupfs(n: Node) -> None:
    n.replace("/etc/containerd/conf.d/99-nvidia.toml",
              'BinaryName = "/usr/bin/nvidia-container-runtime"\n            SystemdCgroup = true',
              'BinaryName = "/usr/bin/nvidia-container-runtime"\n            SystemdCgroup = false')


def containerd_config_broken(n: Node) -> None:
    n.append("/etc/containerd/config.toml", "[plugins.\"io.containerd.grpc.v1.cri\"\n")


def containerd_cri_disabled(n: Node) -> None:
    n.replace("/etc/containerd/config.toml", "version = 3\n", 'version = 3\ndisabled_plugins = ["cri"]\n')


def docker_with_its_own_containerd(n: Node) -> None:
    containerd_cri_disabled(n)
    n.remove("/usr/bin/kubelet")
    n.remove("/var/lib/kubelet")


def docker_configured(n: Node) -> None:
    n.program("/usr/bin/dockerd")
    n.write("/etc/docker/daemon.json", """{
    "default-runtime": "nvidia",
    "exec-opts": ["native.cgroupdriver=systemd"],
    "log-driver": "json-file",
    "runtimes": {
        "nvidia": {
            "args": [],
            "path": "nvidia-container-runtime"
        }
    }
}
""")


def docker_without_nvidia(n: Node) -> None:
    n.program("/usr/bin/dockerd")
    n.write("/etc/docker/daemon.json", '{"log-driver": "json-file", "exec-opts": ["native.cgroupdriver=systemd"]}\n')


def docker_cgroupfs_under_cri_dockerd(n: Node) -> None:
    docker_configured(n)
    n.replace("/etc/docker/daemon.json", "native.cgroupdriver=systemd", "native.cgroupdriver=cgroupfs")
    n.replace("/var/lib/kubelet/kubeadm-flags.env", "unix:///var/run/containerd/containerd.sock",
              "unix:///var/run/cri-dockerd.sock")
    n.program("/usr/bin/cri-dockerd")


def crio_configured(n: Node) -> None:
    n.program("/usr/bin/crio")
    n.write("/etc/crio/crio.conf.d/99-nvidia.toml", """
[crio]

  [crio.runtime]

    [crio.runtime.runtimes]

      [crio.runtime.runtimes.nvidia]
        runtime_path = "/usr/bin/nvidia-container-runtime"
        runtime_type = "oci"
""")


def crio_hook(n: Node) -> None:
    n.program("/usr/bin/crio")
    n.write("/usr/share/containers/oci/hooks.d/oci-nvidia-hook.json", """{
    "version": "1.0.0",
    "hook": {"path": "/usr/bin/nvidia-container-runtime-hook", "args": ["nvidia-container-runtime-hook", "prestart"]},
    "when": {"always": true, "commands": [".*"]},
    "stages": ["prestart"]
}
""")


def crio_without_nvidia(n: Node) -> None:
    n.program("/usr/bin/crio")
    n.write("/etc/crio/crio.conf", "[crio.runtime]\ncgroup_manager = \"systemd\"\n")


def envvar_accepted(n: Node) -> None:
    n.replace("/etc/nvidia-container-runtime/config.toml",
              "accept-nvidia-visible-devices-envvar-when-unprivileged = false",
              "accept-nvidia-visible-devices-envvar-when-unprivileged = true")


def toolkit_config_missing(n: Node) -> None:
    n.remove("/etc/nvidia-container-runtime/config.toml")


def dev_char_link_missing(n: Node) -> None:
    n.remove("/dev/char/195:3")


def kubelet_cgroupfs(n: Node) -> None:
    n.replace("/var/lib/kubelet/config.yaml", "cgroupDriver: systemd", "cgroupDriver: cgroupfs")


def kubelet_on_dockershim(n: Node) -> None:
    n.program("/usr/bin/dockerd")
    n.write("/var/lib/kubelet/kubeadm-flags.env", 'KUBELET_KUBEADM_ARGS="--container-runtime=docker '
            '--network-plugin=cni --pod-infra-container-image=k8s.gcr.io/pause:3.6"\n')


def old_kubelet_on_dockershim(n: Node) -> None:
    kubelet_on_dockershim(n)
    n.program("/usr/bin/kubelet", "Kubernetes v1.23.17")


def cri_dockerd_not_installed(n: Node) -> None:
    n.program("/usr/bin/dockerd")
    n.replace("/var/lib/kubelet/kubeadm-flags.env", "unix:///var/run/containerd/containerd.sock",
              "unix:///var/run/cri-dockerd.sock")


def cri_dockerd_default_pause(n: Node) -> None:
    cri_dockerd_not_installed(n)
    n.program("/usr/bin/cri-dockerd")
    n.write("/usr/lib/systemd/system/cri-docker.service", "[Service]\nType=notify\n"
            "ExecStart=/usr/bin/cri-dockerd --container-runtime-endpoint fd://\n")


def cri_dockerd_pinned_pause(n: Node) -> None:
    cri_dockerd_default_pause(n)
    n.write("/etc/systemd/system/cri-docker.service.d/10-pause.conf", "[Service]\nExecStart=\n"
            "ExecStart=/usr/bin/cri-dockerd --container-runtime-endpoint fd:// "
            "--pod-infra-container-image=registry.k8s.io/pause:3.10\n")


def k3s_node(n: Node) -> None:
    n.remove("/usr/bin/kubelet")
    n.remove("/var/lib/kubelet/config.yaml")
    n.remove("/var/lib/kubelet/kubeadm-flags.env")
    n.program("/usr/local/bin/k3s", "k3s version v1.31.4+k3s1 (a562d090)")
    n.remove("/usr/bin/containerd")
    n.write("/var/lib/rancher/k3s/agent/etc/containerd/config.toml", n.read("/etc/containerd/config.toml")
            .replace("SystemdCgroup = true", "SystemdCgroup = false"))
    n.remove("/etc/containerd")


def kubelet_sock_missing(n: Node) -> None:
    n.remove("/var/lib/kubelet/device-plugins/kubelet.sock")


def device_plugin_dir_missing(n: Node) -> None:
    n.remove("/var/lib/kubelet/device-plugins")


def kubelet_1_18(n: Node) -> None:
    n.program("/usr/bin/kubelet", "Kubernetes v1.18.20")


def kubelet_1_24(n: Node) -> None:
    n.program("/usr/bin/kubelet", "Kubernetes v1.24.17")


def cdi_spec_missing(n: Node) -> None:
    n.remove("/etc/cdi/nvidia.yaml")


def cdi_library_gone(n: Node) -> None:
    n.remove("/usr/lib/x86_64-linux-gnu/libcuda.so.580.95.05")


def cdi_spec_garbage(n: Node) -> None:
    n.write("/etc/cdi/nvidia.yaml", "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: [\n")


def cdi_spec_stale(n: Node) -> None:
    text = n.read("/etc/cdi/nvidia.yaml")
    n.write("/etc/cdi/nvidia.yaml", text.replace('- name: "1"', '- name: "retired"'))


# (check id, node, mutation, status, words that must appear in title/evidence/fix)
CASES: list[tuple[str, str, Mutation, str, tuple[str, ...]]] = [
    ("gpu.pci-present", "ubuntu-h100", nothing, "pass", ("8 NVIDIA GPU(s)", "0000:18:00.0 [10de:2330]")),
    ("gpu.pci-present", "ubuntu-h100", no_gpu_on_bus, "fail", ("none with vendor 0x10de", "10de:22a3", "lspci")),
    ("gpu.pci-present", "rocky-a100", no_gpu_on_bus, "fail", ("VM (kvm)", "<hostdev",)),
    ("gpu.bar-mapped", "ubuntu-h100", nothing, "pass", ("BAR1 128 GiB at 0x200000000000",)),
    ("gpu.bar-mapped", "ubuntu-h100", bar1_unassigned, "fail",
     ("BAR1 (128 GiB) not assigned", "IORESOURCE_UNSET", "Above 4G Decoding", 'pciPassthru.64bitMMIOSizeGB = "2048"')),
    ("gpu.bar-mapped", "rocky-a100", bar1_zero, "fail", (
        "BAR1 has size 0", "X-PciMmio64Mb", "estimated from GPU memory (80 GiB", "≥ 256 GB")),
    ("host.efi", "rocky-a100", nothing, "pass", ("booted with EFI",)),
    ("host.efi", "rocky-a100", legacy_bios, "warn", ("legacy BIOS", "works for now", "<os firmware='efi'>")),
    ("host.efi", "rocky-a100", legacy_bios_and_no_bar, "fail", ("legacy BIOS", "qm set <vmid> --bios ovmf")),
    ("host.efi", "ubuntu-h100", nothing, "skip", ("bare metal",)),
    ("host.hypervisor", "ubuntu-h100", nothing, "pass", ("bare metal",)),
    ("host.hypervisor", "rocky-a100", nothing, "pass", ("data center", "sys_vendor='QEMU'")),
    ("driver.nouveau", "ubuntu-h100", nothing, "pass", ("nvidia-graphics-drivers.conf:1: blacklist nouveau",)),
    ("driver.nouveau", "rocky-a100", blacklist_file_removed, "pass", ("/proc/cmdline: rd.driver.blacklist=nouveau",)),
    ("driver.nouveau", "ubuntu-h100", nouveau_loaded, "fail",
     ("nouveau 3096576", "blacklist nouveau", "options nouveau modeset=0", "update-initramfs -u")),
    ("driver.nouveau", "rocky-a100", nouveau_loaded, "fail", ("dracut --force",)),
    ("driver.nouveau", "ubuntu-h100", nova_loaded, "fail", ("nova_core", "nova_drm", "blacklist nova_core")),
    ("driver.nouveau", "ubuntu-h100", nouveau_not_blacklisted, "warn",
     ("next boot", "nouveau.ko.zst", "/etc/modprobe.d/blacklist-nouveau.conf")),
    ("driver.loaded", "ubuntu-h100", nothing, "pass", ("580.95.05", "Open Kernel Module")),
    ("driver.loaded", "ubuntu-h100", driver_unloaded, "fail", ("modprobe nvidia", "no 'nvidia' module")),
    ("driver.loaded", "rocky-a100", driver_never_installed, "fail",
     ("cuda-rhel9.repo", "dnf install -y nvidia-open")),
    ("driver.nvml", "ubuntu-h100", nothing, "pass", ("simulated",)),
    ("driver.nvml", "rocky-a100", nvml_version_mismatch, "fail", ("/usr/lib64/libnvidia-ml.so.1", "reboot")),
    ("driver.device-nodes", "ubuntu-h100", nothing, "pass", ("nvidia7",)),
    ("driver.device-nodes", "ubuntu-h100", gpu3_node_missing, "fail", ("/dev/nvidia3 is missing", "nvidia-modprobe")),
    ("driver.device-nodes", "ubuntu-h100", uvm_node_missing, "fail",
     ("/dev/nvidia-uvm is missing", "modprobe nvidia_uvm")),
    ("driver.device-nodes", "rocky-a100", mig_caps_missing, "fail", ("/dev/nvidia-caps is missing",)),
    ("cuda.toolkit-compat", "ubuntu-h100", nothing, "pass", ("12.8.1", "supports CUDA 13.0")),
    ("cuda.toolkit-compat", "ubuntu-h100", cuda_minor_newer, "warn", ("13.1.0", "minor version compatibility")),
    ("cuda.toolkit-compat", "rocky-a100", cuda_major_newer_on_535, "warn",
     ("driver 535.230.02 supports CUDA 12.2", "13.0.2", "needs driver ≥ 580.65.06")),
    ("disk.fs-type", "ubuntu-h100", nothing, "pass", ("XFS", "/dev/nvme1n1")),
    ("disk.fs-type", "ubuntu-h100", containerd_on_root_ext4, "pass", ("ext4", "XFS is recommended")),
    ("disk.fs-type", "ubuntu-h100", containerd_on_nfs, "fail", ("nfs4", "overlayfs")),
    ("k8s.swap", "ubuntu-h100", nothing, "pass", ()),
    ("k8s.swap", "ubuntu-h100", in_a_container, "pass", ("not visible", "/.dockerenv exists", "--root /host")),
    ("k8s.swap", "ubuntu-h100", in_a_container_with_swap, "fail", ("/swap.img", "swapoff -a")),
    ("k8s.kernel-modules", "ubuntu-h100", in_a_container_without_br_netfilter, "warn", ("br_netfilter not loaded",)),
    ("k8s.sysctl", "ubuntu-h100", in_a_container, "skip", ("network sysctls",)),
    ("k8s.firewall", "rocky-a100", in_a_container, "skip", ("services are not visible",)),
    ("k8s.time-sync", "rocky-a100", in_a_container, "skip", ("services are not visible",)),
    ("driver.nouveau", "ubuntu-h100", in_a_container, "pass", ("blacklist not judged",)),
    ("driver.nouveau", "ubuntu-h100", in_a_container_with_nouveau, "fail", ("nouveau 3096576",)),
    ("k8s.swap", "ubuntu-h100", swap_active, "fail", ("/swap.img", "swapoff -a")),
    ("k8s.swap", "ubuntu-h100", swap_in_fstab, "warn", ("/etc/fstab:5", "sed -i.kgpu.bak '5s/^/#/' /etc/fstab")),
    ("k8s.swap", "ubuntu-h100", swap_tolerated, "warn", ("failSwapOn: false",)),
    ("k8s.kernel-modules", "ubuntu-h100", nothing, "pass", ("/etc/modules-load.d/k8s.conf:2",)),
    ("k8s.kernel-modules", "ubuntu-h100", modules_in_etc_modules, "pass", ("/etc/modules:3",)),
    ("k8s.kernel-modules", "ubuntu-h100", br_netfilter_unloaded, "warn",
     ("br_netfilter not loaded", "modprobe br_netfilter")),
    ("k8s.kernel-modules", "rocky-a100", modules_not_persisted, "warn",
     ("overlay not persisted", "Create /etc/modules-load.d/k8s.conf with:\n  overlay\n  br_netfilter")),
    ("k8s.sysctl", "ubuntu-h100", nothing, "pass", ("/etc/sysctl.d/k8s.conf:3",)),
    ("k8s.sysctl", "ubuntu-h100", ip_forward_commented_earlier, "pass", ("/etc/sysctl.d/k8s.conf:3",)),
    ("k8s.sysctl", "ubuntu-h100", ip_forward_off, "fail", ("not 1 now: net.ipv4.ip_forward", "sysctl --system")),
    ("k8s.sysctl", "ubuntu-h100", ip_forward_overridden_later, "warn",
     ("/etc/sysctl.d/zz-hardening.conf:2", "99-kubernetes.conf")),
    ("k8s.sysctl", "rocky-a100", br_netfilter_unloaded, "fail", ("absent (br_netfilter not loaded)",)),
    ("k8s.selinux", "rocky-a100", nothing, "pass", ("permissive",)),
    ("k8s.selinux", "rocky-a100", selinux_enforcing, "warn", ("container_use_devices", "setenforce 0")),
    ("k8s.selinux", "rocky-a100", selinux_enforcing_after_reboot, "warn", ("after the next boot",)),
    ("k8s.firewall", "rocky-a100", nothing, "pass", ("not enabled",)),
    ("k8s.firewall", "rocky-a100", firewalld_masked, "pass", ("masked",)),
    ("k8s.firewall", "rocky-a100", firewalld_enabled, "warn", ("10250/tcp", "firewall-cmd")),
    ("k8s.time-sync", "rocky-a100", nothing, "pass", ("chronyd.service",)),
    ("k8s.time-sync", "rocky-a100", chronyd_disabled, "warn", ("dnf install -y chrony", "enable --now chronyd")),
    ("k8s.time-sync", "ubuntu-h100", timesyncd_disabled, "warn", ("apt-get install -y chrony",)),
    ("k8s.time-sync", "ubuntu-h100", timesyncd_disabled_in_container, "skip", ("systemd is not running",)),
    ("k8s.version-compat", "rocky-a100", nothing, "pass", ("v1.32.1",)),
    ("k8s.version-compat", "ubuntu-h100", kubelet_1_24, "warn", ("GPU Operator needs ≥ 1.25",)),
    ("k8s.version-compat", "ubuntu-h100", kubelet_1_18, "fail", ("too old", "1.19")),
    ("runtime.toolkit", "ubuntu-h100", nothing, "pass", ("/usr/bin/nvidia-ctk",)),
    ("runtime.toolkit", "ubuntu-h100", toolkit_not_installed_nothing_uses_it, "warn",
     ("not installed (no runtime uses it yet)", "nvidia-container-toolkit.list")),
    ("runtime.toolkit", "ubuntu-h100", runtime_binary_missing, "fail",
     ("fork/exec /usr/bin/nvidia-container-runtime: no such file or directory", "nvidia-container-toolkit.list")),
    ("runtime.toolkit", "rocky-a100", runtime_binary_missing, "fail",
     ("/etc/yum.repos.d/nvidia-container-toolkit.repo", "dnf install -y nvidia-container-toolkit")),
    ("runtime.containerd", "ubuntu-h100", nothing, "pass", ("imported: /etc/containerd/conf.d/99-nvidia.toml",)),
    ("runtime.containerd", "rocky-a100", nothing, "pass", ("version 3",)),
    ("runtime.containerd", "ubuntu-h100", nvidia_dropin_missing, "fail",
     ("no nvidia runtime", "kgpu runtime configure --runtime containerd")),
    ("runtime.containerd", "ubuntu-h100", nvidia_cgroupfs, "fail", ("cgroupfs cgroups, the kubelet systemd",)),
    ("runtime.containerd", "ubuntu-h100", containerd_config_broken, "fail", ("does not parse", "line")),
    ("runtime.containerd", "rocky-a100", containerd_cri_disabled, "fail", ("CRI plugin is disabled",)),
    ("runtime.containerd", "rocky-a100", docker_with_its_own_containerd, "skip", ("serves only Docker",)),
    ("runtime.docker", "ubuntu-h100", nothing, "skip", ("not installed",)),
    ("runtime.docker", "ubuntu-h100", docker_configured, "pass", ("runtimes.nvidia.path = nvidia-container-runtime",)),
    ("runtime.docker", "ubuntu-h100", docker_without_nvidia, "fail", ("--runtime docker --set-as-default",)),
    ("runtime.docker", "ubuntu-h100", docker_cgroupfs_under_cri_dockerd, "fail",
     ("docker uses cgroupfs cgroups, the kubelet systemd", "native.cgroupdriver=systemd")),
    ("runtime.crio", "rocky-a100", crio_configured, "pass", ("runtime_path = /usr/bin/nvidia-container-runtime",)),
    ("runtime.crio", "rocky-a100", crio_hook, "pass", ("oci-nvidia-hook.json",)),
    ("runtime.crio", "rocky-a100", crio_without_nvidia, "fail", ("kgpu runtime configure --runtime crio",)),
    ("runtime.visible-all", "ubuntu-h100", nothing, "pass", ("cannot request GPUs",)),
    ("runtime.visible-all", "rocky-a100", nothing, "pass", ("not the default runtime",)),
    ("runtime.visible-all", "ubuntu-h100", envvar_accepted, "warn",
     ("every pod sees every GPU", "accept-nvidia-visible-devices-as-volume-mounts = true", "volume-mounts")),
    ("runtime.visible-all", "ubuntu-h100", toolkit_config_missing, "warn", ("(default)",)),
    ("runtime.systemd-cgroup-devices", "ubuntu-h100", nothing, "pass", ("/dev/nvidia7",)),
    ("runtime.systemd-cgroup-devices", "ubuntu-h100", kubelet_cgroupfs, "pass", ("not affected",)),
    ("runtime.systemd-cgroup-devices", "ubuntu-h100", dev_char_link_missing, "warn",
     ("/dev/char/195:3 -> ../nvidia3 is missing", "create-dev-char-symlinks", "71-nvidia-dev-char.rules")),
    ("runtime.dockershim", "ubuntu-h100", nothing, "pass", ("containerd",)),
    ("runtime.dockershim", "ubuntu-h100", kubelet_on_dockershim, "fail", ("no dockershim", "cri-dockerd.sock")),
    ("runtime.dockershim", "ubuntu-h100", old_kubelet_on_dockershim, "pass", ("< 1.24",)),
    ("runtime.dockershim", "ubuntu-h100", cri_dockerd_not_installed, "fail", ("not installed",)),
    ("runtime.dockershim", "ubuntu-h100", cri_dockerd_default_pause, "warn", ("--pod-infra-container-image=",)),
    ("runtime.dockershim", "ubuntu-h100", cri_dockerd_pinned_pause, "pass", ("registry.k8s.io/pause:3.10",)),
    ("kubelet.device-plugins", "ubuntu-h100", nothing, "pass", ("kubelet.sock: present",)),
    ("kubelet.device-plugins", "ubuntu-h100", kubelet_sock_missing, "fail", ("kubelet.sock: missing",)),
    ("kubelet.device-plugins", "ubuntu-h100", device_plugin_dir_missing, "fail", ("no such directory",)),
    ("kubelet.cgroup-driver", "ubuntu-h100", nothing, "pass", ("both use systemd",)),
    ("kubelet.cgroup-driver", "rocky-a100", k3s_node, "skip", ("k3s sets",)),
    ("runtime.containerd", "rocky-a100", k3s_node, "pass", ("/var/lib/rancher/k3s/agent/etc/containerd/config.toml",)),
    ("k8s.version-compat", "rocky-a100", k3s_node, "pass", ("v1.31.4", "k3s version")),
    ("kubelet.cgroup-driver", "ubuntu-h100", kubelet_cgroupfs, "fail",
     ("kubelet uses cgroupfs, the runtime systemd", "SystemdCgroup = true")),
    ("cdi.spec", "ubuntu-h100", nothing, "pass", ("9 device(s)",)),
    ("cdi.spec", "rocky-a100", nothing, "pass", ("4 device(s)",)),
    ("cdi.spec", "ubuntu-h100", cdi_spec_missing, "warn", ("kgpu cdi generate --output /etc/cdi/nvidia.yaml",)),
    ("cdi.spec", "ubuntu-h100", cdi_library_gone, "fail",
     ("/usr/lib/x86_64-linux-gnu/libcuda.so.580.95.05 does not exist",)),
    ("cdi.spec", "ubuntu-h100", cdi_spec_garbage, "fail", ("does not parse",)),
    ("cdi.spec", "ubuntu-h100", cdi_spec_stale, "fail", ("GPU 1 (GPU-",)),
]


def _case_id(case: tuple[str, str, Mutation, str, tuple[str, ...]]) -> str:
    return f"{case[0]}-{case[1]}-{case[2].__name__}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_check_on_fixture_node(tmp_path: Path, case: tuple[str, str, Mutation, str, tuple[str, ...]]) -> None:
    check_id, node_name, mutate, status, words = case
    node = Node(tmp_path, node_name)
    mutate(node)
    finding = node.check(check_id)
    text = "\n".join((finding.title, finding.evidence, finding.fix))
    assert finding.status.value == status, text
    for word in words:
        assert word in text, f"{word!r} not in:\n{text}"
    if status in ("fail", "warn"):
        assert finding.fix, "a failing finding must say how to fix it"


def test_every_check_id_has_a_passing_and_a_failing_case() -> None:
    passing = {c[0] for c in CASES if c[3] == "pass"} | {"host.hypervisor", "disk.root-free"}
    failing = {c[0] for c in CASES if c[3] in ("fail", "warn")} | {"host.hypervisor", "disk.root-free"}
    assert set(CHECK_IDS) == passing == failing


def test_vm_with_a_consumer_card_gets_the_cpuid_hint(tmp_path: Path) -> None:
    node = Node(tmp_path, "rocky-a100")
    facts = node.facts()
    assert facts.gpu.inventory is not None
    geforce = tuple(dataclasses.replace(g, name="NVIDIA GeForce RTX 4090", brand="GeForce")
                    for g in facts.gpu.inventory.gpus)
    facts = dataclasses.replace(facts, gpu=dataclasses.replace(
        facts.gpu, inventory=dataclasses.replace(facts.gpu.inventory, gpus=geforce)))
    finding = run_on(facts, "host.hypervisor")
    assert finding.status.value == "warn"
    assert 'hypervisor.cpuid.v0 = "FALSE"' in finding.fix
    assert "GeForce RTX 4090" in finding.evidence


def test_hidden_hypervisor_is_recognised_from_dmi(tmp_path: Path) -> None:
    node = Node(tmp_path, "rocky-a100")
    node.replace("/proc/cpuinfo", " hypervisor ", " ")
    node.write("/sys/class/dmi/id/sys_vendor", "VMware, Inc.\n")
    node.write("/sys/class/dmi/id/product_name", "VMware7,1\n")
    finding = node.check("host.hypervisor")
    assert finding.status.value == "pass"
    assert "VM (vmware) with the hypervisor hidden" in finding.title


@pytest.mark.parametrize(
    ("free_gib", "driver_loaded", "status"),
    [(200, True, "pass"), (20, True, "warn"), (20, False, "warn")],
)
def test_root_free_space(tmp_path: Path, free_gib: int, driver_loaded: bool, status: str) -> None:
    node = Node(tmp_path, "ubuntu-h100")
    if not driver_loaded:
        driver_unloaded(node)
    facts = node.facts()
    space = {
        "/": DiskSpace("/", "/", free_gib * GIB, 500 * GIB),
        "/var/lib/containerd": DiskSpace("/var/lib/containerd", "/var/lib/containerd", 3000 * GIB, 3500 * GIB),
    }
    facts = dataclasses.replace(facts, host=dataclasses.replace(facts.host, disk=space))
    finding = run_on(facts, "disk.root-free")
    assert finding.status.value == status, finding.evidence
    assert f"/: {free_gib:.1f} GiB free" in finding.evidence
    assert "/var/lib/containerd (containerd images): 3000.0 GiB free" in finding.evidence


def test_runtime_data_root_low_on_space_warns(tmp_path: Path) -> None:
    facts = Node(tmp_path, "ubuntu-h100").facts()
    space = {
        "/": DiskSpace("/", "/", 400 * GIB, 500 * GIB),
        "/var/lib/containerd": DiskSpace("/var/lib/containerd", "/var/lib/containerd", 12 * GIB, 100 * GIB),
    }
    facts = dataclasses.replace(facts, host=dataclasses.replace(facts.host, disk=space))
    finding = run_on(facts, "disk.root-free")
    assert finding.status.value == "warn"
    assert "/var/lib/containerd" in finding.title


def test_a_crashing_check_becomes_a_finding_not_a_crash(tmp_path: Path) -> None:
    node = Node(tmp_path, "ubuntu-h100")
    facts = node.facts()
    broken = dataclasses.replace(facts, host=dataclasses.replace(facts.host, sysctl_live=None))  # type: ignore[arg-type]
    finding = run_on(broken, "k8s.sysctl")
    assert finding.status.value == "fail"
    assert "crashed" in finding.title


def test_bar_mapped_passes_when_a_hypervisor_makes_every_bar_64_bit(tmp_path: Path) -> None:
    """Firecracker (seen on the H100 device machine): BAR0, BAR1, BAR3 at resource indexes 0, 2, 4, each
    followed by its empty upper half. The framebuffer window is index 2, not 1, and is mapped."""
    from kgpu.doctor.checks.gpu import bar_mapped
    from kgpu.host.pci import PciDevice, parse_resource

    resource = "\n".join([
        "0x0000102002000000 0x0000102002ffffff 0x000000000014220c",
        "0x0000000000000000 0x0000000000000000 0x0000000000000000",
        "0x0000100000000000 0x0000101fffffffff 0x000000000014220c",
        "0x0000000000000000 0x0000000000000000 0x0000000000000000",
        "0x0000102000000000 0x0000102001ffffff 0x000000000014220c",
        "0x0000000000000000 0x0000000000000000 0x0000000000000000",
    ]) + "\n"
    dev = PciDevice("0000:00:06.0", 0x10DE, 0x2330, 0x030200, None, "nvidia", parse_resource(resource))
    assert dev.framebuffer_bar is not None and dev.framebuffer_bar.index == 2
    assert dev.missing_bar_slots() == ()

    from types import SimpleNamespace

    outcome = bar_mapped(SimpleNamespace(pci_gpus=[dev], gpus=[]))  # type: ignore[arg-type]
    text = str(outcome)
    assert "GPU BARs have addresses" in text
    assert "BAR1 128 GiB at 0x100000000000 (resource index 2)" in text


def test_efi_only_warns_when_a_bios_vm_still_mapped_every_bar() -> None:
    """The H100 device machine: Firecracker VM, no /sys/firmware/efi, framebuffer BAR at resource index 2."""
    from types import SimpleNamespace

    from kgpu.doctor.checks.platform import efi
    from kgpu.host.pci import PciDevice, parse_resource

    resource = "".join(
        f"{line}\n"
        for line in (
            "0x0000102002000000 0x0000102002ffffff 0x000000000014220c",
            "0x0000000000000000 0x0000000000000000 0x0000000000000000",
            "0x0000100000000000 0x0000101fffffffff 0x000000000014220c",
            "0x0000000000000000 0x0000000000000000 0x0000000000000000",
            "0x0000102000000000 0x0000102001ffffff 0x000000000014220c",
            "0x0000000000000000 0x0000000000000000 0x0000000000000000",
        )
    )
    dev = PciDevice("0000:00:06.0", 0x10DE, 0x2330, 0x030200, None, "nvidia", parse_resource(resource))
    virt = SimpleNamespace(hypervisor="unknown", evidence=["/proc/cpuinfo: 'hypervisor' CPU flag set"], known=True)
    facts = SimpleNamespace(host=SimpleNamespace(virtualization=virt, efi=False), pci_gpus=[dev])
    outcome = efi(facts)  # type: ignore[arg-type]
    assert outcome.status == "warn"
    assert "its BARs are mapped" in outcome.title
