"""Host fact readers on the exact file formats Linux and the tools write."""

from __future__ import annotations

from pathlib import Path

import pytest
from doctor_nodes import NODES

from kgpu.host.containerd import read_containerd
from kgpu.host.facts import read_host_facts
from kgpu.host.kubelet import read_kubelet
from kgpu.host.modules import read_blacklist, read_loaded_modules, read_persisted_modules
from kgpu.host.osrelease import parse_os_release
from kgpu.host.pci import parse_resource
from kgpu.host.sysctl import read_persisted_sysctls
from kgpu.host.systemd import unit_state


def put(root: Path, path: str, text: str) -> None:
    p = root / path.lstrip("/")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def test_proc_modules_lines_keep_their_users(tmp_path: Path) -> None:
    put(tmp_path, "/proc/modules",
        "nvidia 104071168 2 nvidia_uvm,nvidia_modeset, Live 0xffffffffc0a00000 (POE)\n"
        "overlay 212992 12 - Live 0xffffffffc0900000\n")
    mods = read_loaded_modules(tmp_path)
    assert mods is not None
    assert mods["nvidia"].used_by == ("nvidia_uvm", "nvidia_modeset")
    assert mods["nvidia"].refcount == 2 and mods["overlay"].used_by == ()
    assert read_loaded_modules(tmp_path / "nowhere") is None


def test_an_unassigned_bar_keeps_its_size_and_is_not_assigned() -> None:
    bars = parse_resource(
        "0x00000000fa000000 0x00000000faffffff 0x0000000000040200\n"
        "0x0000000000000000 0x0000001fffffffff 0x000000002014220c\n"
        "0x0000000000000000 0x0000000000000000 0x0000000000000000\n"
    )
    assert bars[0].size == 16 * 2**20 and bars[0].assigned
    assert bars[1].size == 128 * 2**30 and not bars[1].assigned and bars[1].is_64bit
    assert bars[2].size == 0 and not bars[2].assigned


@pytest.mark.parametrize(
    ("text", "family"),
    [
        ('ID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n', "debian"),
        ("ID=debian\nVERSION_ID=\"12\"\n", "debian"),
        ('ID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.5"\n', "rhel"),
        ('ID="rhel"\nID_LIKE="fedora"\nVERSION_ID="9.4"\n', "rhel"),
        ('ID="amzn"\nID_LIKE="fedora"\nVERSION_ID="2023"\n', "rhel"),
        ('ID="sles"\nID_LIKE="suse"\nVERSION_ID="15.6"\n', "suse"),
        ('ID="opensuse-leap"\nID_LIKE="suse opensuse"\nVERSION_ID="15.6"\n', "suse"),
        ('ID=arch\n', "unknown"),
    ],
)
def test_distribution_family_from_os_release(text: str, family: str) -> None:
    assert parse_os_release(text).family == family


def test_sysctl_files_apply_in_name_order_and_etc_hides_the_vendor_file(tmp_path: Path) -> None:
    put(tmp_path, "/usr/lib/sysctl.d/50-default.conf", "net.ipv4.ip_forward = 0\n")
    put(tmp_path, "/usr/lib/sysctl.d/60-vendor.conf", "net/bridge/bridge-nf-call-iptables=0\n")
    put(tmp_path, "/etc/sysctl.d/60-vendor.conf", "; hides the vendor file of the same name\n")
    put(tmp_path, "/etc/sysctl.d/70-k8s.conf", "net.ipv4.ip_forward = 1\n-net.bridge.bridge-nf-call-ip6tables = 1\n")
    put(tmp_path, "/etc/sysctl.conf", "# net.ipv4.ip_forward=0\n")
    got = read_persisted_sysctls(tmp_path)
    assert got["net.ipv4.ip_forward"].value == "1"
    assert got["net.ipv4.ip_forward"].source == "/etc/sysctl.d/70-k8s.conf:1"
    assert "net.bridge.bridge-nf-call-iptables" not in got
    assert got["net.bridge.bridge-nf-call-ip6tables"].value == "1"


