"""deploy/manifests/*.yaml agree with each other and with the Helm chart: one namespace, valid objects,
NVIDIA's driver-root layout when an admin turns it on, and command lines the kgpu CLI accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from manifest_checks import (
    DRIVER_ROOT_MOUNT,
    ENTRY_POINTS,
    MANIFESTS,
    driver_root_problems,
    global_driver_root,
    literal_env,
    load,
    parse_container_command,
    parse_kgpu_command,
    pod_containers,
    schedules_on,
    schema_problems,
    with_driver_root,
)

pytest.importorskip("kubernetes_validate")

ALL = sorted(MANIFESTS.glob("*.yaml"))
# The standalone node components, each written by hand (kgpu.yaml is the chart's render, tested with the chart).
COMPONENTS = [MANIFESTS / f"{name}.yaml" for name in ("device-plugin", "labeler", "exporter")]
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "RuntimeClass", "PriorityClass"}
HOST_DRIVER_ROOT = "/run/nvidia/driver"  # the GPU Operator's driver container, as the manifests' comments say


def objects(path: Path, driver_root: bool = False) -> list[dict[str, Any]]:
    text = path.read_text()
    return load(with_driver_root(text) if driver_root else text)


def test_the_component_manifests_are_all_there() -> None:
    assert {p.name for p in ALL} >= {"kgpu.yaml", "exporter-servicemonitor.yaml", *(p.name for p in COMPONENTS)}


@pytest.mark.parametrize("driver_root", [False, True], ids=["as-shipped", "with-driver-root"])
@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_every_object_is_valid_kubernetes(path: Path, driver_root: bool) -> None:
    objs = objects(path, driver_root)
    assert objs
    assert schema_problems(objs) == []


def test_every_manifest_installs_into_kube_system_as_the_chart_does() -> None:
    # Given every manifest an admin may apply, alone or together with the chart's render,
    for path in ALL:
        for obj in objects(path):
            where = f"{path.name}: {obj['kind']} {obj['metadata']['name']}"
            # then none creates a namespace of its own, and every namespaced object lands in kube-system,
            assert obj["kind"] != "Namespace", where
            if obj["kind"] not in CLUSTER_SCOPED:
                assert obj["metadata"].get("namespace") == "kube-system", where
            # and what points into a namespace points at kube-system too.
            for subject in obj.get("subjects", []):
                if subject["kind"] == "ServiceAccount":
                    assert subject["namespace"] == "kube-system", where
            if obj["kind"] == "ServiceMonitor":
                assert obj["spec"]["namespaceSelector"] == {"matchNames": ["kube-system"]}, where


def test_the_service_monitor_finds_the_exporter_service_in_its_namespace() -> None:
    (service,) = [o for o in objects(MANIFESTS / "exporter.yaml") if o["kind"] == "Service"]
    (monitor,) = objects(MANIFESTS / "exporter-servicemonitor.yaml")
    assert service["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


@pytest.mark.parametrize("path", COMPONENTS, ids=lambda p: p.name)
def test_as_shipped_no_container_half_configures_a_driver_root(path: Path) -> None:
    # The NVIDIA runtime injects the driver: nothing about a driver root is set, not even a part of it.
    for owner, _, c in pod_containers(objects(path)):
        env = {e["name"] for e in c.get("env", [])}
        assert not env & {"NVIDIA_DRIVER_ROOT", "CONTAINER_DRIVER_ROOT"}, owner
        assert DRIVER_ROOT_MOUNT not in {m["mountPath"] for m in c.get("volumeMounts", [])}, owner


@pytest.mark.parametrize("path", COMPONENTS, ids=lambda p: p.name)
def test_uncommenting_the_driver_root_blocks_gives_nvidias_layout(path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an admin uncommented the "driver root" blocks of the manifest,
    containers = list(pod_containers(objects(path, driver_root=True)))
    assert containers
    for owner, spec, c in containers:
        # then the host's driver root is mounted read-only at /driver-root, both variables name it,
        assert driver_root_problems(owner, spec, c, HOST_DRIVER_ROOT) == []
        # and kgpu's --driver-root, read from that environment, is the mount point, not the host path.
        monkeypatch.delenv("NVIDIA_DRIVER_ROOT", raising=False)
        monkeypatch.delenv("CONTAINER_DRIVER_ROOT", raising=False)
        for name, value in literal_env(c).items():
            monkeypatch.setenv(name, value)
        assert global_driver_root() == ("/run/nvidia/driver", DRIVER_ROOT_MOUNT), owner


def test_with_a_driver_root_the_device_plugin_hands_out_host_paths(tmp_path: Path) -> None:
    from kgpu.config.resolve import resolve_config

    objs = objects(MANIFESTS / "device-plugin.yaml", driver_root=True)
    (config_map,) = [o for o in objs if o["kind"] == "ConfigMap"]
    ((_, _, container),) = pod_containers(objs)
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"])
    # The config file's nvidiaDriverRoot: / yields to the DaemonSet's NVIDIA_DRIVER_ROOT (env beats file),
    env = literal_env(container)
    config = resolve_config({}, env | {"CONTAINER_DRIVER_ROOT": str(tmp_path)}, path)
    assert env["CONTAINER_DRIVER_ROOT"] == DRIVER_ROOT_MOUNT
    assert config.flags.nvidia_driver_root == HOST_DRIVER_ROOT
    # and the plugin reads the driver where the DaemonSet mounts it (here a stand-in directory).
    assert (config.driver_root.host, config.driver_root.view) == (HOST_DRIVER_ROOT, tmp_path)


@pytest.mark.parametrize("driver_root", [False, True], ids=["as-shipped", "with-driver-root"])
@pytest.mark.parametrize("path", COMPONENTS, ids=lambda p: p.name)
def test_every_container_runs_a_command_line_kgpu_accepts(path: Path, driver_root: bool,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for owner, _, c in pod_containers(objects(path, driver_root)):
        assert c["command"][0] in ("kgpu", *ENTRY_POINTS), owner
        for name, value in literal_env(c).items():
            monkeypatch.setenv(name, value)  # e.g. the labeler's MIG_STRATEGY is parsed as the CLI would
        params = parse_container_command(c)
        assert params, owner


def test_a_command_line_kgpu_does_not_accept_is_caught() -> None:
    # The check above can fail: a misspelt flag, a bad value and a stray argument are all rejected.
    cases = [(["device-plugin", "--kubelet-dri=/x"], "No such option"),
             (["labeler", "--poll", "0"], "greater than or equal to 0.05"),
             (["exporter", "extra"], "unexpected extra argument")]
    for args, error in cases:
        with pytest.raises(Exception, match=error):
            parse_kgpu_command(args)


FRESH_GPU_NODE_WITH_NFD = {"feature.node.kubernetes.io/pci-10de.present": "true"}
LABELLED_GPU_NODE = {"feature.node.kubernetes.io/pci-10de.present": "true", "nvidia.com/gpu.present": "true"}
HAND_LABELLED_GPU_NODE = {"nvidia.com/gpu.present": "true"}
CPU_NODE = {"feature.node.kubernetes.io/pci-8086.present": "true"}


def _pod_spec(path: Path) -> dict[str, Any]:
    (ds,) = [o for o in objects(path) if o["kind"] == "DaemonSet"]
    spec: dict[str, Any] = ds["spec"]["template"]["spec"]
    return spec


def test_a_fresh_gpu_node_gets_the_labeler_first_then_the_other_components() -> None:
    labeler, plugin, exporter = (_pod_spec(MANIFESTS / f"{n}.yaml") for n in ("labeler", "device-plugin", "exporter"))
    # A GPU node NFD has found, before anything labelled it: only the labeler may start there,
    assert schedules_on(labeler, FRESH_GPU_NODE_WITH_NFD)
    assert not schedules_on(plugin, FRESH_GPU_NODE_WITH_NFD) and not schedules_on(exporter, FRESH_GPU_NODE_WITH_NFD)
    # once it has set nvidia.com/gpu.present=true (or an admin did, without NFD), everything runs there,
    for node in (LABELLED_GPU_NODE, HAND_LABELLED_GPU_NODE):
        assert schedules_on(labeler, node) and schedules_on(plugin, node) and schedules_on(exporter, node)
    # and nothing runs on a node without an NVIDIA device.
    assert not any(schedules_on(s, CPU_NODE) for s in (labeler, plugin, exporter))


def test_each_standalone_daemonset_is_scheduled_as_the_charts() -> None:
    # kgpu.yaml is the chart's default render (a chart test keeps it so): the hand-written manifests place
    # each component exactly where the chart does.
    chart = {o["metadata"]["name"]: o["spec"]["template"]["spec"]
             for o in objects(MANIFESTS / "kgpu.yaml") if o["kind"] == "DaemonSet"}
    for path in COMPONENTS:
        (ds,) = [o for o in objects(path) if o["kind"] == "DaemonSet"]
        spec, ours = ds["spec"]["template"]["spec"], chart[ds["metadata"]["name"]]
        for key in ("nodeSelector", "affinity"):
            assert spec.get(key) == ours.get(key), f"{path.name}: {key}"
