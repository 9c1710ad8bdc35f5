"""The operator's decisions, without a cluster: given what the API server holds, what does it do and say?"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kgpu.errors import ConfigError
from kgpu.nodestatus import CONDITION_TYPES, Stage
from kgpu.operator.handlers import ClusterView, reconcile_once, record_node, record_object, record_pod, record_policy
from kgpu.operator.reconcile import (
    TEMPLATE_HASH,
    PolicyRef,
    active_policy,
    covers,
    desired_objects,
    node_facts,
    plan_apply,
    plan_rollout,
    pod_facts,
)
from kgpu.operator.values import chart_defaults

T0, T1, T2 = "2026-01-01T00:00:00Z", "2026-01-01T00:00:10Z", "2026-01-01T00:00:20Z"
SHARING = {"version": "v1", "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}}}


def policy(spec: dict[str, Any] | None = None, name: str = "cluster-policy", created: str = T0,
           generation: int = 1) -> PolicyRef:
    return PolicyRef(name=name, uid=f"uid-{name}", generation=generation, created=created, spec=spec or {})


def gpu_node(name: str, *, heartbeat: str = T1, failing: Stage | None = None, allocatable: str = "8") -> dict[str, Any]:
    conditions = [
        {"type": kind, "status": "False" if stage is failing else "True", "reason": "Passed",
         "message": f"{stage} ok" if stage is not failing else f"{stage} broken Fix: do the thing",
         "lastHeartbeatTime": heartbeat, "lastTransitionTime": T0}
        for stage, kind in CONDITION_TYPES.items()
    ]
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "H100",
                                              "nvidia.com/gpu.count": "8"}},
        "status": {"allocatable": {"cpu": "8", "nvidia.com/gpu": allocatable}, "conditions": conditions},
    }


def pod(name: str, node: str, ds: str, digest: str, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": {TEMPLATE_HASH: digest},
                     "ownerReferences": [{"kind": "DaemonSet", "name": ds}]},
        "spec": {"nodeName": node},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_the_oldest_cluster_policy_is_in_charge_and_a_second_is_ignored() -> None:
    first, second = policy(name="b", created=T0), policy(name="a", created=T1)
    active, ignored = active_policy([second, first])
    assert active == first and ignored == [second]


def test_an_empty_policy_wants_the_charts_daemonsets_owned_by_it_and_rolled_by_the_operator() -> None:
    desired = desired_objects(policy(), chart_defaults(), "kgpu", "kube-system")
    names = [o["metadata"]["name"] for o in desired.objects]
    assert names == ["kgpu-config", "kgpu-device-plugin", "kgpu-labeler", "kgpu-exporter", "kgpu-validator"]
    for obj in desired.objects:
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-cluster-policy"
    ds = desired.objects[1]
    assert ds["spec"]["updateStrategy"] == {"type": "OnDelete"}, "the operator is the rolling updater"
    assert desired.operator_rolls and desired.max_unavailable == 1
    assert ds["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kgpu-operator"


def test_an_invalid_sharing_config_is_an_error_naming_the_field() -> None:
    bad = {"devicePlugin": {"config": {"version": "v1", "sharing": {"timeSlicing": {"resources": [
        {"name": "nvidia.com/gpu", "replicas": 0}]}}}}}
    try:
        desired_objects(policy(bad), chart_defaults(), "kgpu", "kube-system")
    except ConfigError as exc:
        assert "spec.devicePlugin.config" in str(exc) and "replicas" in str(exc)
    else:
        raise AssertionError("an invalid config was accepted")


MPS_CONFIG = {"version": "v1", "sharing": {"mps": {"resources": [{"name": "nvidia.com/gpu", "replicas": 2}]}}}


def test_a_config_the_node_daemons_would_refuse_is_an_error_before_any_daemonset_changes() -> None:
    # Given a valid MPS config, but with the policy's MIG strategy mixed (which the device plugin refuses at start:
    # every daemon would crash, on every node): the operator says so, naming both fields, and renders nothing.
    spec = {"devicePlugin": {"config": MPS_CONFIG}, "mps": {"enabled": True}, "mig": {"strategy": "mixed"}}
    with pytest.raises(ConfigError, match=r"^spec\.devicePlugin\.config with spec\.mig\.strategy mixed: sharing\.mps "
                                          r"cannot be combined with migStrategy mixed; use none or single$"):
        desired_objects(policy(spec), chart_defaults(), "kgpu", "kube-system")
    # An MPS config without the MPS daemon would advertise slices nothing serves: refused with the fix.
    with pytest.raises(ConfigError, match=r"^spec\.devicePlugin\.config: shares GPUs through MPS .*"
                                          r"\(set spec\.mps\.enabled=true\)$"):
        desired_objects(policy({"devicePlugin": {"config": MPS_CONFIG}}), chart_defaults(), "kgpu", "kube-system")
    # With the daemon and MIG strategy single, the MPS daemon's DaemonSet is rendered.
    spec = {"devicePlugin": {"config": MPS_CONFIG}, "mps": {"enabled": True}, "mig": {"strategy": "single"}}
    names = {o["metadata"]["name"] for o in desired_objects(policy(spec), chart_defaults(), "kgpu",
                                                            "kube-system").objects}
    assert "kgpu-mps-daemon" in names


def test_drift_a_deleted_or_edited_daemonset_is_reapplied_and_a_disabled_one_deleted() -> None:
    desired = desired_objects(policy(), chart_defaults(), "kgpu", "kube-system").objects
    actual = {(o["kind"], o["metadata"]["name"]): copy.deepcopy(o) for o in desired}
    for obj in actual.values():  # what the API server adds must not count as drift
        obj.setdefault("status", {})["numberReady"] = 1
        if obj["kind"] == "DaemonSet":
            obj["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    assert plan_apply(desired, actual, ["kgpu-device-plugin", "kgpu-labeler", "kgpu-exporter", "kgpu-validator"]) == []

    del actual[("DaemonSet", "kgpu-labeler")]
    actual[("DaemonSet", "kgpu-exporter")]["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:1"
    owned = ["kgpu-device-plugin", "kgpu-exporter", "kgpu-validator", "kgpu-mps-daemon"]
    actions = {(a.verb, a.name): a.reason for a in plan_apply(desired, actual, owned)}
    assert actions == {
        ("apply", "kgpu-labeler"): "missing: created",
        ("apply", "kgpu-exporter"): "changed outside the ClusterPolicy: repaired",
        ("delete", "kgpu-mps-daemon"): "component disabled in the ClusterPolicy: deleted",
    }


def test_covers_ignores_server_defaults_but_not_changed_values() -> None:
    assert covers({"a": 1, "b": [{"x": 1, "y": 2}]}, {"b": [{"x": 1}]})
    assert not covers({"b": [{"x": 2}]}, {"b": [{"x": 1}]})
    assert not covers({"b": [{"x": 1}, {"x": 2}]}, {"b": [{"x": 1}]})


def _rollout_world(nodes: int, current: str, old: str) -> tuple[list[Any], dict[str, Any]]:
    pods = [pod_facts(pod(f"dp-{i}", f"n{i}", "kgpu-device-plugin", old)) for i in range(nodes)]
    facts = {f"n{i}": node_facts(gpu_node(f"n{i}")) for i in range(nodes)}
    return pods, facts


def test_a_changed_spec_rolls_out_one_node_at_a_time_each_validating_again() -> None:
    pods, nodes = _rollout_world(3, "new", "old")
    hashes = {"kgpu-device-plugin": "new"}
    first = plan_rollout(hashes, pods, nodes, {}, 1, T0)
    assert first.delete_pods == ("dp-0",) and first.in_flight == {"n0": T0} and first.outdated_nodes == 3

    # n0's new pod is up but the node has not reported since the restart: the rollout waits.
    pods[0] = pod_facts(pod("dp-0b", "n0", "kgpu-device-plugin", "new"))
    nodes["n0"] = node_facts(gpu_node("n0", heartbeat="2025-12-31T23:59:59Z"))
    waiting = plan_rollout(hashes, pods, nodes, first.in_flight, 1, T1)
    assert waiting.delete_pods == () and waiting.in_flight == {"n0": T0}

    # n0 validates again: the next node starts.
    nodes["n0"] = node_facts(gpu_node("n0", heartbeat=T1))
    second = plan_rollout(hashes, pods, nodes, waiting.in_flight, 1, T2)
    assert second.finished == ("n0",) and second.delete_pods == ("dp-1",) and second.in_flight == {"n1": T2}


def test_max_unavailable_as_a_percentage_restarts_that_many_nodes_at_once() -> None:
    pods, nodes = _rollout_world(8, "new", "old")
    plan = plan_rollout({"kgpu-device-plugin": "new"}, pods, nodes, {}, "25%", T0)
    assert plan.started == ("n0", "n1")


def test_a_node_that_fails_a_stage_after_its_restart_holds_the_rollout() -> None:
    pods, nodes = _rollout_world(2, "new", "old")
    pods[0] = pod_facts(pod("dp-0b", "n0", "kgpu-device-plugin", "new"))
    nodes["n0"] = node_facts(gpu_node("n0", heartbeat=T2, failing=Stage.DEVICE_PLUGIN))
    plan = plan_rollout({"kgpu-device-plugin": "new"}, pods, nodes, {"n0": T0}, 1, T2)
    assert plan.delete_pods == () and plan.in_flight == {"n0": T0}


class FakeWriter:
    """Records what reconcile_once asks the API server to do."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, str]] = []
        self.deleted_pods: list[str] = []
        self.statuses: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, str]] = []

    def apply(self, action: Any) -> None:
        self.applied.append((action.verb, action.name))

    def delete_pod(self, name: str) -> None:
        self.deleted_pods.append(name)

    def patch_status(self, name: str, status: dict[str, Any]) -> None:
        self.statuses.append((name, status))

    def post_event(self, p: PolicyRef, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))


