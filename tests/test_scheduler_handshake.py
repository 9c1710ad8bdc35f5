"""How the device plugin finds the pod the kubelet is allocating, and why it can never pick the wrong one."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from scheduler_helpers import MemoryApi, gpu_pod, gpus, node_dict

from kgpu.scheduler.assignment import Assignment, Share, decode, encode
from kgpu.scheduler.extender import Extender, ExtenderConfig
from kgpu.scheduler.handshake import HandshakeError, pending_allocation
from kgpu.scheduler.names import BIND_PHASE, DEVICES_ALLOCATED, DEVICES_TO_ALLOCATE, PHASE_ALLOCATING, PHASE_SUCCESS
from kgpu.scheduler.state import ClusterState


def bound(name: str, assignment: Assignment, *, node: str = "n1", phase: str = PHASE_ALLOCATING,
          **kwargs: Any) -> dict[str, Any]:
    pod = gpu_pod(name, **kwargs)
    pod["spec"]["nodeName"] = node
    text = encode(assignment)
    pod["metadata"]["annotations"].update({DEVICES_ALLOCATED: text, DEVICES_TO_ALLOCATE: text, BIND_PHASE: phase})
    return pod


ONE = Assignment(((Share("GPU-a", 20000, 30),),))


def test_the_one_pod_in_flight_gets_its_share_and_is_marked_done() -> None:
    running = bound("old", ONE, phase=PHASE_SUCCESS)
    running["status"]["containerStatuses"] = [{"name": "main"}]
    pending = pending_allocation([running, bound("a", ONE), gpu_pod("elsewhere")], "n1", ["GPU-a::3"])
    assert (pending.key, pending.container, pending.shares) == ("default/a", "main", ONE.containers[0])
    assert pending.patch() == {DEVICES_TO_ALLOCATE: ";", BIND_PHASE: PHASE_SUCCESS}


def test_containers_are_handed_out_in_the_kubelets_order() -> None:
    two = Assignment(((Share("GPU-a", 1000, 10),), (Share("GPU-a", 2000, 20),), ()))  # setup, main, sidecar
    pod = bound("a", two, init=True, extra_container=True)
    pod["spec"]["initContainers"][0]["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    first = pending_allocation([pod], "n1", ["GPU-a::0"])
    assert (first.container, first.shares[0].memory_mib) == ("setup", 1000)
    assert BIND_PHASE not in first.patch()  # the pod still has a container to allocate
    pod["metadata"]["annotations"].update(first.patch())
    second = pending_allocation([pod], "n1", ["GPU-a::1"])
    assert (second.container, second.shares[0].memory_mib) == ("main", 2000)
    assert second.patch()[BIND_PHASE] == PHASE_SUCCESS


def test_a_pod_handed_out_but_not_yet_reported_by_the_kubelet_is_not_a_candidate() -> None:
    # the previous pod's Allocate recorded it (bind-phase success); the kubelet has not posted its status yet
    done = bound("done", ONE, phase=PHASE_SUCCESS)
    done["metadata"]["annotations"][DEVICES_TO_ALLOCATE] = ";"
    assert pending_allocation([done, bound("next", ONE)], "n1", ["GPU-a::1"]).name == "next"


def test_no_pod_waiting_is_refused_with_what_to_do() -> None:
    stray = gpu_pod("stray", memory=1000)
    stray["spec"]["nodeName"] = "n1"
    with pytest.raises(HandshakeError, match="must be placed by the kgpu scheduler") as info:
        pending_allocation([stray], "n1", ["GPU-a::0"])
    assert "default/stray asked for nvidia.com/gpu without it" in str(info.value)


@pytest.mark.parametrize("second", ["assigned", "unassigned"])
def test_two_candidates_are_refused_rather_than_guessed(second: str) -> None:
    other = bound("b", ONE) if second == "assigned" else gpu_pod("b")
    other["spec"]["nodeName"] = "n1"
    with pytest.raises(HandshakeError, match="refusing to guess") as info:
        pending_allocation([bound("a", ONE), other], "n1", ["GPU-a::0"])
    assert "default/a" in str(info.value) and "default/b" in str(info.value)


def test_a_device_count_that_does_not_match_the_share_is_refused() -> None:
    with pytest.raises(HandshakeError, match="asks for 2 devices"):
        pending_allocation([bound("a", ONE)], "n1", ["GPU-a::0", "GPU-a::1"])


def test_concurrent_pods_each_get_their_own_share_whatever_order_the_kubelet_admits_them() -> None:
    # Given one node, an extender binding 40 pods of different sizes from 8 threads at once, and a kubelet
    # that admits whatever is bound to it in random order, calling the plugin's Allocate for each
    state = ClusterState()
    state.replace_nodes([node_dict("n1", gpus(4, node="n1", shares=10))])
    api = MemoryApi()
    api.watchers.append(state.upsert_pod)
    state.synced.set()
    ext = Extender(state, api, ExtenderConfig(bind_wait=20))
    given: dict[str, tuple[Share, ...]] = {}
    refused: list[str] = []
    stop = threading.Event()
    rng = random.Random(7)
    allocated: list[str] = []

    def kubelet() -> None:
        while not stop.wait(0.002):
            waiting = [p for p in api.pods.values() if p["spec"].get("nodeName") == "n1"
                       and not p["status"].get("containerStatuses") and p["metadata"]["name"] not in given
                       and p["status"].get("phase") != "Failed"]
            if not waiting:
                continue
            admitting = rng.choice(waiting)  # the kubelet's order is its own
            name = admitting["metadata"]["name"]
            try:
                pending = pending_allocation(list(api.pods.values()), "n1", ["GPU-any::0"])
            except HandshakeError as exc:
                refused.append(str(exc))
                api.update("default", name, lambda p: p["status"].update(phase="Failed"))
                continue
            assert pending.name == name, f"Allocate for {name} found {pending.name}"
            given[name] = pending.shares
            api.update("default", name, lambda p, patch=pending.patch(): p["metadata"]["annotations"].update(patch))
            allocated.append(name)  # the kubelet reports the container a little later
            if len(allocated) > 2 or rng.random() < 0.5:
                late = allocated.pop(0)
                api.update("default", late, lambda p: p["status"].update(containerStatuses=[{"name": "main"}]))

    thread = threading.Thread(target=kubelet)
    thread.start()
    try:
        def schedule(i: int) -> None:
            pod = gpu_pod(f"p{i}", memory=2000 + 1000 * (i % 7), cores=5 + i % 4)
            api.add(pod)
            meta = pod["metadata"]
            if ext.filter({"Pod": pod, "NodeNames": ["n1"]})["NodeNames"]:
                ext.bind({"PodName": meta["name"], "PodNamespace": "default", "PodUID": meta["uid"], "Node": "n1"})
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(schedule, range(40)))
        deadline = threading.Event()
        for _ in range(500):
            if all(p["metadata"]["name"] in given or p["status"].get("phase") == "Failed"
                   for p in api.pods.values() if p["spec"].get("nodeName")):
                break
            deadline.wait(0.01)
    finally:
        stop.set()
        thread.join()
    # Then every pod the kubelet admitted got exactly the share recorded on it, and none was refused
    assert not refused
    assert len(given) == len([p for p in api.pods.values() if p["spec"].get("nodeName")]) >= 30
    for name, shares in given.items():
        assert shares == decode(api.pod(name)["metadata"]["annotations"][DEVICES_ALLOCATED]).shares
