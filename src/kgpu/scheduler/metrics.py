"""The extender's metrics: per GPU what is allocated, per container what it was given, in HAMi's names.

One collector reads a fresh snapshot of the cluster state per scrape. Names, help texts and
label names are those of HAMi's scheduler (``cmd/scheduler/metrics.go``), with its constant
label ``zone="vGPU"``; memory in bytes, cores in percent of the GPU's SMs:

* per GPU: ``hami_gpu_memory_limit_bytes``, ``hami_gpu_core_limit_ratio``,
  ``hami_gpu_memory_allocated_bytes``, ``hami_gpu_core_allocated_ratio``, ``hami_gpu_shared_count``,
  ``hami_node_gpu_overview``, ``hami_node_gpu_memory_allocated_ratio``;
* per container share: ``hami_vgpu_memory_allocated_bytes``, ``hami_vgpu_core_allocated_ratio``, and —
  because MPS enforces exactly what was allocated — the limit HAMi's node monitor reports,
  ``hami_vgpu_memory_limit_bytes``.

With ``legacy=True`` (HAMi's ``--legacy-metrics``) the old names are emitted as well:
``GPUDeviceMemoryLimit``, ``GPUDeviceCoreLimit``, ``GPUDeviceMemoryAllocated``, ``GPUDeviceSharedNum``,
``GPUDeviceCoreAllocated``, ``nodeGPUOverview``, ``nodeGPUMemoryPercentage``, ``vGPUMemoryAllocated``,
``vGPUCoreAllocated`` and ``vGPU_device_memory_limit_in_bytes``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from kgpu.scheduler.state import ClusterState

MIB = 1024 * 1024
ZONE = "vGPU"


class ExtenderCollector(Collector):
    def __init__(self, state: ClusterState, legacy: bool = False) -> None:
        self.state = state
        self.legacy = legacy

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gpu_labels = ["node", "device_uuid", "device_index", "device_type", "zone"]
        mem_limit = GaugeMetricFamily("hami_gpu_memory_limit_bytes", "Device memory limit for a certain GPU",
                                      labels=gpu_labels)
        core_limit = GaugeMetricFamily("hami_gpu_core_limit_ratio", "Device core limit for a certain GPU",
                                       labels=gpu_labels)
        mem_alloc = GaugeMetricFamily("hami_gpu_memory_allocated_bytes", "Device memory allocated for a certain GPU",
                                      labels=["node", "device_uuid", "device_index", "device_cores", "device_type",
                                              "zone"])
        shared = GaugeMetricFamily("hami_gpu_shared_count", "Number of containers sharing this GPU",
                                   labels=gpu_labels)
        core_alloc = GaugeMetricFamily("hami_gpu_core_allocated_ratio", "Device core allocated for a certain GPU",
                                       labels=gpu_labels)
        overview = GaugeMetricFamily("hami_node_gpu_overview", "GPU overview on a certain node",
                                     labels=["node", "device_uuid", "device_index", "device_cores",
                                             "device_memory_limit", "device_type", "zone"])
        mem_ratio = GaugeMetricFamily("hami_node_gpu_memory_allocated_ratio",
                                      "GPU Memory Allocated Percentage on a certain GPU", labels=gpu_labels)
        ctr_labels = ["namespace", "node", "pod", "container_index", "device_uuid", "zone"]
        ctr_mem = GaugeMetricFamily("hami_vgpu_memory_allocated_bytes", "vGPU memory allocated from a container",
                                    labels=ctr_labels)
        ctr_core = GaugeMetricFamily("hami_vgpu_core_allocated_ratio", "vGPU core allocated from a container",
                                     labels=ctr_labels)
        ctr_limit = GaugeMetricFamily("hami_vgpu_memory_limit_bytes", "vGPU device memory limit in bytes",
                                      labels=["namespace", "pod", "container", "vdevice_index", "device_uuid", "zone"])
        legacy = _Legacy() if self.legacy else None

        for record in self.state.nodes():
            usage = self.state.usage(record.name)
            if usage is None:
                continue
            for u in usage.gpus:
                g = u.gpu
                base = [record.name, g.uuid, str(g.index), g.type, ZONE]
                mem_limit.add_metric(base, g.memory_mib * MIB)
                core_limit.add_metric(base, g.cores)
                mem_alloc.add_metric([record.name, g.uuid, str(g.index), str(g.cores), g.type, ZONE],
                                     u.memory_mib * MIB)
                shared.add_metric(base, u.clients)
                core_alloc.add_metric(base, u.cores)
                overview.add_metric([record.name, g.uuid, str(g.index), str(g.cores), str(g.memory_mib), g.type, ZONE],
                                    u.memory_mib * MIB)
                mem_ratio.add_metric(base, u.memory_mib / g.memory_mib)
                if legacy:
                    legacy.gpu(record.name, g.uuid, g.index, g.type, g.cores, g.memory_mib, u.memory_mib, u.cores,
                               u.clients)
        for pod in sorted(self.state.pods(), key=lambda p: (p.namespace, p.name)):
            if not pod.holds_shares or pod.assignment is None:
                continue
            for index, shares in enumerate(pod.assignment.containers):
                container = pod.containers[index] if index < len(pod.containers) else str(index)
                for vdevice, s in enumerate(shares):
                    labels = [pod.namespace, pod.node, pod.name, str(index), s.uuid, ZONE]
                    ctr_mem.add_metric(labels, s.memory_mib * MIB)
                    ctr_core.add_metric(labels, s.cores)
                    ctr_limit.add_metric([pod.namespace, pod.name, container, str(vdevice), s.uuid, ZONE],
                                         s.memory_mib * MIB)
                    if legacy:
                        legacy.container(pod.namespace, pod.node, pod.name, index, container, vdevice, s.uuid,
                                         s.memory_mib, s.cores)
        yield from (mem_limit, core_limit, mem_alloc, shared, core_alloc, overview, mem_ratio, ctr_mem, ctr_core,
                    ctr_limit)
        if legacy:
            yield from legacy.families()


class _Legacy:
    """HAMi's metric names before ``hami_*`` (its ``--legacy-metrics``), with their own label names."""

    def __init__(self) -> None:
        gpu = ["nodeid", "deviceuuid", "deviceidx", "devicetype", "zone"]
        ctr = ["podnamespace", "nodename", "podname", "containeridx", "deviceuuid", "zone"]
        self.mem_limit = GaugeMetricFamily("GPUDeviceMemoryLimit", "Device memory limit for a certain GPU",
                                           labels=gpu)
        self.core_limit = GaugeMetricFamily("GPUDeviceCoreLimit", "Device memory core limit for a certain GPU",
                                            labels=gpu)
        self.mem_alloc = GaugeMetricFamily("GPUDeviceMemoryAllocated", "Device memory allocated for a certain GPU",
                                           labels=["nodeid", "deviceuuid", "deviceidx", "devicecores", "devicetype",
                                                   "zone"])
        self.shared = GaugeMetricFamily("GPUDeviceSharedNum", "Number of containers sharing this GPU", labels=gpu)
        self.core_alloc = GaugeMetricFamily("GPUDeviceCoreAllocated", "Device core allocated for a certain GPU",
                                            labels=gpu)
        self.overview = GaugeMetricFamily("nodeGPUOverview", "GPU overview on a certain node",
                                          labels=["nodeid", "deviceuuid", "deviceidx", "devicecores",
                                                  "devicememorylimit", "devicetype", "zone"])
        self.mem_ratio = GaugeMetricFamily("nodeGPUMemoryPercentage", "GPU Memory Allocated Percentage on a certain "
                                           "GPU", labels=["nodeid", "deviceuuid", "deviceidx", "zone"])
        self.ctr_mem = GaugeMetricFamily("vGPUMemoryAllocated", "vGPU memory allocated from a container", labels=ctr)
        self.ctr_core = GaugeMetricFamily("vGPUCoreAllocated", "vGPU core allocated from a container", labels=ctr)
        self.ctr_limit = GaugeMetricFamily("vGPU_device_memory_limit_in_bytes", "vGPU device limit",
                                           labels=["podnamespace", "podname", "ctrname", "vdeviceid", "deviceuuid",
                                                   "zone"])

    def gpu(self, node: str, uuid: str, index: int, kind: str, cores: int, memory_mib: int, used_mib: int,
            used_cores: int, clients: int) -> None:
        base = [node, uuid, str(index), kind, ZONE]
        self.mem_limit.add_metric(base, memory_mib * MIB)
        self.core_limit.add_metric(base, cores)
        self.mem_alloc.add_metric([node, uuid, str(index), str(cores), kind, ZONE], used_mib * MIB)
        self.shared.add_metric(base, clients)
        self.core_alloc.add_metric(base, used_cores)
        self.overview.add_metric([node, uuid, str(index), str(cores), str(memory_mib), kind, ZONE], used_mib * MIB)
        self.mem_ratio.add_metric([node, uuid, str(index), ZONE], used_mib / memory_mib)

    def container(self, namespace: str, node: str, pod: str, index: int, container: str, vdevice: int, uuid: str,
                  memory_mib: int, cores: int) -> None:
        labels = [namespace, node, pod, str(index), uuid, ZONE]
        self.ctr_mem.add_metric(labels, memory_mib * MIB)
        self.ctr_core.add_metric(labels, cores)
        self.ctr_limit.add_metric([namespace, pod, container, str(vdevice), uuid, ZONE], memory_mib * MIB)

    def families(self) -> Iterator[GaugeMetricFamily]:
        yield from (self.mem_limit, self.core_limit, self.mem_alloc, self.shared, self.core_alloc, self.overview,
                    self.mem_ratio, self.ctr_mem, self.ctr_core, self.ctr_limit)


def registry(state: ClusterState, legacy: bool = False) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ExtenderCollector(state, legacy))
    return reg
