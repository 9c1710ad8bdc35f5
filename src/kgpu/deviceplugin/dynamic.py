"""Dynamically shared GPUs in the device plugin (``sharing.mps.dynamic``): shares, Allocate, the node's record.

* :func:`kgpu.deviceplugin.mps.share_grants`: a dynamic GPU is advertised as ``shares`` device IDs
  ``<uuid>::<n>`` of its resource (``nvidia.com/gpu``), healthy while the GPU and its MPS daemon are, so
  the kubelet admits at most that many containers on it. The IDs carry no limits: each container's
  share is on its pod.
* :class:`DynamicShares`: the plugin's decisions (:class:`~kgpu.deviceplugin.resources.NodeResources`)
  with the dynamic resource's Allocate and GetPreferredAllocation answered from the pod being
  allocated. Allocate asks the API server for the pods bound to this node, takes the one in flight
  (:mod:`kgpu.scheduler.handshake`), records its container as handed out, and answers with that
  container's GPU as an MPS client with exactly its share (:func:`kgpu.sharing.dynamic.share_grant`),
  over the device list strategy's answer for the whole GPU. GetPreferredAllocation prefers IDs of the
  GPUs the pod was given, so the IDs the kubelet records name the GPU the container gets. Every
  other resource is answered by the plain decisions.
* :class:`NodeRecord`: publishes the node's dynamic GPUs and their health on the Node
  (``kgpu.io/dynamic-gpus``), where the extender reads them; again whenever the health changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Protocol

from kgpu.container import AllocationError, ContainerAllocation
from kgpu.deviceplugin.devices import AdvertisedResource, ResourceSet
from kgpu.deviceplugin.mps import DYNAMIC
from kgpu.deviceplugin.resources import NodeResources
from kgpu.errors import KgpuError
from kgpu.scheduler.handshake import PendingShare
from kgpu.scheduler.inventory import NodeGPU
from kgpu.sharing.dynamic import DynamicGPU, preferred_shares, published, share_grant
from kgpu.sharing.layout import ID_SEPARATOR
from kgpu.sharing.paths import MpsPaths

log = logging.getLogger("kgpu.deviceplugin")

class Claims(Protocol):
    """The API calls of the handshake (:class:`kgpu.scheduler.kube.NodeShares`)."""

    def claim(self, device_ids: Sequence[str]) -> PendingShare: ...

    def peek(self, size: int) -> PendingShare: ...

    def publish(self, gpus: Sequence[NodeGPU]) -> None: ...


class DynamicShares:
    """:class:`NodeResources` with the dynamic resources answered from the pod being allocated."""

    def __init__(self, decisions: NodeResources, gpus: Sequence[DynamicGPU], claims: Claims, paths: MpsPaths) -> None:
        self.decisions = decisions
        self.gpus = {g.uuid: g for g in gpus}
        self.claims = claims
        self.paths = paths
        self.warnings = decisions.warnings

    @property
    def resource_sets(self) -> dict[str, ResourceSet]:
        return dict(self.decisions.resource_sets)

    def resources(self) -> tuple[AdvertisedResource, ...]:
        return self.decisions.resources()

    def _dynamic(self, resource_name: str) -> bool:
        found = self.decisions.resource_sets.get(resource_name)
        return found is not None and found.sharing == DYNAMIC

    def allocate(self, resource_name: str, device_ids: Sequence[str]) -> ContainerAllocation:
        if not self._dynamic(resource_name):
            return self.decisions.allocate(resource_name, device_ids)
        try:
            pending = self.claims.claim(device_ids)
            grant = share_grant(pending.shares, self.gpus, self.paths)
        except KgpuError as exc:
            raise AllocationError(str(exc)) from None
        # the whole GPU(s) as the device list strategy gives them, then the MPS client's share
        whole = self.decisions.allocate(resource_name, [f"{u}{ID_SEPARATOR}0" for u in grant.gpu_uuids])
        mounts = (*whole.mounts, *(m for m in grant.mounts if m not in whole.mounts))
        log.info("allocated a dynamic share", extra={
            "event": "allocate-share", "pod": pending.key, "container": pending.container,
            "device_ids": list(device_ids),
            "shares": [f"{s.uuid}:{s.memory_mib}MiB:{s.cores}%" for s in pending.shares]})
        return replace(whole, envs={**whole.envs, **grant.envs}, mounts=mounts)

    def preferred_allocation(
        self, resource_name: str, available: Sequence[str], must_include: Sequence[str], size: int
    ) -> list[str]:
        if self._dynamic(resource_name):
            try:
                pending = self.claims.peek(size)
            except KgpuError as exc:
                log.info("no pod to prefer shares for; any free IDs", extra={"event": "preferred", "why": str(exc)})
            else:
                return preferred_shares(available, must_include, size, [s.uuid for s in pending.shares])
        return self.decisions.preferred_allocation(resource_name, available, must_include, size)


class NodeRecord:
    """Keeps the node's ``kgpu.io/dynamic-gpus`` annotation true to the GPUs' health: a watcher's tick.

    ``logic`` is what the plugin serves now (a reload may start or stop dynamic sharing)."""

    def __init__(self, logic: Callable[[], object], healthy: Callable[[str], bool]) -> None:
        self.logic = logic
        self.healthy = healthy
        self.written: tuple[NodeGPU, ...] = ()
        self.claims: Claims | None = None

    def tick(self) -> None:
        served = self.logic()
        if isinstance(served, DynamicShares):
            self.claims = served.claims
            current = published(tuple(served.gpus.values()), self.healthy)
        else:
            current = ()
        if current != self.written and self.claims is not None:
            self.claims.publish(current)
            log.info("dynamic GPUs published on the node", extra={
                "event": "dynamic-gpus", "gpus": len(current), "unhealthy": [g.uuid for g in current if not g.healthy]})
            self.written = current

    def withdraw(self) -> None:
        """On stop: the node no longer offers dynamic shares (best effort: a failure is only logged)."""
        if self.written and self.claims is not None:
            try:
                self.claims.publish(())
            except KgpuError as exc:
                log.warning("could not withdraw the node's dynamic GPUs", extra={"event": "dynamic-gpus",
                                                                                 "error": str(exc)})