def _view() -> ClusterView:
    return ClusterView(namespace="kube-system", release="kgpu", base_values=chart_defaults())


def _policy_body(spec: dict[str, Any], name: str = "cluster-policy", created: str = T0) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"uid-{name}", "generation": 1, "creationTimestamp": created},
            "spec": spec}


def test_a_fresh_cluster_gets_its_daemonsets_and_a_status_naming_the_node_that_is_not_ready() -> None:
    view, writer = _view(), FakeWriter()
    record_policy(view, None, _policy_body({}))
    record_node(view, None, gpu_node("gpu-1"))
    record_node(view, None, gpu_node("gpu-2", failing=Stage.DRIVER))
    record_node(view, None, {"metadata": {"name": "cpu-1", "labels": {}}, "status": {}})
    report = reconcile_once(view, writer)  # type: ignore[arg-type]
    assert report is not None
    assert ("apply", "kgpu-device-plugin") in writer.applied
    status = writer.statuses[-1][1]
    assert status["state"] == "notReady" and status["gpuNodes"] == 2 and status["readyNodes"] == 1
    assert status["nodes"] == [{"name": "gpu-2", "stage": "driver", "message": "Passed: driver broken",
                                "fix": "do the thing"}]
    assert "gpu-2: driver" in status["message"] and "Fix: do the thing" in status["message"]
    assert ("Normal", "Created", "DaemonSet kgpu-device-plugin missing: created") in writer.events


