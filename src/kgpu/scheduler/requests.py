"""What a pod asks of GPUs, read from its containers exactly as HAMi reads it.

Pure: a pod as the API server serializes it (a ``dict``) in, :class:`PodRequest` out, or a
:class:`RequestError` naming the container, the resource, the value and what is allowed.

HAMi's rules (``GenerateResourceRequests`` and its webhook's ``defaultExclusiveCoreIfNeeded``):

* ``nvidia.com/gpu: N`` — N shares, each on its own GPU; limits win over requests.
* ``nvidia.com/gpumem`` — MiB per share; else ``nvidia.com/gpumem-percentage`` of the GPU's memory;
  neither (or ``0``) means the whole GPU's memory.
* ``nvidia.com/gpucores`` — percent of the SMs (0–100). Not given: 100 when the container asked
  for no memory or for 100 % of it (a plain ``nvidia.com/gpu: 1`` is a whole GPU, alone), else
  the cluster default (HAMi's ``defaultCores``, 0: no guaranteed share of SMs).

Containers are numbered as HAMi numbers them in its annotations: init containers first, then
the others. Example::

    req = pod_request(pod)
    req.containers[0].memory_mib, req.containers[0].cores     # (20000, 30)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kgpu.config.quantity import parse_quantity
from kgpu.errors import KgpuError
from kgpu.scheduler.names import GPU_CORES, GPU_COUNT, GPU_MEMORY, GPU_MEMORY_PERCENTAGE, MANAGED_RESOURCES

MAX_SHARES_PER_CONTAINER = 16
"""More GPUs than any node has; a larger count is a typo, refused rather than searched for."""
MAX_MEMORY_MIB = 16 * 1024 * 1024
"""16 TiB per share: far above any GPU, below anything that could overflow HAMi's int32 MiB fields."""


class RequestError(KgpuError):
    """A pod's GPU request that no GPU can ever satisfy; the message says which container and why."""


@dataclass(frozen=True, slots=True)
class ContainerRequest:
    """One container's GPU request. ``memory_mib`` and ``memory_percent`` are never both set."""

    index: int
    """HAMi's container index: init containers first, then the others."""
    name: str
    count: int
    memory_mib: int | None
    memory_percent: int | None
    cores: int

    def memory_on(self, gpu_memory_mib: int) -> int:
        """MiB this request takes on a GPU of ``gpu_memory_mib`` (HAMi: total × percentage / 100, rounded down)."""
        if self.memory_mib is not None:
            return self.memory_mib
        percent = 100 if self.memory_percent is None else self.memory_percent
        return gpu_memory_mib * percent // 100

    @property
    def exclusive(self) -> bool:
        """All of a GPU's SMs: nothing else may share that GPU (HAMi: gpucores 100)."""
        return self.cores >= 100

    def describe(self) -> str:
        """``20000 MiB, 30 percent of SMs`` — how messages show the request (no "%": see NodeUsage.largest_free)."""
        if self.memory_mib is not None:
            memory = f"{self.memory_mib} MiB"
        else:
            memory = f"{100 if self.memory_percent is None else self.memory_percent} percent of memory"
        per = " each" if self.count > 1 else ""
        head = f"{self.count} GPUs, " if self.count > 1 else ""
        return f"{head}{memory}, {self.cores} percent of SMs{per}"


@dataclass(frozen=True, slots=True)
class PodRequest:
    containers: tuple[ContainerRequest, ...]
    """Only containers that ask for GPUs, in HAMi order."""
    container_count: int
    """All containers (init and others): the number of entries in HAMi's annotations."""

    @property
    def wants_gpu(self) -> bool:
        return bool(self.containers)

    @property
    def needs_dynamic(self) -> bool:
        """Asks for memory or SMs of a GPU, which only a dynamically shared GPU can give."""
        return any(c.memory_mib is not None or c.memory_percent is not None or c.cores not in (0, 100)
                   for c in self.containers)


def containers_in_order(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Init containers, then the others: the order of HAMi's annotation entries and of the kubelet's Allocate calls."""
    spec = pod.get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def asks_for_gpu(pod: Mapping[str, Any]) -> bool:
    """Any container names one of the GPU resources (what kube-scheduler checks before calling the extender)."""
    for c in containers_in_order(pod):
        resources = c.get("resources") or {}
        for kind in ("limits", "requests"):
            if any(name in MANAGED_RESOURCES for name in resources.get(kind) or {}):
                return True
    return False


def pod_request(pod: Mapping[str, Any], default_cores: int = 0) -> PodRequest:
    """The pod's GPU request under HAMi's rules; RequestError for a request no GPU can satisfy."""
    containers = containers_in_order(pod)
    out = [r for i, c in enumerate(containers) if (r := container_request(i, c, default_cores)) is not None]
    return PodRequest(containers=tuple(out), container_count=len(containers))


def container_request(index: int, container: Mapping[str, Any], default_cores: int = 0) -> ContainerRequest | None:
    name = str(container.get("name", f"#{index}"))
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}

    def value(resource: str) -> int | None:
        raw = limits.get(resource, requests.get(resource))
        return None if raw is None else _whole(raw, name, resource)

    count = value(GPU_COUNT)
    memory = value(GPU_MEMORY)
    percent = value(GPU_MEMORY_PERCENTAGE)
    cores = value(GPU_CORES)
    if count is None or count == 0:
        extras = [r for r, v in ((GPU_MEMORY, memory), (GPU_MEMORY_PERCENTAGE, percent), (GPU_CORES, cores)) if v]
        if extras:
            raise RequestError(
                f"container {name!r} asks for {', '.join(extras)} but not {GPU_COUNT}: the kubelet gives GPUs only "
                f"to containers that request {GPU_COUNT}; add {GPU_COUNT}: 1 to its limits"
            )
        return None
    if count > MAX_SHARES_PER_CONTAINER:
        raise RequestError(f"container {name!r}: {GPU_COUNT}: {count} is more GPUs than any node has "
                           f"(at most {MAX_SHARES_PER_CONTAINER})")
    if memory is not None and memory > MAX_MEMORY_MIB:
        raise RequestError(f"container {name!r}: {GPU_MEMORY}: {memory} MiB is more memory than any GPU has "
                           f"(the value is MiB: 20000 means 20000 MiB)")
    if percent is not None and percent > 100:
        raise RequestError(f"container {name!r}: {GPU_MEMORY_PERCENTAGE}: {percent} is not a percentage; "
                           "allowed: 1 to 100")
    if cores is not None and cores > 100:
        raise RequestError(f"container {name!r}: {GPU_CORES}: {cores} is more than the whole GPU; allowed: 0 to 100")
    memory = memory or None  # 0 means "not given", as in HAMi
    percent = percent or None
    if memory is not None:
        percent = None  # gpumem wins over gpumem-percentage
    if cores is None:
        whole_memory = memory is None and (percent is None or percent == 100)
        cores = 100 if whole_memory else default_cores
    return ContainerRequest(index=index, name=name, count=count, memory_mib=memory, memory_percent=percent,
                            cores=cores)


def _whole(raw: object, container: str, resource: str) -> int:
    """A non-negative whole number from a Kubernetes quantity (the API server writes 20000 as ``20k``)."""
    text = str(raw)[:64]
    try:
        quantity = parse_quantity(text)
    except ValueError:
        quantity = None
    if quantity is None or quantity.denominator != 1 or quantity > 2**62:
        raise RequestError(f"container {container!r}: {resource}: {text!r} is not a whole number; "
                           f"{resource} counts {'MiB' if resource == GPU_MEMORY else 'units'} as an integer")
    return int(quantity)
