"""Bounded config inputs: a number beyond what the kubelet or MPS can serve, an oversized value or
file, or a YAML bomb is refused within a second with one line naming key, value and limit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kgpu.config.limits import MAX_CONFIG_BYTES, MAX_MPS_CLIENTS_PER_GPU, MAX_REPLICAS_PER_GPU, shown
from kgpu.config.resolve import resolve_config
from kgpu.errors import ConfigError


def error_of(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    started = time.monotonic()
    with pytest.raises(ConfigError) as exc:
        resolve_config({}, {}, path)
    assert time.monotonic() - started < 1.0  # not after growing a replica list
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_a_hundred_million_time_sliced_replicas_are_refused_with_the_limit(tmp_path: Path) -> None:
    message = error_of(tmp_path, "sharing: {timeSlicing: {resources: [{name: gpu, replicas: 100000000}]}}")
    assert "sharing.timeSlicing.resources[0].replicas: 100000000 is above the limit of 1024" in message
    assert len(message) < 400


def test_the_largest_allowed_replica_counts_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"sharing: {{timeSlicing: {{resources: [{{name: gpu, replicas: {MAX_REPLICAS_PER_GPU}}}]}}}}")
    assert resolve_config({}, {}, path).sharing.strategy == "time-slicing"
    path.write_text(f"sharing: {{mps: {{resources: [{{name: gpu, replicas: {MAX_MPS_CLIENTS_PER_GPU}}}]}}}}")
    assert resolve_config({}, {}, path).sharing.strategy == "mps"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("sharing: {mps: {resources: [{name: gpu, replicas: 49}]}}", "sharing.mps.resources[0].replicas: 49"),
        ("sharing: {mps: {slices: [{name: s, memory: 1Gi, computePercent: 1, count: 49}]}}",
         "sharing.mps.slices[0].count: 49"),
    ],
)
def test_more_mps_clients_than_a_daemon_serves_are_refused(tmp_path: Path, text: str, where: str) -> None:
    message = error_of(tmp_path, text)
    assert where in message and "48 clients per GPU" in message


def test_a_huge_value_is_cut_in_the_error_line(tmp_path: Path) -> None:
    huge = "x" * 500_000
    message = error_of(tmp_path, f"flags: {{migStrategy: {huge}}}")
    assert "flags.migStrategy" in message and "(500002 characters)" in message
    assert len(message) < 600
    message = error_of(tmp_path, f"flags: {{bogus: {huge}}}")
    assert "unknown key" in message and len(message) < 1000


def test_a_config_file_larger_than_a_configmap_is_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, "# " + "x" * MAX_CONFIG_BYTES + "\nversion: v1\n")
    assert "larger than 1 MiB" in message


def test_a_yaml_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        lines.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join(f"*{chr(96 + i)}" for _ in range(10)) + "]")
    message = error_of(tmp_path, "\n".join(lines))
    assert "more than 100 aliases" in message


def test_shown_cuts_long_values_and_keeps_short_ones() -> None:
    assert shown("mixed") == "'mixed'"
    assert shown("y" * 1000).endswith("… (1002 characters)") and len(shown("y" * 1000)) < 130


def test_kgpu_labels_refuses_absurd_replicas_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("sharing: {timeSlicing: {resources: [{name: gpu, replicas: 100000000}]}}")
    env = {k: v for k, v in os.environ.items() if k not in ("CONFIG_FILE", "GFD_CONFIG_FILE")}
    proc = subprocess.run([sys.executable, "-m", "kgpu", "--simulate", "h100x8", "labels", "--config-file", str(path)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""  # no nvidia.com/gpu.replicas=100000000
    assert proc.stderr.count("\n") == 1 and "above the limit of 1024" in proc.stderr


def test_a_fixture_file_larger_than_the_limit_is_refused(tmp_path: Path) -> None:
    from kgpu.gpu.fixture import read_fixture_text

    path = tmp_path / "node.yaml"
    path.write_text("# " + "x" * (1024 * 1024) + "\n")
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        read_fixture_text(str(path))