def test_an_invalid_spec_keeps_the_running_daemonsets_and_says_error_with_the_cause() -> None:
    view, writer = _view(), FakeWriter()
    record_policy(view, None, _policy_body({"devicePlugin": {"config": {"version": "v2"}}}))
    reconcile_once(view, writer)  # type: ignore[arg-type]
    status = writer.statuses[-1][1]
    assert status["state"] == "error" and "spec.devicePlugin.config" in status["message"]
    assert "Fix: correct it with kubectl edit clusterpolicies.kgpu.io cluster-policy" in status["message"]
    assert writer.applied == []
    assert any(reason == "InvalidSpec" for _, reason, _ in writer.events)


def _current(view: ClusterView, spec: dict[str, Any] | None = None) -> None:
    """The cluster holds exactly what ``spec`` asks for, every pod current and ready on gpu-1."""
    desired = desired_objects(policy(spec), chart_defaults(), "kgpu", "kube-system")
    for obj in desired.objects:
        body = copy.deepcopy(obj)
        if body["kind"] == "DaemonSet":
            body["status"] = {"desiredNumberScheduled": 1, "numberReady": 1}
            digest = obj["spec"]["template"]["metadata"]["annotations"][TEMPLATE_HASH]
            record_pod(view, None, pod(f"{obj['metadata']['name']}-x", "gpu-1", obj["metadata"]["name"], digest))
        record_object(view, None, body)


