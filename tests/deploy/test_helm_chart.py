"""The Helm chart, rendered by Helm's own engine and checked against Kubernetes' schemas and our CLI."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml
from manifest_checks import (
    DRIVER_ROOT_MOUNT,
    KUBE_VERSION,
    driver_root_problems,
    global_driver_root,
    literal_env,
    parse_container_command,
    parse_kgpu_command,
    schedules_on,
)

helm_python = pytest.importorskip("helm_python", reason="dev dependency helm-python-sdk (make test installs it)")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "kgpu"

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


def uninstall_hook(obj: dict[str, Any]) -> bool:
    return "delete" in obj["metadata"].get("annotations", {}).get("helm.sh/hook", "")


def containers(objs: list[dict[str, Any]], sidecars: bool = False) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Containers of what an install runs (the uninstall hook has its own test); ``sidecars``: with the
    config-manager beside the device plugin and the labeler (and its init container)."""
    out = []
    for o in objs:
        if o["kind"] in ("DaemonSet", "Job") and not uninstall_hook(o):
            spec = o["spec"]["template"]["spec"]
            out += [(o["metadata"]["name"], spec, c) for c in spec["containers"] + spec.get("initContainers", [])
                    if sidecars or not c["name"].startswith("config-manager")]
    return out


LABEL = "nvidia.com/device-plugin.config"

VARIANTS = {
    "default": {},
    "time-slicing": ci_values("time-slicing"),
    "mps": ci_values("mps"),
    "monitoring": ci_values("monitoring"),
    "lab": ci_values("lab"),
    "config-manager": ci_values("config-manager"),
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
        ("ClusterRole", "kgpu-labeler"), ("ClusterRole", "kgpu-labeler-prune"), ("ClusterRole", "kgpu-validation"),
        ("ClusterRoleBinding", "kgpu-labeler"), ("ClusterRoleBinding", "kgpu-labeler-prune"),
        ("ClusterRoleBinding", "kgpu-validation"),
        ("ConfigMap", "kgpu-config"),
        ("DaemonSet", "kgpu-device-plugin"), ("DaemonSet", "kgpu-exporter"), ("DaemonSet", "kgpu-labeler"),
        ("Job", "kgpu-labeler-prune"), ("Job", "kgpu-validation"),
        ("Role", "kgpu-config-reader"), ("Role", "kgpu-validation"),
        ("RoleBinding", "kgpu-config-reader"), ("RoleBinding", "kgpu-validation"),
        ("Service", "kgpu-exporter"),
        ("ServiceAccount", "kgpu"), ("ServiceAccount", "kgpu-device-plugin"), ("ServiceAccount", "kgpu-labeler"),
        ("ServiceAccount", "kgpu-labeler-prune"),
        ("ServiceAccount", "kgpu-validation"),
    ]
    assert {o["metadata"].get("namespace", "kube-system") for o in objs} == {"kube-system"}


# NVIDIA's device-plugin/GFD chart's default affinity (its Tegra CPU-vendor term aside): NFD's PCI label OR
# the label the labeler itself sets; nodeSelectorTerms are ORed.
LABELER_AFFINITY = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
    {"matchExpressions": [{"key": "feature.node.kubernetes.io/pci-10de.present", "operator": "In",
                           "values": ["true"]}]},
    {"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}]},
]}}}
FRESH_GPU_NODE_WITH_NFD = {"kubernetes.io/os": "linux", "feature.node.kubernetes.io/pci-10de.present": "true"}


def test_node_components_land_on_gpu_nodes_as_node_critical() -> None:
    daemonsets = by_kind(render(VARIANTS["mps"]), "DaemonSet")
    assert set(daemonsets) == {"kgpu-device-plugin", "kgpu-exporter", "kgpu-labeler", "kgpu-mps-daemon"}
    for name, ds in daemonsets.items():
        spec = ds["spec"]["template"]["spec"]
        if name == "kgpu-labeler":
            assert "nodeSelector" not in spec
            assert spec["affinity"] == LABELER_AFFINITY
        else:
            assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, name
            assert "affinity" not in spec, name
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        assert spec["priorityClassName"] == "system-node-critical"


