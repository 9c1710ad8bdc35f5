"""deploy/manifests/device-plugin.yaml: a DaemonSet the kubelet will run, and a config kgpu accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kgpu.config.resolve import resolve_config

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


def test_container_arguments_are_ones_kgpu_device_plugin_accepts() -> None:
    from typer.testing import CliRunner

    from kgpu.cli import app

    container = _docs()["DaemonSet"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["kgpu"]
    args = container["args"]
    assert args[0] == "device-plugin"
    # Every flag must exist: with --help appended, click parses them all (an unknown one exits 2) and stops.
    result = CliRunner().invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    typo = CliRunner().invoke(app, [*args, "--kubelet-dri=/x", "--help"])
    assert typo.exit_code == 2


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
