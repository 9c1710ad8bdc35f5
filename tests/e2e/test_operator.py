"""The chart in operator mode, on a real kubelet and API server: one ClusterPolicy takes the simulated 8×H100 node
from joined to validated and says where it stands (its columns, `kgpu status`), repairs drift, reports a bad
config and a turned-off component with their fixes, reshapes the node's MIG layout from a node label, rolls a
sharing change out node by node, and leaves nothing behind when uninstalled.

The tests run in file order against one release; each leaves the policy ready for the next.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import readme
from chart import NAMESPACE, SELECTOR, Release, lab_values
from cluster import GPU, REPO, Cluster, wait_for
from conftest import record
from node import kgpu_files_left, serving_mps_daemons

PRESENT = "nvidia.com/gpu.present"
POLICY = "cluster-policy"
KGPU_CONDITIONS = {"KgpuDriver", "KgpuRuntime", "KgpuDevicePlugin", "KgpuValidation"}
POLICY_CONDITIONS = {"Ready", "SpecValid", "DaemonSetsInSync", "RolloutComplete", "NodesReady"}
STAGES = ["driver", "runtime", "devicePlugin", "allocatable", "labels", "validation"]
MIG_LABEL = "nvidia.com/mig.config"
MIG_STATE = "nvidia.com/mig.config.state"
MIG_MESSAGE = "kgpu.io/mig.config.message"
MIG_RESOURCES = {"nvidia.com/mig-1g.10gb": 16, "nvidia.com/mig-2g.20gb": 8, "nvidia.com/mig-3g.40gb": 8}
"""What the README's layout, all-balanced, makes of 8 H100 80GB: 2 × 1g.10gb, 1 × 2g.20gb, 1 × 3g.40gb each."""
OWNED = "app.kubernetes.io/managed-by=kgpu-operator"
PODS = "app.kubernetes.io/name=kgpu,app.kubernetes.io/instance=kgpu"
"""The release's pods (their templates carry the selector labels only, not app.kubernetes.io/part-of)."""
TEMPLATE_HASH = "kgpu.io/template-hash"
# The lab's pods reach the API server only from the host network, at 127.0.0.1 (../shared/lab/README.md).
API_FROM_HOST = {"hostNetwork": True, "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                                              {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"}]}
OPERATOR = "The operator: one ClusterPolicy for every GPU node (`kgpu operator`, `kgpu status`)"
MIG = "MIG layouts: `kgpu mig-manager`"
"""The README sections whose cluster commands the module runs as written (its helm install: lab-values.yaml's)."""


def operator_values() -> dict[str, Any]:
    return lab_values(
        operator={"enabled": True, **API_FROM_HOST, "clusterPolicy": {"mig": {"strategy": "mixed"}}},
        validator={**API_FROM_HOST, "extraArgs": ["--interval", "5s"]},
        migManager={**API_FROM_HOST, "enabled": True, "extraArgs": ["--interval", "1s"]},
        validation={"enabled": False},  # the chart's own suite runs the validation Job
    )


def policy(cluster: Cluster) -> dict[str, Any]:
    got: dict[str, Any] = cluster.get("clusterpolicies.kgpu.io", POLICY)
    return got


def status(cluster: Cluster) -> dict[str, Any]:
    return dict(policy(cluster).get("status") or {})


def conditions_of(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in st.get("conditions") or []}


def patch_spec(cluster: Cluster, spec: dict[str, Any]) -> None:
    cluster.kubectl("patch", "clusterpolicies.kgpu.io", POLICY, "--type", "merge", "-p", json.dumps({"spec": spec}))


def ready(cluster: Cluster) -> dict[str, Any] | None:
    got = policy(cluster)
    st = dict(got.get("status") or {})
    return st if st.get("state") == "ready" and st.get("observedGeneration") == got["metadata"]["generation"] else None


def events(cluster: Cluster, reason: str) -> list[dict[str, Any]]:
    items = cluster.get("events", "-A", "--field-selector", f"involvedObject.kind=ClusterPolicy,reason={reason}")
    return list(items["items"])


