"""The chart's DRA driver: off by default; when on, NVIDIA's DeviceClasses and a plugin DaemonSet that the
Kubernetes 1.36 schemas, kgpu's own command line and least-privilege RBAC all accept."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml
from manifest_checks import literal_env, parse_kgpu_command

helm_python = pytest.importorskip("helm_python", reason="dev dependency helm-python-sdk (make test installs it)")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "kgpu"
DRA_KUBE_VERSION = "1.36"  # resource.k8s.io/v1 and DeviceClass.extendedResourceName

_spec = importlib.util.spec_from_file_location("render_manifests", REPO / "scripts" / "render_manifests.py")
assert _spec is not None and _spec.loader is not None
render_manifests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_manifests)

DRA = yaml.safe_load((CHART / "ci" / "dra-values.yaml").read_text())


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [yaml.safe_load(body) for _, body in render_manifests.render_documents(values)]


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def test_the_default_install_has_no_dra_driver() -> None:
    objs = render()
    assert not by_kind(objs, "DeviceClass")
    assert "kgpu-dra-plugin" not in by_kind(objs, "DaemonSet")


def test_with_dra_on_every_object_is_valid_kubernetes_1_36_and_the_device_plugin_is_off() -> None:
    objs = render(DRA)
    problems = []
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, DRA_KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{obj['kind']} {obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    assert problems == []
    assert "kgpu-device-plugin" not in by_kind(objs, "DaemonSet")
    report = helm_python.lint(CHART, DRA, strict=True, kube_version="v1.36.0", namespace="kube-system")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_nvidias_device_classes_select_the_drivers_gpus_and_mig_devices() -> None:
    classes = by_kind(render(DRA), "DeviceClass")
    gpu = "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'"
    assert classes["gpu.nvidia.com"]["spec"] == {
        "selectors": [{"cel": {"expression": gpu}}], "extendedResourceName": "nvidia.com/gpu"}
    assert classes["mig.nvidia.com"]["spec"]["selectors"][0]["cel"]["expression"] == (
        "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'mig'")


def test_the_plugin_runs_a_command_line_kgpu_accepts_with_the_charts_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {**DRA, "draPlugin": {**DRA["draPlugin"], "consumableShares": 4, "unhealthyDevices": "taint"},
              "driverRoot": "/run/nvidia/driver"}
    ds = by_kind(render(values), "DaemonSet")["kgpu-dra-plugin"]
    spec = ds["spec"]["template"]["spec"]
    [c] = spec["containers"]
    for name, value in literal_env(c).items():
        monkeypatch.setenv(name, value)
    params = parse_kgpu_command(c["args"])
    assert (params["consumable_shares"], params["unhealthy_devices"], params["driver_name"]) == (
        "4", "taint", "gpu.nvidia.com")
    assert literal_env(c)["NVIDIA_DRIVER_ROOT"] == "/run/nvidia/driver"  # kgpu's one --driver-root (host path)
    assert str(params["host_root"]) == "/host-root"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    for path in ("/var/lib/kubelet/plugins_registry", "/var/lib/kubelet/plugins", "/var/run/cdi", "/run/kgpu",
                 "/dev/shm", "/host-root"):
        assert path in mounts, path
    assert mounts["/host-root"]["readOnly"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    # the MPS daemons the plugin starts use the directory clients get as /dev/shm
    assert volumes["mps-shm"]["hostPath"]["path"] == "/run/kgpu/mps/shm"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_the_plugins_rbac_reads_claims_and_writes_only_slices() -> None:
    role = by_kind(render(DRA), "ClusterRole")["kgpu-dra-plugin"]
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules == {
        (("resource.k8s.io",), ("resourceclaims",)): {"get"},
        (("resource.k8s.io",), ("resourceslices",)): {"get", "list", "create", "patch", "delete"},
        (("",), ("nodes",)): {"get"},
    }
