"""Daemons serve from a lean interpreter: `kgpu exporter` and `kgpu device-plugin` started as processes
hand over (same PID, same arguments on the command line) to `python -m kgpu.handoff`, which never
loads the command line's libraries; what goes wrong there is reported as the command line reports it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kgpu.deviceplugin.harness import FakeKubelet

CLI_LIBRARIES = ("typer", "rich", "click", "kgpu.cli")


def _start_exporter(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kgpu", "--simulate", "t4", "exporter", "--kubelet-pod-resources",
         str(tmp_path / "absent.sock"), "--device-plugin-state", "none", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "KGPU_LOG_LEVEL": "debug", **(env or {})},
    )


def _lines_until_serving(proc: subprocess.Popen[str]) -> list[dict[str, object]]:
    assert proc.stderr is not None
    lines: list[dict[str, object]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = proc.stderr.readline()
        if not text:
            break
        lines.append(json.loads(text))
        if str(lines[-1]["msg"]).startswith("serving GPU metrics"):
            return lines
    raise AssertionError(f"the exporter did not start serving: {lines}")


@pytest.fixture
def stopper() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_the_exporter_serves_from_a_lean_interpreter_under_the_same_pid(
    tmp_path: Path, stopper: list[subprocess.Popen[str]]
) -> None:
    proc = _start_exporter(tmp_path, "--listen", "127.0.0.1:0", "--hostname", "gpu-node-3")
    stopper.append(proc)
    lines = _lines_until_serving(proc)
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_text().split("\0")[:-1]
    assert cmdline[cmdline.index("-m") + 1] == "kgpu.handoff"
    assert cmdline[cmdline.index("-m") + 2:] == [  # what was started, for ps
        "--simulate", "t4", "exporter", "--kubelet-pod-resources", str(tmp_path / "absent.sock"),
        "--device-plugin-state", "none", "--listen", "127.0.0.1:0", "--hostname", "gpu-node-3",
    ]
    maps = Path(f"/proc/{proc.pid}/maps").read_text()
    assert "libssl" not in maps  # plain HTTP: OpenSSL is never loaded
    phases = [(line["phase"], line["rss_mb"]) for line in lines if line.get("event") == "memory"]
    assert [p for p, _ in phases] == ["command line parsed", "interpreter", "imports", "backend opened",
                                      "inventory", "serving"]
    assert all(isinstance(mb, float) and mb > 0 for _, mb in phases)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_kgpu_no_handoff_keeps_the_daemon_in_the_command_lines_interpreter(
    tmp_path: Path, stopper: list[subprocess.Popen[str]]
) -> None:
    proc = _start_exporter(tmp_path, "--listen", "127.0.0.1:0", env={"KGPU_NO_HANDOFF": "1"})
    stopper.append(proc)
    lines = _lines_until_serving(proc)
    assert b"kgpu.handoff" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    assert "interpreter" not in [line.get("phase") for line in lines]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_an_error_after_the_handover_reads_as_the_command_lines_and_keeps_its_exit_code(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        proc = _start_exporter(tmp_path, "--listen", f"127.0.0.1:{port}")
        _, err = proc.communicate(timeout=30)
    finally:
        taken.close()
    assert proc.returncode == 2
    assert f"kgpu: error: --listen 127.0.0.1:{port}: cannot listen" in err
    assert '"phase": "interpreter"' in err  # it was the lean interpreter that found out


def test_a_bad_flag_is_refused_before_handing_over(tmp_path: Path) -> None:
    proc = _start_exporter(tmp_path, "--listen", "nowhere")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "expected HOST:PORT" in err
    assert "interpreter" not in err  # refused by the command line itself, nothing was handed over


def test_the_device_plugin_hands_over_its_resolved_config_and_serves_the_kubelet() -> None:
    root = Path(tempfile.mkdtemp(dir="/tmp", prefix="kgpu-handoff-"))  # unix socket paths must stay short
    config = root / "dp.yaml"
    config.write_text(
        "version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - {name: nvidia.com/gpu, replicas: 2}\n"
    )
    kubelet = FakeKubelet(root / "dp").start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kgpu", "--simulate", "h100x8", "device-plugin", "--kubelet-dir",
         str(kubelet.directory), "--state-file", str(root / "state.json"), "--config-file", str(config),
         "--device-list-strategy", "volume-mounts"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        kubelet.wait_for_registration("nvidia.com/gpu", timeout=30)
        assert b"kgpu.handoff" in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        devices = kubelet.watch("nvidia.com/gpu").wait_for(lambda ds: len(ds) == 16)  # 8 GPUs x 2 replicas
        first = devices[0].ID
        assert first.endswith("::0")
        response = kubelet.client("nvidia.com/gpu").allocate([[first]])
        assert response.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == "/var/run/nvidia-container-devices"
        assert [m.container_path for m in response.container_responses[0].mounts] == [
            f"/var/run/nvidia-container-devices/{first.split('::')[0]}"
        ]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        kubelet.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_the_lean_daemon_modules_do_not_import_the_command_lines_libraries() -> None:
    code = (
        "import sys; sys.modules['ssl'] = None\n"
        "import kgpu.handoff, kgpu.exporter.service, kgpu.exporter.daemon, kgpu.exporter.podresources\n"
        "import kgpu.deviceplugin.service, kgpu.deviceplugin.daemon, kgpu.deviceplugin.server\n"
        "print(' '.join(sorted(m for m in sys.modules if sys.modules[m] is not None)))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert not [m for m in loaded for lib in CLI_LIBRARIES if m == lib or m.startswith(lib + ".")]
    assert not [m for m in loaded if m.split(".")[0] in ("pydantic", "yaml")]  # the config arrives resolved


def test_running_the_handoff_module_by_hand_says_what_to_run_instead() -> None:
    env = {k: v for k, v in os.environ.items() if k != "KGPU_HANDOFF"}
    result = subprocess.run([sys.executable, "-m", "kgpu.handoff"], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert "run those instead" in result.stderr