def test_a_fresh_gpu_node_gets_the_labeler_which_labels_it_for_the_others() -> None:
    specs = {name: ds["spec"]["template"]["spec"] for name, ds in by_kind(render(), "DaemonSet").items()}
    # Given a GPU node that NFD has found and nothing has labelled yet: the labeler, and only it, starts there.
    assert {n for n, s in specs.items() if schedules_on(s, FRESH_GPU_NODE_WITH_NFD)} == {"kgpu-labeler"}
    # The labeler sets nvidia.com/gpu.present=true (as an admin does by hand without NFD): everything runs.
    for node in ({**FRESH_GPU_NODE_WITH_NFD, "nvidia.com/gpu.present": "true"}, {"nvidia.com/gpu.present": "true"}):
        assert {n for n, s in specs.items() if schedules_on(s, node)} == set(specs)
    # A node without an NVIDIA device gets nothing.
    assert not [n for n, s in specs.items() if schedules_on(s, {"feature.node.kubernetes.io/pci-8086.present": "true"})]


def test_scheduling_is_overridable() -> None:
    # Helm merges maps: a default key is removed by setting it to null (--set nodeSelector.KEY=null).
    objs = render({"nodeSelector": {"nvidia.com/gpu.present": None, "node.example.com/gpu": "yes"},
                   "tolerations": [], "priorityClassName": "gpu-critical"})
    for name, ds in by_kind(objs, "DaemonSet").items():
        spec = ds["spec"]["template"]["spec"]
        # the labeler keeps its own scheduling (labeler.nodeSelector / labeler.affinity)
        assert spec.get("nodeSelector") == (None if name == "kgpu-labeler" else {"node.example.com/gpu": "yes"})
        assert "tolerations" not in spec
        assert spec["priorityClassName"] == "gpu-critical"


