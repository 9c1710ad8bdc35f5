"""The node's device-plugin decisions in one value: what to advertise, how to allocate and prefer (pure).

:func:`build_node_resources` turns the inventory, the config and the host's facts into
:class:`NodeResources`; every method is pure and fast (no NVML, no file or API calls), so the
gRPC service answers the kubelet within its deadlines. A config reload builds a new one.

Example::

    resources = build_node_resources(inventory, config, read_host_facts(config))
    [(r.name, len(r.devices)) for r in resources.resources()]
    # [('nvidia.com/gpu', 1), ('nvidia.com/mig-1g.10gb', 2), ('nvidia.com/mig-2g.20gb', 1), ...]
    resources.allocate("nvidia.com/gpu", ["GPU-…"]).envs["NVIDIA_VISIBLE_DEVICES"]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kgpu.config.names import check_sharing_names
from kgpu.config.values import PluginConfig
from kgpu.container import AllocationError, ContainerAllocation
from kgpu.deviceplugin.allocate import HostFacts, plan_allocation
from kgpu.deviceplugin.devices import AdvertisedResource, MigMinors, ResourceSet, base_devices, grant
from kgpu.deviceplugin.preferred import Topology, preferred_ids
from kgpu.deviceplugin.replicas import sharing_layouts
from kgpu.gpu.model import Inventory


class NodeResources:
    """What this node serves to the kubelet, and how each request is answered; see the module docstring."""

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
        """The plan for one container; AllocationError for a request that must fail."""
        return plan_allocation(self._set(resource_name), device_ids, self.config, self.facts)

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


def build_resources(
    inventory: Inventory,
    config: PluginConfig,
    mig_minors: MigMinors | None = None,
    warnings: list[str] | None = None,
) -> tuple[ResourceSet, ...]:
    """Every resource this node advertises, sorted by name; resources without devices are dropped."""
    base = base_devices(inventory, config, mig_minors or {}, warnings)
    check_sharing_names(config, inventory)  # the same rule the labels apply (kgpu.config.names)
    resources: dict[str, ResourceSet] = {
        name: ResourceSet(name=name, grants=tuple(grant(d, d.uuid) for d in devices))
        for name, devices in base.items()
    }
    for layout in sharing_layouts(config):
        resources = layout.apply(resources, inventory)
    return tuple(sorted((r for r in resources.values() if r.grants), key=lambda r: r.name))


def build_node_resources(inventory: Inventory, config: PluginConfig, facts: HostFacts) -> NodeResources:
    """The device plugin's decisions for this node. Raises :class:`ConfigError` for a config that does
    not fit this node (a sharing entry naming devices it lacks, MIG profiles that cannot be mixed …)."""
    warnings = list(facts.warnings)
    resources = build_resources(inventory, config, facts.mig_minors, warnings)
    return NodeResources(resources=resources, config=config, inventory=inventory, facts=facts, warnings=warnings)
