"""Pod attribution: the kubelet's PodResources List, served over a real unix socket, becomes pod labels."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from exporter_helpers import series_of

from kgpu.exporter import ExporterOptions, GPUCollector, load_counters, resolve_device_id
from kgpu.exporter.podresources import PodResourcesClient
from kgpu.gpu import open_backend
from kgpu.podresources.api import podresources_pb2 as pb
from kgpu.podresources.api import podresources_pb2_grpc as pb_grpc

H100 = open_backend(simulate="h100x8").inventory()
A100 = open_backend(simulate="a100-mig").inventory()
POD_LABELS = ["container", "namespace", "pod"]


class FakeKubelet(pb_grpc.PodResourcesListerServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.pods: list[tuple[str, str, list[tuple[str, str, list[str]]]]] = []
        self.unavailable = False

    def List(self, request: Any, context: Any) -> Any:
        if self.unavailable:
            context.abort(grpc.StatusCode.UNAVAILABLE, "kubelet restarting")
        return pb.ListPodResourcesResponse(pod_resources=[
            pb.PodResources(name=name, namespace=ns, containers=[
                pb.ContainerResources(name=c, devices=[pb.ContainerDevices(resource_name=r, device_ids=ids)])
                for c, r, ids in containers
            ])
            for name, ns, containers in self.pods
        ])


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[tuple[FakeKubelet, Path]]:
    socket = tmp_path / "pod-resources" / "kubelet.sock"
    socket.parent.mkdir()
    servicer = FakeKubelet()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_PodResourcesListerServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix://{socket}")
    server.start()
    try:
        yield servicer, socket
    finally:
        server.stop(grace=None).wait()


def scrape(node: str, socket: Path, **options: Any) -> str:
    client = PodResourcesClient(socket)
    collector = GPUCollector(open_backend(simulate=node), ExporterOptions(load_counters(None), hostname="n", **options),
                             pod_devices=client)
    try:
        return collector.render()
    finally:
        collector.close()
        client.close()


def pod_of(text: str, uuid: str, name: str = "DCGM_FI_DEV_GPU_TEMP") -> list[dict[str, str]]:
    return [{k: v for k, v in labels.items() if k in ("pod", "namespace", "container", "vgpu")}
            for labels, _ in series_of(text, name, uuid)]


def test_each_way_a_device_plugin_names_a_gpu_leads_to_the_container(kubelet: tuple[FakeKubelet, Path]) -> None:
    servicer, socket = kubelet
    g = H100.gpus
    servicer.pods = [
        ("train-0", "ml", [("trainer", "nvidia.com/gpu", [g[0].uuid, "1"])]),    # UUID and index IDs
        ("infer-1", "web", [("server", "nvidia.com/gpu", [f"{g[2].uuid}::3"])]),  # a time-sliced replica
        ("other", "default", [("app", "example.com/fpga", [g[3].uuid])]),         # not an NVIDIA resource
    ]
    text = scrape("h100x8", socket)
    assert pod_of(text, g[0].uuid) == [{"container": "trainer", "namespace": "ml", "pod": "train-0"}]
    assert pod_of(text, g[1].uuid) == [{"container": "trainer", "namespace": "ml", "pod": "train-0"}]
    assert pod_of(text, g[2].uuid) == [{"container": "server", "namespace": "web", "pod": "infer-1"}]
    assert pod_of(text, g[3].uuid) == [{}]
    # Pod labels follow DCGM_FI_DRIVER_VERSION, sorted by name (dcgm-exporter renders its attribute map sorted).
    (labels, _), = series_of(text, "DCGM_FI_DEV_GPU_TEMP", g[0].uuid)
    assert list(labels)[-4:] == ["DCGM_FI_DRIVER_VERSION", *POD_LABELS]
    (labels, _), = series_of(text, "DCGM_FI_DEV_XID_ERRORS", g[0].uuid)
    assert list(labels)[-6:] == ["DCGM_FI_DRIVER_VERSION", "container", "err_code", "err_msg", "namespace", "pod"]
    allocated = {labels["UUID"]: v for labels, v in series_of(text, "kgpu_gpu_allocated_devices", g[0].uuid)}
    assert allocated == {g[0].uuid: 1}
    assert [v for _, v in series_of(text, "kgpu_gpu_allocated_devices", g[3].uuid)] == [0]
    assert "kgpu_exporter_pod_resources_up 1\n" in text


def test_mig_devices_are_attributed_to_their_instance_series(kubelet: tuple[FakeKubelet, Path]) -> None:
    servicer, socket = kubelet
    gpu0 = A100.gpus[0]
    first, second = gpu0.mig_devices[0], gpu0.mig_devices[2]
    servicer.pods = [
        ("a", "ns", [("c", f"nvidia.com/mig-{first.profile}", [first.uuid])]),
        ("b", "ns", [("c", f"nvidia.com/mig-{second.profile}", [f"0:{second.index}"])]),
    ]
    text = scrape("a100-mig", socket)
    by_instance = {labels["GPU_I_ID"]: labels.get("pod")
                   for labels, _ in series_of(text, "DCGM_FI_DEV_GPU_TEMP", gpu0.uuid)}
    assert by_instance[str(first.gpu_instance_id)] == "a"
    assert by_instance[str(second.gpu_instance_id)] == "b"
    assert sum(1 for pod in by_instance.values() if pod is None) == len(gpu0.mig_devices) - 2
    assert [v for _, v in series_of(text, "kgpu_gpu_allocated_devices", gpu0.uuid)] == [2]


def test_shared_gpu_last_container_wins_by_default_or_one_series_each(kubelet: tuple[FakeKubelet, Path]) -> None:
    servicer, socket = kubelet
    uuid = H100.gpus[4].uuid
    servicer.pods = [
        ("p1", "ns", [("c1", "nvidia.com/gpu", [f"{uuid}::0"])]),
        ("p2", "ns", [("c2", "nvidia.com/gpu", [f"{uuid}::1"])]),
    ]
    assert pod_of(scrape("h100x8", socket), uuid) == [{"container": "c2", "namespace": "ns", "pod": "p2"}]
    each = pod_of(scrape("h100x8", socket, all_sharing_containers=True), uuid)
    assert each == [
        {"container": "c1", "namespace": "ns", "pod": "p1", "vgpu": "0"},
        {"container": "c2", "namespace": "ns", "pod": "p2", "vgpu": "1"},
    ]


def test_no_kubelet_socket_means_no_pod_labels_and_one_warning(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    client = PodResourcesClient(tmp_path / "absent.sock")
    collector = GPUCollector(open_backend(simulate="t4"), ExporterOptions(load_counters(None)), pod_devices=client)
    with caplog.at_level(logging.WARNING):
        try:
            first, second = collector.render(), collector.render()
        finally:
            collector.close()
    uuid = open_backend(simulate="t4").inventory().gpus[0].uuid
    assert pod_of(first, uuid) == [{}] and pod_of(second, uuid) == [{}]
    warnings = [r for r in caplog.records if "absent" in r.getMessage()]
    assert len(warnings) == 1
    assert "kgpu_gpu_allocated_devices" not in first


def test_a_kubelet_that_stops_answering_costs_the_labels_not_the_scrape(kubelet: tuple[FakeKubelet, Path]) -> None:
    servicer, socket = kubelet
    uuid = H100.gpus[0].uuid
    servicer.pods = [("p", "ns", [("c", "nvidia.com/gpu", [uuid])])]
    servicer.unavailable = True
    text = scrape("h100x8", socket)
    assert pod_of(text, uuid) == [{}]
    assert "kgpu_exporter_pod_resources_up 0\n" in text


@pytest.mark.parametrize(
    ("device_id", "expected"),
    [
        (H100.gpus[3].uuid, (H100.gpus[3].uuid, None)),
        (f"{H100.gpus[3].uuid}::7", (H100.gpus[3].uuid, "7")),
        ("5", (H100.gpus[5].uuid, None)),
        ("5::2", (H100.gpus[5].uuid, "2")),
        ("8", None),
        ("GPU-00000000-0000-0000-0000-000000000000", None),
        ("nvidia0", (H100.gpus[0].uuid, None)),          # GKE's device plugin
        ("nvidia6/vgpu2", (H100.gpus[6].uuid, "2")),
        ("nvidia9", None),
        ("gpu0", None),
    ],
)
def test_device_ids_resolve_to_gpus(device_id: str, expected: tuple[str, str | None] | None) -> None:
    resolved = resolve_device_id(device_id, H100)
    assert (None if resolved is None else (resolved.uuid, resolved.replica)) == expected


def test_gke_mig_ids_resolve_by_gpu_instance() -> None:
    mig = A100.gpus[0].mig_devices[2]
    resolved = resolve_device_id(f"nvidia0/gi{mig.gpu_instance_id}", A100)
    assert resolved is not None and resolved.uuid == mig.uuid
    assert resolve_device_id("nvidia0/gi99", A100) is None


def test_legacy_mig_ids_resolve() -> None:
    mig = A100.gpus[0].mig_devices[1]
    legacy = f"MIG-{mig.parent_uuid}/{mig.gpu_instance_id}/{mig.compute_instance_id}"
    resolved = resolve_device_id(legacy, A100)
    assert resolved is not None and resolved.uuid == mig.uuid and resolved.gpu_uuid == mig.parent_uuid
