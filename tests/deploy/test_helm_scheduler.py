"""The chart's scheduler for GPU shares: a second kube-scheduler calling `kgpu scheduler-extender` beside it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml
from manifest_checks import parse_kgpu_command, schema_problems

pytest.importorskip("helm_python", reason="dev dependency helm-python-sdk (make test installs it)")
pytest.importorskip("kubernetes_validate")

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("render_manifests", REPO / "scripts" / "render_manifests.py")
assert _spec is not None and _spec.loader is not None
render_manifests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_manifests)


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [yaml.safe_load(body) for _, body in render_manifests.render_documents(values)]


@pytest.fixture(scope="module")
def objs() -> list[dict[str, Any]]:
    return render({"scheduler": {"enabled": True, "extraSchedulerNames": ["hami-scheduler"],
                                 "gpuSchedulerPolicy": "binpack", "legacyMetrics": True}})


def one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def test_off_by_default() -> None:
    assert not [o for o in render() if "scheduler" in o["metadata"]["name"]]


def test_objects_are_valid_kubernetes(objs: list[dict[str, Any]]) -> None:
    assert schema_problems(objs) == []


def test_scheduler_configuration_calls_the_extender_for_hamis_resources(objs: list[dict[str, Any]]) -> None:
    config = yaml.safe_load(one(objs, "ConfigMap", "kgpu-scheduler")["data"]["config.yaml"])
    assert config["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert [p["schedulerName"] for p in config["profiles"]] == ["kgpu-scheduler", "hami-scheduler"]
    assert config["leaderElection"]["resourceName"] == "kgpu-scheduler"  # not the default scheduler's lease
    (ext,) = config["extenders"]
    assert ext["urlPrefix"] == "http://127.0.0.1:8080" and ext["nodeCacheCapable"] is True
    assert (ext["filterVerb"], ext["prioritizeVerb"], ext["bindVerb"]) == ("filter", "prioritize", "bind")
    managed = {r["name"]: r["ignoredByScheduler"] for r in ext["managedResources"]}
    assert managed == {"nvidia.com/gpu": False, "nvidia.com/gpumem": True, "nvidia.com/gpumem-percentage": True,
                       "nvidia.com/gpucores": True}


def test_extender_container_runs_kgpu_with_flags_the_cli_accepts(objs: list[dict[str, Any]]) -> None:
    deployment = one(objs, "Deployment", "kgpu-scheduler")
    spec = deployment["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in spec["containers"]}
    params = parse_kgpu_command(containers["extender"]["args"])
    assert params["http_bind"] == "127.0.0.1:8080" and params["gpu_scheduler_policy"] == "binpack"
    assert params["legacy_metrics"] is True and params["metrics_bind_address"] == ":9395"
    assert containers["kube-scheduler"]["command"][:2] == ["kube-scheduler", "--config=/etc/kgpu-scheduler/config.yaml"]
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    for c in spec["containers"]:
        assert c["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert c["livenessProbe"] and c["readinessProbe"] and c["resources"]["limits"]


def test_rbac_adds_only_pod_patches_and_its_own_lease_to_the_built_in_scheduler_roles(
        objs: list[dict[str, Any]]) -> None:
    assert one(objs, "ClusterRole", "kgpu-scheduler-extender")["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}]
    bound = {o["roleRef"]["name"] for o in objs if o["kind"] in ("ClusterRoleBinding", "RoleBinding")
             and o["subjects"][0]["name"] == "kgpu-scheduler"}
    assert bound == {"system:kube-scheduler", "system:volume-scheduler", "extension-apiserver-authentication-reader",
                     "kgpu-scheduler-extender", "kgpu-scheduler-lease"}
    lease = one(objs, "Role", "kgpu-scheduler-lease")["rules"]
    assert {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["kgpu-scheduler"],
            "verbs": ["get", "update"]} in lease


def test_metrics_service_points_at_the_extenders_status_port(objs: list[dict[str, Any]]) -> None:
    service = one(objs, "Service", "kgpu-scheduler")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9395, "targetPort": "metrics"}]
