"""Write the doctor's fixture node roots under tests/fixtures/nodes/ (run from the repository root).

Two healthy GPU nodes laid out exactly as Linux lays them out (procfs, sysfs, /etc, /dev):

- ubuntu-h100: Ubuntu 24.04 bare metal, 8x H100 SXM (the ``h100x8`` simulated node), containerd 1.7
  with nvidia-ctk's drop-in (config version 2), kubelet 1.31, systemd cgroups, CDI spec.
- rocky-a100: Rocky Linux 9.5 KVM guest with EFI, 2x A100 SXM4 80GB, GPU 0 in MIG mode (the ``a100-mig``
  simulated node), containerd 2.0 (config version 3), kubelet 1.32, chronyd, SELinux permissive.
- ubuntu-a30: a working Ubuntu 22.04 node with one A30 (the ``a30`` simulated node) as `nvidia-ctk runtime
  configure --set-as-default` leaves it: containerd 1.7 with nvidia as the default runtime in config.toml,
  kubelet 1.30, systemd cgroups, no /dev/char links (nvidia-ctk system create-dev-char-symlinks never ran),
  no CDI spec. GPU pods run on it today.
- firecracker-h100: the GPU machine kgpu's device scripts run on (scripts/device/doctor.sh): a container on a
  Firecracker VM with one H100 (tests/fixtures/simulated/firecracker-h100.yaml), the driver 580.159.04 under
  /usr/local/nvidia, NUMA node -1, every PCI BAR 64-bit (the framebuffer at resource index 2), no DMI, no EFI,
  br_netfilter not loaded, no kubelet and no container runtime.

Tests copy a tree and break one thing per failing case. Regenerate with:
    python scripts/gen_node_fixtures.py
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

OUT = Path("tests/fixtures/nodes")

SCRIPT = "#!/bin/sh\n# stand-in for the real binary in a fixture tree\n"


def write(root: Path, path: str, content: str = "", mode: int = 0o644) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)
    os.chmod(target, mode)


def program(root: Path, path: str, output: str = "") -> None:
    body = SCRIPT + (f"echo '{output}'\n" if output else "exit 0\n")
    write(root, path, body, 0o755)


def link(root: Path, path: str, target: str) -> None:
    where = root / path.lstrip("/")
    where.parent.mkdir(parents=True, exist_ok=True)
    if where.is_symlink() or where.exists():
        where.unlink()
    where.symlink_to(target)


def keep(root: Path, directory: str) -> None:
    write(root, f"{directory}/.keep")


def resource(bars: list[tuple[int, int, int]]) -> str:
    """A sysfs ``resource`` file: 6 BARs, ROM, 6 SR-IOV BARs (13 lines of start end flags)."""
    lines = [f"0x{s:016x} 0x{e:016x} 0x{f:016x}" for s, e, f in bars]
    lines += ["0x0000000000000000 0x0000000000000000 0x0000000000000000"] * (13 - len(bars))
    return "\n".join(lines) + "\n"


MEM32 = 0x0000000000040200  # non-prefetchable 32-bit memory, size-aligned
MEM64_PREF = 0x000000000014220C  # 64-bit prefetchable memory


def gpu_bars(bar0: int, bar1: int, bar1_size: int, bar3: int) -> str:
    return resource([
        (bar0, bar0 + 16 * 2**20 - 1, MEM32),
        (bar1, bar1 + bar1_size - 1, MEM64_PREF),
        (0, 0, 0),
        (bar3, bar3 + 32 * 2**20 - 1, MEM64_PREF),
        (0, 0, 0),
        (0, 0, 0),
    ])


def pci_device(root: Path, address: str, vendor: int, device: int, cls: int, numa: int, res: str,
               driver: str | None) -> None:
    base = f"/sys/bus/pci/devices/{address}"
    write(root, f"{base}/vendor", f"0x{vendor:04x}\n")
    write(root, f"{base}/device", f"0x{device:04x}\n")
    write(root, f"{base}/class", f"0x{cls:06x}\n")
    write(root, f"{base}/numa_node", f"{numa}\n")
    write(root, f"{base}/resource", res)
    if driver:
        link(root, f"{base}/driver", f"../../../../bus/pci/drivers/{driver}")


def proc_modules(entries: list[tuple[str, int, int, str]]) -> str:
    out = []
    for name, size, refs, used in entries:
        out.append(f"{name} {size} {refs} {used or '-'} Live 0x0000000000000000" + (" (POE)" if "nvidia" in name
                                                                                     else ""))
    return "\n".join(out) + "\n"


def proc_devices(uvm_major: int) -> str:
    return (
        "Character devices:\n  1 mem\n  4 /dev/vc/0\n  4 tty\n  5 /dev/tty\n  5 /dev/console\n 10 misc\n"
        " 13 input\n 29 fb\n 89 i2c\n128 ptm\n136 pts\n180 usb\n189 usb_device\n195 nvidia-frontend\n"
        f"226 drm\n{uvm_major} nvidia-uvm\n{uvm_major + 1} nvidia-nvlink\n{uvm_major + 3} nvidia-caps\n"
        "\nBlock devices:\n  7 loop\n  8 sd\n  9 md\n253 device-mapper\n259 blkext\n"
    )


def char_nodes(root: Path, minors: list[int], uvm_major: int) -> None:
    for m in minors:
        write(root, f"/dev/nvidia{m}")
        link(root, f"/dev/char/195:{m}", f"../nvidia{m}")
    for name, major, minor in (("nvidiactl", 195, 255), ("nvidia-modeset", 195, 254),
                               ("nvidia-uvm", uvm_major, 0), ("nvidia-uvm-tools", uvm_major, 1)):
        write(root, f"/dev/{name}")
        link(root, f"/dev/char/{major}:{minor}", f"../{name}")


def toolkit(root: Path, visible_all_hardened: bool) -> None:
    for name in ("nvidia-container-runtime", "nvidia-ctk", "nvidia-container-runtime-hook",
                 "nvidia-container-cli", "nvidia-cdi-hook"):
        program(root, f"/usr/bin/{name}")
    envvar = "false" if visible_all_hardened else "true"
    mounts = "true" if visible_all_hardened else "false"
    write(root, "/etc/nvidia-container-runtime/config.toml", f"""\
