"""The extender's verbs against an in-memory API: what kube-scheduler sends, what it gets back,
what lands on the pod, and that many binds at once never promise a GPU twice."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from scheduler_helpers import H100_MIB, MemoryApi, gpu_pod, gpus, node_dict

from kgpu.scheduler.assignment import decode
from kgpu.scheduler.extender import Extender, ExtenderConfig
from kgpu.scheduler.names import (
    BIND_PHASE,
    DEVICES_ALLOCATED,
    DEVICES_TO_ALLOCATE,
    PHASE_ALLOCATING,
    PHASE_FAILED,
    PHASE_SUCCESS,
)
from kgpu.scheduler.state import ClusterState


def cluster(*nodes: dict[str, Any], pods: list[dict[str, Any]] | None = None, watch: bool = True,
            **config: Any) -> tuple[Extender, MemoryApi, ClusterState]:
    state = ClusterState()
    state.replace_nodes(nodes)
    api = MemoryApi(pods)
    state.replace_pods(api.pods.values())
    state.synced.set()
    if watch:
        api.watchers.append(state.upsert_pod)
    return Extender(state, api, ExtenderConfig(**config)), api, state


def allocate(api: MemoryApi, name: str) -> None:
    """What the node's device plugin does once the kubelet has allocated the pod."""
    def done(pod: dict[str, Any]) -> None:
        pod["metadata"]["annotations"][BIND_PHASE] = PHASE_SUCCESS
        pod["metadata"]["annotations"][DEVICES_TO_ALLOCATE] = ";"
    api.update("default", name, done)


def schedule(ext: Extender, api: MemoryApi, pod: dict[str, Any], nodes: list[str]) -> dict[str, Any]:
    """kube-scheduler's cycle: filter, prioritize, pick the best, bind."""
    api.add(pod)
    passed = ext.filter({"Pod": pod, "NodeNames": nodes})
    if not passed["NodeNames"]:
        return passed
    scores = ext.prioritize({"Pod": pod, "NodeNames": passed["NodeNames"]})
    best = max(scores, key=lambda s: s["Score"])["Host"]
    meta = pod["metadata"]
    return ext.bind({"PodName": meta["name"], "PodNamespace": meta["namespace"], "PodUID": meta["uid"],
                     "Node": best})


def test_filter_speaks_the_extender_wire_types() -> None:
    ext, _, _ = cluster(node_dict("n1", gpus(node="n1")), node_dict("plain"))
    result = ext.filter({"Pod": gpu_pod("a", memory=20000), "NodeNames": ["n1", "plain"]})
    assert result["NodeNames"] == ["n1"]
    assert "no GPUs shared dynamically" in result["FailedAndUnresolvableNodes"]["plain"]
    assert result["Error"] == "" and result["FailedNodes"] == {}
    # Go decodes field names case-insensitively; so does the extender
    assert ext.filter({"pod": gpu_pod("b", memory=1), "nodenames": ["n1"]})["NodeNames"] == ["n1"]


def test_pods_without_gpus_and_whole_gpu_pods_pass_every_node() -> None:
    ext, _, _ = cluster(node_dict("plain"))
    cpu_pod = gpu_pod("cpu")
    del cpu_pod["spec"]["containers"][0]["resources"]["limits"]
    assert ext.filter({"Pod": cpu_pod, "NodeNames": ["plain"]})["NodeNames"] == ["plain"]
    assert ext.filter({"Pod": gpu_pod("whole"), "NodeNames": ["plain"]})["NodeNames"] == ["plain"]


def test_bind_records_the_assignment_in_hamis_annotations_then_binds() -> None:
    ext, api, state = cluster(node_dict("n1", gpus(node="n1")))
    assert schedule(ext, api, gpu_pod("a", memory=20000, cores=30), ["n1"]) == {"Error": ""}
    pod = api.pod("a")
    ann = pod["metadata"]["annotations"]
    assert pod["spec"]["nodeName"] == "n1"
    assert ann["hami.io/vgpu-node"] == "n1" and ann[BIND_PHASE] == PHASE_ALLOCATING
    assert ann[DEVICES_ALLOCATED] == ann[DEVICES_TO_ALLOCATE] == "GPU-n1-0000,NVIDIA,20000,30:;"
    # and the pod's limits as labels an admin can list (kubectl get pods -L kgpu.io/gpu-memory-mib)
    assert pod["metadata"]["labels"] == {"kgpu.io/gpu-memory-mib": "20000", "kgpu.io/gpu-cores": "30"}
    usage = state.usage("n1")
    assert usage is not None and usage.gpus[0].memory_mib == 20000
    assert state.in_flight("n1") and not state.in_flight("n1", other_than=pod["metadata"]["uid"])


@pytest.mark.parametrize(("policy", "gpus_used"), [("binpack", 1), ("spread", 3)])
def test_20_30_and_25_gb_pods_by_gpu_policy(policy: str, gpus_used: int) -> None:
    ext, api, _state = cluster(node_dict("n1", gpus(node="n1")), gpu_policy=policy)
    for name, mib in (("a", 20000), ("b", 30000), ("c", 25000)):
        assert schedule(ext, api, gpu_pod(name, memory=mib), ["n1"]) == {"Error": ""}
        allocate(api, name)
    used = {decode(api.pod(n)["metadata"]["annotations"][DEVICES_ALLOCATED]).shares[0].uuid for n in "abc"}
    assert len(used) == gpus_used


