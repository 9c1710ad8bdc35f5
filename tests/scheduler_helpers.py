"""Givens for the scheduler-extender tests: nodes with dynamic GPUs, pods as the API server writes them,
and an in-memory API that records the extender's writes (a test double, kept out of the product)."""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Mapping
from typing import Any

from kgpu.scheduler.extender import ApiConflict, ApiFailure
from kgpu.scheduler.inventory import NodeGPU, encode_gpus
from kgpu.scheduler.names import NODE_GPUS

H100 = "NVIDIA H100 80GB HBM3"
H100_MIB = 81559


def gpus(count: int = 8, *, node: str = "n1", memory: int = H100_MIB, shares: int = 10, kind: str = H100,
         unhealthy: tuple[int, ...] = ()) -> tuple[NodeGPU, ...]:
    return tuple(
        NodeGPU(uuid=f"GPU-{node}-{i:04d}", index=i, type=kind, memory_mib=memory, shares=shares, numa=i // 4,
                healthy=i not in unhealthy)
        for i in range(count)
    )


def node_dict(name: str, node_gpus: tuple[NodeGPU, ...] | None = None) -> dict[str, Any]:
    annotations = {} if node_gpus is None else {NODE_GPUS: encode_gpus(node_gpus)}
    return {"metadata": {"name": name, "annotations": annotations}}


_uids = itertools.count(1)


def gpu_pod(name: str, *, memory: int | str | None = None, percent: int | None = None, cores: int | None = None,
            count: int | str = 1, annotations: Mapping[str, str] | None = None, namespace: str = "default",
            init: bool = False, extra_container: bool = False) -> dict[str, Any]:
    """A pod asking for GPU shares in HAMi's names, as the API server serializes it (20000 becomes ``20k``)."""
    limits: dict[str, str] = {"nvidia.com/gpu": str(count)}
    if memory is not None:
        limits["nvidia.com/gpumem"] = f"{memory // 1000}k" if isinstance(memory, int) and memory % 1000 == 0 \
            else str(memory)
    if percent is not None:
        limits["nvidia.com/gpumem-percentage"] = str(percent)
    if cores is not None:
        limits["nvidia.com/gpucores"] = str(cores)
    containers = [{"name": "main", "image": "local/busybox:1", "resources": {"limits": limits}}]
    if extra_container:
        containers.append({"name": "sidecar", "image": "local/busybox:1", "resources": {}})
    spec: dict[str, Any] = {"containers": containers, "schedulerName": "kgpu-scheduler"}
    if init:
        spec["initContainers"] = [{"name": "setup", "image": "local/busybox:1"}]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{next(_uids)}-{name}",
                     "resourceVersion": "1", "annotations": dict(annotations or {})},
        "spec": spec,
        "status": {"phase": "Pending"},
    }


class MemoryApi:
    """The API calls the extender makes, against pods held in memory, with resourceVersion and UID checks."""

    def __init__(self, pods: list[dict[str, Any]] | None = None) -> None:
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.events: list[tuple[str, str, str]] = []
        self.bindings: list[tuple[str, str]] = []
        self.fail_bind = False
        self.conflict_next_patch = False
        self._version = itertools.count(2)
        self.watchers: list[Any] = []
        """Called with a copy of every pod the API changes, as a watch would deliver it."""
        for p in pods or []:
            self.add(p)

    def add(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        self.pods[(meta["namespace"], meta["name"])] = copy.deepcopy(pod)

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        with self.lock:
            pod = self.pods.get((namespace, name))
            if pod is None:
                raise ApiFailure(f"reading pod {namespace}/{name}: 404 not found")
            return copy.deepcopy(pod)

    def patch_pod_annotations(self, namespace: str, name: str, uid: str, resource_version: str,
                              annotations: Mapping[str, str | None],
                              labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        with self.lock:
            pod = self.pods[(namespace, name)]
            meta = pod["metadata"]
            if self.conflict_next_patch:
                self.conflict_next_patch = False
                meta["resourceVersion"] = str(next(self._version))  # someone else wrote it meanwhile
            if meta["uid"] != uid or (resource_version and meta["resourceVersion"] != resource_version):
                raise ApiConflict(f"pod {namespace}/{name}: conflict")
            meta.setdefault("labels", {}).update(labels or {})
            current = meta.setdefault("annotations", {})
            for key, value in annotations.items():
                if value is None:
                    current.pop(key, None)
                else:
                    current[key] = value
            meta["resourceVersion"] = str(next(self._version))
            result = copy.deepcopy(pod)
        self._notify(result)
        return result

    def bind(self, namespace: str, name: str, uid: str, node: str) -> None:
        with self.lock:
            if self.fail_bind:
                raise ApiFailure(f"binding pod {namespace}/{name}: 500 etcd timeout")
            pod = self.pods[(namespace, name)]
            if pod["spec"].get("nodeName"):
                raise ApiConflict(f"pod {namespace}/{name} is already bound")
            pod["spec"]["nodeName"] = node
            pod["metadata"]["resourceVersion"] = str(next(self._version))
            self.bindings.append((f"{namespace}/{name}", node))
            result = copy.deepcopy(pod)
        self._notify(result)

    def update(self, namespace: str, name: str, change: Any) -> dict[str, Any]:
        """Change a pod as another writer would (the kubelet, the device plugin) and tell the watchers."""
        with self.lock:
            pod = self.pods[(namespace, name)]
            change(pod)
            pod["metadata"]["resourceVersion"] = str(next(self._version))
            result = copy.deepcopy(pod)
        self._notify(result)
        return result

    def _notify(self, pod: dict[str, Any]) -> None:
        for watcher in self.watchers:
            watcher(copy.deepcopy(pod))

    def event(self, pod: Mapping[str, Any], reason: str, message: str, kind: str = "Warning") -> None:
        self.events.append((pod["metadata"]["name"], reason, message))

    def pod(self, name: str, namespace: str = "default") -> dict[str, Any]:
        return copy.deepcopy(self.pods[(namespace, name)])