def kgpu(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The kgpu CLI an admin runs against the cluster (this checkout's)."""
    return subprocess.run([str(REPO / ".venv" / "bin" / "kgpu"), *args], env=cluster.env, capture_output=True,
                          text=True, timeout=60)


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


def kgpu_objects(cluster: Cluster) -> set[str]:
    """Every object of kgpu's chart and every pod of a release named kgpu, as ``kind/name``."""
    listed = cluster.kubectl("get", "all,configmaps,serviceaccounts,roles,rolebindings,clusterroles,"
                             "clusterrolebindings,runtimeclasses,jobs", "-A", "-l", SELECTOR, "-o", "name")
    pods = cluster.kubectl("get", "pods", "-A", "-l", PODS, "-o", "name")
    return set(listed.split()) | set(pods.split())


@dataclass
class Installed:
    release: Release
    labels_before: set[str]
    annotations_before: set[str]
    files_before: set[str]
    objects_before: set[str]
    """nvidia.com/* labels, kgpu.io/* annotations, kgpu node files, objects and pods of kgpu there before the
    install (other users of the cluster left them): the uninstall must take away what the release added, not
    what it found."""
    seen: list[dict[str, Any]] = field(default_factory=list)
    """Every distinct ClusterPolicy status seen while the install became ready."""


@pytest.fixture(scope="module")
def installed(cluster: Cluster, image: str, driver_root: Path) -> Iterator[Installed]:
    # Given a node where nothing advertises GPUs or MIG slices: a Node keeps the count of a plugin that went away.
    left = cluster.extended_resources()
    if cluster.on_lab and any(left.values()):
        cluster.forget_vanished_resources(list(left))
    for resource in left:
        cluster.forget_stale_resource(resource)
    labels_before = {k for k in cluster.node_labels() if k.startswith("nvidia.com/")} - {PRESENT}
    annotations_before = {k for k in cluster.node_object()["metadata"].get("annotations", {})
                          if k.startswith("kgpu.io/")}
    cluster.kubectl("label", "node", cluster.node, f"{PRESENT}=true", "--overwrite")
    state = Installed(Release(cluster), labels_before, annotations_before, set(kgpu_files_left()),
                      kgpu_objects(cluster))

    def watch() -> dict[str, Any] | None:
        with contextlib.suppress(subprocess.CalledProcessError):
            st = status(cluster)
            if st and st not in state.seen:
                state.seen.append(st)
        return ready(cluster)

    try:
        start = time.monotonic()
        state.release.install(operator_values())
        try:
            wait_for("ClusterPolicy ready", watch, timeout=240, interval=0.25)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{diagnose(cluster)}") from None
        took = time.monotonic() - start
        record(f"v{cluster.version}: helm install (operator) → ClusterPolicy ready", f"{took:.1f} s")
        yield state
    finally:
        # Uninstall first, whatever else fails: a slow API server must not leave the release behind.
        try:
            if state.release.installed:
                state.release.uninstall()
        finally:
            for label in (MIG_LABEL, PRESENT):
                with contextlib.suppress(subprocess.SubprocessError):
                    cluster.kubectl("label", "node", cluster.node, f"{label}-", check=False)


def test_the_policy_is_ready_with_every_stage_of_the_node_filled_and_says_so(installed: Installed, cluster: Cluster,
                                                                           image: str) -> None:
    st = wait_for("ready", lambda: ready(cluster))
    assert (st["gpuNodes"], st["readyNodes"], st["nodes"]) == (1, 1, [])
    assert {k: c["status"] for k, c in conditions_of(st).items()} == dict.fromkeys(POLICY_CONDITIONS, "True")
    node_conditions = {c["type"]: c for c in cluster.node_object()["status"]["conditions"]}
    for kind in KGPU_CONDITIONS:
        assert node_conditions[kind]["status"] == "True" and node_conditions[kind]["message"], node_conditions[kind]
    assert node_conditions["KgpuDriver"]["reason"] == "Simulated"
    names = sorted(d["metadata"]["name"] for d in cluster.get("daemonsets", "-n", NAMESPACE, "-l", OWNED)["items"])
    assert names == ["kgpu-device-plugin", "kgpu-exporter", "kgpu-labeler", "kgpu-mig-manager", "kgpu-validator"]
    assert cluster.allocatable() == 8

    # While it became ready, every status that was not named each waiting node's stage, its evidence and a fix.
    waiting = [s for s in installed.seen if s.get("state") == "notReady" and s.get("nodes")]
    assert waiting, f"no notReady status seen on the way to ready: {installed.seen}"
    for entry in (e for s in waiting for e in s["nodes"]):
        assert entry["name"] == cluster.node and entry["stage"] in STAGES and entry["message"] and entry["fix"], entry

    # the README's kubectl get shows the state in its columns
    header, *rows = readme.run(cluster, readme.command(OPERATOR, "kubectl get clusterpolicies.kgpu.io"),
                               image).splitlines()
    assert header.split() == ["NAME", "STATE", "READY", "NODES", "MESSAGE", "AGE"]
    assert rows[0].split()[:8] == [POLICY, "ready", "1", "1", "1/1", "GPU", "nodes", "ready"]

    # kgpu status: every stage with its evidence, as JSON and as a table
    done = kgpu(cluster, "status", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["clusterPolicy"] == {"name": POLICY, "state": "ready", "message": "1/1 GPU nodes ready",
                                       "namespace": NAMESPACE, "gpuNodes": 1, "readyNodes": 1}
    (node,) = report["nodes"]
    assert node["name"] == cluster.node and node["ready"] is True
    assert [s["stage"] for s in node["stages"]] == STAGES
    for stage in node["stages"]:
        assert stage["ok"] is True and stage["evidence"] and stage["fix"] == "", stage
    evidence = {s["stage"]: s["evidence"] for s in node["stages"]}
    assert evidence["allocatable"] == "nvidia.com/gpu: 8"
    assert evidence["labels"] == "8x NVIDIA-H100-80GB-HBM3"
    assert "simulated node" in evidence["driver"] and "passed: " in evidence["validation"]
    table = readme.run(cluster, readme.command(OPERATOR, "kgpu status"), image)  # the README's, as written
    assert f"ClusterPolicy {POLICY}: ready" in table
    row = next(line.split() for line in table.splitlines() if line.startswith(cluster.node))
    assert row[1:] == ["ok"] * 6 + ["yes"]


@pytest.mark.newest_only("the operator's drift repair: its own decision, through the same API calls as the install")
def test_a_deleted_daemonset_is_recreated_and_named_in_the_status_within_30_s(installed: Installed,
                                                                             cluster: Cluster) -> None:
    before = {e["metadata"]["uid"] for e in events(cluster, "DriftRepaired")}
    cluster.kubectl("delete", "daemonset", "-n", NAMESPACE, "kgpu-device-plugin", "--wait=true")
    start = time.monotonic()
    wait_for("DaemonSet recreated", lambda: cluster.get("daemonsets", "-n", NAMESPACE, "kgpu-device-plugin"),
             timeout=30)
    sync = wait_for("DaemonSetsInSync naming the repair", lambda: (c := conditions_of(status(cluster)).get(
        "DaemonSetsInSync", {})).get("reason") == "DriftRepaired" and "kgpu-device-plugin" in c["message"] and c,
        timeout=30)
    took = time.monotonic() - start
    assert "DaemonSet kgpu-device-plugin missing: created" in sync["message"] and sync["status"] == "True"
    assert f"change them with kubectl edit clusterpolicies.kgpu.io {POLICY}" in sync["message"]  # the fix
    assert [e for e in events(cluster, "DriftRepaired") if e["metadata"]["uid"] not in before
            and e["message"] == "DaemonSet kgpu-device-plugin missing: created"]
    record(f"v{cluster.version}: deleted DaemonSet → recreated, named in status", f"{took:.1f} s")
    wait_for("ready again", lambda: ready(cluster), timeout=120)


@pytest.mark.newest_only("the operator's config validation and status")
def test_an_invalid_sharing_config_is_reported_with_its_cause_and_fix_within_30_s(installed: Installed,
                                                                                 cluster: Cluster) -> None:
    bad = {"version": "v1", "sharing": {"timeSlicing": {"resources": [{"name": GPU, "replicas": 0}]}}}
    config = policy(cluster)["spec"].get("devicePlugin", {}).get("config")
    gpus = wait_for("GPUs advertised", lambda: cluster.allocatable(), timeout=60)
    generation = cluster.get("daemonset", "-n", NAMESPACE, "kgpu-device-plugin")["metadata"]["generation"]
    start = time.monotonic()
    patch_spec(cluster, {"devicePlugin": {"config": bad}})
    try:
        st = wait_for("state error", lambda: (s := status(cluster)).get("state") == "error" and s, timeout=30)
        took = time.monotonic() - start
        record(f"v{cluster.version}: invalid sharing config → status error with its fix", f"{took:.1f} s")
        # the cause: the field, the value and what is allowed; the fix: what to run
        assert st["message"].startswith("spec.devicePlugin.config: sharing.timeSlicing.resources[0].replicas: 0 is "
                                         "below the minimum of 2. "), st["message"]
        assert f"Fix: correct it with kubectl edit clusterpolicies.kgpu.io {POLICY}" in st["message"]
        assert conditions_of(st)["SpecValid"]["status"] == "False"
        assert [e for e in events(cluster, "InvalidSpec") if e["message"] == st["message"]]
        ds = cluster.get("daemonset", "-n", NAMESPACE, "kgpu-device-plugin")
        assert ds["metadata"]["generation"] == generation, "the node keeps the last good config"
        assert cluster.allocatable() == gpus
    finally:
        patch_spec(cluster, {"devicePlugin": {"config": config}})
    wait_for("ready again", lambda: ready(cluster), timeout=60)


@pytest.mark.newest_only("the operator's stages and status")
def test_a_component_turned_off_fails_its_stage_and_the_fix_named_in_the_status_brings_it_back(
        installed: Installed, cluster: Cluster) -> None:
    gpus = wait_for("GPUs advertised", lambda: cluster.allocatable(), timeout=60)
    start = time.monotonic()
    patch_spec(cluster, {"devicePlugin": {"enabled": False}})
    try:
        wait_for("no GPU advertised", lambda: cluster.allocatable() == 0, timeout=60)
        st = wait_for("notReady naming the node's devicePlugin stage", lambda: (s := status(cluster)).get(
            "state") == "notReady" and s["nodes"] and s["nodes"][0]["stage"] in ("devicePlugin", "allocatable")
            and s, timeout=60)
        record(f"v{cluster.version}: device plugin turned off → stage failing with its fix",
               f"{time.monotonic() - start:.1f} s")
        (entry,) = st["nodes"]
        assert entry["name"] == cluster.node and entry["message"]
        prefix = f"spec.devicePlugin.enabled is false in ClusterPolicy {POLICY}: "
        assert entry["fix"].startswith(prefix + "kubectl patch clusterpolicies.kgpu.io"), entry
        assert f"Fix: {entry['fix']}" in st["message"]
        # the fix is a command an admin pastes: run it as a shell would
        subprocess.run(entry["fix"].removeprefix(prefix), shell=True, check=True, env=cluster.env, timeout=60)
    finally:
        patch_spec(cluster, {"devicePlugin": {"enabled": True}})  # whatever failed, the next test finds it on
    wait_for("ready again", lambda: ready(cluster), timeout=120)
    wait_for("the GPUs advertised again", lambda: cluster.allocatable() == gpus, timeout=60)
    record(f"v{cluster.version}: … the fix run → ready, GPUs advertised", f"{time.monotonic() - start:.1f} s")


def _watch_label(cluster: Cluster, key: str, into: list[str]) -> subprocess.Popen[str]:
    """Every value the Node's label ``key`` takes (a watch delivers each change, however brief)."""
    path = "{.metadata.labels." + key.replace(".", "\\.") + '}{"\\n"}'
    proc = subprocess.Popen(["kubectl", "get", "node", cluster.node, "--watch", "-o", f"jsonpath={path}"],
                            env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def read() -> None:
        for line in proc.stdout or []:
            if not into or into[-1] != line.strip():
                into.append(line.strip())

    threading.Thread(target=read, daemon=True).start()
    return proc


def _mig_applied(cluster: Cluster, name: str) -> bool:
    """The mig-manager finished applying the layout ``name`` (its message names the layout it applied last)."""
    node = cluster.node_object()
    return (node["metadata"]["labels"].get(MIG_STATE) == "success"
            and node["metadata"].get("annotations", {}).get(MIG_MESSAGE, "").startswith(f"{name}: "))


def _restore_whole_gpus(cluster: Cluster, gpus: int) -> None:
    """Leave the node as the MIG test found it: no MIG mode, no mig.config label, no MIG resource on the Node
    (the kubelet keeps a resource whose plugin stopped advertising it: later tests must not see it)."""
    if not _mig_applied(cluster, "all-disabled"):
        cluster.kubectl("label", "node", cluster.node, f"{MIG_LABEL}=all-disabled", "--overwrite")
        wait_for("all-disabled applied", lambda: _mig_applied(cluster, "all-disabled"), timeout=60)
    cluster.kubectl("label", "node", cluster.node, f"{MIG_LABEL}-")
    cluster.forget_vanished_resources(list(MIG_RESOURCES))
    wait_for("the whole GPUs advertised", lambda: cluster.allocatable() == gpus, timeout=90)
    assert cluster.extended_resources() == {GPU: gpus}


def _mig_resources(cluster: Cluster) -> dict[str, int]:
    return {resource: cluster.allocatable(resource) for resource in MIG_RESOURCES}


def _mig_state_column(listing: str) -> str:
    """The MIG.CONFIG.STATE column of `kubectl get node NODE -L nvidia.com/mig.config.state` ('' when unset)."""
    header, row = listing.splitlines()
    column = header.split().index("MIG.CONFIG.STATE")
    cells = row.split()
    return cells[column] if len(cells) > column else ""


def test_a_mig_config_label_reshapes_the_simulated_node_its_resources_and_labels(installed: Installed,
                                                                                cluster: Cluster,
                                                                                image: str) -> None:
    gpus = wait_for("GPUs advertised", lambda: cluster.allocatable(), timeout=60)
    states: list[str] = []
    watcher = _watch_label(cluster, MIG_STATE, states)
    show_state = readme.command(MIG, "kubectl get node gpu-1 -L nvidia.com/mig.config.state")
    start = time.monotonic()
    try:
        # Given whole GPUs: when an admin runs the README's label (all-balanced), then its state column goes
        # pending → success (as the README's comment says), and each H100 becomes 2 × 1g.10gb, 2g.20gb and 3g.40gb.
        readme.run(cluster, readme.command(MIG, "kubectl label node gpu-1 nvidia.com/mig.config="), image)
        wait_for("the README's kubectl get -L showing mig.config.state success",
                 lambda: _mig_state_column(readme.run(cluster, show_state, image)) == "success", timeout=60)
        assert _mig_applied(cluster, "all-balanced")
        wait_for(f"MIG devices advertised: {MIG_RESOURCES}", lambda: _mig_resources(cluster) == MIG_RESOURCES,
                 timeout=90)
        record(f"v{cluster.version}: mig.config=all-balanced → 16+8+8 nvidia.com/mig-*",
               f"{time.monotonic() - start:.1f} s")
        assert cluster.allocatable() == 0, "a GPU in MIG mode is not advertised whole"
        labels = wait_for("GFD's MIG labels", lambda: (lb := cluster.node_labels()).get(
            "nvidia.com/mig-3g.40gb.count") == "8" and lb, timeout=60)
        assert labels["nvidia.com/mig-1g.10gb.count"] == "16" and labels["nvidia.com/mig-2g.20gb.count"] == "8"
        assert labels["nvidia.com/mig.strategy"] == "mixed"
        assert [labels[f"nvidia.com/mig-{p}.slices.gi"] for p in ("1g.10gb", "2g.20gb", "3g.40gb")] == ["1", "2", "3"]
        assert labels["nvidia.com/mig.capable"] == "true"

        cluster.kubectl("label", "node", cluster.node, f"{MIG_LABEL}=no-such-layout", "--overwrite")
        wait_for("mig.config.state failed", lambda: cluster.node_labels().get(MIG_STATE) == "failed", timeout=60)
        message = cluster.node_object()["metadata"]["annotations"][MIG_MESSAGE]
        assert message.startswith("no MIG config named 'no-such-layout'; the config file has: all-1g.10gb, "), message
        assert _mig_resources(cluster) == MIG_RESOURCES, "a failed layout changes nothing"

        cluster.kubectl("label", "node", cluster.node, f"{MIG_LABEL}=all-disabled", "--overwrite")
        wait_for("whole GPUs back", lambda: cluster.allocatable() == gpus, timeout=90)
        assert not any(_mig_resources(cluster).values())
        wait_for("mig.config.state success", lambda: _mig_applied(cluster, "all-disabled"), timeout=60)
        record(f"v{cluster.version}: … a missing layout failed, all-disabled → whole GPUs",
               f"{time.monotonic() - start:.1f} s")
    finally:
        watcher.terminate()
        _restore_whole_gpus(cluster, gpus)
    # each change went through pending (a watch sees every update of the Node)
    assert [s for s in states if s] == ["pending", "success", "pending", "failed", "pending", "success"], states
    wait_for("ready again", lambda: ready(cluster), timeout=120)
    record(f"v{cluster.version}: … node restored (no MIG resource left), ready", f"{time.monotonic() - start:.1f} s")


@pytest.mark.newest_only("the operator's rollout order; the kubelet re-counting GPUs after a config change is "
                         "test_chart's MPS upgrade, on every version")
def test_a_sharing_change_rolls_out_node_by_node_after_validation_and_allocatable_follows(installed: Installed,
                                                                                         cluster: Cluster,
                                                                                         image: str) -> None:
    samples: list[dict[str, Any]] = []

    def rolled() -> dict[str, Any] | None:
        st = status(cluster)
        samples.append(st)
        return ready(cluster) if cluster.allocatable() == 32 else None

    strategy = cluster.get("daemonset", "-n", NAMESPACE, "kgpu-device-plugin")["spec"]["updateStrategy"]
    assert strategy == {"type": "OnDelete"}, "the operator rolls changes out itself"
    before = {e["metadata"]["uid"] for e in events(cluster, "RolloutNode") + events(cluster, "NodeUpdated")}
    start = time.monotonic()
    # the README's patch, as written: each GPU time-sliced 4 ways
    readme.run(cluster, readme.command(OPERATOR, "kubectl patch clusterpolicies.kgpu.io"), image)
    wait_for("32 GPUs advertised and the policy ready", rolled, timeout=150, interval=0.25)
    record(f"v{cluster.version}: time-slicing ×4 in the ClusterPolicy → rolled out, 32 GPUs, ready",
           f"{time.monotonic() - start:.1f} s")

    in_flight = [s["rollout"]["inFlight"] for s in samples if s.get("rollout", {}).get("inFlight")]
    assert in_flight, "the node was seen being updated"
    assert all(len(nodes) <= 1 for nodes in in_flight), "maxUnavailable (1) nodes at a time"
    since = in_flight[0][cluster.node]
    rolling = [s for s in samples if conditions_of(s).get("RolloutComplete", {}).get("status") == "False"]
    assert rolling and all(s["state"] != "ready" for s in rolling)
    new = sorted((e for e in events(cluster, "RolloutNode") + events(cluster, "NodeUpdated")
                  if e["metadata"]["uid"] not in before), key=lambda e: e["metadata"]["creationTimestamp"])
    assert [e["reason"] for e in new] == ["RolloutNode", "NodeUpdated"], [e["message"] for e in new]
    assert all(cluster.node in e["message"] for e in new)
    # the node was let go only once it validated again after its pods were restarted
    validation = {c["type"]: c for c in cluster.node_object()["status"]["conditions"]}["KgpuValidation"]
    assert validation["status"] == "True" and validation["lastHeartbeatTime"] >= since
    assert new[1]["metadata"]["creationTimestamp"] >= since
    wanted = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"][TEMPLATE_HASH]
              for d in cluster.get("daemonsets", "-n", NAMESPACE, "-l", OWNED)["items"]}
    pods = [p for p in cluster.get("pods", "-n", NAMESPACE, "-l", PODS)["items"]
            if p["metadata"].get("ownerReferences", [{}])[0].get("name") in wanted]
    assert sorted(p["metadata"]["ownerReferences"][0]["name"] for p in pods) == sorted(wanted)
    for p in pods:
        owner = p["metadata"]["ownerReferences"][0]["name"]
        assert p["metadata"]["annotations"][TEMPLATE_HASH] == wanted[owner], p["metadata"]["name"]
    labels = wait_for("sharing labels", lambda: (lb := cluster.node_labels()).get("nvidia.com/gpu.replicas") == "4"
                      and lb, timeout=60)
    assert labels["nvidia.com/gpu.sharing-strategy"] == "time-slicing"


@pytest.mark.newest_only("the operator's config validation and the MPS daemon it renders")
def test_mps_through_the_policy_is_served_by_mps_daemons_and_a_combination_the_plugin_refuses_is_an_error(
        installed: Installed, cluster: Cluster) -> None:
    # Given the ready policy, MIG strategy mixed (operator_values) and whatever sharing the tests before left:
    gpus = wait_for("GPUs advertised", lambda: cluster.allocatable(), timeout=60)
    before = policy(cluster)["spec"]
    generation = cluster.get("daemonset", "-n", NAMESPACE, "kgpu-device-plugin")["metadata"]["generation"]
    mps = {"sharing": {"timeSlicing": None, "mps": {"resources": [{"name": GPU, "replicas": 2}]}}}
    try:
        # when MPS sharing is asked for with MIG strategy mixed, which the device plugin refuses at start, the
        # status says so naming both fields, and the nodes keep their daemons and GPUs;
        patch_spec(cluster, {"mps": {"enabled": True}, "devicePlugin": {"config": mps}})
        st = wait_for("state error", lambda: (s := status(cluster)).get("state") == "error" and s, timeout=30)
        assert st["message"].startswith("spec.devicePlugin.config with spec.mig.strategy mixed: sharing.mps cannot "
                                        "be combined with migStrategy mixed; use none or single"), st["message"]
        assert cluster.get("daemonset", "-n", NAMESPACE, "kgpu-device-plugin")["metadata"]["generation"] == generation
        assert cluster.allocatable() == gpus
        # then with MIG strategy none the slices are advertised and served: the MPS daemon, rendered by the
        # operator, reads the operator's config through its config-manager and runs a control daemon per GPU.
        start = time.monotonic()
        patch_spec(cluster, {"mig": {"strategy": "none"}})
        wait_for("16 MPS slices, 8 MPS daemons serving, policy ready", lambda: cluster.allocatable() == 16
                 and len(serving_mps_daemons()) == 8 and ready(cluster), timeout=180, interval=0.5)
        record(f"v{cluster.version}: MPS in the ClusterPolicy → 16 slices served by 8 MPS daemons, ready",
               f"{time.monotonic() - start:.1f} s")
        assert cluster.node_labels()["nvidia.com/gpu.sharing-strategy"] == "mps"
    finally:  # the spec as it was, whole (a merge patch would merge the configs' sharing sections)
        cluster.kubectl("patch", "clusterpolicies.kgpu.io", POLICY, "--type", "json", "-p",
                        json.dumps([{"op": "replace", "path": "/spec", "value": before}]))
    wait_for(f"{gpus} GPUs again, no MPS daemon, ready", lambda: cluster.allocatable() == gpus
             and serving_mps_daemons() == set() and ready(cluster), timeout=180, interval=0.5)


def _follow_logs(cluster: Cluster, selector: str, into: list[str]) -> subprocess.Popen[str]:
    """`kubectl logs -f` of the pods ``selector`` matches, into ``into`` (read when the test fails)."""
    proc = subprocess.Popen(["kubectl", "logs", "-f", "--prefix", "--max-log-requests", "10", "-n", NAMESPACE,
                             "-l", selector, "--tail", "5"], env=cluster.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    threading.Thread(target=lambda: into.extend(proc.stdout or []), daemon=True).start()
    return proc


def test_uninstall_leaves_no_policy_daemonset_condition_label_taint_socket_or_file(installed: Installed,
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
    start = time.monotonic()
    installed.release.uninstall()
    record(f"v{cluster.version}: helm uninstall (operator mode)", f"{time.monotonic() - start:.1f} s")
    for proc in followers:
        proc.terminate()
    watcher.join(timeout=5)
    seen = "\n".join(["validator/mig-manager:", *logs[-30:], "cleanup hook:", *hook_logs[-10:]])
    assert cluster.kubectl("get", "crd", "clusterpolicies.kgpu.io", "--ignore-not-found").strip() == ""
    with contextlib.suppress(AssertionError):
        wait_for("kgpu objects and pods gone", lambda: not kgpu_objects(cluster) - installed.objects_before,
                 timeout=120)
    assert sorted(kgpu_objects(cluster) - installed.objects_before) == [], seen
    wait_for(f"allocatable {GPU} gone", lambda: cluster.allocatable() == 0, timeout=120)
    node = cluster.node_object()
    assert not KGPU_CONDITIONS & {c["type"] for c in node["status"]["conditions"]}, seen
    labels = {k: v for k, v in node["metadata"].get("labels", {}).items()
              if k.startswith("nvidia.com/") and k != PRESENT and k not in installed.labels_before}
    taints = [t for t in node["spec"].get("taints", []) if t["key"].startswith(("nvidia.com/", "kgpu.io/"))]
    assert (labels, taints) == ({}, []), seen
    assert not [k for k in node["metadata"].get("annotations", {})
                if k.startswith("kgpu.io/") and k not in installed.annotations_before], seen
    with contextlib.suppress(AssertionError):
        wait_for("no kgpu file on the node", lambda: not (set(kgpu_files_left()) - installed.files_before),
                 timeout=60)
    assert sorted(set(kgpu_files_left()) - installed.files_before) == [], seen
