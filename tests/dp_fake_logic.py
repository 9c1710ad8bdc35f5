"""A small stand-in for kgpu.deviceplugin.resources, so the server is tested on its own.

Whole GPUs as ``nvidia.com/gpu`` (MIG-enabled GPUs skipped), MIG devices as ``nvidia.com/mig-<profile>``
(the 'mixed' strategy), optionally ``replicas`` time-sliced copies of each GPU as ``nvidia.com/gpu``
with IDs ``<uuid>::<n>``.
"""

from __future__ import annotations

from collections.abc import Sequence

from kgpu.container import AllocationError, ContainerAllocation
from kgpu.deviceplugin.devices import AdvertisedDevice, AdvertisedResource
from kgpu.gpu.model import Inventory


class FakeLogic:
    def __init__(self, inventory: Inventory, replicas: int = 0, fail_greater_than_one: bool = False) -> None:
        gpus: list[AdvertisedDevice] = []
        for g in inventory.gpus:
            if g.mig_enabled:
                continue
            if replicas:
                gpus += [
                    AdvertisedDevice(f"{g.uuid}::{n}", (g.uuid,), g.uuid, g.numa_node, replica=n)
                    for n in range(replicas)
                ]
            else:
                gpus.append(AdvertisedDevice(g.uuid, (g.uuid,), g.uuid, g.numa_node))
        resources = [
            AdvertisedResource(
                "nvidia.com/gpu", "nvidia-gpu.sock", tuple(gpus),
                shared=bool(replicas), fail_requests_greater_than_one=fail_greater_than_one,
            )
        ]
        migs: dict[str, list[AdvertisedDevice]] = {}
        for g in inventory.gpus:
            for m in g.mig_devices:
                migs.setdefault(m.profile, []).append(
                    AdvertisedDevice(m.uuid, (m.uuid, g.uuid), g.uuid, g.numa_node)
                )
        for profile, devices in sorted(migs.items()):
            name, sock = f"nvidia.com/mig-{profile}", f"nvidia-mig-{profile}.sock"
            resources.append(AdvertisedResource(name, sock, tuple(devices)))
        self._resources = tuple(resources)
        self.calls: list[tuple[str, list[str]]] = []

    def resources(self) -> tuple[AdvertisedResource, ...]:
        return self._resources

    def allocate(self, resource_name: str, device_ids: Sequence[str]) -> ContainerAllocation:
        resource = next(r for r in self._resources if r.name == resource_name)
        if resource.fail_requests_greater_than_one and len(device_ids) > 1:
            raise AllocationError(f"maximum request size for shared resource {resource_name} is 1")
        self.calls.append((resource_name, list(device_ids)))
        uuids = sorted({i.split("::")[0] for i in device_ids})
        return ContainerAllocation(envs={"NVIDIA_VISIBLE_DEVICES": ",".join(uuids)})

    def preferred_allocation(
        self, resource_name: str, available: Sequence[str], must_include: Sequence[str], size: int
    ) -> list[str]:
        chosen = list(must_include)
        chosen += [i for i in available if i not in chosen][: max(size - len(chosen), 0)]
        return chosen
