"""Given nodes that run GPU pods today, `kgpu doctor` passes them (exit 0): FAIL means "cannot run GPU pods now".

ubuntu-a30 is a working A30 node as nvidia-ctk leaves it (no /dev/char links: a risk after the next
`systemctl daemon-reload`, so a WARN with the fix); firecracker-h100 is the GPU machine kgpu's device
scripts run on (Firecracker VM, driver under /usr/local/nvidia, NUMA -1, every BAR 64-bit, no DMI, no
EFI, no kubelet or runtime). An empty root proves only what it shows: nothing is claimed from files
that are not there.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_inproc import kgpu
from doctor_nodes import NODES, SIMULATED


def _doctor(root: Path, simulate: str, *extra: str) -> tuple[int, dict[str, dict[str, str]]]:
    done = kgpu("--simulate", simulate, *extra, "doctor", "--root", str(root), "--json")
    return done.returncode, {f["id"]: f for f in json.loads(done.stdout)}


@pytest.mark.parametrize(
    ("node", "extra", "warnings"),
    [
        ("ubuntu-a30", (), {"runtime.systemd-cgroup-devices", "runtime.visible-all", "cdi.spec"}),
        ("firecracker-h100", ("--driver-root", "/usr/local/nvidia"), {"host.efi", "k8s.kernel-modules", "cdi.spec"}),
        ("ubuntu-h100", (), set()),
        ("rocky-a100", (), set()),
    ],
)
def test_a_node_that_runs_gpu_pods_passes(node: str, extra: tuple[str, ...], warnings: set[str]) -> None:
    code, findings = _doctor(NODES / node, SIMULATED[node], *extra)

    assert code == 0, {i: f["title"] for i, f in findings.items() if f["status"] == "fail"}
    assert {i for i, f in findings.items() if f["status"] == "warn"} - {"disk.root-free"} == warnings


def test_missing_dev_char_links_are_a_warning_with_the_exact_fix() -> None:
    _, findings = _doctor(NODES / "ubuntu-a30", "a30")

    risk = findings["runtime.systemd-cgroup-devices"]
    assert risk["status"] == "warn"
    assert "next systemctl daemon-reload" in risk["title"]
    assert "/dev/char/195:0 -> ../nvidia0 is missing" in risk["evidence"]
    assert "nvidia-ctk system create-dev-char-symlinks --create-all" in risk["fix"]
    assert "71-nvidia-dev-char.rules" in risk["fix"]


def test_the_gpu_machine_reads_as_the_vm_it_is() -> None:
    _, findings = _doctor(NODES / "firecracker-h100", SIMULATED["firecracker-h100"], "--driver-root",
                          "/usr/local/nvidia")

    assert findings["host.hypervisor"]["status"] == "pass"
    assert findings["host.hypervisor"]["evidence"].splitlines()[:2] == [
        "/proc/cpuinfo: 'hypervisor' CPU flag set",
        "/sys/class/dmi/id/sys_vendor, product_name: not there (no DMI tables)",
    ]
    assert "BAR1 128 GiB at 0x100000000000 (resource index 2)" in findings["gpu.bar-mapped"]["evidence"]
    assert findings["host.efi"]["status"] == "warn" and "its BARs are mapped" in findings["host.efi"]["title"]
    assert findings["k8s.kernel-modules"]["evidence"].splitlines()[1] == "br_netfilter: not loaded"
    assert findings["driver.loaded"]["title"] == "NVIDIA kernel driver 580.159.04 loaded"
    for absent in ("runtime.containerd", "runtime.toolkit", "kubelet.device-plugins", "k8s.version-compat"):
        assert findings[absent]["status"] == "skip", absent


def test_an_empty_root_claims_nothing_it_did_not_read(tmp_path: Path) -> None:
    _, findings = _doctor(tmp_path, "h100x8")

    hypervisor = findings["host.hypervisor"]
    assert hypervisor["status"] == "skip"
    assert "DMI names" not in hypervisor["evidence"] and "CPUID" not in hypervisor["evidence"]
    assert findings["host.efi"]["status"] == "skip"
    assert findings["driver.loaded"]["status"] == "skip"
    assert findings["driver.device-nodes"] == {**findings["driver.device-nodes"], "status": "skip",
                                               "evidence": "no /dev under the root"}
    assert "None" not in findings["k8s.sysctl"]["evidence"]
