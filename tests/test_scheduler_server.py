"""The extender over HTTP as kube-scheduler calls it, and its metrics in HAMi's names."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.exposition import generate_latest
from scheduler_helpers import MemoryApi, gpu_pod, gpus, node_dict

from kgpu.scheduler.extender import Extender
from kgpu.scheduler.metrics import registry
from kgpu.scheduler.names import BIND_PHASE, DEVICES_TO_ALLOCATE, PHASE_SUCCESS
from kgpu.scheduler.server import MAX_BODY, ExtenderServer
from kgpu.scheduler.state import ClusterState


@pytest.fixture
def served() -> Iterator[tuple[str, MemoryApi, ClusterState]]:
    state = ClusterState()
    state.replace_nodes([node_dict("n1", gpus(2, node="n1"))])
    api = MemoryApi()
    api.watchers.append(state.upsert_pod)
    state.synced.set()
    server = ExtenderServer(Extender(state, api), "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{server.port}/kgpu", api, state
    finally:
        server.stop()


def post(url: str, body: Any, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_filter_prioritize_bind_over_http(served: tuple[str, MemoryApi, ClusterState]) -> None:
    base, api, _ = served
    pod = gpu_pod("a", memory=20000, cores=30)
    api.add(pod)
    status, result = post(f"{base}/filter", {"Pod": pod, "Nodes": None, "NodeNames": ["n1"]})
    assert status == 200 and result["NodeNames"] == ["n1"] and result["Error"] == ""
    status, scores = post(f"{base}/prioritize", {"Pod": pod, "Nodes": None, "NodeNames": ["n1"]})
    assert status == 200 and scores == [{"Host": "n1", "Score": scores[0]["Score"]}]
    meta = pod["metadata"]
    status, bound = post(f"{base}/bind", {"PodName": "a", "PodNamespace": "default", "PodUID": meta["uid"],
                                          "Node": "n1"})
    assert (status, bound) == (200, {"Error": ""})
    assert api.pod("a")["spec"]["nodeName"] == "n1"


def test_bad_requests_get_a_status_kube_scheduler_reports(served: tuple[str, MemoryApi, ClusterState]) -> None:
    base, _, _ = served
    assert post(f"{base}/filter", None, raw=b"{not json")[0] == 400
    assert post(f"{base}/preempt", {})[0] == 404
    # a body larger than the limit is refused from its Content-Length, before it is read
    host, port = base.split("//")[1].split("/")[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/kgpu/filter")
    conn.putheader("Content-Length", str(MAX_BODY + 1))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and "larger than" in json.loads(response.read())["Error"]
    conn.close()
    assert post(f"{base}/bind", {"PodName": "x"})[1]["Error"].startswith("ExtenderBindingArgs needs")


def test_readiness_follows_the_first_list() -> None:
    state = ClusterState()
    server = ExtenderServer(Extender(state, MemoryApi()), "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{server.port}/readyz"
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url, timeout=5)
        state.synced.set()
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
    finally:
        server.stop()


def test_metrics_show_per_gpu_allocation_and_per_container_limits(
        served: tuple[str, MemoryApi, ClusterState]) -> None:
    base, api, state = served
    pod = gpu_pod("a", memory=20000, cores=30, namespace="default")
    api.add(pod)
    post(f"{base}/bind", {"PodName": "a", "PodNamespace": "default", "PodUID": pod["metadata"]["uid"], "Node": "n1"})

    def allocated(p: dict[str, Any]) -> None:
        p["metadata"]["annotations"].update({BIND_PHASE: PHASE_SUCCESS, DEVICES_TO_ALLOCATE: ";"})
    api.update("default", "a", allocated)
    text = generate_latest(registry(state, legacy=True)).decode()
    gpu0 = 'device_index="0",device_type="NVIDIA H100 80GB HBM3",device_uuid="GPU-n1-0000",node="n1",zone="vGPU"'
    assert f"hami_gpu_memory_allocated_bytes{{device_cores=\"100\",{gpu0}}} 2.097152e+10" in text
    assert f"hami_gpu_core_allocated_ratio{{{gpu0}}} 30.0" in text
    assert f"hami_gpu_shared_count{{{gpu0}}} 1.0" in text
    assert ('hami_vgpu_memory_limit_bytes{container="main",device_uuid="GPU-n1-0000",namespace="default",pod="a",'
            'vdevice_index="0",zone="vGPU"} 2.097152e+10') in text
    assert ('vGPU_device_memory_limit_in_bytes{ctrname="main",deviceuuid="GPU-n1-0000",podname="a",'
            'podnamespace="default",vdeviceid="0",zone="vGPU"} 2.097152e+10') in text
    assert 'GPUDeviceCoreAllocated{deviceidx="1"' in text
    assert "vGPUMemoryAllocated" not in generate_latest(registry(state)).decode()
