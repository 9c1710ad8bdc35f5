"""deploy/manifests/exporter*.yaml: a DaemonSet whose command line kgpu-exporter accepts, a Service, a
ServiceMonitor."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from exporter_helpers import samples

from kgpu.exporter.daemon import main

MANIFESTS = Path(__file__).resolve().parents[1] / "deploy" / "manifests"


def docs(name: str) -> dict[str, Any]:
    return {d["kind"]: d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d}


def test_the_daemonset_command_line_is_one_kgpu_exporter_accepts(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    ds = docs("exporter.yaml")["DaemonSet"]
    container = ds["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["kgpu-exporter"]
    assert "kgpu-exporter" in tomllib.loads((MANIFESTS.parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    # The same arguments, with a simulated node and one scrape instead of serving.
    monkeypatch.setenv("KGPU_SIMULATE", "t4")
    monkeypatch.setattr(sys, "argv", [*container["command"], *container["args"], "--once"])
    main()
    assert "DCGM_FI_DEV_GPU_TEMP" in samples(capsys.readouterr().out)


def test_the_daemonset_mounts_the_kubelet_socket_and_serves_9400() -> None:
    spec = docs("exporter.yaml")["DaemonSet"]["spec"]["template"]["spec"]
    container = spec["containers"][0]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    expected = [
        ("/var/lib/kubelet/pod-resources", "--kubelet-pod-resources=/var/lib/kubelet/pod-resources/kubelet.sock"),
        ("/run/kgpu/device-plugin", "--device-plugin-state=/run/kgpu/device-plugin/state.json"),
    ]
    for path, arg in expected:
        assert volumes[mounts[path]["name"]]["hostPath"]["path"] == path
        assert mounts[path]["readOnly"] is True
        assert arg in container["args"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9400, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in container["env"]


def test_service_and_service_monitor_select_the_exporter() -> None:
    exporter = docs("exporter.yaml")
    pod_labels = exporter["DaemonSet"]["spec"]["template"]["metadata"]["labels"]
    service = exporter["Service"]
    assert all(pod_labels[k] == v for k, v in service["spec"]["selector"].items())
    assert service["spec"]["ports"][0]["port"] == 9400
    monitor = docs("exporter-servicemonitor.yaml")["ServiceMonitor"]
    assert all(service["metadata"]["labels"][k] == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
