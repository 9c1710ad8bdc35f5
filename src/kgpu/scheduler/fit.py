"""Which GPUs of a node a pod's shares go to, by policy, and why a node cannot take a pod.

Pure: a node's GPUs with what is already allocated on each (:class:`NodeUsage`), a pod's
request and a policy in; a :class:`Placement` (the assignment, and the usage after it) or a
:class:`Refusal` (one line, with the largest free share of the node) out.

A GPU takes a share when it is healthy, allowed by the pod's ``nvidia.com/use-gputype`` /
``nouse-gputype`` / ``use-gpuuuid`` / ``nouse-gpuuuid`` annotations (HAMi's rules), has a client
slot left (its ``shares``), enough free memory and free SMs, nobody holds it whole, and — for a
request of all SMs — nobody uses it at all. A container asking for SMs ``0`` (no guaranteed
share) is not put on a GPU whose SMs are all promised to others.

GPU policy (HAMi's): each GPU scores ``clients/shares + cores/100 + memory/total``; ``binpack``
takes the busiest GPU that fits, ``spread`` the idlest; ties go to the lower index. Node policy
scores the node after placement the same way over all its GPUs (``binpack``: busier is better).

Example::

    placement = place(usage, pod_request(pod), gpu_policy="binpack", annotations={})
    placement.assignment.containers[0][0].uuid
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from kgpu.scheduler.assignment import Assignment, Share
from kgpu.scheduler.inventory import NodeGPU
from kgpu.scheduler.names import NOUSE_GPU_TYPE, NOUSE_GPU_UUID, USE_GPU_TYPE, USE_GPU_UUID, Policy
from kgpu.scheduler.requests import ContainerRequest, PodRequest

MAX_EXTENDER_PRIORITY = 10
"""k8s.io/kube-scheduler/extender/v1 MaxExtenderPriority."""


@dataclass(frozen=True, slots=True)
class GPUUsage:
    """One GPU and what is allocated on it."""

    gpu: NodeGPU
    memory_mib: int = 0
    cores: int = 0
    clients: int = 0

    @property
    def free_memory_mib(self) -> int:
        return max(self.gpu.memory_mib - self.memory_mib, 0)

    @property
    def free_cores(self) -> int:
        return max(self.gpu.cores - self.cores, 0)

    @property
    def free_clients(self) -> int:
        return max(self.gpu.shares - self.clients, 0)

    def score(self) -> float:
        """HAMi's device score: share slots, SMs and memory in use, each as a fraction."""
        g = self.gpu
        return self.clients / g.shares + self.cores / g.cores + self.memory_mib / g.memory_mib

    def plus(self, share: Share) -> GPUUsage:
        return replace(self, memory_mib=self.memory_mib + share.memory_mib, cores=self.cores + share.cores,
                       clients=self.clients + 1)


@dataclass(frozen=True, slots=True)
class NodeUsage:
    node: str
    gpus: tuple[GPUUsage, ...]

    def plus(self, shares: Sequence[Share]) -> NodeUsage:
        by_uuid = Counter(s.uuid for s in shares)
        out = []
        for u in self.gpus:
            for s in shares:
                if s.uuid == u.gpu.uuid:
                    u = u.plus(s)
            out.append(u)
        unknown = set(by_uuid) - {u.gpu.uuid for u in self.gpus}
        if unknown:
            raise ValueError(f"shares on GPUs {sorted(unknown)} that node {self.node} does not have")
        return NodeUsage(self.node, tuple(out))

    def gpu(self, uuid: str) -> GPUUsage | None:
        return next((u for u in self.gpus if u.gpu.uuid == uuid), None)

    def fraction_used(self) -> float:
        """Mean of share slots, SMs and memory in use over the node's GPUs, 0 to 1 (HAMi's node score / 3)."""
        gpus = [u for u in self.gpus if u.gpu.healthy] or list(self.gpus)
        if not gpus:
            return 0.0
        slots = sum(u.clients for u in gpus) / sum(u.gpu.shares for u in gpus)
        cores = sum(u.cores for u in gpus) / sum(u.gpu.cores for u in gpus)
        memory = sum(u.memory_mib for u in gpus) / sum(u.gpu.memory_mib for u in gpus)
        return min((slots + cores + memory) / 3, 1.0)

    def largest_free(self) -> str:
        """``largest free share: 61559 MiB and 70 percent of SMs (GPU 0)`` — what a Pending pod's event shows.

        Reasons reach kube-scheduler's events through Go's fmt, which would read a "%" as a verb."""
        usable = [u for u in self.gpus if u.gpu.healthy and u.free_clients > 0 and u.cores < u.gpu.cores]
        if not usable:
            if not any(u.gpu.healthy for u in self.gpus):
                return "no healthy GPU"
            return "no free share (every GPU is at its share count, or held whole)"
        best = max(usable, key=lambda u: (u.free_memory_mib, u.free_cores, -u.gpu.index))
        return (f"largest free share: {best.free_memory_mib} MiB and {best.free_cores} percent of SMs "
                f"(GPU {best.gpu.index})")


@dataclass(frozen=True, slots=True)
class Placement:
    assignment: Assignment
    usage: NodeUsage
    """The node's usage with this pod's shares added."""


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    """One line: which container, what it asked, why each GPU said no, and the node's largest free share."""
    unresolvable: bool = False
    """No GPU of this node could ever take it (type, UUID, size): preempting other pods would not help."""