def test_a_deleted_daemonset_is_recreated_and_the_status_keeps_naming_the_repair() -> None:
    view, writer = _view(), FakeWriter()
    record_policy(view, None, _policy_body({}))
    record_node(view, None, gpu_node("gpu-1"))
    _current(view)
    reconcile_once(view, writer)  # type: ignore[arg-type]
    assert writer.statuses[-1][1]["state"] == "ready"
    record_object(view, "DELETED", {"kind": "DaemonSet", "metadata": {"name": "kgpu-device-plugin"}})
    reconcile_once(view, writer)  # type: ignore[arg-type]
    assert ("apply", "kgpu-device-plugin") in writer.applied
    sync = {c["type"]: c for c in writer.statuses[-1][1]["conditions"]}["DaemonSetsInSync"]
    assert sync["reason"] == "DriftRepaired" and "DaemonSet kgpu-device-plugin missing: created" in sync["message"]
    assert "change them with kubectl edit clusterpolicies.kgpu.io cluster-policy" in sync["message"]
    assert ("Warning", "DriftRepaired", "DaemonSet kgpu-device-plugin missing: created") in writer.events
    _current(view)  # the watch delivers the recreated DaemonSet
    view.statuses["cluster-policy"] = writer.statuses[-1][1]
    reconcile_once(view, writer)  # type: ignore[arg-type]
    status = writer.statuses[-1][1]
    sync = {c["type"]: c for c in status["conditions"]}["DaemonSetsInSync"]
    assert status["state"] == "ready" and sync["reason"] == "DriftRepaired", "the last repair stays visible"


def test_a_component_the_policy_turned_off_is_named_as_the_fix_of_the_stage_it_fails() -> None:
    view, writer = _view(), FakeWriter()
    record_policy(view, None, _policy_body({"devicePlugin": {"enabled": False}}))
    record_node(view, None, gpu_node("gpu-1", failing=Stage.DEVICE_PLUGIN, allocatable="0"))
    reconcile_once(view, writer)  # type: ignore[arg-type]
    status = writer.statuses[-1][1]
    assert status["nodes"][0]["stage"] == "devicePlugin"
    assert status["nodes"][0]["fix"] == (
        "spec.devicePlugin.enabled is false in ClusterPolicy cluster-policy: kubectl patch clusterpolicies.kgpu.io "
        "cluster-policy --type merge -p '{\"spec\":{\"devicePlugin\":{\"enabled\":true}}}'")
    assert ("delete", "kgpu-device-plugin") not in writer.applied  # there was none to delete


def test_a_second_cluster_policy_is_flagged_ignored_in_its_status() -> None:
    view, writer = _view(), FakeWriter()
    record_policy(view, None, _policy_body({}, "first", T0))
    record_policy(view, None, _policy_body({}, "second", T1))
    reconcile_once(view, writer)  # type: ignore[arg-type]
    second = [s for n, s in writer.statuses if n == "second"][-1]
    assert second["state"] == "ignored" and "first" in second["message"]