def test_etc_conf_linked_to_dev_null_masks_the_vendor_blacklist(tmp_path: Path) -> None:
    put(tmp_path, "/usr/lib/modprobe.d/blacklist-nouveau.conf", "blacklist nouveau\n")
    (tmp_path / "etc/modprobe.d").mkdir(parents=True)
    (tmp_path / "etc/modprobe.d/blacklist-nouveau.conf").symlink_to("/dev/null")
    assert "nouveau" not in read_blacklist(tmp_path)
    put(tmp_path, "/etc/modprobe.d/nvidia.conf", "install nouveau /bin/false\n")
    assert read_blacklist(tmp_path)["nouveau"].source == "/etc/modprobe.d/nvidia.conf:1"


def test_modules_load_d_and_debian_etc_modules(tmp_path: Path) -> None:
    put(tmp_path, "/usr/lib/modules-load.d/containerd.conf", "overlay\n")
    put(tmp_path, "/etc/modules", "# comment\nbr-netfilter\n")
    got = read_persisted_modules(tmp_path)
    assert got["overlay"].source == "/usr/lib/modules-load.d/containerd.conf:1"
    assert got["br_netfilter"].source == "/etc/modules:2"


def test_containerd_imports_replace_whole_plugin_tables(tmp_path: Path) -> None:
    put(tmp_path, "/usr/bin/containerd", "")
    put(tmp_path, "/etc/containerd/config.toml", """version = 2
imports = ["conf.d/*.toml"]
[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true
""")
    put(tmp_path, "/etc/containerd/conf.d/50-other.toml", """version = 2
[plugins."io.containerd.grpc.v1.cri"]
  enable_cdi = true
""")
    cfg = read_containerd(tmp_path).config
    assert cfg is not None and cfg.imported == ("/etc/containerd/conf.d/50-other.toml",)
    # containerd < 2.1: the drop-in's CRI table replaced the main file's, runtimes included.
    assert cfg.runtimes == {} and cfg.enable_cdi


def test_kubelet_flags_from_kubeadm_env_and_the_default_cgroup_driver(tmp_path: Path) -> None:
    put(tmp_path, "/var/lib/kubelet/kubeadm-flags.env",
        'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///var/run/crio/crio.sock '
        '--pod-infra-container-image=registry.k8s.io/pause:3.10"\n')
    put(tmp_path, "/var/lib/kubelet/config.yaml",
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n")
    k = read_kubelet(tmp_path)
    assert k.runtime_name == "crio"
    assert k.cgroup_driver == "cgroupfs" and "default cgroupfs" in k.cgroup_driver_source
    assert k.fail_swap_on


def test_unit_enablement_from_wants_links_and_masking(tmp_path: Path) -> None:
    put(tmp_path, "/usr/lib/systemd/system/chronyd.service", "[Service]\n")
    assert not unit_state(tmp_path, "chronyd.service").enabled
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "chronyd.service").symlink_to("/usr/lib/systemd/system/chronyd.service")
    assert unit_state(tmp_path, "chronyd.service").enabled
    (tmp_path / "etc/systemd/system/chronyd.service").symlink_to("/dev/null")
    state = unit_state(tmp_path, "chronyd.service")
    assert state.masked and not state.enabled


def test_fixture_node_reads_as_the_node_it_describes() -> None:
    facts = read_host_facts(NODES / "rocky-a100")
    assert facts.os_release is not None and facts.os_release.pretty_name == "Rocky Linux 9.5 (Blue Onyx)"
    assert facts.virtualization.hypervisor == "kvm" and facts.efi
    assert facts.kernel_release == "5.14.0-503.14.1.el9_5.x86_64"
    assert facts.kubelet.version == (1, 32, 1)
    assert [t.version for t in facts.cuda_toolkits] == ["13.0.2"]
    assert facts.char_majors["nvidia-frontend"] == 195
    assert [d.address for d in facts.pci_devices or [] if d.is_nvidia_gpu] == ["0000:07:00.0", "0000:0f:00.0"]
