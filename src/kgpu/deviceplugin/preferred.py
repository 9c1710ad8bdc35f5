"""GetPreferredAllocation from the cached topology: which devices the kubelet should pick.

* **Whole GPUs**: the set with the most NVLink links among its members, then the most member
  pairs on the same NUMA node, then the lowest indexes. ``must_include`` is always part of it.
  Links come from the inventory read at start-up, never from NVML on the request path (NVIDIA's
  allocator queries NVLink live and takes ~0.6 s per GPU pair, their #774).
* **Shared replicas and MIG devices**: NVIDIA's greedy policies over physical devices —
  ``distributed`` picks the device with the fewest replicas already handed out, ``packed`` the one
  with the most, ``spread`` the one this request has touched least; ties go to the device this
  request has touched least, then to the lowest index.

Example::

    preferred_ids(resource, topology, available=ids, must_include=[], size=2, policy="distributed")
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kgpu.container import AllocationError
from kgpu.deviceplugin.devices import Grant, ResourceSet
from kgpu.gpu.model import Inventory

EXHAUSTIVE_LIMIT = 5000
"""Above this many candidate sets, whole GPUs are chosen greedily instead of by full search."""


@dataclass(frozen=True, slots=True)
class Topology:
    """NVLink links between GPUs (by UUID), read once from the inventory."""

    links: Mapping[tuple[str, str], int] = field(default_factory=dict)

    @classmethod
    def from_inventory(cls, inventory: Inventory) -> Topology:
        links: dict[tuple[str, str], int] = {}
        for gpu in inventory.gpus:
            for peer in gpu.nvlink_peers:
                links[(gpu.uuid, peer.peer_uuid)] = links.get((gpu.uuid, peer.peer_uuid), 0) + peer.links
        return cls(links=links)

    def between(self, a: str, b: str) -> int:
        return max(self.links.get((a, b), 0), self.links.get((b, a), 0))


def _index_key(grant: Grant) -> tuple[int, str, int]:
    d = grant.device
    return (d.gpu_index, d.index, grant.advertised.replica or 0)


def preferred_ids(
    resource: ResourceSet,
    topology: Topology,
    available: Sequence[str],
    must_include: Sequence[str],
    size: int,
    policy: str = "distributed",
) -> list[str]:
    """Pick ``size`` IDs from ``available`` (always including ``must_include``) for one container."""
    by_id = {g.id: g for g in resource.grants}
    must = list(dict.fromkeys(must_include))
    unknown = [i for i in must if i not in by_id]
    if unknown:
        raise AllocationError(f"preferred allocation for {resource.name!r}: unknown device {unknown[0]!r}")
    if size < len(must):
        raise AllocationError(
            f"preferred allocation for {resource.name!r}: size {size} is smaller than the "
            f"{len(must)} devices that must be included"
        )
    candidates = [by_id[i] for i in dict.fromkeys(available) if i in by_id and i not in must]
    needed = size - len(must)
    if needed > len(candidates):
        raise AllocationError(
            f"preferred allocation for {resource.name!r}: {size} devices requested but only "
            f"{len(candidates) + len(must)} available"
        )
    if needed == 0:
        return must
    required = [by_id[i] for i in must]
    if resource.sharing == "mps":
        one_gpu = _one_gpu(resource, required, candidates, needed, policy)
        if one_gpu is not None:
            return [*must, *(g.id for g in one_gpu)]
    whole = all(not g.is_replica and not g.device.is_mig for g in (*required, *candidates))
    if whole:
        chosen = _aligned(required, candidates, needed, topology)
    else:
        chosen = _greedy(resource, required, candidates, needed, policy)
    return [*must, *(g.id for g in chosen)]


def _score(members: Sequence[Grant], topology: Topology) -> tuple[int, int]:
    links = 0
    same_numa = 0
    for a, b in itertools.combinations(members, 2):
        links += topology.between(a.device.gpu_uuid, b.device.gpu_uuid)
        if a.device.numa_node is not None and a.device.numa_node == b.device.numa_node:
            same_numa += 1
    return links, same_numa


def _aligned(required: list[Grant], candidates: list[Grant], needed: int, topology: Topology) -> list[Grant]:
    ordered = sorted(candidates, key=_index_key)
    if math.comb(len(ordered), needed) <= EXHAUSTIVE_LIMIT:
        best: tuple[int, int] | None = None
        best_set: tuple[Grant, ...] = ()
        for combo in itertools.combinations(ordered, needed):  # lexicographic: lowest indexes win ties
            score = _score([*required, *combo], topology)
            if best is None or score > best:
                best, best_set = score, combo
        return list(best_set)
    chosen: list[Grant] = []
    pool = list(ordered)
    while len(chosen) < needed:
        members = [*required, *chosen]
        if members:
            pick = max(pool, key=lambda g: (_score([*members, g], topology), -pool.index(g)))
        else:
            pick = max(pool, key=lambda g: (_score([g, *pool], topology), -pool.index(g)))
        chosen.append(pick)
        pool.remove(pick)
    return sorted(chosen, key=_index_key)


@dataclass(slots=True)
class _Bucket:
    """One physical device (GPU, MIG device, or the device a replica shares) and its candidates."""

    order: tuple[int, str]
    total: int
    available: int
    picked: int = 0
    grants: list[Grant] = field(default_factory=list)

    @property
    def allocated(self) -> int:
        return self.total - self.available


def _one_gpu(
    resource: ResourceSet, required: list[Grant], candidates: list[Grant], needed: int, policy: str
) -> list[Grant] | None:
    """MPS slices of one container must share a GPU (one client talks to one GPU's daemon): the GPU of
    ``must_include``, else, by policy, the GPU with the fewest (``packed``: most) of its slices handed
    out among those with enough free. None when no single GPU has enough (Allocate then explains)."""
    pinned = {g.device.gpu_uuid for g in required}
    if len(pinned) > 1:
        return None
    free: dict[str, list[Grant]] = {}
    for g in sorted(candidates, key=_index_key):
        free.setdefault(g.device.gpu_uuid, []).append(g)
    options = [u for u, gs in free.items() if len(gs) >= needed and (not pinned or u in pinned)]
    if not options:
        return None
    total: dict[str, int] = {}
    for g in resource.grants:
        total[g.device.gpu_uuid] = total.get(g.device.gpu_uuid, 0) + 1

    def rank(uuid: str) -> tuple[int, int]:
        handed_out = total.get(uuid, 0) - len(free[uuid])
        return (-handed_out if policy == "packed" else handed_out, free[uuid][0].device.gpu_index)

    return free[min(options, key=rank)][:needed]


def _bucket_key(grant: Grant) -> str:
    """Replicas group by the device they share; unshared MIG devices by their parent GPU."""
    if grant.is_replica or not grant.device.is_mig:
        return grant.device.uuid
    return grant.device.gpu_uuid


def _greedy(
    resource: ResourceSet, required: list[Grant], candidates: list[Grant], needed: int, policy: str
) -> list[Grant]:
    buckets: dict[str, _Bucket] = {}
    for g in sorted(candidates, key=_index_key):
        key = _bucket_key(g)
        b = buckets.get(key)
        if b is None:
            b = buckets[key] = _Bucket(order=(g.device.gpu_index, g.device.index), total=0, available=0)
        b.grants.append(g)
        b.available += 1
    for g in resource.grants:
        b = buckets.get(_bucket_key(g))
        if b is not None:
            b.total += 1
    for g in required:
        b = buckets.get(_bucket_key(g))
        if b is not None:
            b.picked += 1

    def rank(b: _Bucket) -> tuple[int, int, tuple[int, str]]:
        if policy == "packed":
            return (-b.allocated, b.picked, b.order)
        if policy == "spread":
            return (b.picked, b.allocated, b.order)
        return (b.allocated, b.picked, b.order)

    chosen: list[Grant] = []
    for _ in range(needed):
        top = min((b for b in buckets.values() if b.grants), key=rank)
        chosen.append(top.grants.pop(0))
        top.available -= 1
        top.picked += 1
    return chosen
