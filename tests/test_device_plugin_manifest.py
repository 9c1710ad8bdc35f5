"""deploy/manifests/device-plugin.yaml: a DaemonSet the kubelet will run, and a config kgpu accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kgpu.config.flags import DEVICE_PLUGIN, flags_of
from kgpu.config.resolve import resolve_config
from kgpu.daemon import parse_listen
from kgpu.daemon.entry import parse

MANIFEST = Path(__file__).resolve().parent.parent / "deploy/manifests/device-plugin.yaml"


def _docs() -> dict[str, Any]:
    return {d["kind"]: d for d in yaml.safe_load_all(MANIFEST.read_text()) if d}


def test_daemonset_runs_on_gpu_nodes_as_a_critical_unprivileged_pod() -> None:
    ds = _docs()["DaemonSet"]
    assert ds["metadata"]["namespace"] == "kube-system"
    pod = ds["spec"]["template"]["spec"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["priorityClassName"] == "system-node-critical"
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert "privileged" not in security
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert host_paths["device-plugins"] == "/var/lib/kubelet/device-plugins"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["device-plugins"] == "/var/lib/kubelet/device-plugins"
    assert {v["name"] for v in pod["volumes"]} == set(mounts)


def test_container_arguments_are_ones_kgpu_device_plugin_accepts_and_its_healthz_is_probed() -> None:
    container = _docs()["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["kgpu-device-plugin"]
    # Every flag must exist: the entry point's parser exits 2 on an unknown one.
    rows = flags_of(DEVICE_PLUGIN)
    given = parse("kgpu-device-plugin", DEVICE_PLUGIN, rows, "", container["args"])
    with pytest.raises(SystemExit) as typo:
        parse("kgpu-device-plugin", DEVICE_PLUGIN, rows, "", [*container["args"], "--kubelet-dri=/x"])
    assert typo.value.code == 2
    # The liveness probe asks the port --healthz serves.
    port = next(p for p in container["ports"] if p["name"] == container["livenessProbe"]["httpGet"]["port"])
    assert parse_listen(str(given["healthz"]), "--healthz")[1] == port["containerPort"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_configmap_holds_a_config_file_kgpu_resolves(tmp_path: Path) -> None:
    config_map = _docs()["ConfigMap"]
    pod = _docs()["DaemonSet"]["spec"]["template"]["spec"]
    assert any(v.get("configMap", {}).get("name") == config_map["metadata"]["name"] for v in pod["volumes"])
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    config = resolve_config({}, {}, path)
    assert config.flags.mig_strategy == "none"
    assert config.flags.fail_on_init_error is False
    assert config.flags.plugin.device_list_strategy == ("envvar",)