def _listed(annotations: Mapping[str, str], key: str) -> list[str]:
    value = annotations.get(key, "")
    return [v.strip() for v in value.split(",") if v.strip()] if value.strip() else []


def _type_allowed(gpu: NodeGPU, annotations: Mapping[str, str]) -> bool:
    """HAMi's CheckType: case-insensitive substring of the product name; empty means no constraint."""
    name = gpu.type.upper()
    use, nouse = _listed(annotations, USE_GPU_TYPE), _listed(annotations, NOUSE_GPU_TYPE)
    if use and not any(t.upper() in name for t in use):
        return False
    return not (nouse and any(t.upper() in name for t in nouse))


def _uuid_allowed(gpu: NodeGPU, annotations: Mapping[str, str]) -> bool:
    """HAMi's CheckUUID: exact UUIDs, comma-separated; empty means no constraint."""
    use, nouse = _listed(annotations, USE_GPU_UUID), _listed(annotations, NOUSE_GPU_UUID)
    if use and gpu.uuid not in use:
        return False
    return not (nouse and gpu.uuid in nouse)


# Why a GPU says no, in the order checked; the first two kinds never change by removing pods.
_UNHEALTHY = "unhealthy"
_TYPE = "excluded by nvidia.com/use-gputype or nouse-gputype"
_UUID = "excluded by nvidia.com/use-gpuuuid or nouse-gpuuuid"
_TOO_SMALL = "smaller than the request"
_SLOTS = "every share slot in use"
_BUSY = "in use, and the request is for the whole GPU"
_MEMORY = "too little free memory"
_CORES = "too little free SMs"
_CORES_GONE = "all SMs promised to others"
_TAKEN = "already given to this container"
_PERMANENT = {_UNHEALTHY, _TYPE, _UUID, _TOO_SMALL}


def _why_not(u: GPUUsage, req: ContainerRequest, annotations: Mapping[str, str]) -> str | None:
    g = u.gpu
    memory = req.memory_on(g.memory_mib)
    if not g.healthy:
        return _UNHEALTHY
    if not _type_allowed(g, annotations):
        return _TYPE
    if not _uuid_allowed(g, annotations):
        return _UUID
    if memory > g.memory_mib or req.cores > g.cores:
        return _TOO_SMALL
    if u.free_clients == 0:
        return _SLOTS
    if req.exclusive and u.clients > 0:
        return _BUSY
    if u.free_memory_mib < memory:
        return _MEMORY
    if u.free_cores < req.cores:
        return _CORES
    if req.cores == 0 and u.cores >= g.cores:
        return _CORES_GONE
    return None


def _ordered(gpus: Sequence[GPUUsage], policy: Policy) -> list[GPUUsage]:
    if policy == "binpack":
        return sorted(gpus, key=lambda u: (-u.score(), u.gpu.index))
    return sorted(gpus, key=lambda u: (u.score(), u.gpu.index))


def place(usage: NodeUsage, request: PodRequest, gpu_policy: Policy,
          annotations: Mapping[str, str]) -> Placement | Refusal:
    """Shares for every GPU container of the pod on this node, or why not."""
    if not usage.gpus:
        return Refusal("node has no GPUs shared dynamically (its device plugin publishes none)", unresolvable=True)
    current = usage
    entries: list[tuple[Share, ...]] = [() for _ in range(request.container_count)]
    for req in request.containers:
        if req.count > 1 and not (req.exclusive and req.memory_on(100) == 100):
            return Refusal(
                f"container {req.name!r} asks for {req.count} GPUs with {req.describe()}: an MPS client reaches one "
                "GPU's daemon, so a share is on one GPU; ask for nvidia.com/gpu: 1 per share, or for whole GPUs "
                "(no nvidia.com/gpumem, gpumem-percentage or gpucores)", unresolvable=True)
        chosen: list[Share] = []
        reasons: Counter[str] = Counter()
        for u in _ordered(current.gpus, gpu_policy):
            if len(chosen) == req.count:
                break
            why = _TAKEN if any(s.uuid == u.gpu.uuid for s in chosen) else _why_not(u, req, annotations)
            if why is not None:
                reasons[why] += 1
                continue
            chosen.append(Share(uuid=u.gpu.uuid, memory_mib=req.memory_on(u.gpu.memory_mib), cores=req.cores))
        if len(chosen) < req.count:
            detail = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
            found = f"only {len(chosen)} of {req.count} GPUs fit; " if chosen else ""
            return Refusal(
                f"container {req.name!r} ({req.describe()}): {found}{len(current.gpus)} GPUs: {detail}; "
                f"{current.largest_free()}",
                unresolvable=set(reasons) <= _PERMANENT,
            )
        entries[req.index] = tuple(chosen)
        current = current.plus(chosen)
    return Placement(Assignment(tuple(entries)), current)


def node_score(after: NodeUsage, node_policy: Policy) -> int:
    """Extender priority 0–10 of a node once the pod is on it: busier is better under binpack."""
    used = after.fraction_used()
    value = used if node_policy == "binpack" else 1.0 - used
    return round(value * MAX_EXTENDER_PRIORITY)
