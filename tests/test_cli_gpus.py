"""`kgpu gpus` as an admin uses it: table, stable JSON, readings, health watching, clear errors."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kgpu.cli import app

runner = CliRunner()

GPU_KEYS = {
    "index", "minor", "uuid", "name", "brand", "family", "compute_capability", "memory_total_mib", "pci_bus_id",
    "pci_device_id", "numa_node", "multiprocessor_count", "persistence_mode", "compute_mode", "ecc_enabled",
    "mig_capable", "mig_enabled", "mig_devices", "nvlink_peers", "driver_version", "cuda_driver_version", "backend",
}
MIG_KEYS = {
    "uuid", "index", "profile", "gpu_instance_id", "compute_instance_id", "memory_total_mib",
    "multiprocessor_count", "parent_uuid",
}
TYPES: dict[str, type | tuple[type, ...]] = {
    "index": int, "minor": int, "uuid": str, "name": str, "brand": str, "family": str, "compute_capability": str,
    "memory_total_mib": int, "pci_bus_id": str, "pci_device_id": str, "numa_node": (int, type(None)),
    "multiprocessor_count": int, "persistence_mode": bool, "compute_mode": str, "ecc_enabled": (bool, type(None)),
    "mig_capable": bool, "mig_enabled": bool, "mig_devices": list, "nvlink_peers": list, "driver_version": str,
    "cuda_driver_version": str, "backend": str,
}


def _json(*args: str) -> list[dict[str, object]]:
    result = runner.invoke(app, [*args, "gpus", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert isinstance(doc, list)
    return doc


@pytest.mark.parametrize("node", ["p100", "t4", "a30", "a100-mig", "h100x8", "mixed"])
def test_json_has_stable_keys_and_types(node: str) -> None:
    for gpu in _json("--simulate", node):
        assert set(gpu) == GPU_KEYS
        for key, kind in TYPES.items():
            assert isinstance(gpu[key], kind), (key, gpu[key])
        for mig in gpu["mig_devices"]:  # type: ignore[attr-defined]
            assert set(mig) == MIG_KEYS
        for peer in gpu["nvlink_peers"]:  # type: ignore[attr-defined]
            assert set(peer) == {"index", "uuid", "links"}


def test_json_values_for_a100_mig() -> None:
    gpu0, gpu1 = _json("--simulate", "a100-mig")
    assert gpu0["name"] == "NVIDIA A100-SXM4-80GB"
    assert gpu0["pci_device_id"] == "0x20b210de"
    assert gpu0["cuda_driver_version"] == "13.0"
    assert [m["profile"] for m in gpu0["mig_devices"]] == ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]  # type: ignore[attr-defined]
    assert gpu1["nvlink_peers"] == [{"index": 0, "uuid": gpu0["uuid"], "links": 12}]


def test_simulate_env_var_selects_the_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KGPU_SIMULATE", "t4")
    (gpu,) = _json()
    assert gpu["name"] == "Tesla T4"


def test_readings_are_included_on_request() -> None:
    result = runner.invoke(app, ["--simulate", "t4", "gpus", "--json", "--readings"])
    (gpu,) = json.loads(result.stdout)
    assert gpu["readings"]["temperature_c"] == 30
    assert gpu["readings"]["memory_used_mib"] == 1


def test_table_shows_every_gpu_and_no_emoji_in_bus_ids() -> None:
    result = runner.invoke(app, ["--simulate", "h100x8", "gpus"])
    assert result.exit_code == 0
    assert result.stdout.count("NVIDIA H100 80GB HBM3") == 8
    assert "00000000:AB:00.0" in result.stdout


def test_unknown_fixture_is_a_one_line_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kgpu", "--simulate", "v100", "gpus"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("kgpu: error: simulated node 'v100'")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_nvml_missing_says_where_it_looked_and_how_to_simulate(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KGPU_SIMULATE", "LD_LIBRARY_PATH")}
    proc = subprocess.run(
        [sys.executable, "-m", "kgpu", "--driver-root", str(tmp_path), "gpus"], capture_output=True, text=True,
        env=env,
    )
    assert proc.returncode == 1
    assert "libnvidia-ml.so.1 not found under driver root" in proc.stderr
    assert str(tmp_path) in proc.stderr
    assert "--simulate h100x8" in proc.stderr


def test_bad_backend_name_is_rejected() -> None:
    result = runner.invoke(app, ["--backend", "cuda", "gpus"])
    assert result.exit_code == 2
    assert "allowed: auto, nvml, simulated" in result.output


def test_watch_health_prints_injected_events_until_terminated(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    uuid = _json("--simulate", "t4")[0]["uuid"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kgpu", "--simulate", "t4", "--simulate-events", str(events),
         "gpus", "--watch-health", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(0.3)
        with open(events, "a") as f:
            f.write(json.dumps({"uuid": uuid, "kind": "xid", "xid": 94}) + "\n")
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)  # a bound, so a silent watcher fails, not hangs
        assert ready, "no event printed within 30 s"
        line = proc.stdout.readline()
        assert json.loads(line) | {"timestamp": 0} == {"uuid": uuid, "kind": "xid", "xid": 94, "timestamp": 0}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.stdout.startswith("kgpu 0.1.0")


def test_logging_follows_stderr_after_it_is_replaced(capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import logging

    from kgpu.log import setup_logging

    setup_logging("info", json_output=True)
    first = io.StringIO()
    sys.stderr = first
    first.close()
    second = io.StringIO()
    sys.stderr = second
    try:
        logging.getLogger("kgpu.test").info("hello", extra={"gpu": 3})
    finally:
        sys.stderr = sys.__stderr__
    record = json.loads(second.getvalue())
    assert (record["msg"], record["gpu"], record["level"]) == ("hello", 3, "info")


def test_container_driver_root_wins_over_the_host_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """In NVIDIA's DaemonSet layout NVIDIA_DRIVER_ROOT is the host path; the driver is at the mount point."""
    mount = tmp_path / "driver-root"
    mount.mkdir()
    monkeypatch.setenv("NVIDIA_DRIVER_ROOT", "/run/nvidia/driver")
    monkeypatch.setenv("CONTAINER_DRIVER_ROOT", str(mount))
    result = runner.invoke(app, ["gpus"])
    assert result.exit_code == 1
    assert f"not found under driver root {mount}" in str(result.exception)