#accept-nvidia-visible-devices-as-volume-mounts = false
accept-nvidia-visible-devices-as-volume-mounts = {mounts}
accept-nvidia-visible-devices-envvar-when-unprivileged = {envvar}
disable-require = false
supported-driver-capabilities = "compat32,compute,display,graphics,ngx,utility,video"

[nvidia-container-cli]
environment = []
ldconfig = "@/sbin/ldconfig.real"
load-kmods = true
no-cgroups = false

[nvidia-container-runtime]
log-level = "info"
mode = "auto"
runtimes = ["runc", "crun"]

[nvidia-container-runtime.modes.cdi]
annotation-prefixes = ["cdi.k8s.io/"]
default-kind = "nvidia.com/gpu"
spec-dirs = ["/etc/cdi", "/var/run/cdi"]

[nvidia-container-runtime-hook]
path = "nvidia-container-runtime-hook"
skip-mode-detection = false
""")


def cdi_spec(gpu_minors: list[int], libdir: str, driver: str, extra_devices: list[str]) -> str:
    devices = []
    for m in gpu_minors:
        devices.append(f"- name: \"{m}\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia{m}\n")
    for name in extra_devices:
        devices.append(name)
    devices.append("- name: all\n  containerEdits:\n    deviceNodes:\n"
                   + "".join(f"    - path: /dev/nvidia{m}\n" for m in gpu_minors))
    return f"""\
---
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
{"".join(devices)}containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  deviceNodes:
  - path: /dev/nvidiactl
  - path: /dev/nvidia-uvm
  - path: /dev/nvidia-uvm-tools
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
    args:
    - nvidia-cdi-hook
    - update-ldcache
    - --folder
    - {libdir}
  mounts:
  - hostPath: {libdir}/libcuda.so.{driver}
    containerPath: {libdir}/libcuda.so.{driver}
    options: [ro, nosuid, nodev, bind]
  - hostPath: {libdir}/libnvidia-ml.so.{driver}
    containerPath: {libdir}/libnvidia-ml.so.{driver}
    options: [ro, nosuid, nodev, bind]
  - hostPath: /usr/bin/nvidia-smi
    containerPath: /usr/bin/nvidia-smi
    options: [ro, nosuid, nodev, bind]
"""


def mig_caps(root: Path, gpus: int, instances: dict[int, list[tuple[int, int]]]) -> None:
    """``/proc/driver/nvidia-caps/mig-minors`` as the driver numbers it (config, monitor, then per GPU 15 GPU
    instances of 1 access + 8 compute-instance minors), and the ``/dev/nvidia-caps`` nodes of the MIG devices
    that exist (what nvidia-smi mig -cgi/-cci leaves behind)."""
    lines = ["config 1", "monitor 2"]
    for gpu in range(gpus):
        for gi in range(15):
            base = 3 + gpu * 135 + gi * 9
            lines.append(f"gpu{gpu}/gi{gi}/access {base}")
            lines += [f"gpu{gpu}/gi{gi}/ci{ci}/access {base + 1 + ci}" for ci in range(8)]
    write(root, "/proc/driver/nvidia-caps/mig-minors", "\n".join(lines) + "\n")
    for minor in (1, 2):
        write(root, f"/dev/nvidia-caps/nvidia-cap{minor}")
    for gpu, pairs in instances.items():
        for gi, ci in pairs:
            base = 3 + gpu * 135 + gi * 9
            write(root, f"/dev/nvidia-caps/nvidia-cap{base}")
            write(root, f"/dev/nvidia-caps/nvidia-cap{base + 1 + ci}")


def driver_libraries(root: Path, libdir: str) -> None:
    """The driver's libraries with their soname links, as the driver installer lays them out."""
    for lib in ("libcuda", "libnvidia-ml"):
        write(root, f"{libdir}/{lib}.so.{DRIVER}")
        link(root, f"{libdir}/{lib}.so.1", f"{lib}.so.{DRIVER}")