def test_the_labelers_scheduling_is_overridable() -> None:
    pool = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]}]}}}
    # Its own affinity and nodeSelector,
    labeler = by_kind(render({"labeler": {"affinity": pool, "nodeSelector": {"zone": "a"}}}),
                      "DaemonSet")["kgpu-labeler"]["spec"]["template"]["spec"]
    assert (labeler["affinity"], labeler["nodeSelector"]) == (pool, {"zone": "a"})
    # or, with both set to null, the global ones, as the other components.
    objs = render({"labeler": {"affinity": None, "nodeSelector": None}, "affinity": pool})
    for name, ds in by_kind(objs, "DaemonSet").items():
        spec = ds["spec"]["template"]["spec"]
        assert (spec["nodeSelector"], spec["affinity"]) == ({"nvidia.com/gpu.present": "true"}, pool), name


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "lab"])  # lab: toolkit-free, below
def test_every_container_drops_all_capabilities_and_has_limits(variant: str) -> None:
    for owner, _, c in containers(render(VARIANTS[variant]), sidecars=True):
        sc = c["securityContext"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, owner
        assert sc["allowPrivilegeEscalation"] is False, owner
        assert "privileged" not in sc, owner
        assert set(c["resources"]) == {"requests", "limits"}, owner


def test_the_lab_values_simulate_every_component_and_its_health_events() -> None:
    for owner, _, c in containers(render(VARIANTS["lab"])):
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert env["KGPU_SIMULATE"] == "h100x8", owner
        if owner != "kgpu-validation":
            assert env["KGPU_SIMULATE_EVENTS"] == "/run/kgpu/simulated-events.jsonl", owner
    assert not any(e["name"] == "KGPU_SIMULATE" for _, _, c in containers(render()) for e in c.get("env", []))


def test_only_components_that_need_root_run_as_root() -> None:
    users = {owner: c["securityContext"]["runAsUser"] for owner, _, c in containers(render(VARIANTS["mps"]))}
    assert users == {"kgpu-device-plugin": 0, "kgpu-exporter": 0, "kgpu-mps-daemon": 0,
                     "kgpu-labeler": 65532, "kgpu-validation": 65532}


def test_daemons_have_liveness_and_readiness_probes() -> None:
    for owner, _, c in containers(render(VARIANTS["mps"])):
        if owner != "kgpu-validation":
            assert "livenessProbe" in c and "readinessProbe" in c, owner


def served_port(args: list[str]) -> int | None:
    """The port a daemon's --healthz (or the exporter's --listen) serves /healthz on, from its arguments."""
    for i, arg in enumerate(args):
        name, _, value = arg.partition("=")
        if name in ("--healthz", "--listen"):
            return int((value or args[i + 1]).rsplit(":", 1)[1])
    return None


def test_http_probes_ask_the_port_the_daemon_serves() -> None:
    # Given the chart with every daemon on (the MPS variant), each HTTP probe names a declared port, and
    # that port is the one the container's --healthz (--listen) serves: the kubelet asks the daemon itself.
    probed = set()
    for owner, _, c in containers(render(VARIANTS["mps"])):
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for probe in ("livenessProbe", "readinessProbe"):
            if "httpGet" in c.get(probe, {}):
                assert ports[c[probe]["httpGet"]["port"]] == served_port(c["args"]), owner
                probed.add(c["name"])
    assert {"device-plugin", "labeler", "exporter", "mps-daemon"} <= probed


def test_rbac_is_least_privilege() -> None:
    objs = [o for o in render() if not uninstall_hook(o)]
    roles = {(o["kind"], o["metadata"]["name"]): o["rules"] for o in objs if o["kind"] in ("Role", "ClusterRole")}
    assert roles == {
        ("ClusterRole", "kgpu-labeler"): [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}],
        ("ClusterRole", "kgpu-validation"): [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}],
        ("Role", "kgpu-validation"): [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "delete"]},
            {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        ],
        # the config-manager sidecars read the config ConfigMap, no other
        ("Role", "kgpu-config-reader"): [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [
            "kgpu-config", "kgpu-configs"], "verbs": ["get", "list", "watch"]}],
    }
    subjects = {s["name"] for s in by_kind(objs, "RoleBinding")["kgpu-config-reader"]["subjects"]}
    assert subjects == {"kgpu-device-plugin", "kgpu-labeler"}
    accounts = by_kind(objs, "ServiceAccount")
    assert accounts["kgpu"]["automountServiceAccountToken"] is False
    daemonsets = by_kind(objs, "DaemonSet")
    assert daemonsets["kgpu-labeler"]["spec"]["template"]["spec"]["serviceAccountName"] == "kgpu-labeler"
    spec = daemonsets["kgpu-exporter"]["spec"]["template"]["spec"]
    assert (spec["serviceAccountName"], spec["automountServiceAccountToken"]) == ("kgpu", False)
    # the device plugin has an account of its own, with a token for its config-manager (rights above), and more
    # only for dynamic GPU shares
    assert daemonsets["kgpu-device-plugin"]["spec"]["template"]["spec"]["serviceAccountName"] == "kgpu-device-plugin"
    assert accounts["kgpu-device-plugin"]["automountServiceAccountToken"] is True
    mps_daemon = {"enabled": True}
    dynamic = render({"config": {"version": "v1", "sharing": {"mps": {"dynamic": {}}}}, "mpsDaemon": mps_daemon})
    named = render({"configManager": {"enabled": True}, "configs": {"shared": {"sharing": {"mps": {"dynamic": {}}}}},
                    "mpsDaemon": mps_daemon})
    assert "kgpu-device-plugin" in by_kind(named, "ClusterRole")  # a named config the node may choose
    assert by_kind(dynamic, "ClusterRole")["kgpu-device-plugin"]["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "patch"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["patch"]},
    ]
    bindings = {o["metadata"]["name"]: o for o in objs if o["kind"] in ("RoleBinding", "ClusterRoleBinding")}
    for name, b in bindings.items():
        if name != "kgpu-config-reader":
            assert b["subjects"][0]["name"] == b["roleRef"]["name"]


