"""`kgpu labels` as an admin uses it: lines or JSON, an NFD feature file, clear errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from kgpu.cli import app
from kgpu.labels.output import format_lines, parse_lines, write_feature_file

runner = CliRunner()
CLEAN_ENV: dict[str, str | None] = {"MIG_STRATEGY": None, "GFD_MIG_STRATEGY": None, "CONFIG_FILE": None,
                                    "GFD_CONFIG_FILE": None}


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=CLEAN_ENV)
    return result.exit_code, result.stdout, result.stderr


def run_kgpu(*args: str) -> tuple[int, str, str]:
    """A real process, so errors go through kgpu's main(): one line on stderr, the exit code."""
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV and k != "KGPU_SIMULATE"}
    proc = subprocess.run([sys.executable, "-m", "kgpu", *args], capture_output=True, text=True, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def test_lines_are_sorted_key_value_pairs_and_json_is_the_same_set(tmp_path: Path) -> None:
    code, lines, _ = invoke("--simulate", "h100x8", "labels", "--root", str(tmp_path), "--no-timestamp")
    assert code == 0
    keys = [line.split("=", 1)[0] for line in lines.splitlines()]
    assert keys == sorted(keys)
    code, doc, _ = invoke("--simulate", "h100x8", "labels", "--root", str(tmp_path), "--no-timestamp", "--json")
    assert code == 0
    assert json.loads(doc) == parse_lines(lines)
    assert json.loads(doc)["nvidia.com/gpu.count"] == "8"


def test_output_file_is_an_nfd_feature_file(tmp_path: Path) -> None:
    target = tmp_path / "features.d" / "kgpu"
    code, printed, _ = invoke("--simulate", "t4", "labels", "--root", str(tmp_path), "-o", str(target))
    assert code == 0
    assert target.read_text() == printed
    assert parse_lines(target.read_text())["nvidia.com/gpu.product"] == "Tesla-T4"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["kgpu"]  # no temporary files left


def test_rewriting_replaces_the_file_atomically(tmp_path: Path) -> None:
    target = tmp_path / "kgpu"
    write_feature_file(target, {"nvidia.com/gpu.count": "1"})
    inode = target.stat().st_ino
    write_feature_file(target, {"nvidia.com/gpu.count": "2", "nvidia.com/gpu.present": "true"})
    assert target.read_text() == "nvidia.com/gpu.count=2\nnvidia.com/gpu.present=true\n"
    assert target.stat().st_ino != inode  # a new file renamed over the old one, never rewritten in place


def test_mig_strategy_flag_and_environment(tmp_path: Path) -> None:
    code, out, _ = invoke("--simulate", "a100-mig", "labels", "--root", str(tmp_path), "--mig-strategy", "mixed")
    assert code == 0 and "nvidia.com/mig-3g.40gb.count=1" in out
    result = runner.invoke(app, ["--simulate", "a100-mig", "labels", "--root", str(tmp_path)],
                           env={**CLEAN_ENV, "MIG_STRATEGY": "single"})
    assert "nvidia.com/gpu.product=NVIDIA-A100-SXM4-80GB-MIG-INVALID" in result.stdout


def test_a_bad_mig_strategy_is_one_clear_line_and_exit_2(tmp_path: Path) -> None:
    code, _, err = run_kgpu("--simulate", "t4", "labels", "--root", str(tmp_path), "--mig-strategy", "double")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert err == "kgpu: error: flag --mig-strategy: 'double' is not one of none, single, mixed\n"


def test_a_bad_config_file_names_file_field_and_value(tmp_path: Path) -> None:
    cfg = tmp_path / "plugin.yaml"
    cfg.write_text("version: v1\nsharing:\n  timeSlicing:\n    resources:\n"
                   "    - name: nvidia.com/gpu\n      replicas: -1\n")
    code, _, err = run_kgpu("--simulate", "t4", "labels", "--root", str(tmp_path), "--config-file", str(cfg))
    assert code == 2
    assert f"config file {cfg}: sharing.timeSlicing.resources[0].replicas:" in err
    assert "-1 is below the minimum of 2" in err


def test_an_unwritable_output_file_is_a_clear_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "features.d"
    not_a_dir.write_text("a file where the directory should be")
    code, _, err = run_kgpu("--simulate", "t4", "labels", "--root", str(tmp_path), "-o", str(not_a_dir / "kgpu"))
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        f"kgpu: error: cannot write {not_a_dir / 'kgpu'}: Not a directory (ENOTDIR); a part of the path is a file, "
        "not a directory: fix the path or the node's layout; nothing was changed"
    )


def test_format_lines_round_trips() -> None:
    labels = {"b": "2", "a": "", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert parse_lines(format_lines(labels)) == labels
    assert format_lines(labels).splitlines()[0] == "a="


def test_no_timestamp_in_the_config_file_drops_the_timestamp(tmp_path: Path) -> None:
    # GFD reads flags.gfd.noTimestamp from the file as it reads --no-timestamp.
    cfg = tmp_path / "plugin.yaml"
    cfg.write_text("version: v1\nflags:\n  gfd:\n    noTimestamp: true\n")
    code, out, _ = invoke("--simulate", "t4", "labels", "--root", str(tmp_path), "--config-file", str(cfg))
    assert code == 0 and "nvidia.com/gpu.product=Tesla-T4" in out
    assert "nvidia.com/gfd.timestamp" not in out
    code, out, _ = invoke("--simulate", "t4", "labels", "--root", str(tmp_path), "--config-file", str(cfg),
                          "--no-timestamp=false")
    assert code == 0 and "nvidia.com/gfd.timestamp=" in out  # the flag wins over the file
