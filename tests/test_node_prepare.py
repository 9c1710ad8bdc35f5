"""`kgpu node prepare`: given a node the doctor finds fault with, the plan fixes exactly that, atomically,
with backups, and a second run has nothing left to do."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml
from doctor_nodes import Node
from typer.testing import CliRunner

from kgpu.cli import app

runner = CliRunner()

PREPARED_BY = ("driver.nouveau", "k8s.kernel-modules", "k8s.sysctl", "k8s.swap", "runtime.containerd")


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def broken_ubuntu(tmp_path: Path) -> Node:
    node = Node(tmp_path, "ubuntu-h100")
    node.remove("/usr/lib/modprobe.d/nvidia-graphics-drivers.conf")
    node.remove("/etc/modules-load.d/k8s.conf")
    node.remove("/etc/sysctl.d/k8s.conf")
    node.replace("/etc/fstab", "#/swap.img", "/swap.img")
    node.remove("/etc/containerd/conf.d/99-nvidia.toml")
    return node


def prepare(node: Node, *extra: str) -> str:
    result = runner.invoke(app, ["node", "prepare", "--root", str(node.root), *extra])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_dry_run_shows_every_fix_as_a_diff_and_writes_nothing(tmp_path: Path) -> None:
    node = broken_ubuntu(tmp_path)
    before = snapshot(node.root)
    out = prepare(node)
    assert snapshot(node.root) == before
    assert "+blacklist nouveau" in out and "+options nouveau modeset=0" in out
    assert "+++ b/etc/modules-load.d/k8s.conf" in out and "+br_netfilter" in out
    assert "+net.ipv4.ip_forward = 1" in out
    assert "-/swap.img\tnone\tswap\tsw\t0\t0" in out and "+#/swap.img\tnone\tswap\tsw\t0\t0" in out
    assert "add the nvidia runtime to containerd" in out
    assert "Dry run: nothing written" in out
    assert "update-initramfs -u" in out and "sysctl --system" in out and "systemctl restart containerd" in out
    assert out.rstrip().index("reboot") > out.index("systemctl restart containerd")


def test_apply_fixes_what_the_doctor_found_and_a_second_run_does_nothing(tmp_path: Path) -> None:
    node = broken_ubuntu(tmp_path)
    before = node.findings(*PREPARED_BY)
    assert all(f.status.value in ("fail", "warn") for f in before.values()), before
    old_fstab = node.read("/etc/fstab")

    out = prepare(node, "--apply")
    fstab = node.path("/etc/fstab")
    assert (f"updated {fstab} (previous content in {fstab}.kgpu.bak; original kept in {fstab}.kgpu.orig)"
            in out.splitlines())
    assert node.read("/etc/fstab.kgpu.bak") == old_fstab == node.read("/etc/fstab.kgpu.orig")
    assert "#/swap.img" in node.read("/etc/fstab")
    assert node.read("/etc/modprobe.d/blacklist-nouveau.conf").splitlines()[1:] == [
        "blacklist nouveau", "options nouveau modeset=0", "blacklist nova_core", "blacklist nova_drm"]
    assert node.read("/etc/sysctl.d/99-kubernetes.conf").splitlines()[1:] == [
        "net.ipv4.ip_forward = 1", "net.bridge.bridge-nf-call-iptables = 1", "net.bridge.bridge-nf-call-ip6tables = 1"]
    after = node.findings(*PREPARED_BY)
    assert {i: f.status.value for i, f in after.items()} == dict.fromkeys(PREPARED_BY, "pass")

    written = snapshot(node.root)
    again = prepare(node, "--apply")
    assert "Nothing to do" in again
    assert snapshot(node.root) == written


def test_existing_blacklist_file_gets_only_the_missing_lines(tmp_path: Path) -> None:
    node = Node(tmp_path, "ubuntu-h100")
    node.remove("/usr/lib/modprobe.d/nvidia-graphics-drivers.conf")
    node.write("/etc/modprobe.d/blacklist-nouveau.conf", "# mine\nblacklist nova_core\n")
    prepare(node, "--apply")
    assert node.read("/etc/modprobe.d/blacklist-nouveau.conf") == (
        "# mine\nblacklist nova_core\nblacklist nouveau\noptions nouveau modeset=0\nblacklist nova_drm\n")
    assert node.read("/etc/modprobe.d/blacklist-nouveau.conf.kgpu.bak") == "# mine\nblacklist nova_core\n"


def test_rhel_family_gets_dracut(tmp_path: Path) -> None:
    node = Node(tmp_path, "rocky-a100")
    node.remove("/etc/modprobe.d/blacklist-nouveau.conf")
    node.replace("/proc/cmdline", " rd.driver.blacklist=nouveau modprobe.blacklist=nouveau", "")
    out = prepare(node)
    assert "dracut --force" in out and "update-initramfs" not in out


def test_a_runtime_is_not_pointed_at_a_toolkit_that_is_not_installed(tmp_path: Path) -> None:
    node = Node(tmp_path, "ubuntu-h100")
    node.remove("/etc/containerd/conf.d/99-nvidia.toml")
    node.remove("/usr/bin/nvidia-container-runtime")
    out = prepare(node, "--apply")
    assert "install nvidia-container-toolkit first" in out
    assert not node.path("/etc/containerd/conf.d/99-nvidia.toml").exists()


def test_a_later_sysctl_file_that_overrides_ours_is_reported_not_edited(tmp_path: Path) -> None:
    node = Node(tmp_path, "ubuntu-h100")
    node.write("/etc/sysctl.d/zz-hardening.conf", "net.ipv4.ip_forward = 0\n")
    out = prepare(node, "--apply")
    assert "/etc/sysctl.d/zz-hardening.conf:1 sets net.ipv4.ip_forward = 0" in out
    assert node.read("/etc/sysctl.d/zz-hardening.conf") == "net.ipv4.ip_forward = 0\n"
    assert not node.path("/etc/sysctl.d/99-kubernetes.conf").exists()


def test_healthy_nodes_need_nothing(tmp_path: Path) -> None:
    for name in ("ubuntu-h100", "rocky-a100"):
        node = Node(tmp_path, name)
        before = snapshot(node.root)
        assert "Nothing to do" in prepare(node, "--apply")
        assert snapshot(node.root) == before


def test_a_node_without_a_cdi_spec_gets_one_the_doctor_accepts(tmp_path: Path) -> None:
    node = Node(tmp_path, "rocky-a100")
    node.remove("/etc/cdi/nvidia.yaml")
    assert node.check("cdi.spec").status.value == "warn"
    result = runner.invoke(app, ["--simulate", "a100-mig", "node", "prepare", "--root", str(node.root), "--apply"])
    assert result.exit_code == 0, result.output
    assert "cdi.spec: write the CDI spec for 2 GPU(s) and 4 MIG device(s) (driver root /)" in result.stdout
    assert f"created {node.path('/etc/cdi/nvidia.yaml')}" in result.stdout.splitlines()
    spec = yaml.safe_load(node.read("/etc/cdi/nvidia.yaml"))
    names = {d["name"] for d in spec["devices"]}
    assert {"0", "1", "0:0", "all", "GPU-374202be-4ba9-56b5-bd01-03f77bd5589f"} <= names
    assert node.check("cdi.spec").status.value == "pass"
    again = runner.invoke(app, ["--simulate", "a100-mig", "node", "prepare", "--root", str(node.root)])
    assert "Nothing to do" in again.stdout


def test_the_cdi_spec_uses_the_driver_root_that_holds_the_driver(tmp_path: Path) -> None:
    node = Node(tmp_path, "ubuntu-h100")
    node.remove("/etc/cdi/nvidia.yaml")
    node.path("/usr/local/nvidia/lib64").mkdir(parents=True)
    for lib in ("libcuda", "libnvidia-ml"):
        node.remove(f"/usr/lib/x86_64-linux-gnu/{lib}.so.1")
        node.path(f"/usr/lib/x86_64-linux-gnu/{lib}.so.580.95.05").rename(
            node.path(f"/usr/local/nvidia/lib64/{lib}.so.580.95.05"))
        node.link(f"/usr/local/nvidia/lib64/{lib}.so.1", f"{lib}.so.580.95.05")
    out = runner.invoke(app, ["--simulate", "h100x8", "node", "prepare", "--root", str(node.root)]).stdout
    assert "(driver root /usr/local/nvidia)" in out
    assert "+    hostPath: /usr/local/nvidia/lib64/libcuda.so.580.95.05" in out


def test_without_the_gpu_inventory_no_spec_is_written_and_prepare_says_why(tmp_path: Path) -> None:
    node = Node(tmp_path, "ubuntu-h100")
    node.remove("/etc/cdi/nvidia.yaml")
    empty = tmp_path / "driver"
    empty.mkdir()
    result = runner.invoke(app, ["--backend", "nvml", "--driver-root", str(empty), "node", "prepare", "--root",
                                 str(node.root), "--apply"])
    assert result.exit_code == 0, result.output
    assert "note: no CDI spec written: the GPUs could not be listed" in result.stdout
    assert not node.path("/etc/cdi/nvidia.yaml").exists()



def test_apply_refuses_to_write_a_containers_etc(tmp_path: Path) -> None:
    node = broken_ubuntu(tmp_path)
    node.write("/.dockerenv", "")
    before = snapshot(node.root)
    result = runner.invoke(app, ["node", "prepare", "--root", str(node.root), "--apply"])
    assert result.exit_code != 0
    assert "refusing to write" in str(result.exception)
    assert snapshot(node.root) == before
    assert "is a container's root" in prepare(node)