def plugin_config(objs: list[dict[str, Any]], tmp_path: Path) -> Any:
    """The rendered config file as the device plugin resolves it (with no flags or environment)."""
    from kgpu.config.resolve import resolve_config

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
        assert "/etc/kgpu/config.yaml" in c["args"], owner
        volumes = {v["name"]: v for v in spec["volumes"]}
        if owner in ("kgpu-device-plugin", "kgpu-labeler"):  # written by the config-manager beside them (below)
            assert volumes["config"] == {"name": "config", "emptyDir": {}}
            assert volumes["available-configs"] == {"name": "available-configs", "configMap": {"name": "kgpu-config"}}
        else:
            assert volumes["config"] == {"name": "config", "configMap": {"name": "kgpu-config"}}


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
    assert "kgpu-validation" not in by_kind(objs, "Job")
    assert "kgpu-validation" not in by_kind(objs, "ServiceAccount")
    assert list(by_kind(objs, "Role")) == ["kgpu-config-reader"]
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


def test_a_driver_root_reaches_every_node_component_as_nvidia_lays_it_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a driver container's root (GPU Operator) and every optional node component switched on,
    objs = render({**VARIANTS["mps"], "driverRoot": "/run/nvidia/driver"})
    nodes = [(owner, spec, c) for owner, spec, c in containers(objs) if owner != "kgpu-validation"]
    assert {owner for owner, _, _ in nodes} == {"kgpu-device-plugin", "kgpu-labeler", "kgpu-exporter",
                                                "kgpu-mps-daemon"}
    for owner, spec, c in nodes:
        # each has the host path mounted read-only at /driver-root, named by both variables,
        assert driver_root_problems(owner, spec, c, "/run/nvidia/driver") == []
        # every kgpu command reads the host path and the mount point from that environment,
        monkeypatch.delenv("NVIDIA_DRIVER_ROOT", raising=False)
        monkeypatch.delenv("CONTAINER_DRIVER_ROOT", raising=False)
        for name, value in literal_env(c).items():
            monkeypatch.setenv(name, value)
        assert global_driver_root() == ("/run/nvidia/driver", DRIVER_ROOT_MOUNT), owner
    # and the device plugin keeps the host path for what it hands to the kubelet.
    (plugin,) = [c for owner, _, c in nodes if owner == "kgpu-device-plugin"]
    from kgpu.config.resolve import resolve_config

    path = tmp_path / "config.yaml"
    path.write_text(by_kind(objs, "ConfigMap")["kgpu-config"]["data"]["config.yaml"])
    env = literal_env(plugin)
    assert env["CONTAINER_DRIVER_ROOT"] == DRIVER_ROOT_MOUNT
    mount = tmp_path / "mount"  # a stand-in for the DaemonSet's /driver-root
    mount.mkdir()
    config = resolve_config({}, env | {"CONTAINER_DRIVER_ROOT": str(mount)}, path)
    assert config.flags.nvidia_driver_root == "/run/nvidia/driver"
    assert (config.driver_root.host, config.driver_root.view) == ("/run/nvidia/driver", mount)


TOOLKIT_FREE = {"driverRoot": "/usr/local/nvidia", "config": {"version": "v1", "flags": {"plugin": {
    "deviceListStrategy": "driver-mounts"}}}}
EVERY_NODE_COMPONENT = {"mpsDaemon": {"enabled": True}, "validator": {"enabled": True},
                        "migManager": {"enabled": True}}


