"""`kgpu exporter` as a daemon: /metrics and /healthz over HTTP, SIGTERM ends it cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from exporter_helpers import samples
from typer.testing import CliRunner

from kgpu.cli import app
from kgpu.errors import ConfigError
from kgpu.exporter import CONTENT_TYPE, ExporterOptions, GPUCollector, load_counters
from kgpu.exporter.server import MetricsServer, parse_listen
from kgpu.gpu import open_backend


def test_metrics_and_healthz_are_served() -> None:
    collector = GPUCollector(open_backend(simulate="h100x8"), ExporterOptions(load_counters(None)))
    server = MetricsServer(collector, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:
            assert response.headers["Content-Type"] == CONTENT_TYPE
            text = response.read().decode()
        with urllib.request.urlopen(f"{base}/healthz", timeout=30) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/nope", timeout=30)
        assert missing.value.code == 404
    finally:
        server.stop()
        collector.close()
    assert len(samples(text)["DCGM_FI_DEV_GPU_TEMP"]) == 8


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.0.0.0:9400", ("0.0.0.0", 9400)), (":9400", ("0.0.0.0", 9400)), ("[::]:9401", ("::", 9401)),
     ("127.0.0.1:0", ("127.0.0.1", 0))],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9400", "host:port", "0.0.0.0:70000"])
def test_bad_listen_addresses_say_what_is_expected(text: str) -> None:
    with pytest.raises(ConfigError, match=r"expected HOST:PORT such as 0\.0\.0\.0:9400"):
        parse_listen(text)


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
