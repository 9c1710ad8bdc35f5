"""What a pod asks of GPUs, read as HAMi reads it; and HAMi's assignment and node annotations."""

from __future__ import annotations

import pytest
from scheduler_helpers import gpu_pod, gpus

from kgpu.scheduler.assignment import Assignment, AssignmentError, Share, decode, encode
from kgpu.scheduler.inventory import InventoryError, decode_gpus, encode_gpus
from kgpu.scheduler.requests import RequestError, asks_for_gpu, pod_request


def test_memory_and_cores_as_the_api_server_serializes_them() -> None:
    # Given a pod asking 20000 MiB and 30 % of SMs (the API server writes 20000 as "20k")
    req = pod_request(gpu_pod("a", memory=20000, cores=30))
    # Then its one container asks for exactly that, on one GPU
    (c,) = req.containers
    assert (c.count, c.memory_mib, c.memory_percent, c.cores) == (1, 20000, None, 30)
    assert req.needs_dynamic


def test_plain_gpu_request_is_a_whole_gpu_alone() -> None:
    # HAMi's webhook turns nvidia.com/gpu: 1 without memory into gpucores 100 and 100 % of memory
    (c,) = pod_request(gpu_pod("a")).containers
    assert c.cores == 100 and c.exclusive and c.memory_on(81559) == 81559
    assert not pod_request(gpu_pod("a")).needs_dynamic


def test_memory_percentage_and_default_cores() -> None:
    (c,) = pod_request(gpu_pod("a", percent=25), default_cores=10).containers
    assert c.memory_on(81559) == 81559 * 25 // 100 and c.cores == 10
    # gpumem wins over gpumem-percentage; 100 % of memory without cores is the whole GPU
    (both,) = pod_request(gpu_pod("b", memory=1000, percent=50)).containers
    assert (both.memory_mib, both.memory_percent) == (1000, None)
    (full,) = pod_request(gpu_pod("c", percent=100)).containers
    assert full.cores == 100


def test_container_order_is_init_first_and_counts_every_container() -> None:
    req = pod_request(gpu_pod("a", memory=1000, init=True, extra_container=True))
    assert req.container_count == 3
    assert [c.index for c in req.containers] == [1]


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"percent": 150}, "nvidia.com/gpumem-percentage: 150 is not a percentage"),
    ({"cores": 101}, "nvidia.com/gpucores: 101 is more than the whole GPU"),
    ({"memory": "20Gi"}, "is more memory than any GPU has"),
    ({"count": "0.5"}, "'0.5' is not a whole number"),
    ({"count": 40}, "nvidia.com/gpu: 40 is more GPUs than any node has"),
])
def test_requests_no_gpu_can_meet_are_refused_with_the_container_and_value(kwargs: dict[str, object],
                                                                          fragment: str) -> None:
    with pytest.raises(RequestError, match="container 'main'") as info:
        pod_request(gpu_pod("a", **kwargs))  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_memory_without_a_gpu_count_is_refused() -> None:
    pod = gpu_pod("a", memory=1000)
    del pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    assert asks_for_gpu(pod)
    with pytest.raises(RequestError, match=r"add nvidia\.com/gpu: 1"):
        pod_request(pod)


def test_assignment_round_trips_in_hamis_format() -> None:
    a = Assignment(((), (Share("GPU-1", 20000, 30),), (Share("GPU-2", 81559, 100), Share("GPU-3", 81559, 100))))
    text = encode(a)
    assert text == ";GPU-1,NVIDIA,20000,30:;GPU-2,NVIDIA,81559,100:GPU-3,NVIDIA,81559,100:;"
    assert decode(text) == a
    assert decode(text).next_pending() == 1
    assert decode(text).without(1).next_pending() == 2
    assert decode(encode(a.without(1).without(2))).empty


def test_a_broken_assignment_is_refused() -> None:
    with pytest.raises(AssignmentError, match="must be whole numbers"):
        decode("GPU-1,NVIDIA,lots,30:;")


def test_node_gpus_round_trip_in_hamis_device_info_shape() -> None:
    given = gpus(2, unhealthy=(1,))
    text = encode_gpus(given)
    assert '"id":"GPU-n1-0000"' in text and '"devmem":81559' in text and '"mode":"mps"' in text
    assert decode_gpus(text) == given


@pytest.mark.parametrize("text", ["{", '{"id": 1}', '[{"id": "GPU-1", "devmem": -1, "count": 1}]',
                                  "[" + "1," * 70 + "1]"])
def test_unreadable_node_gpus_are_refused(text: str) -> None:
    with pytest.raises(InventoryError):
        decode_gpus(text)