def test_when_everything_is_current_and_validated_the_policy_is_ready_and_nothing_is_written_twice() -> None:
    view, writer = _view(), FakeWriter()
    record_policy(view, None, _policy_body({}))
    record_node(view, None, gpu_node("gpu-1"))
    _current(view)
    reconcile_once(view, writer)  # type: ignore[arg-type]
    assert writer.applied == [] and writer.deleted_pods == []
    assert writer.statuses[-1][1]["state"] == "ready"
    writes = len(writer.statuses)
    reconcile_once(view, writer)  # type: ignore[arg-type]
    assert len(writer.statuses) == writes, "an unchanged status is not written again"


def test_changing_sharing_in_the_policy_restarts_the_pods_of_one_node() -> None:
    view, writer = _view(), FakeWriter()
    record_policy(view, None, _policy_body({}))
    for name in ("gpu-1", "gpu-2"):
        record_node(view, None, gpu_node(name))
        record_pod(view, None, pod(f"dp-{name}", name, "kgpu-device-plugin", "old-hash"))
    reconcile_once(view, writer)  # type: ignore[arg-type]
    record_policy(view, None, _policy_body({"devicePlugin": {"config": SHARING}}))
    view.statuses["cluster-policy"] = writer.statuses[-1][1]
    reconcile_once(view, writer)  # type: ignore[arg-type]
    assert writer.deleted_pods == ["dp-gpu-1"]
    assert writer.statuses[-1][1]["state"] == "notReady"


def test_a_node_let_go_stays_let_go_when_a_watch_delivers_an_older_status() -> None:
    # given a node whose pods the operator restarted for a new spec
    view, writer = _view(), FakeWriter()
    record_policy(view, None, _policy_body({"devicePlugin": {"config": SHARING}}))
    record_node(view, None, gpu_node("gpu-1", heartbeat=T0))
    record_pod(view, None, pod("dp-gpu-1", "gpu-1", "kgpu-device-plugin", "old-hash"))
    reconcile_once(view, writer)  # type: ignore[arg-type]
    assert writer.deleted_pods == ["dp-gpu-1"]
    restarting = writer.statuses[-1][1]
    since = restarting["rollout"]["inFlight"]["gpu-1"]
    # when its new pods run and it validated again, it is let go once
    desired = desired_objects(policy({"devicePlugin": {"config": SHARING}}), chart_defaults(), "kgpu", "kube-system")
    record_pod(view, "DELETED", pod("dp-gpu-1", "gpu-1", "kgpu-device-plugin", "old-hash"))
    for name, digest in desired.pod_hashes.items():
        record_pod(view, None, pod(f"{name}-new", "gpu-1", name, digest))
    record_node(view, None, gpu_node("gpu-1", heartbeat="2999-01-01T00:00:00Z"))
    reconcile_once(view, writer)  # type: ignore[arg-type]
    assert writer.statuses[-1][1]["rollout"]["inFlight"] == {}
    # then the watch delivers the status written while it restarted: the operator keeps its own
    record_policy(view, "MODIFIED", _policy_body({"devicePlugin": {"config": SHARING}}) | {"status": restarting})
    reconcile_once(view, writer)  # type: ignore[arg-type]
    assert writer.statuses[-1][1]["rollout"]["inFlight"] == {}
    assert [m for _, r, m in writer.events if r == "NodeUpdated"] == [
        "node gpu-1: runs the new spec and validated again"], since


def test_in_a_pod_the_operator_logs_in_at_the_address_the_kubelet_gives_it(tmp_path: Any, monkeypatch: Any) -> None:
    from kgpu.operator.run import login_in_cluster

    assert login_in_cluster(tmp_path) is None, "outside a pod: no service account token"
    (tmp_path / "token").write_text("tok\n")
    (tmp_path / "ca.crt").write_text("CA")
    (tmp_path / "namespace").write_text("kube-system")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    info = login_in_cluster(tmp_path)
    assert (info.server, info.token, info.default_namespace) == ("https://127.0.0.1:6443", "tok", "kube-system")
