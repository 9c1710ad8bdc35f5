"""The Helm chart, rendered by Helm's own engine and checked against Kubernetes' schemas and our CLI."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

helm_python = pytest.importorskip("helm_python", reason="dev dependency helm-python-sdk (make test installs it)")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "kgpu"
KUBE_VERSION = "1.33"  # schemas for a current Kubernetes release; the chart supports >= 1.27

_spec = importlib.util.spec_from_file_location("render_manifests", REPO / "scripts" / "render_manifests.py")
assert _spec is not None and _spec.loader is not None
render_manifests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_manifests)


def ci_values(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
    return loaded


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [yaml.safe_load(body) for _, body in render_manifests.render_documents(values)]


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def containers(objs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    out = []
    for o in objs:
        if o["kind"] in ("DaemonSet", "Job"):
            spec = o["spec"]["template"]["spec"]
            out += [(o["metadata"]["name"], spec, c) for c in spec["containers"]]
    return out


VARIANTS = {
    "default": {},
    "time-slicing": ci_values("time-slicing"),
    "mps": ci_values("mps"),
    "monitoring": ci_values("monitoring"),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_rendered_object_is_valid_kubernetes(variant: str) -> None:
    objs = render(VARIANTS[variant])
    assert objs
    for obj in objs:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # a CRD's kind: checked by its own test below
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{variant}: {obj['kind']} {obj['metadata']['name']}: {exc.message} at {list(exc.path)}")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_chart_lints_clean_in_strict_mode(variant: str) -> None:
    report = helm_python.lint(CHART, VARIANTS[variant], strict=True, kube_version=f"v{KUBE_VERSION}.0",
                              namespace="kube-system")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_default_install_creates_the_node_components_and_their_accounts() -> None:
    objs = render()
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in objs)
    assert kinds == [
        ("ClusterRole", "kgpu-labeler"), ("ClusterRole", "kgpu-validation"),
        ("ClusterRoleBinding", "kgpu-labeler"), ("ClusterRoleBinding", "kgpu-validation"),
        ("ConfigMap", "kgpu-config"),
        ("DaemonSet", "kgpu-device-plugin"), ("DaemonSet", "kgpu-exporter"), ("DaemonSet", "kgpu-labeler"),
        ("Job", "kgpu-validation"),
        ("Role", "kgpu-validation"), ("RoleBinding", "kgpu-validation"),
        ("Service", "kgpu-exporter"),
        ("ServiceAccount", "kgpu"), ("ServiceAccount", "kgpu-labeler"), ("ServiceAccount", "kgpu-validation"),
    ]
    assert {o["metadata"].get("namespace", "kube-system") for o in objs} == {"kube-system"}


def test_node_components_land_on_gpu_nodes_as_node_critical() -> None:
    for ds in by_kind(render(), "DaemonSet").values():
        spec = ds["spec"]["template"]["spec"]
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        assert spec["priorityClassName"] == "system-node-critical"


def test_scheduling_is_overridable() -> None:
    # Helm merges maps: a default key is removed by setting it to null (--set nodeSelector.KEY=null).
    objs = render({"nodeSelector": {"nvidia.com/gpu.present": None, "node.example.com/gpu": "yes"},
                   "tolerations": [], "priorityClassName": "gpu-critical"})
    for ds in by_kind(objs, "DaemonSet").values():
        spec = ds["spec"]["template"]["spec"]
        assert spec["nodeSelector"] == {"node.example.com/gpu": "yes"}
        assert "tolerations" not in spec
        assert spec["priorityClassName"] == "gpu-critical"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_container_drops_all_capabilities_and_has_limits(variant: str) -> None:
    for owner, _, c in containers(render(VARIANTS[variant])):
        sc = c["securityContext"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, owner
        assert sc["allowPrivilegeEscalation"] is False, owner
        assert "privileged" not in sc, owner
        assert set(c["resources"]) == {"requests", "limits"}, owner


def test_only_components_that_need_root_run_as_root() -> None:
    users = {owner: c["securityContext"]["runAsUser"] for owner, _, c in containers(render(VARIANTS["mps"]))}
    assert users == {"kgpu-device-plugin": 0, "kgpu-exporter": 0, "kgpu-mps-daemon": 0,
                     "kgpu-labeler": 65532, "kgpu-validation": 65532}


def test_daemons_have_liveness_and_readiness_probes() -> None:
    for owner, _, c in containers(render(VARIANTS["mps"])):
        if owner != "kgpu-validation":
            assert "livenessProbe" in c and "readinessProbe" in c, owner


def test_http_probes_point_at_declared_ports() -> None:
    for owner, _, c in containers(render()):
        ports = {p["name"] for p in c.get("ports", [])}
        for probe in ("livenessProbe", "readinessProbe"):
            if "httpGet" in c.get(probe, {}):
                assert c[probe]["httpGet"]["port"] in ports, owner


def test_rbac_is_least_privilege() -> None:
    objs = render()
    roles = {(o["kind"], o["metadata"]["name"]): o["rules"] for o in objs if o["kind"] in ("Role", "ClusterRole")}
    assert roles == {
        ("ClusterRole", "kgpu-labeler"): [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}],
        ("ClusterRole", "kgpu-validation"): [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}],
        ("Role", "kgpu-validation"): [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "delete"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        ],
    }
    accounts = by_kind(objs, "ServiceAccount")
    assert accounts["kgpu"]["automountServiceAccountToken"] is False
    daemonsets = by_kind(objs, "DaemonSet")
    assert daemonsets["kgpu-labeler"]["spec"]["template"]["spec"]["serviceAccountName"] == "kgpu-labeler"
    for name in ("kgpu-device-plugin", "kgpu-exporter"):
        spec = daemonsets[name]["spec"]["template"]["spec"]
        assert (spec["serviceAccountName"], spec["automountServiceAccountToken"]) == ("kgpu", False)
    bindings = {o["metadata"]["name"]: o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")}
    for b in bindings.values():
        assert b["subjects"][0]["name"] == b["roleRef"]["name"]


def plugin_config(objs: list[dict[str, Any]], tmp_path: Path) -> Any:
    """The rendered config file as the device plugin resolves it (with no flags or environment)."""
    from kgpu.deviceplugin.config import resolve_config

    path = tmp_path / "config.yaml"
    path.write_text(by_kind(objs, "ConfigMap")["kgpu-config"]["data"]["config.yaml"])
    return resolve_config({}, {}, path)


def test_default_config_is_the_device_plugins_defaults(tmp_path: Path) -> None:
    config = plugin_config(render(), tmp_path)
    assert config.sharing.strategy == "none"
    assert str(config.flags.mig_strategy) == "none"


def test_config_file_reaches_every_component_and_is_valid_nvidia_v1(tmp_path: Path) -> None:
    objs = render(VARIANTS["time-slicing"])
    config = plugin_config(objs, tmp_path)
    assert config.sharing.strategy == "time-slicing"
    (shared,) = config.sharing.time_slicing.resources
    assert (shared.name, shared.replicas) == ("nvidia.com/gpu", 4)
    assert config.sharing.time_slicing.fail_requests_greater_than_one is True
    for owner, spec, c in containers(objs):
        if owner in ("kgpu-validation", "kgpu-exporter"):
            continue  # the exporter and the Job do not read the device-plugin config
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert mounts["config"] == "/etc/kgpu", owner
        assert {"name": "config", "configMap": {"name": "kgpu-config"}} in spec["volumes"]
        assert "/etc/kgpu/config.yaml" in c["args"], owner


def test_changing_the_config_restarts_the_daemons() -> None:
    def checksums(values: dict[str, Any]) -> set[str]:
        return {ds["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                for name, ds in by_kind(render(values), "DaemonSet").items() if name != "kgpu-exporter"}

    assert len(checksums({})) == 1
    assert checksums({}) != checksums(VARIANTS["time-slicing"])


def test_mps_daemon_shares_dev_shm_with_the_clients_allocate_gives(tmp_path: Path) -> None:
    from kgpu.sharing.paths import DEFAULT_MPS_ROOT, MpsPaths

    objs = render(VARIANTS["mps"])
    ds = by_kind(objs, "DaemonSet")["kgpu-mps-daemon"]
    spec = ds["spec"]["template"]["spec"]
    assert "hostIPC" not in spec  # MPS clients do not get the host's IPC namespace; they share /dev/shm
    volumes = {v["name"]: v for v in spec["volumes"]}
    shm = next(m for m in spec["containers"][0]["volumeMounts"] if m["mountPath"] == "/dev/shm")
    # The daemon's /dev/shm is the host directory Allocate mounts at /dev/shm in every MPS client
    assert volumes[shm["name"]]["hostPath"]["path"] == str(MpsPaths(DEFAULT_MPS_ROOT).shm_dir)
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert plugin_config(objs, tmp_path).sharing.strategy == "mps"


def test_exporter_service_selects_the_exporter_pods_on_the_metrics_port() -> None:
    objs = render()
    svc = by_kind(objs, "Service")["kgpu-exporter"]
    pod_labels = by_kind(objs, "DaemonSet")["kgpu-exporter"]["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9400, "targetPort": "metrics", "protocol": "TCP"}]


def test_monitoring_values_add_a_service_monitor_and_drop_the_validation_job() -> None:
    objs = render(VARIANTS["monitoring"])
    monitor = by_kind(objs, "ServiceMonitor")["kgpu-exporter"]
    svc = by_kind(objs, "Service")["kgpu-exporter"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s",
                                             "honorLabels": True}]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert not by_kind(objs, "Job")
    assert "kgpu-validation" not in by_kind(objs, "ServiceAccount")
    assert not by_kind(objs, "Role")
    assert by_kind(objs, "RuntimeClass") == {"nvidia": {
        "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "handler": "nvidia",
        "metadata": {"name": "nvidia", "labels": by_kind(objs, "RuntimeClass")["nvidia"]["metadata"]["labels"]}}}
    for owner, spec, c in containers(objs):
        assert spec["runtimeClassName"] == "nvidia", owner
        assert c["image"] == "registry.example.com/gpu/kgpu:0.1.0-test"
        # NVIDIA's layout: the host path in NVIDIA_DRIVER_ROOT, the mount point in CONTAINER_DRIVER_ROOT.
        assert {"name": "NVIDIA_DRIVER_ROOT", "value": "/run/nvidia/driver"} in c["env"]
        assert {"name": "CONTAINER_DRIVER_ROOT", "value": "/driver-root"} in c["env"]
        assert {"name": "driver-root", "mountPath": "/driver-root", "readOnly": True} in c["volumeMounts"]
        assert {"name": "driver-root", "hostPath": {"path": "/run/nvidia/driver", "type": "Directory"}} \
            in spec["volumes"]


def test_validation_job_is_a_post_install_hook_running_validate_pod() -> None:
    job = by_kind(render(), "Job")["kgpu-validation"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["kgpu"]
    assert c["args"][:2] == ["validate", "--pod"]
    assert c["args"][c["args"].index("--image") + 1] == "kgpu:0.1.0"
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "kgpu-validation"
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in c["env"]


def _kgpu_commands() -> dict[str, Any]:
    import typer

    from kgpu.cli import app

    group = typer.main.get_command(app)
    return dict(group.commands)  # type: ignore[attr-defined]


@pytest.mark.parametrize("variant", ["default", "mps"])
def test_every_container_runs_a_real_kgpu_command_with_real_flags(variant: str) -> None:
    commands = _kgpu_commands()
    missing = []
    for owner, _, c in containers(render(VARIANTS[variant])):
        name, *args = c["args"]
        if name not in commands:
            missing.append(f"{owner}: kgpu {name}")
            continue
        known = {opt for p in commands[name].params for opt in (*p.opts, *p.secondary_opts)}
        flags = [a.split("=")[0] for a in args if a.startswith("--")]
        assert set(flags) <= known, f"{owner}: kgpu {name} has no {sorted(set(flags) - known)}"
    if missing:
        pytest.skip(f"not on this branch yet: {', '.join(missing)}")


def test_manifests_file_is_the_default_render() -> None:
    assert (REPO / "deploy/manifests/kgpu.yaml").read_text() == render_manifests.render_manifest(), \
        "deploy/manifests/kgpu.yaml is stale: run python scripts/render_manifests.py"


def test_manifests_are_in_install_order_with_the_hook_last() -> None:
    kinds = [yaml.safe_load(body)["kind"] for _, body in render_manifests.render_documents()]
    assert kinds[:3] == ["ServiceAccount"] * 3
    assert kinds.index("ConfigMap") < kinds.index("DaemonSet")
    assert kinds.index("ClusterRoleBinding") < kinds.index("DaemonSet")
    assert kinds[-1] == "Job"


def test_install_notes_say_how_to_verify() -> None:
    with helm_python.Chart.load(CHART) as chart:
        notes = chart.render(values={}, name="kgpu", namespace="kube-system", is_install=True)[
            "kgpu/templates/NOTES.txt"]
        custom = chart.render(values={"nodeSelector": {"nvidia.com/gpu.present": None, "pool": "gpu"},
                                      "validation": {"enabled": False}},
                              name="kgpu", namespace="kube-system", is_install=True)["kgpu/templates/NOTES.txt"]
    assert "kubectl label node NODE nvidia.com/gpu.present=true" in notes
    assert "kubectl -n kube-system logs job/kgpu-validation" in notes
    assert "allocatable.nvidia\\.com/gpu" in notes
    assert 'matching {"pool":"gpu"}' in custom
    assert "nvidia.com/gpu.present=true" not in custom and "job/kgpu-validation" not in custom
