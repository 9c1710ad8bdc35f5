"""`kgpu exporter` as a daemon: /metrics and /healthz over HTTP, SIGTERM ends it cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from configmap import ConfigMapVolume
from exporter_helpers import samples
from typer.testing import CliRunner

from kgpu.cli import app
from kgpu.daemon import parse_listen
from kgpu.errors import ConfigError
from kgpu.exporter import CONTENT_TYPE
from kgpu.exporter.daemon import ExporterSettings, serve
from kgpu.options import GlobalOptions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def wait_until_serving(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=30).close()
            return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"nothing served {url}")


def test_metrics_and_healthz_are_served_on_one_address(tmp_path: Path) -> None:
    port = free_port()
    settings = ExporterSettings(GlobalOptions(simulate="h100x8"), listen=f"127.0.0.1:{port}",
                                kubelet_pod_resources="none", device_plugin_state="none")
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(settings,), kwargs={"stop": stop})
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{base}/healthz")
        status, content_type, text = get(f"{base}/metrics")
        assert (status, content_type) == (200, CONTENT_TYPE)
        status, _, health = get(f"{base}/healthz")
        assert status == 200 and health.startswith("ok\n") and "\nxid: " in health  # the XID watcher is listed
        status, _, missing = get(f"{base}/nope")
        assert status == 404 and "/metrics" in missing
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert len(samples(text)["DCGM_FI_DEV_GPU_TEMP"]) == 8


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.0.0.0:9400", ("0.0.0.0", 9400)), (":9400", ("0.0.0.0", 9400)), ("[::]:9401", ("::", 9401)),
     ("127.0.0.1:0", ("127.0.0.1", 0))],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text, "--listen") == expected


@pytest.mark.parametrize("text", ["9400", "host:port", "0.0.0.0:70000"])
def test_bad_listen_addresses_say_what_is_expected(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--listen .*: expected HOST:PORT such as 0\.0\.0\.0:9400"):
        parse_listen(text, "--listen")


def test_once_prints_one_scrape() -> None:
    result = CliRunner().invoke(app, ["--simulate", "a30", "exporter", "--once", "--hostname", "gpu-node-7",
                                      "--hostname-label", "hostname", "--kubelet-pod-resources", "none"])
    assert result.exit_code == 0, result.output
    (labels, _), = samples(result.stdout)["DCGM_FI_DEV_FB_TOTAL"]
    assert labels["hostname"] == "gpu-node-7"
    assert labels["modelName"] == "NVIDIA A30"


def test_a_bad_host_label_mode_is_refused() -> None:
    result = CliRunner().invoke(app, ["--simulate", "t4", "exporter", "--once", "--hostname-label", "host"])
    assert result.exit_code != 0
    assert "allowed values are Hostname, hostname, none" in str(result.exception)


def test_the_daemon_serves_until_sigterm_and_exits_cleanly(tmp_path: Path) -> None:
    env = {**os.environ, "NODE_NAME": "node-from-env"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kgpu", "--simulate", "t4", "exporter", "--listen", "127.0.0.1:0",
         "--kubelet-pod-resources", str(tmp_path / "none.sock")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        port = None
        deadline = time.monotonic() + 30
        assert proc.stderr is not None
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            record = json.loads(line)
            if record["msg"].startswith("serving GPU metrics"):
                port = int(record["msg"].rsplit(":", 1)[1].split("/")[0])
        assert port, "the exporter did not log its address"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
            text = response.read().decode()
        (labels, _), = samples(text)["DCGM_FI_DEV_GPU_TEMP"]
        assert labels["Hostname"] == "node-from-env"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_changed_counters_file_is_served_without_a_restart(tmp_path: Path) -> None:
    # Given an exporter publishing the counters of a mounted ConfigMap: the GPU temperature only
    configmap = ConfigMapVolume(tmp_path / "counters")
    configmap.update("DCGM_FI_DEV_GPU_TEMP, gauge, GPU temperature (in C).\n")
    port = free_port()
    settings = ExporterSettings(GlobalOptions(simulate="t4"), listen=f"127.0.0.1:{port}", collect=configmap.path,
                                kubelet_pod_resources="none", device_plugin_state="none")
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(settings,), kwargs={"stop": stop})
    thread.start()
    base = f"http://127.0.0.1:{port}"

    def families() -> set[str]:
        return set(samples(get(f"{base}/metrics")[2]))

    try:
        wait_until_serving(f"{base}/healthz")
        assert "DCGM_FI_DEV_GPU_TEMP" in families() and "DCGM_FI_DEV_FB_USED" not in families()
        # When the ConfigMap adds framebuffer memory, the next scrapes have it
        configmap.update("DCGM_FI_DEV_GPU_TEMP, gauge, temp.\nDCGM_FI_DEV_FB_USED, gauge, used.\n")
        deadline = time.monotonic() + 30
        while "DCGM_FI_DEV_FB_USED" not in families() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "DCGM_FI_DEV_FB_USED" in families()
        # When it becomes unusable, the exporter keeps the counters it has and says why on /healthz
        configmap.update("this is not a counters file\n")
        deadline = time.monotonic() + 30
        while "refused" not in get(f"{base}/healthz")[2] and time.monotonic() < deadline:
            time.sleep(0.1)
        status, _, health = get(f"{base}/healthz")
        assert status == 200 and "its current content is refused" in health
        assert {"DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_FB_USED"} <= families()
    finally:
        stop.set()
        thread.join(30)
