"""`kgpu doctor` as an admin runs it: a table or JSON, --only, exit codes, and NVML failures as findings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_inproc import kgpu
from doctor_nodes import NODES, Node
from typer.testing import CliRunner

from kgpu.cli import app
from kgpu.doctor import CHECK_IDS

runner = CliRunner()


def test_healthy_ubuntu_node_json_lists_every_check_in_order_and_exits_0() -> None:
    result = runner.invoke(app, ["--simulate", "h100x8", "doctor", "--root", str(NODES / "ubuntu-h100"), "--json"])
    assert result.exit_code == 0, result.output
    findings = json.loads(result.stdout)
    assert [f["id"] for f in findings] == list(CHECK_IDS)
    for f in findings:
        assert set(f) == {"id", "status", "title", "evidence", "fix"}
        assert f["status"] in ("pass", "skip") or f["id"] == "disk.root-free", f
    skipped = {f["id"] for f in findings if f["status"] == "skip"}
    assert skipped == {"host.efi", "runtime.docker", "runtime.crio"}


def test_healthy_rocky_node_passes_too() -> None:
    result = runner.invoke(app, ["--simulate", "a100-mig", "doctor", "--root", str(NODES / "rocky-a100"), "--json"])
    assert result.exit_code == 0, result.output
    statuses = {f["id"]: f["status"] for f in json.loads(result.stdout)}
    assert statuses["host.efi"] == "pass"
    assert statuses["driver.device-nodes"] == "pass"


def test_only_runs_the_named_checks() -> None:
    result = runner.invoke(app, ["--simulate", "h100x8", "doctor", "--root", str(NODES / "ubuntu-h100"), "--json",
                                 "--only", "k8s.swap,driver.nouveau"])
    assert result.exit_code == 0, result.output
    assert [f["id"] for f in json.loads(result.stdout)] == ["driver.nouveau", "k8s.swap"]


def test_unknown_only_id_is_refused_with_the_valid_ids() -> None:
    done = subprocess.run([sys.executable, "-m", "kgpu", "--simulate", "t4", "doctor", "--only", "driver.nuoveau"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown check id 'driver.nuoveau'" in done.stderr
    assert "driver.nouveau" in done.stderr and "cdi.spec" in done.stderr
    assert done.stdout == ""


def test_a_failing_check_exits_1_and_the_table_shows_the_fix(tmp_path: Path) -> None:
    node = Node(tmp_path, "ubuntu-h100")
    node.append("/proc/modules", "nouveau 3096576 0 - Live 0x0000000000000000\n")
    result = runner.invoke(app, ["--simulate", "h100x8", "doctor", "--root", str(node.root)])
    assert result.exit_code == 1
    out = result.stdout
    assert "FAIL" in out and "driver.nouveau" in out
    assert "Container runtime" in out and "Kubernetes" in out  # grouped by area
    assert "Create /etc/modprobe.d/blacklist-nouveau.conf with:" in out
    assert "update-initramfs -u && reboot" in out


def test_nvml_that_cannot_load_is_a_finding_naming_where_it_looked(tmp_path: Path) -> None:
    empty_driver_root = tmp_path / "driver"
    empty_driver_root.mkdir()
    result = runner.invoke(app, ["--backend", "nvml", "--driver-root", str(empty_driver_root), "doctor", "--root",
                                 str(NODES / "ubuntu-h100"), "--json", "--only", "driver.nvml,driver.device-nodes"])
    assert result.exit_code == 1, result.output
    nvml, nodes = json.loads(result.stdout)
    assert nvml["status"] == "fail"
    assert "libnvidia-ml.so.1 not found under driver root" in nvml["evidence"]
    assert str(empty_driver_root) in nvml["evidence"]
    assert "--driver-root" in nvml["fix"]
    # Without NVML the GPU count comes from the PCI bus, so device nodes are still judged.
    assert nodes["status"] == "pass"


@pytest.mark.parametrize(
    "args",
    [["doctor"], ["node", "prepare"], ["runtime", "configure"], ["runtime", "unconfigure"],
     ["cdi", "generate", "-o", "/etc/cdi/nvidia.yaml"], ["cdi", "validate", "/etc/cdi/nvidia.yaml"], ["labels"],
     ["validate"]],
)
def test_every_command_refuses_a_root_that_is_missing_or_not_a_directory(tmp_path: Path, args: list[str]) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    for root, why in ((tmp_path / "no", "no such directory"), (a_file, "not a directory")):
        done = kgpu("--simulate", "t4", *args, "--root", str(root))
        assert done.returncode == 2, done.stderr
        assert done.stderr.splitlines() == [
            f"kgpu: error: --root {root}: {why}; give the node's filesystem root (default /)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing was created
