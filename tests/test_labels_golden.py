"""Given each simulated node and device-plugin config, `kgpu labels` prints GFD's labels (golden files).

Goldens live in tests/golden/labels/<node>__<config>.labels; tests/golden/labels/README.md says how
each value follows gpu-feature-discovery. The timestamp is left out (--no-timestamp) and checked
separately. Regenerate after a deliberate change with KGPU_UPDATE_GOLDENS=1 and review the diff.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kgpu.cli import app
from kgpu.gpu import open_backend
from kgpu.gpu.model import sysfs_bus_id
from kgpu.labels.output import parse_lines

GOLDEN = Path(__file__).parent / "golden" / "labels"
CONFIGS = sorted(p.stem for p in (GOLDEN / "configs").glob("*.yaml"))
NODES = ["p100", "t4", "a30", "a100-mig", "h100x8", "mixed", "a100-single"]

# What the host around each node says: DMI product name and the GPUs' PCI class (all 3D controllers).
MACHINES = {
    "p100": "Standard PC (Q35 + ICH9, 2009)",  # a KVM guest, as the p100 fixture is
    "t4": "g4dn.xlarge",
    "a30": "PowerEdge R750xa",
    "a100-mig": "DGXA100 920-23687-2530-000",
    "h100x8": "DGXH100",
    "mixed": "PowerEdge R740",
    "a100-single": "DGXA100 920-23687-2530-000",
}

runner = CliRunner()


def simulate_arg(node: str) -> str:
    extra = GOLDEN / "nodes" / f"{node}.yaml"
    return str(extra) if extra.exists() else node


def host_root(tmp_path: Path, node: str) -> Path:
    root = tmp_path / "host"
    dmi = root / "sys/class/dmi/id"
    dmi.mkdir(parents=True)
    (dmi / "product_name").write_text(MACHINES[node] + "\n")
    for gpu in open_backend(simulate=simulate_arg(node)).inventory().gpus:
        dev = root / "sys/bus/pci/devices" / sysfs_bus_id(gpu.pci_bus_id)
        dev.mkdir(parents=True)
        (dev / "class").write_text("0x030200\n")
    return root


def run_labels(node: str, config: str, root: Path, *extra: str) -> str:
    args = ["--simulate", simulate_arg(node), "labels", "--root", str(root),
            "--config-file", str(GOLDEN / "configs" / f"{config}.yaml"), *extra]
    result = runner.invoke(app, args, env={"MIG_STRATEGY": None, "GFD_MIG_STRATEGY": None, "CONFIG_FILE": None})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("node", NODES)
def test_labels_match_golden(node: str, config: str, tmp_path: Path) -> None:
    out = run_labels(node, config, host_root(tmp_path, node), "--no-timestamp")
    golden = GOLDEN / f"{node}__{config}.labels"
    if os.environ.get("KGPU_UPDATE_GOLDENS") == "1":
        golden.write_text(out)
    assert out == golden.read_text()


def test_every_golden_file_is_exercised() -> None:
    expected = {f"{n}__{c}.labels" for n in NODES for c in CONFIGS}
    assert {p.name for p in GOLDEN.glob("*.labels")} == expected


def test_the_timestamp_is_now_in_unix_seconds(tmp_path: Path) -> None:
    before = int(time.time())
    labels = parse_lines(run_labels("t4", "none", host_root(tmp_path, "t4")))
    assert before <= int(labels["nvidia.com/gfd.timestamp"]) <= int(time.time())
    golden = parse_lines((GOLDEN / "t4__none.labels").read_text())
    assert {k: v for k, v in labels.items() if k != "nvidia.com/gfd.timestamp"} == golden
