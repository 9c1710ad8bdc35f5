"""The chart in operator mode, on a real kubelet and API server: one ClusterPolicy takes the simulated 8×H100 node
from joined to validated, says where it stands, repairs drift, reports a bad config with its fix, rolls a
MIG layout from a node label, rolls a sharing change out, and leaves nothing behind when uninstalled.

The tests run in file order against one release; each leaves the policy ready for the next.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chart import NAMESPACE, Release, lab_values
from cluster import GPU, Cluster, wait_for
from conftest import record
from node import kgpu_files_left

PRESENT = "nvidia.com/gpu.present"
POLICY = "cluster-policy"
KGPU_CONDITIONS = {"KgpuDriver", "KgpuRuntime", "KgpuDevicePlugin", "KgpuValidation"}
MIG_LABEL = "nvidia.com/mig.config"
MIG_STATE = "nvidia.com/mig.config.state"
# The lab's pods reach the API server only from the host network, at 127.0.0.1 (../shared/lab/README.md).
API_FROM_HOST = {"hostNetwork": True, "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                                              {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"}]}
TIME_SLICING = {"version": "v1", "flags": {"plugin": {"deviceListStrategy": "driver-mounts"}},
                "sharing": {"timeSlicing": {"resources": [{"name": GPU, "replicas": 4}]}}}


def operator_values() -> dict[str, Any]:
    return lab_values(
        operator={"enabled": True, **API_FROM_HOST, "clusterPolicy": {"mig": {"strategy": "mixed"}}},
        labeler=API_FROM_HOST,
        validator={**API_FROM_HOST, "extraArgs": ["--interval", "5s"]},
        migManager={**API_FROM_HOST, "enabled": True, "extraArgs": ["--interval", "1s"]},
        validation={"enabled": False},  # the chart's own suite runs the validation Job
    )


def policy(cluster: Cluster) -> dict[str, Any]:
    got: dict[str, Any] = cluster.get("clusterpolicies.kgpu.io", POLICY)
    return got


def status(cluster: Cluster) -> dict[str, Any]:
    return dict(policy(cluster).get("status") or {})


def patch_spec(cluster: Cluster, spec: dict[str, Any]) -> None:
    cluster.kubectl("patch", "clusterpolicies.kgpu.io", POLICY, "--type", "merge", "-p", json.dumps({"spec": spec}))


def ready(cluster: Cluster) -> dict[str, Any] | None:
    st = status(cluster)
    gen = policy(cluster)["metadata"]["generation"]
    return st if st.get("state") == "ready" and st.get("observedGeneration") == gen else None


def events(cluster: Cluster, reason: str) -> list[str]:
    items = cluster.get("events", "-A", "--field-selector", f"involvedObject.kind=ClusterPolicy,reason={reason}")
    return [e["message"] for e in items["items"]]


def diagnose(cluster: Cluster) -> str:
    """What an admin would look at when the policy does not become ready."""
    parts = []
    for args in (("get", "clusterpolicies.kgpu.io", "-o", "yaml"), ("get", "pods", "-n", NAMESPACE, "-o", "wide"),
                 ("logs", "-n", NAMESPACE, "deploy/kgpu-operator", "--tail", "40"),
                 ("logs", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=device-plugin", "--previous",
                  "--tail", "20"),
                 ("logs", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=device-plugin", "--tail", "20"),
                 ("logs", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=validator", "--tail", "10"),
                 ("logs", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=mig-manager", "--tail", "10"),
                 ("get", "events", "-n", NAMESPACE, "--sort-by", ".lastTimestamp")):
        out = cluster.kubectl(*args, check=False)
        parts.append(f"$ kubectl {' '.join(args)}\n{out[-4000:]}")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def operator_release(cluster: Cluster, image: str, driver_root: Path) -> Iterator[Release]:
    cluster.kubectl("label", "node", cluster.node, f"{PRESENT}=true", "--overwrite")
    release = Release(cluster)
    try:
        start = time.monotonic()
        release.install(operator_values())
        try:
            wait_for("ClusterPolicy ready", lambda: ready(cluster), timeout=240)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{diagnose(cluster)}") from None
        took = time.monotonic() - start
        record(f"v{cluster.version}: helm install (operator) → ClusterPolicy ready", f"{took:.1f} s")
        yield release
    finally:
        # Uninstall first, whatever else fails: a slow API server must not leave the release behind.
        try:
            if release.installed:
                release.uninstall()
        finally:
            for label in (MIG_LABEL, PRESENT):
                with contextlib.suppress(subprocess.SubprocessError):
                    cluster.kubectl("label", "node", cluster.node, f"{label}-", check=False)


def test_the_policy_is_ready_with_every_stage_of_the_node_filled(operator_release: Release, cluster: Cluster) -> None:
    st = wait_for("ready", lambda: ready(cluster))
    assert (st["gpuNodes"], st["readyNodes"]) == (1, 1)
    conditions = {c["type"]: c for c in cluster.node_object()["status"]["conditions"]}
    assert set(conditions) >= KGPU_CONDITIONS
    for kind in KGPU_CONDITIONS:
        assert conditions[kind]["status"] == "True" and conditions[kind]["message"], conditions[kind]
    assert conditions["KgpuDriver"]["reason"] == "Simulated"
    table = cluster.kubectl("get", "clusterpolicies.kgpu.io")
    assert "ready" in table and "1/1 GPU nodes ready" in table
    names = sorted(d["metadata"]["name"] for d in cluster.get("daemonsets", "-n", NAMESPACE, "-l",
                                                               "app.kubernetes.io/managed-by=kgpu-operator")["items"])
    assert names == ["kgpu-device-plugin", "kgpu-exporter", "kgpu-labeler", "kgpu-mig-manager", "kgpu-validator"]
    assert cluster.allocatable() == 8


def test_a_deleted_daemonset_is_named_and_recreated_within_30_s(operator_release: Release, cluster: Cluster) -> None:
    cluster.kubectl("delete", "daemonset", "-n", NAMESPACE, "kgpu-device-plugin", "--wait=true")
    start = time.monotonic()
    wait_for("DaemonSet recreated", lambda: cluster.get("daemonsets", "-n", NAMESPACE, "kgpu-device-plugin"),
             timeout=30)
    wait_for("a DriftRepaired event naming it", lambda: [m for m in events(cluster, "DriftRepaired")
                                                         if m == "DaemonSet kgpu-device-plugin missing: created"]
             or None, timeout=30)
    record(f"v{cluster.version}: deleted DaemonSet → recreated and reported", f"{time.monotonic() - start:.1f} s")
    wait_for("ready again", lambda: ready(cluster), timeout=120)


def test_an_invalid_sharing_config_is_reported_with_its_cause_within_30_s(operator_release: Release,
                                                                         cluster: Cluster) -> None:
    bad = {"version": "v1", "sharing": {"timeSlicing": {"resources": [{"name": GPU, "replicas": 0}]}}}
    wait_for("8 GPUs advertised", lambda: cluster.allocatable() == 8, timeout=60)
    generation = cluster.get("daemonset", "-n", NAMESPACE, "kgpu-device-plugin")["metadata"]["generation"]
    start = time.monotonic()
    patch_spec(cluster, {"devicePlugin": {"config": bad}})
    st = wait_for("state error", lambda: (s := status(cluster)).get("state") == "error" and s, timeout=30)
    record(f"v{cluster.version}: invalid config → status error", f"{time.monotonic() - start:.1f} s")
    assert "spec.devicePlugin.config" in st["message"] and "replicas" in st["message"]
    ds = cluster.get("daemonset", "-n", NAMESPACE, "kgpu-device-plugin")
    assert ds["metadata"]["generation"] == generation, "the node keeps the last good config"
    patch_spec(cluster, {"devicePlugin": {"config": None}})
    wait_for("ready again", lambda: ready(cluster), timeout=60)


def test_a_mig_config_label_reshapes_the_simulated_node_and_its_resources(operator_release: Release,
                                                                         cluster: Cluster) -> None:
    start = time.monotonic()
    cluster.kubectl("label", "node", cluster.node, f"{MIG_LABEL}=all-1g.10gb", "--overwrite")
    wait_for("mig.config.state success", lambda: cluster.node_labels().get(MIG_STATE) == "success", timeout=60)
    wait_for("56 MIG devices advertised", lambda: cluster.allocatable("nvidia.com/mig-1g.10gb") == 56, timeout=90)
    record(f"v{cluster.version}: mig.config=all-1g.10gb → 56 nvidia.com/mig-1g.10gb",
           f"{time.monotonic() - start:.1f} s")
    assert cluster.allocatable() == 0, "a GPU in MIG mode is not advertised whole"
    wait_for("GFD's MIG labels", lambda: cluster.node_labels().get("nvidia.com/mig-1g.10gb.count") == "56",
             timeout=60)

    cluster.kubectl("label", "node", cluster.node, f"{MIG_LABEL}=all-disabled", "--overwrite")
    wait_for("whole GPUs back", lambda: cluster.allocatable() == 8, timeout=90)
    assert cluster.allocatable("nvidia.com/mig-1g.10gb") == 0
    cluster.kubectl("label", "node", cluster.node, f"{MIG_LABEL}-")


def test_a_sharing_change_rolls_out_and_allocatable_follows(operator_release: Release, cluster: Cluster) -> None:
    start = time.monotonic()
    patch_spec(cluster, {"devicePlugin": {"config": TIME_SLICING}})
    wait_for("allocatable nvidia.com/gpu = 32", lambda: cluster.allocatable() == 32, timeout=150)
    wait_for("ready after the rollout", lambda: ready(cluster), timeout=120)
    record(f"v{cluster.version}: time-slicing ×4 in the ClusterPolicy → rolled out, 32 GPUs",
           f"{time.monotonic() - start:.1f} s")
    assert [m for m in events(cluster, "RolloutNode") if cluster.node in m]


def _follow_logs(cluster: Cluster, selector: str, into: list[str]) -> subprocess.Popen[str]:
    """`kubectl logs -f` of the pods ``selector`` matches, into ``into`` (read when the test fails)."""
    proc = subprocess.Popen(["kubectl", "logs", "-f", "--prefix", "--max-log-requests", "10", "-n", NAMESPACE,
                             "-l", selector, "--tail", "5"], env=cluster.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    threading.Thread(target=lambda: into.extend(proc.stdout or []), daemon=True).start()
    return proc


def test_uninstall_leaves_no_policy_daemonset_condition_label_or_file(operator_release: Release,
                                                                      cluster: Cluster) -> None:
    logs: list[str] = []
    followers = [_follow_logs(cluster, "app.kubernetes.io/component in (validator,mig-manager)", logs)]
    hook_logs: list[str] = []
    watcher = threading.Thread(target=lambda: hook_logs.extend(
        wait_for("the cleanup hook's pod", lambda: cluster.get("pods", "-n", NAMESPACE, "-l",
                 "app.kubernetes.io/component=operator-cleanup")["items"] or None, timeout=60) and
        cluster.kubectl("logs", "-f", "-n", NAMESPACE, "-l", "app.kubernetes.io/component=operator-cleanup",
                        check=False).splitlines()), daemon=True)
    watcher.start()
    operator_release.uninstall()
    for proc in followers:
        proc.terminate()
    watcher.join(timeout=5)
    seen = "\n".join(["validator/mig-manager:", *logs[-30:], "cleanup hook:", *hook_logs[-10:]])
    assert cluster.kubectl("get", "crd", "clusterpolicies.kgpu.io", "--ignore-not-found").strip() == ""
    wait_for("operator DaemonSets gone", lambda: not cluster.get(
        "daemonsets", "-n", NAMESPACE, "-l", "app.kubernetes.io/managed-by=kgpu-operator")["items"], timeout=120)
    wait_for("kgpu pods gone", lambda: not cluster.get("pods", "-n", NAMESPACE, "-l",
                                                      "app.kubernetes.io/part-of=kgpu")["items"], timeout=120)
    node = cluster.node_object()
    assert not KGPU_CONDITIONS & {c["type"] for c in node["status"]["conditions"]}, seen
    assert MIG_STATE not in node["metadata"].get("labels", {})
    assert "kgpu.io/mig.config.message" not in node["metadata"].get("annotations", {})
    with contextlib.suppress(AssertionError):
        wait_for("no kgpu file on the node", lambda: not kgpu_files_left(), timeout=60)
    assert kgpu_files_left() == []