def test_the_pod_annotation_overrides_the_cluster_policy() -> None:
    ext, api, _ = cluster(node_dict("n1", gpus(node="n1")), gpu_policy="binpack")
    for name in ("a", "b"):
        schedule(ext, api, gpu_pod(name, memory=1000, annotations={"hami.io/gpu-scheduler-policy": "spread"}), ["n1"])
        allocate(api, name)
    uuids = {decode(api.pod(n)["metadata"]["annotations"][DEVICES_ALLOCATED]).shares[0].uuid for n in "ab"}
    assert len(uuids) == 2


def test_node_policy_binpack_and_spread_rank_nodes() -> None:
    ext, api, _ = cluster(node_dict("busy", gpus(2, node="busy")), node_dict("idle", gpus(2, node="idle")))
    schedule(ext, api, gpu_pod("first", memory=50000, annotations={"hami.io/gpu-scheduler-policy": "binpack"}),
             ["busy"])
    allocate(api, "first")
    pod = gpu_pod("next", memory=1000)
    by_binpack = {s["Host"]: s["Score"] for s in ext.prioritize({"Pod": pod, "NodeNames": ["busy", "idle"]})}
    assert by_binpack["busy"] > by_binpack["idle"]
    spread = gpu_pod("next2", memory=1000, annotations={"hami.io/node-scheduler-policy": "spread"})
    by_spread = {s["Host"]: s["Score"] for s in ext.prioritize({"Pod": spread, "NodeNames": ["busy", "idle"]})}
    assert by_spread["idle"] > by_spread["busy"]


def test_a_pod_that_fits_nowhere_gets_one_event_with_each_nodes_largest_free_share() -> None:
    ext, api, _ = cluster(node_dict("n1", gpus(2, node="n1")), node_dict("n2", gpus(1, node="n2")))
    big = gpu_pod("big", memory=90000)
    for _ in range(3):  # kube-scheduler retries a Pending pod
        result = ext.filter({"Pod": big, "NodeNames": ["n1", "n2"]})
    assert result["NodeNames"] == []
    assert set(result["FailedAndUnresolvableNodes"]) == {"n1", "n2"}
    assert len(api.events) == 1
    name, reason, message = api.events[0]
    assert (name, reason) == ("big", "FilteringFailed")
    assert ("n1: container 'main' (90000 MiB, 0 percent of SMs): 2 GPUs: 2 smaller than the request; "
            f"largest free share: {H100_MIB} MiB and 100 percent of SMs (GPU 0)") in message
    assert "n2: container 'main'" in message


def test_an_impossible_request_fails_every_node_with_the_reason() -> None:
    ext, api, _ = cluster(node_dict("n1", gpus(node="n1")))
    result = ext.filter({"Pod": gpu_pod("bad", percent=300), "NodeNames": ["n1"]})
    assert result["NodeNames"] == []
    assert "gpumem-percentage: 300 is not a percentage" in result["FailedAndUnresolvableNodes"]["n1"]
    assert api.events and "can never be met" in api.events[0][2]


def test_filter_answers_with_an_error_until_pods_and_nodes_are_listed() -> None:
    ext = Extender(ClusterState(), MemoryApi())
    assert "still reading pods and nodes" in ext.filter({"Pod": gpu_pod("a", memory=1), "NodeNames": ["n1"]})["Error"]


def test_a_second_pod_is_bound_only_after_the_first_is_allocated() -> None:
    ext, api, _ = cluster(node_dict("n1", gpus(node="n1")), bind_wait=5)
    assert schedule(ext, api, gpu_pod("a", memory=1000), ["n1"]) == {"Error": ""}
    result: dict[str, Any] = {}
    second = threading.Thread(target=lambda: result.update(schedule(ext, api, gpu_pod("b", memory=1000), ["n1"])))
    second.start()
    second.join(0.3)
    assert second.is_alive() and ("default/b", "n1") not in api.bindings  # waiting for a's Allocate
    allocate(api, "a")
    second.join(5)
    assert result == {"Error": ""} and ("default/b", "n1") in api.bindings


def test_a_bind_that_waits_too_long_is_given_back_to_the_scheduler() -> None:
    ext, api, state = cluster(node_dict("n1", gpus(node="n1")), bind_wait=1)
    schedule(ext, api, gpu_pod("a", memory=1000), ["n1"])
    result = schedule(ext, api, gpu_pod("b", memory=1000), ["n1"])
    assert "node n1 is still allocating default/a" in result["Error"]
    assert DEVICES_ALLOCATED not in api.pod("b")["metadata"]["annotations"]  # nothing was written
    usage = state.usage("n1")
    assert usage is not None and sum(g.clients for g in usage.gpus) == 1  # b's reservation was dropped