def systemd_unit(root: Path, unit: str, wanted_by: str | None, unit_dir: str = "/usr/lib/systemd/system") -> None:
    write(root, f"{unit_dir}/{unit}", f"[Unit]\nDescription={unit}\n\n[Service]\nExecStart=/usr/sbin/{unit}\n\n"
          "[Install]\nWantedBy=multi-user.target\n")
    if wanted_by:
        link(root, f"/etc/systemd/system/{wanted_by}.wants/{unit}", f"{unit_dir}/{unit}")


DRIVER = "580.95.05"
NVRM_OPEN = (f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {DRIVER}  Release Build  "
             "(dvs-builder@U22-I3-AE18-23-3)  Tue Sep 23 09:55:41 UTC 2025\n")


def common_k8s(root: Path, kubelet_version: str, endpoint: str) -> None:
    write(root, "/proc/sys/net/ipv4/ip_forward", "1\n")
    write(root, "/proc/sys/net/bridge/bridge-nf-call-iptables", "1\n")
    write(root, "/proc/sys/net/bridge/bridge-nf-call-ip6tables", "1\n")
    write(root, "/proc/swaps", "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
    write(root, "/etc/modules-load.d/k8s.conf", "overlay\nbr_netfilter\n")
    write(root, "/etc/sysctl.d/k8s.conf", "net.bridge.bridge-nf-call-iptables  = 1\n"
          "net.bridge.bridge-nf-call-ip6tables = 1\nnet.ipv4.ip_forward                 = 1\n")
    write(root, "/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n")
    keep(root, "/run/systemd/system")
    program(root, "/usr/bin/kubelet", f"Kubernetes {kubelet_version}")
    write(root, "/var/lib/kubelet/config.yaml", """\
apiVersion: kubelet.config.k8s.io/v1beta1
authentication:
  anonymous:
    enabled: false
  webhook:
    cacheTTL: 0s
    enabled: true
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
authorization:
  mode: Webhook
cgroupDriver: systemd
clusterDNS:
- 10.96.0.10
clusterDomain: cluster.local
containerRuntimeEndpoint: ""
kind: KubeletConfiguration
rotateCertificates: true
staticPodPath: /etc/kubernetes/manifests
""")
    write(root, "/var/lib/kubelet/kubeadm-flags.env",
          f'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint={endpoint} '
          '--pod-infra-container-image=registry.k8s.io/pause:3.10"\n')
    write(root, "/var/lib/kubelet/device-plugins/kubelet.sock")


def ubuntu_h100(root: Path) -> None:
    release = "6.8.0-51-generic"
    write(root, "/etc/os-release", """\
PRETTY_NAME="Ubuntu 24.04.1 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.1 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
HOME_URL="https://www.ubuntu.com/"
SUPPORT_URL="https://help.ubuntu.com/"
BUG_REPORT_URL="https://bugs.launchpad.net/ubuntu/"
PRIVACY_POLICY_URL="https://www.ubuntu.com/legal/terms-and-policies/privacy-policy"
UBUNTU_CODENAME=noble
LOGO=ubuntu-logo
""")
    write(root, "/proc/sys/kernel/osrelease", release + "\n")
    write(root, "/proc/cmdline", f"BOOT_IMAGE=/vmlinuz-{release} root=UUID=0b7c2a4e-3f1d-4f5e-9c62-1d1b1f3c2a10 "
          "ro quiet splash vt.handoff=7\n")
    write(root, "/proc/cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\n"
          "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep "
          "mtrr pge mca cmov pat pse36 clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp "
          "lm constant_tsc art arch_perfmon pebs bts rep_good nopl xtopology nonstop_tsc cpuid aperfmperf "
          "tsc_known_freq pni pclmulqdq dtes64 monitor ds_cpl vmx smx est tm2 ssse3 sdbg fma cx16 xtpr pdcm "
          "pcid dca sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm "
          "abm 3dnowprefetch cpuid_fault epb cat_l3 cat_l2 cdp_l3 avx512f avx512dq amx_bf16 amx_tile amx_int8\n")
    write(root, "/proc/modules", proc_modules([
        ("nvidia_uvm", 2084864, 0, ""),
        ("nvidia_drm", 135168, 0, ""),
        ("nvidia_modeset", 1638400, 1, "nvidia_drm,"),
        ("nvidia", 104071168, 2, "nvidia_uvm,nvidia_modeset,"),
        ("br_netfilter", 32768, 0, ""),
        ("bridge", 421888, 1, "br_netfilter,"),
        ("stp", 12288, 1, "bridge,"),
        ("llc", 16384, 2, "bridge,stp,"),
        ("overlay", 212992, 12, ""),
        ("drm_kms_helper", 270336, 1, "nvidia_drm,"),
        ("drm", 761856, 4, "nvidia_drm,drm_kms_helper,"),
    ]))
    write(root, "/proc/driver/nvidia/version", NVRM_OPEN + "GCC version:  gcc version 12.3.0 "
          "(Ubuntu 12.3.0-1ubuntu1~22.04)\n")
    write(root, "/proc/devices", proc_devices(508))
    write(root, "/proc/mounts", """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
udev /dev devtmpfs rw,nosuid,relatime,size=1056519148k,nr_inodes=264129787,mode=755,inode64 0 0
/dev/nvme0n1p2 / ext4 rw,relatime 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot 0 0
efivarfs /sys/firmware/efi/efivars efivarfs rw,nosuid,nodev,noexec,relatime 0 0
/dev/nvme0n1p1 /boot/efi vfat rw,relatime,fmask=0077,dmask=0077,codepage=437,iocharset=iso8859-1 0 0
/dev/nvme1n1 /var/lib/containerd xfs rw,relatime,attr2,inode64,logbufs=8,logbsize=32k,noquota 0 0
tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime,size=211303832k,mode=755,inode64 0 0
""")
    write(root, f"/lib/modules/{release}/modules.dep", (
        "kernel/fs/overlayfs/overlay.ko.zst:\n"
        "kernel/net/bridge/br_netfilter.ko.zst: kernel/net/bridge/bridge.ko.zst kernel/net/802/stp.ko.zst "
        "kernel/net/llc/llc.ko.zst\n"
        "kernel/net/bridge/bridge.ko.zst: kernel/net/802/stp.ko.zst kernel/net/llc/llc.ko.zst\n"
        "kernel/drivers/gpu/drm/nouveau/nouveau.ko.zst: kernel/drivers/gpu/drm/drm_kms_helper.ko.zst "
        "kernel/drivers/gpu/drm/drm.ko.zst\n"
    ) + """\
updates/dkms/nvidia.ko.zst:
updates/dkms/nvidia-uvm.ko.zst: updates/dkms/nvidia.ko.zst
updates/dkms/nvidia-modeset.ko.zst: updates/dkms/nvidia.ko.zst
updates/dkms/nvidia-drm.ko.zst: updates/dkms/nvidia-modeset.ko.zst updates/dkms/nvidia.ko.zst
""")
    write(root, f"/lib/modules/{release}/modules.builtin", "kernel/drivers/char/mem.ko\nkernel/fs/ext4/ext4.ko\n")
    # What Ubuntu's nvidia-kernel-common package installs.
    write(root, "/usr/lib/modprobe.d/nvidia-graphics-drivers.conf",
          "blacklist nouveau\nblacklist lbm-nouveau\nalias nouveau off\nalias lbm-nouveau off\n")
    write(root, "/etc/modprobe.d/blacklist-framebuffer.conf", "blacklist aty128fb\nblacklist atyfb\n")
    write(root, "/etc/sysctl.conf", "#\n# /etc/sysctl.conf - Configuration file for setting system variables\n"
          "# Uncomment the next line to enable packet forwarding for IPv4\n#net.ipv4.ip_forward=1\n")
    link(root, "/etc/sysctl.d/99-sysctl.conf", "../sysctl.conf")
    write(root, "/etc/fstab", "# /etc/fstab: static file system information.\n"
          "UUID=0b7c2a4e-3f1d-4f5e-9c62-1d1b1f3c2a10 /               ext4    errors=remount-ro 0       1\n"
          "UUID=5C1A-2B3F  /boot/efi       vfat    umask=0077      0       1\n"
          "/dev/nvme1n1    /var/lib/containerd xfs defaults        0       2\n"
          "#/swap.img\tnone\tswap\tsw\t0\t0\n")
    systemd_unit(root, "systemd-timesyncd.service", "sysinit.target")
    keep(root, "/sys/firmware/efi/efivars")
    write(root, "/sys/class/dmi/id/sys_vendor", "Supermicro\n")
    write(root, "/sys/class/dmi/id/product_name", "SYS-821GE-TNHR\n")
    buses = ["18", "2a", "3a", "5d", "9a", "ab", "ba", "db"]
    for i, bus in enumerate(buses):
        base = 0x2000_0000_0000 + i * 0x40_0000_0000
        pci_device(root, f"0000:{bus}:00.0", 0x10DE, 0x2330, 0x030200, 0 if i < 4 else 1,
                   gpu_bars(0xA000_0000 + i * 0x0200_0000, base, 128 * 2**30, base + 0x20_0000_0000), "nvidia")
    pci_device(root, "0000:00:00.0", 0x8086, 0x09A2, 0x060000, 0, resource([]), None)
    pci_device(root, "0000:05:00.0", 0x10DE, 0x22A3, 0x068000, 0,
               resource([(0xB000_0000, 0xB1FF_FFFF, MEM32)]), "nvidia-nvswitch")
    char_nodes(root, list(range(8)), 508)
    toolkit(root, visible_all_hardened=True)
    program(root, "/usr/bin/containerd")
    write(root, "/etc/containerd/config.toml", """\
version = 2
imports = ["/etc/containerd/conf.d/*.toml"]
root = "/var/lib/containerd"
state = "/run/containerd"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.10"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            SystemdCgroup = true
""")
    # nvidia-ctk >= 1.18 writes a drop-in carrying the whole CRI plugin section.
    write(root, "/etc/containerd/conf.d/99-nvidia.toml", """\
version = 2

[plugins]

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.10"

    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "nvidia"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
          privileged_without_host_devices = false
          runtime_engine = ""
          runtime_root = ""
          runtime_type = "io.containerd.runc.v2"

          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]
            BinaryName = "/usr/bin/nvidia-container-runtime"
            SystemdCgroup = true

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"

          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            SystemdCgroup = true
""")
    common_k8s(root, "v1.31.4", "unix:///var/run/containerd/containerd.sock")
    libdir = "/usr/lib/x86_64-linux-gnu"
    driver_libraries(root, libdir)
    program(root, "/usr/bin/nvidia-smi")
    write(root, "/etc/cdi/nvidia.yaml", cdi_spec(list(range(8)), libdir, DRIVER, []))
    write(root, "/usr/local/cuda-12.8/version.json", """\
{
   "cuda" : {
      "name" : "CUDA SDK",
      "version" : "12.8.1"
   },
   "cuda_cccl" : {
      "name" : "CUDA C++ Core Compute Libraries",
      "version" : "12.8.90"
   }
}
""")
    link(root, "/usr/local/cuda", "cuda-12.8")


def rocky_a100(root: Path) -> None:
    release = "5.14.0-503.14.1.el9_5.x86_64"
    write(root, "/etc/os-release", """\
NAME="Rocky Linux"
VERSION="9.5 (Blue Onyx)"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.5"
PLATFORM_ID="platform:el9"
PRETTY_NAME="Rocky Linux 9.5 (Blue Onyx)"
ANSI_COLOR="0;32"
LOGO="fedora-logo-icon"
CPE_NAME="cpe:/o:rocky:rocky:9::baseos"
HOME_URL="https://rockylinux.org/"
BUG_REPORT_URL="https://bugs.rockylinux.org/"
REDHAT_SUPPORT_PRODUCT="Rocky Linux"
REDHAT_SUPPORT_PRODUCT_VERSION="9.5"
""")
    write(root, "/proc/sys/kernel/osrelease", release + "\n")
    write(root, "/proc/cmdline", f"BOOT_IMAGE=(hd0,gpt2)/vmlinuz-{release} root=/dev/mapper/rl-root ro "
          "crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/rl-swap rd.lvm.lv=rl/root "
          "rd.lvm.lv=rl/swap rd.driver.blacklist=nouveau modprobe.blacklist=nouveau\n")
    write(root, "/proc/cpuinfo", "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n"
          "model name\t: AMD EPYC 7763 64-Core Processor\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep "
          "mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm "
          "rep_good nopl cpuid extd_apicid tsc_known_freq pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 x2apic "
          "movbe popcnt aes xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy svm cr8_legacy abm sse4a "
          "misalignsse 3dnowprefetch osvw topoext invpcid_single ssbd ibrs ibpb stibp vmmcall fsgsbase bmi1 "
          "avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves\n")
    write(root, "/proc/modules", proc_modules([
        ("nvidia_uvm", 1982464, 2, ""),
        ("nvidia", 104116224, 10, "nvidia_uvm,"),
        ("br_netfilter", 36864, 0, ""),
        ("bridge", 417792, 1, "br_netfilter,"),
        ("stp", 16384, 1, "bridge,"),
        ("llc", 16384, 2, "bridge,stp,"),
        ("overlay", 229376, 8, ""),
        ("xfs", 2404352, 2, ""),
    ]))
    write(root, "/proc/driver/nvidia/version", NVRM_OPEN + "GCC version:  gcc version 11.5.0 20240719 "
          "(Red Hat 11.5.0-2) (GCC)\n")
    write(root, "/proc/devices", proc_devices(508))
    write(root, "/proc/mounts", """\
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
sysfs /sys sysfs rw,seclabel,nosuid,nodev,noexec,relatime 0 0
devtmpfs /dev devtmpfs rw,seclabel,nosuid,size=4096k,nr_inodes=131072,mode=755,inode64 0 0
/dev/mapper/rl-root / xfs rw,seclabel,relatime,attr2,inode64,logbufs=8,logbsize=32k,noquota 0 0
/dev/vda2 /boot xfs rw,seclabel,relatime,attr2,inode64,logbufs=8,logbsize=32k,noquota 0 0
/dev/vda1 /boot/efi vfat rw,relatime,fmask=0077,dmask=0077,codepage=437,iocharset=ascii,shortname=winnt 0 0
""")
    write(root, f"/lib/modules/{release}/modules.dep", """\
kernel/fs/overlayfs/overlay.ko.xz:
kernel/net/bridge/br_netfilter.ko.xz: kernel/net/bridge/bridge.ko.xz kernel/net/802/stp.ko.xz kernel/net/llc/llc.ko.xz
kernel/drivers/gpu/drm/nouveau/nouveau.ko.xz: kernel/drivers/gpu/drm/display/drm_display_helper.ko.xz
extra/nvidia.ko.xz:
extra/nvidia-uvm.ko.xz: extra/nvidia.ko.xz
""")
    write(root, f"/lib/modules/{release}/modules.builtin", "kernel/drivers/char/mem.ko\n")
    write(root, "/etc/modprobe.d/blacklist-nouveau.conf", "blacklist nouveau\noptions nouveau modeset=0\n")
    write(root, "/etc/sysctl.conf", "# sysctl settings are defined through files in\n"
          "# /usr/lib/sysctl.d/, /run/sysctl.d/, and /etc/sysctl.d/.\n")
    write(root, "/usr/lib/sysctl.d/50-default.conf", "kernel.sysrq = 16\nkernel.core_uses_pid = 1\n"
          "net.ipv4.conf.default.rp_filter = 2\n-net.ipv4.conf.all.rp_filter = 2\n")
    write(root, "/etc/fstab", "#\n# /etc/fstab\n# Created by anaconda on Mon Nov 18 10:12:31 2024\n#\n"
          "/dev/mapper/rl-root     /                       xfs     defaults        0 0\n"
          "UUID=6b1e3c1d-2f0e-4c55-9a3b-0d1f3e2a4b5c /boot   xfs     defaults        0 0\n"
          "UUID=7A3B-1C2D          /boot/efi               vfat    umask=0077,shortname=winnt 0 2\n"
          "#/dev/mapper/rl-swap     none                    swap    defaults        0 0\n")
    write(root, "/sys/fs/selinux/enforce", "0")
    write(root, "/etc/selinux/config", "# This file controls the state of SELinux on the system.\n"
          "SELINUX=permissive\nSELINUXTYPE=targeted\n")
    systemd_unit(root, "chronyd.service", "multi-user.target")
    systemd_unit(root, "firewalld.service", None)
    keep(root, "/sys/firmware/efi/efivars")
    write(root, "/sys/class/dmi/id/sys_vendor", "QEMU\n")
    write(root, "/sys/class/dmi/id/product_name", "Standard PC (Q35 + ICH9, 2009)\n")
    for i, bus in enumerate(["07", "0f"]):
        base = 0x38_0000_0000_00 + i * 0x40_0000_0000
        pci_device(root, f"0000:{bus}:00.0", 0x10DE, 0x20B2, 0x030200, 0,
                   gpu_bars(0xC000_0000 + i * 0x0200_0000, base, 128 * 2**30, base + 0x20_0000_0000), "nvidia")
    pci_device(root, "0000:00:01.0", 0x1AF4, 0x1050, 0x030000, -1,
               resource([(0xFC00_0000, 0xFC7F_FFFF, MEM64_PREF)]), "virtio-pci")
    char_nodes(root, [0, 1], 508)
    mig_caps(root, gpus=2, instances={0: [(2, 0), (3, 0), (9, 0), (10, 0)]})
    toolkit(root, visible_all_hardened=False)
    program(root, "/usr/bin/containerd")
    write(root, "/etc/containerd/config.toml", """\
version = 3
root = "/var/lib/containerd"
state = "/run/containerd"

[plugins]
  [plugins."io.containerd.cri.v1.images"]
    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = "registry.k8s.io/pause:3.10"

  [plugins."io.containerd.cri.v1.runtime"]
    enable_cdi = true
    cdi_spec_dirs = ["/etc/cdi", "/var/run/cdi"]
    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes]
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
            SystemdCgroup = true
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nvidia]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nvidia.options]
            BinaryName = "/usr/bin/nvidia-container-runtime"
            SystemdCgroup = true
""")
    common_k8s(root, "v1.32.1", "unix:///run/containerd/containerd.sock")
    libdir = "/usr/lib64"
    driver_libraries(root, libdir)
    program(root, "/usr/bin/nvidia-smi")
    mig = ("- name: \"0:0\"\n  containerEdits:\n    deviceNodes:\n    - path: /dev/nvidia0\n"
           "    - path: /dev/nvidia-caps\n")
    write(root, "/etc/cdi/nvidia.yaml", cdi_spec([0, 1], libdir, DRIVER, [mig]))
    write(root, "/usr/local/cuda-13.0/version.json",
          '{\n   "cuda" : {\n      "name" : "CUDA SDK",\n      "version" : "13.0.2"\n   }\n}\n')


def ubuntu_a30(root: Path) -> None:
    release = "5.15.0-126-generic"
    write(root, "/etc/os-release", """\
PRETTY_NAME="Ubuntu 22.04.5 LTS"
NAME="Ubuntu"
VERSION_ID="22.04"
VERSION="22.04.5 LTS (Jammy Jellyfish)"
VERSION_CODENAME=jammy
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=jammy
""")
    write(root, "/proc/sys/kernel/osrelease", release + "\n")
    write(root, "/proc/cmdline", f"BOOT_IMAGE=/vmlinuz-{release} root=/dev/mapper/ubuntu--vg-ubuntu--lv ro\n")
    write(root, "/proc/cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold "
          "6338 CPU @ 2.00GHz\nflags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 "
          "clflush dts acpi mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc vmx smx est "
          "avx2 avx512f\n")
    write(root, "/proc/modules", proc_modules([
        ("nvidia_uvm", 1576960, 0, ""),
        ("nvidia", 56795136, 1, "nvidia_uvm,"),
        ("br_netfilter", 32768, 0, ""),
        ("bridge", 307200, 1, "br_netfilter,"),
        ("stp", 16384, 1, "bridge,"),
        ("llc", 16384, 2, "bridge,stp,"),
        ("overlay", 151552, 9, ""),
    ]))
    write(root, "/proc/driver/nvidia/version", NVRM_OPEN + "GCC version:  gcc version 11.4.0 "
          "(Ubuntu 11.4.0-1ubuntu1~22.04)\n")
    write(root, "/proc/devices", proc_devices(511))
    write(root, "/proc/mounts", """\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
udev /dev devtmpfs rw,nosuid,relatime,size=131810504k,nr_inodes=32952626,mode=755,inode64 0 0
/dev/mapper/ubuntu--vg-ubuntu--lv / ext4 rw,relatime 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot 0 0
efivarfs /sys/firmware/efi/efivars efivarfs rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /run tmpfs rw,nosuid,nodev,noexec,relatime,size=26362104k,mode=755,inode64 0 0
""")
    write(root, f"/lib/modules/{release}/modules.dep", (
        "kernel/fs/overlayfs/overlay.ko:\n"
        "kernel/net/bridge/br_netfilter.ko: kernel/net/bridge/bridge.ko kernel/net/802/stp.ko kernel/net/llc/llc.ko\n"
        "kernel/drivers/gpu/drm/nouveau/nouveau.ko: kernel/drivers/gpu/drm/drm_kms_helper.ko\n"
        "updates/dkms/nvidia.ko:\nupdates/dkms/nvidia-uvm.ko: updates/dkms/nvidia.ko\n"
    ))
    write(root, f"/lib/modules/{release}/modules.builtin", "kernel/drivers/char/mem.ko\nkernel/fs/ext4/ext4.ko\n")
    write(root, "/usr/lib/modprobe.d/nvidia-graphics-drivers.conf",
          "blacklist nouveau\nblacklist lbm-nouveau\nalias nouveau off\nalias lbm-nouveau off\n")
    write(root, "/etc/fstab", "# /etc/fstab: static file system information.\n"
          "/dev/disk/by-id/dm-uuid-LVM-Zm9vYmFy / ext4 defaults 0 1\n"
          "/dev/disk/by-uuid/3F1E-2A4B /boot/efi vfat defaults 0 1\n")
    systemd_unit(root, "systemd-timesyncd.service", "sysinit.target")
    keep(root, "/sys/firmware/efi/efivars")
    write(root, "/sys/class/dmi/id/sys_vendor", "Dell Inc.\n")
    write(root, "/sys/class/dmi/id/product_name", "PowerEdge R750\n")
    pci_device(root, "0000:3b:00.0", 0x10DE, 0x20B7, 0x030200, 0,
               gpu_bars(0xAB00_0000, 0x2100_0000_0000, 32 * 2**30, 0x2108_0000_0000), "nvidia")
    pci_device(root, "0000:00:00.0", 0x8086, 0x09A2, 0x060000, 0, resource([]), None)
    # the device nodes nvidia-modprobe created, but no /dev/char links to them
    for name in ("nvidia0", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"):
        write(root, f"/dev/{name}")
    toolkit(root, visible_all_hardened=False)
    program(root, "/usr/bin/containerd")
    # `nvidia-ctk runtime configure --runtime=containerd --set-as-default` on toolkit 1.17: the main file
    write(root, "/etc/containerd/config.toml", """\
disabled_plugins = []
imports = []
oom_score = 0
plugin_dir = ""
required_plugins = []
root = "/var/lib/containerd"
state = "/run/containerd"
temp = ""
version = 2

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins]

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.9"

    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "nvidia"
      snapshotter = "overlayfs"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
          privileged_without_host_devices = false
          runtime_engine = ""
          runtime_root = ""
          runtime_type = "io.containerd.runc.v2"

          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]
            BinaryName = "/usr/bin/nvidia-container-runtime"
            SystemdCgroup = true

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"

          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            SystemdCgroup = true
""")
    common_k8s(root, "v1.30.6", "unix:///run/containerd/containerd.sock")
    driver_libraries(root, "/usr/lib/x86_64-linux-gnu")
    program(root, "/usr/bin/nvidia-smi")


FIRECRACKER_DRIVER = "580.159.04"


def firecracker_h100(root: Path) -> None:
    write(root, "/.dockerenv")
    write(root, "/etc/os-release", """\
PRETTY_NAME="Ubuntu 24.04.2 LTS"
NAME="Ubuntu"
VERSION_ID="24.04"
VERSION="24.04.2 LTS (Noble Numbat)"
VERSION_CODENAME=noble
ID=ubuntu
ID_LIKE=debian
UBUNTU_CODENAME=noble
""")
    release = "6.1.128"
    write(root, "/proc/sys/kernel/osrelease", release + "\n")
    write(root, "/proc/cmdline", "console=ttyS0 reboot=k panic=1 pci=realloc init=/sbin/overlay-init\n")
    write(root, "/proc/cpuinfo", "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n"
          "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
          "sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm rep_good nopl cpuid extd_apicid "
          "tsc_known_freq pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c "
          "rdrand hypervisor lahf_lm cmp_legacy abm sse4a misalignsse 3dnowprefetch avx2\n")
    write(root, "/proc/modules", proc_modules([
        ("nvidia_uvm", 1925120, 0, ""),
        ("nvidia", 11378688, 1, "nvidia_uvm,"),
        ("overlay", 155648, 1, ""),
    ]))
    write(root, "/proc/driver/nvidia/version",
          f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {FIRECRACKER_DRIVER}  Release Build  "
          "(dvs-builder@U22-I3-B17-02-5)  Thu Jan 15 00:00:00 UTC 2026\nGCC version:  gcc version 12.2.0\n")
    write(root, "/proc/devices", proc_devices(235))
    write(root, "/proc/mounts", """\
overlay / overlay rw,relatime,lowerdir=/rom,upperdir=/overlay/root,workdir=/overlay/work 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
devtmpfs /dev devtmpfs rw,nosuid,size=65536k,nr_inodes=16384,mode=755 0 0
""")
    write(root, "/proc/swaps", "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
    write(root, "/proc/sys/net/ipv4/ip_forward", "0\n")
    write(root, "/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n")
    # Firecracker makes every BAR 64-bit: BAR0, BAR1 (framebuffer), BAR3 at resource indexes 0, 2, 4
    write(root, "/sys/bus/pci/devices/0000:00:06.0/resource", "".join(f"{line}\n" for line in (
        "0x0000102002000000 0x0000102002ffffff 0x000000000014220c",
        "0x0000000000000000 0x0000000000000000 0x0000000000000000",
        "0x0000100000000000 0x0000101fffffffff 0x000000000014220c",
        "0x0000000000000000 0x0000000000000000 0x0000000000000000",
        "0x0000102000000000 0x0000102001ffffff 0x000000000014220c",
        "0x0000000000000000 0x0000000000000000 0x0000000000000000",
    )))
    base = "/sys/bus/pci/devices/0000:00:06.0"
    write(root, f"{base}/vendor", "0x10de\n")
    write(root, f"{base}/device", "0x2330\n")
    write(root, f"{base}/class", "0x030200\n")
    write(root, f"{base}/numa_node", "-1\n")
    link(root, f"{base}/driver", "../../../../bus/pci/drivers/nvidia")
    for name in ("nvidia0", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"):
        write(root, f"/dev/{name}")
    nv = "/usr/local/nvidia"
    for lib in ("libcuda", "libnvidia-ml", "libnvidia-ptxjitcompiler", "libnvidia-nvvm"):
        write(root, f"{nv}/lib64/{lib}.so.{FIRECRACKER_DRIVER}")
        link(root, f"{nv}/lib64/{lib}.so.1", f"{lib}.so.{FIRECRACKER_DRIVER}")
    for binary in ("nvidia-smi", "nvidia-debugdump", "nvidia-cuda-mps-control", "nvidia-cuda-mps-server"):
        program(root, f"{nv}/bin/{binary}")


def main() -> None:
    for name, build in (("ubuntu-h100", ubuntu_h100), ("rocky-a100", rocky_a100), ("ubuntu-a30", ubuntu_a30),
                        ("firecracker-h100", firecracker_h100)):
        root = OUT / name
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        build(root)
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                mode = path.stat().st_mode
                os.chmod(path, mode | stat.S_IRUSR)
        print(f"wrote {root}")


if __name__ == "__main__":
    main()
