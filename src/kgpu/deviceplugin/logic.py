"""The node's device-plugin decisions in one object: what to advertise, allocate and prefer.

Built once by :func:`kgpu.deviceplugin.resources.build_logic`; every method is pure and fast
(no NVML, no file or API calls), so the gRPC server can answer the kubelet within its deadlines.
A repeated Allocate request gets the very plan it got before (plans are immutable values; the
server keeps the gRPC message it built for each), except under ``cdi-annotations``, whose key
names a fresh response ID every time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kgpu.config import PluginConfig
from kgpu.deviceplugin.allocate import HostFacts, plan_allocation
from kgpu.deviceplugin.plan import AdvertisedResource, AllocationError, ContainerAllocation
from kgpu.deviceplugin.preferred import Topology, preferred_ids
from kgpu.deviceplugin.resources import ResourceSet
from kgpu.gpu.model import Inventory

_PLAN_CACHE_SIZE = 512
"""Distinct requests whose plans are kept (the kubelet repeats a few: one per pod shape and device set)."""


class GPUResources:
    """Implements :class:`kgpu.deviceplugin.plan.DevicePluginLogic` for one node."""

    def __init__(
        self,
        resources: Sequence[ResourceSet],
        config: PluginConfig,
        inventory: Inventory,
        facts: HostFacts,
        warnings: Sequence[str] = (),
    ) -> None:
        self.config = config
        self.inventory = inventory
        self.facts = facts
        self.warnings: tuple[str, ...] = tuple(warnings)
        """Things an admin should know (a MIG-mode GPU not advertised, missing driver files); log them."""
        self._sets: dict[str, ResourceSet] = {r.name: r for r in resources}
        self._advertised = tuple(r.advertised() for r in resources)
        self._topology = Topology.from_inventory(inventory)
        self._plans: dict[tuple[str, tuple[str, ...]], ContainerAllocation] = {}
        self._plans_reusable = not config.flags.plugin.uses("cdi-annotations")

    @property
    def resource_sets(self) -> Mapping[str, ResourceSet]:
        return self._sets

    def resources(self) -> tuple[AdvertisedResource, ...]:
        return self._advertised

    def _set(self, resource_name: str) -> ResourceSet:
        found = self._sets.get(resource_name)
        if found is None:
            served = ", ".join(self._sets) or "none"
            raise AllocationError(f"resource {resource_name!r} is not served by this plugin (it serves {served})")
        return found

    def allocate(self, resource_name: str, device_ids: Sequence[str]) -> ContainerAllocation:
        """The plan for one container; callers must not change it (a repeated request gets the same one)."""
        key = (resource_name, tuple(device_ids))
        plan = self._plans.get(key)
        if plan is None:
            plan = plan_allocation(self._set(resource_name), device_ids, self.config, self.facts)
            if self._plans_reusable:
                if len(self._plans) >= _PLAN_CACHE_SIZE:
                    self._plans.clear()
                self._plans[key] = plan
        return plan

    def preferred_allocation(
        self, resource_name: str, available: Sequence[str], must_include: Sequence[str], size: int
    ) -> list[str]:
        return preferred_ids(
            self._set(resource_name),
            self._topology,
            available,
            must_include,
            size,
            self.config.flags.plugin.shared_devices_allocation_policy,
        )