def test_the_kubelets_container_statuses_also_end_the_wait() -> None:
    # the device plugin may crash after Allocate and before writing bind-phase: the kubelet's status says enough
    ext, api, _ = cluster(node_dict("n1", gpus(node="n1")), bind_wait=5)
    schedule(ext, api, gpu_pod("a", memory=1000), ["n1"])
    api.update("default", "a", lambda p: p["status"].update(
        containerStatuses=[{"name": "main", "state": {"waiting": {"reason": "ContainerCreating"}}}]))
    assert schedule(ext, api, gpu_pod("b", memory=1000), ["n1"]) == {"Error": ""}


def test_a_failed_binding_releases_the_shares_and_marks_the_assignment_failed() -> None:
    ext, api, state = cluster(node_dict("n1", gpus(1, node="n1")))
    api.fail_bind = True
    result = schedule(ext, api, gpu_pod("a", memory=80000), ["n1"])
    assert "500 etcd timeout" in result["Error"]
    assert api.pod("a")["metadata"]["annotations"][BIND_PHASE] == PHASE_FAILED
    usage = state.usage("n1")
    assert usage is not None and usage.gpus[0].memory_mib == 0
    api.fail_bind = False
    assert schedule(ext, api, gpu_pod("b", memory=80000), ["n1"]) == {"Error": ""}


def test_a_pod_changed_meanwhile_is_read_again_before_its_assignment_is_written() -> None:
    ext, api, _ = cluster(node_dict("n1", gpus(node="n1")))
    api.conflict_next_patch = True  # kube-scheduler updated the pod's conditions between the read and the write
    assert schedule(ext, api, gpu_pod("a", memory=1000), ["n1"]) == {"Error": ""}
    assert api.pod("a")["metadata"]["annotations"][DEVICES_ALLOCATED].startswith("GPU-n1-")


def test_a_replaced_pod_is_not_bound() -> None:
    ext, api, _ = cluster(node_dict("n1", gpus(node="n1")))
    pod = gpu_pod("a", memory=1000)
    api.add(pod)
    result = ext.bind({"PodName": "a", "PodNamespace": "default", "PodUID": "some-older-uid", "Node": "n1"})
    assert "was replaced" in result["Error"] and not api.bindings


def test_a_restarted_extender_rebuilds_the_same_usage_from_the_pods() -> None:
    ext, api, state = cluster(node_dict("n1", gpus(node="n1")))
    for name, mib in (("a", 20000), ("b", 30000)):
        schedule(ext, api, gpu_pod(name, memory=mib), ["n1"])
        allocate(api, name)
    before = state.usage("n1")
    fresh = ClusterState()
    fresh.replace_nodes([node_dict("n1", gpus(node="n1"))])
    fresh.replace_pods(api.pods.values())
    assert fresh.usage("n1") == before
    # a finished pod frees its share
    api.update("default", "a", lambda p: p["status"].update(phase="Succeeded"))
    fresh.replace_pods(api.pods.values())
    after = fresh.usage("n1")
    assert after is not None and sum(g.memory_mib for g in after.gpus) == 30000


def test_many_binds_at_once_never_oversubscribe_a_gpu() -> None:
    # Given two nodes of two GPUs and 60 pods of random-ish sizes scheduled by 16 threads at once,
    # with the watch lagging (the state hears of the pods only later) and a kubelet allocating as it goes
    nodes = [node_dict(n, gpus(2, node=n, shares=6)) for n in ("n1", "n2")]
    ext, api, state = cluster(*nodes, watch=False, bind_wait=10)
    sizes = [(5000 + 7919 * i % 30000, 10 + 13 * i % 50) for i in range(60)]
    stop = threading.Event()

    def kubelet() -> None:
        # every so often the watch catches up and the kubelets allocate what was bound
        while not stop.wait(0.01):
            for (_ns, name), pod in list(api.pods.items()):
                if pod["spec"].get("nodeName") and pod["metadata"]["annotations"].get(BIND_PHASE) == PHASE_ALLOCATING:
                    allocate(api, name)
            state.replace_pods(list(api.pods.values()))

    feeder = threading.Thread(target=kubelet)
    feeder.start()
    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda i: schedule(ext, api, gpu_pod(f"p{i}", memory=sizes[i][0],
                                                                         cores=sizes[i][1]), ["n1", "n2"]),
                                    range(60)))
    finally:
        stop.set()
        feeder.join()
    bound = [p for p in api.pods.values() if p["spec"].get("nodeName")]
    assert bound and len(bound) < 60  # some fit, the rest were refused
    assert all(r in ({"Error": ""},) or r.get("NodeNames") == [] or "no longer fits" in r.get("Error", "")
               or "still allocating" in r.get("Error", "") for r in results)
    per_gpu: dict[str, list[int]] = {}
    for p in bound:
        for s in decode(p["metadata"]["annotations"][DEVICES_ALLOCATED]).shares:
            used = per_gpu.setdefault(s.uuid, [0, 0, 0])
            used[0] += s.memory_mib
            used[1] += s.cores
            used[2] += 1
    assert per_gpu
    for uuid, (memory, cores, clients) in per_gpu.items():
        assert memory <= H100_MIB and cores <= 100 and clients <= 6, uuid