def test_toolkit_free_components_get_the_driver_read_only_and_the_gpus_device_nodes() -> None:
    # Given a node without the NVIDIA container toolkit: the documented two values, every node component on.
    objs = render({**TOOLKIT_FREE, **EVERY_NODE_COMPONENT})
    nodes = [(owner, spec, c) for owner, spec, c in containers(objs) if owner != "kgpu-validation"]
    assert len(nodes) == 6
    for owner, spec, c in nodes:
        sc = c["securityContext"]
        # NVML opens /dev/nvidiactl and /dev/nvidiaN, which only a privileged container reaches (nothing
        # injects them), so each is privileged — and no more: its root filesystem read-only, the driver root
        # read-only at /driver-root, no host PID/IPC namespace, and settings privileged ignores left out.
        assert sc["privileged"] is True, owner
        assert sc["readOnlyRootFilesystem"] is True, owner
        assert not {"allowPrivilegeEscalation", "capabilities", "seccompProfile"} & set(sc), owner
        assert driver_root_problems(owner, spec, c, "/usr/local/nvidia") == [], owner
        assert not (spec.get("hostPID") or spec.get("hostIPC") or spec.get("hostNetwork")), owner
        writable = [m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")]
        assert set(writable) <= {"/tmp", "/run/kgpu", "/var/lib/kubelet/device-plugins", "/dev/shm"}, owner
    # The labeler stays non-root: privileged gives it the device nodes but no capability.
    users = {owner: c["securityContext"]["runAsUser"] for owner, _, c in nodes}
    assert users["kgpu-labeler"] == 65532
    # The validation Job gets its GPU from the device plugin like any pod: not privileged.
    (job,) = [c for owner, _, c in containers(objs) if owner == "kgpu-validation"]
    assert "privileged" not in job["securityContext"] and job["securityContext"]["runAsNonRoot"] is True


def test_toolkit_free_without_a_driver_root_is_refused_naming_the_value() -> None:
    with pytest.raises(Exception, match="driver-mounts needs driverRoot"):
        render({**TOOLKIT_FREE, "driverRoot": ""})


def test_an_mps_config_without_the_mps_daemon_is_refused_naming_the_config() -> None:
    # Given per-node configs of which one shares GPUs through MPS, installed without the MPS daemon: a node
    # labelled with it would advertise slices that no control daemon serves, so the install is refused.
    mps = {"version": "v1", "sharing": {"mps": {"resources": [{"name": "nvidia.com/gpu", "replicas": 2}]}}}
    ts = {"version": "v1", "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 2}]}}}
    with pytest.raises(Exception, match=r"configs\.mps2: shares GPUs through MPS .*set mpsDaemon\.enabled=true"):
        render({"configManager": {"enabled": True}, "configs": {"mps2": mps, "ts2": ts}})
    with pytest.raises(Exception, match=r"^.*: config: shares GPUs through MPS"):
        render({"config": mps})
    # With the daemon, or with no MPS config at all, it installs.
    assert "kgpu-mps-daemon" in by_kind(render({"configManager": {"enabled": True}, "configs": {"mps2": mps},
                                                "mpsDaemon": {"enabled": True}}), "DaemonSet")
    assert "kgpu-mps-daemon" not in by_kind(render({"configManager": {"enabled": True}, "configs": {"ts2": ts}}),
                                            "DaemonSet")


def test_a_driver_root_alone_changes_no_privilege() -> None:
    # A GPU Operator driver container with the toolkit: the runtime injects the GPUs, nothing is privileged.
    for owner, _, c in containers(render({"driverRoot": "/run/nvidia/driver", **EVERY_NODE_COMPONENT})):
        assert "privileged" not in c["securityContext"], owner
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, owner


def test_the_validation_job_and_the_prune_hook_can_use_the_node_network_too() -> None:
    # Clusters whose pods reach the API server only from the host network (the lab): the node components take
    # <component>.hostNetwork; the Jobs that call the API follow validation.hostNetwork and the labeler's.
    values = {"labeler": {"hostNetwork": True}, "validation": {"hostNetwork": True}}
    jobs = {o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in render(values) if o["kind"] == "Job"}
    assert {name: spec.get("hostNetwork") for name, spec in jobs.items()} == {
        "kgpu-validation": True, "kgpu-labeler-prune": True}
    assert not any(o["spec"]["template"]["spec"].get("hostNetwork") for o in render() if o["kind"] == "Job")


def test_without_a_driver_root_nothing_of_it_is_set() -> None:
    for owner, spec, c in containers(render(VARIANTS["mps"])):
        assert not {e["name"] for e in c.get("env", [])} & {"NVIDIA_DRIVER_ROOT", "CONTAINER_DRIVER_ROOT"}, owner
        assert "driver-root" not in {v["name"] for v in spec.get("volumes", [])}, owner


def test_helm_uninstall_prunes_the_labelers_labels_with_objects_of_its_own() -> None:
    # The labeler and its RBAC are gone when post-delete hooks run: the prune Job brings its own, as hooks
    # created before it (lower weight) and deleted with it once it succeeded.
    hooks = {(o["kind"], o["metadata"]["name"]): o for o in render()
             if o["metadata"].get("annotations", {}).get("helm.sh/hook") == "post-delete"}
    assert set(hooks) == {("ServiceAccount", "kgpu-labeler-prune"), ("ClusterRole", "kgpu-labeler-prune"),
                          ("ClusterRoleBinding", "kgpu-labeler-prune"), ("Job", "kgpu-labeler-prune")}
    weights = {kind: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for (kind, _), o in hooks.items()}
    assert weights["ServiceAccount"] < weights["ClusterRoleBinding"] < weights["Job"]
    assert all(o["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
               for o in hooks.values())
    assert hooks[("ClusterRole", "kgpu-labeler-prune")]["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "get", "patch"]}]
    pod = hooks[("Job", "kgpu-labeler-prune")]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "kgpu-labeler-prune"
    assert pod["containers"][0]["args"] == ["labeler", "--prune"]
    assert pod["containers"][0]["securityContext"]["runAsNonRoot"] is True
    # Where the labeler reaches the API server from the node's network, so does its clean-up.
    lab = by_kind(render(VARIANTS["lab"]), "Job")["kgpu-labeler-prune"]["spec"]["template"]["spec"]
    assert lab["hostNetwork"] is True
    assert {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"} in lab["containers"][0]["env"]
    # Off: no hook at all; and kubectl's manifests never carry it (applied, it would run at once).
    assert not [o for o in render({"labeler": {"pruneOnUninstall": False}}) if "prune" in o["metadata"]["name"]]
    assert "labeler-prune" not in (REPO / "deploy" / "manifests" / "kgpu.yaml").read_text()


def test_validation_job_is_a_post_install_hook_running_validate_pod() -> None:
    job = by_kind(render(), "Job")["kgpu-validation"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["command"] == ["kgpu"]
    assert c["args"][:2] == ["validate", "--pod"]
    assert c["args"][c["args"].index("--image") + 1] == "kgpu:0.1.0"
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "kgpu-validation"
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in c["env"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_container_runs_a_command_line_kgpu_accepts(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Parsed as the CLI parses it: the subcommand exists, every flag exists and takes its value, no stray
    # argument (the same check runs on the standalone manifests in test_standalone_manifests.py).
    # The device plugin and the exporter run their own entry points, with the same flags.
    for owner, _, c in containers(render(VARIANTS[variant])):
        expected = {"device-plugin": ["kgpu-device-plugin"], "exporter": ["kgpu-exporter"]}.get(c["name"], ["kgpu"])
        assert c["command"] == expected, owner
        for name, value in literal_env(c).items():
            monkeypatch.setenv(name, value)
        parse_container_command(c)


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
    assert "`kgpu node label` on the node" in notes
    assert "feature.node.kubernetes.io/pci-10de.present=true" in notes
    assert "kubectl -n kube-system logs job/kgpu-validation" in notes
    assert "allocatable.nvidia\\.com/gpu" in notes
    assert 'matching {"pool":"gpu"}' in custom
    assert "none running?" not in custom and "job/kgpu-validation" not in custom


def test_per_node_configs_run_the_config_manager_beside_the_plugin_the_labeler_and_the_mps_daemon(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kgpu.config.resolve import resolve_config
    from kgpu.configmanager import resolve_manager_settings

    objs = render(VARIANTS["config-manager"])
    # The named configs, "default" being `config`, each a valid NVIDIA v1 file.
    configs = by_kind(objs, "ConfigMap")["kgpu-configs"]["data"]
    assert sorted(configs) == ["default", "mps2", "ts4"]
    for name, text in configs.items():
        (tmp_path / name).write_text(text)
        resolve_config({}, {}, tmp_path / name)
    daemonsets = by_kind(objs, "DaemonSet")
    # All three daemons that read the config follow the node's choice: an MPS config the label picks is advertised,
    # labelled and served by control daemons together.
    for name in ("kgpu-device-plugin", "kgpu-labeler", "kgpu-mps-daemon"):
        spec = daemonsets[name]["spec"]["template"]["spec"]
        assert spec["serviceAccountName"] == name
        (init,) = spec["initContainers"]
        main, sidecar = spec["containers"]
        assert (init["name"], sidecar["name"]) == ("config-manager-init", "config-manager")
        # the daemon reads /etc/kgpu/config.yaml, which the sidecar points at the chosen config,
        assert "/etc/kgpu/config.yaml" in main["args"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["config"] == {"name": "config", "emptyDir": {}}
        assert volumes["available-configs"]["configMap"]["name"] == "kgpu-configs"
        for c in (init, sidecar):
            mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
            assert (mounts["config"], mounts["available-configs"]) == ("/etc/kgpu", "/available-configs"), c["name"]
        assert {m["name"]: m["mountPath"] for m in main["volumeMounts"]}["config"] == "/etc/kgpu"
        assert spec.get("automountServiceAccountToken", True) is True  # the sidecar reads its Node
        # and the sidecars' command lines are NVIDIA's config-manager flags and variables, as kgpu parses them.
        for c, oneshot in ((init, True), (sidecar, False)):
            env = literal_env(c)
            settings = resolve_manager_settings({}, {**env, "NODE_NAME": "gpu-node-1"})
            assert (settings.oneshot, settings.send_signal, settings.default_config) == (oneshot, False, "default")
            assert settings.fallback_strategies == ("named", "single")
            assert str(settings.config_file_dst) == "/etc/kgpu/config.yaml"
            assert (settings.config_map, settings.node_label) == (("kube-system", "kgpu-configs"), LABEL)
            assert parse_kgpu_command(c["args"]) is not None
    # RBAC: the three pods' accounts may get and watch nodes and read the config ConfigMaps, nothing more.
    role = by_kind(objs, "ClusterRole")["kgpu-config-manager"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]
    readers = {"kgpu-device-plugin", "kgpu-labeler", "kgpu-mps-daemon"}
    subjects = {s["name"] for s in by_kind(objs, "ClusterRoleBinding")["kgpu-config-manager"]["subjects"]}
    assert subjects == readers
    assert {s["name"] for s in by_kind(objs, "RoleBinding")["kgpu-config-reader"]["subjects"]} == readers
    for account in readers:
        assert by_kind(objs, "ServiceAccount")[account].get("automountServiceAccountToken", True) is True
    # Without it: one config, read through the API server all the same, and no node label followed (one that
    # NVIDIA's config-manager left on a node cannot pick a config that is not there).
    plain = render({})
    assert "kgpu-configs" not in by_kind(plain, "ConfigMap") and "kgpu-config-manager" not in by_kind(
        plain, "ClusterRole")
    for name in ("kgpu-device-plugin", "kgpu-labeler"):
        spec = by_kind(plain, "DaemonSet")[name]["spec"]["template"]["spec"]
        (init,) = spec["initContainers"]
        for c, oneshot in ((init, True), (spec["containers"][1], False)):
            args = dict(a.removeprefix("--").split("=", 1) for a in c["args"][1:])
            settings = resolve_manager_settings(args, {**literal_env(c), "NODE_NAME": "gpu-node-1"})
            assert (settings.oneshot, settings.config_map, settings.node_label, settings.default_config) == (
                oneshot, ("kube-system", "kgpu-config"), "", "config.yaml")
