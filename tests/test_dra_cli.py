"""`kgpu dra-plugin` as a process: bad input in one line, no GPU shared with a classic device plugin, SIGTERM."""

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

from kgpu.dra.coexist import ClassicPlugin, conflict, find_classic_plugins
from kgpu.gpu import open_backend
from kgpu.testing.dra import DraKubelet

H100 = [g.uuid for g in open_backend(simulate="h100x8").inventory().gpus]


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="kgpu-dracli-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def kgpu(root: Path, *args: str, **kw: object) -> list[str]:
    return [sys.executable, "-m", "kgpu", "--simulate", "h100x8", "dra-plugin", "--node-name", "node-1",
            "--kubelet-registrar-directory-path", str(root / "registry"),
            "--kubelet-plugins-directory-path", str(root / "plugins"), "--cdi-root", str(root / "cdi"),
            "--kubelet-device-plugins-dir", str(root / "device-plugins"),
            "--device-plugin-state-file", str(root / "dp-state.json"), "--mps-root", str(root / "mps"), *args]


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("args", "message"), [
    (["--driver-name", "example.com/gpu"], "--driver-name='example.com/gpu': a DRA driver name is a DNS subdomain"),
    (["--consumable-shares", "half"], "--consumable-shares='half': allowed disabled, memory, unlimited"),
    (["--unhealthy-devices", "evict"], "--unhealthy-devices='evict': allowed remove, taint"),
    (["--gpus", "9"], "--gpus: no GPU '9' on this node (GPUs: 0 (GPU-"),
    (["--health-recovery-window", "soon"], "--health-recovery-window='soon' is not a duration"),
])
def test_bad_input_is_one_line_naming_the_flag(root: Path, args: list[str], message: str) -> None:
    done = run(kgpu(root, *args))
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (root / "registry").exists()  # nothing half-done


def test_the_driver_refuses_to_hand_out_gpus_a_classic_device_plugin_serves(root: Path) -> None:
    # Given NVIDIA's device plugin serving nvidia.com/gpu on this node (a live socket, GPUs unknown)
    (root / "device-plugins").mkdir()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(root / "device-plugins" / "nvidia-gpu.sock"))
    listener.listen(1)
    try:
        done = run(kgpu(root))
        # then the driver does not start, and says how to let it
        assert done.returncode == 2
        assert "a classic device plugin serves nvidia.com/gpu on this node" in done.stderr
        assert "--gpus" in done.stderr
    finally:
        listener.close()


def test_kgpus_device_plugin_state_file_says_exactly_which_gpus_are_taken(root: Path) -> None:
    now = time.time()
    state = {"updated": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now)), "resources": [
        {"name": "nvidia.com/gpu", "socket": "nvidia-gpu.sock", "registered": True,
         "devices": [{"id": H100[0], "gpu_uuid": H100[0]}, {"id": H100[1], "gpu_uuid": H100[1]}]}]}
    path = root / "state.json"
    path.write_text(json.dumps(state))
    (root / "dp").mkdir()
    found = find_classic_plugins(root / "dp", path, now=now + 10)
    assert found == [ClassicPlugin(str(path), ("nvidia.com/gpu",), frozenset(H100[:2]))]
    assert conflict(found, H100[2:], told=False) is None                       # other GPUs: fine
    assert "from GPU(s) " + H100[1] in str(conflict(found, H100[1:], told=True))  # shared: refused even when told
    assert find_classic_plugins(root / "dp", path, now=now + 600) == []        # a stale file is no plugin
    # a socket file nobody listens on is a leftover, not a plugin
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(root / "dp" / "nvidia-mig-1g.10gb.sock"))
    dead.close()
    assert find_classic_plugins(root / "dp", None) == []
    assert conflict([ClassicPlugin("s", ("nvidia.com/gpu",), None)], H100, told=True) is None


def test_the_driver_serves_until_sigterm_even_without_an_api_server_and_leaves_no_socket(root: Path) -> None:
    # Given a kubeconfig whose API server is not there
    kubeconfig = root / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    log = root / "plugin.log"
    with DraKubelet(root / "registry") as kubelet, open(log, "w") as out:
        proc = subprocess.Popen(kgpu(root, "--kubeconfig", str(kubeconfig)), stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "KGPU_LOG_LEVEL": "info"})
        try:
            # when the kubelet registers it and asks for a claim it cannot read
            with kubelet.client("gpu.nvidia.com") as plugin:
                uid = "11111111-2222-4333-8444-555555555555"
                answer = plugin.prepare([("default", uid, "c")])
                assert "cannot read ResourceClaim default/c" in answer.claims[uid].error
            deadline = time.monotonic() + 30
            while "cannot list the ResourceSlices of node-1" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
    # then SIGTERM stops it cleanly, its sockets gone, and the log says why the slices are not published
    assert code == 0, log.read_text()
    assert list((root / "registry").iterdir()) == []
    assert not (root / "plugins" / "gpu.nvidia.com" / "dra.sock").exists()
    assert "cannot list the ResourceSlices of node-1: " in log.read_text()
