"""From a named mig-parted layout to what each GPU must become: MIG mode and placed GPU instances.

Pure: the inventory and the layout in, a :class:`GpuLayout` per GPU out, or a :class:`MigLayoutError` that says
which GPU cannot take which profile and why. Placement follows the hardware rules of
:mod:`kgpu.mig.profiles`: instances on allowed starts only, no overlapping memory slices, at most ``max_count``
of a profile; larger instances are placed first, then a search over the remaining starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kgpu.errors import ConfigError
from kgpu.gpu.model import GPU, Inventory
from kgpu.mig.config import MigConfigEntry
from kgpu.mig.profiles import GpuInstanceProfile, ProfileTable, profile_table


class MigLayoutError(ConfigError):
    """A layout that this node's GPUs cannot take."""


@dataclass(frozen=True, slots=True)
class PlacedInstance:
    profile: GpuInstanceProfile
    start: int

    @property
    def slices(self) -> range:
        return range(self.start, self.start + self.profile.size)


@dataclass(frozen=True, slots=True)
class GpuLayout:
    index: int
    uuid: str
    mig_enabled: bool
    instances: tuple[PlacedInstance, ...] = ()

    def describe(self) -> str:
        if not self.mig_enabled:
            return f"GPU {self.index}: MIG disabled"
        parts = ", ".join(f"{i.profile.name}@{i.start}" for i in self.instances) or "no instances"
        return f"GPU {self.index}: MIG enabled, {parts}"


def place(table: ProfileTable, wanted: dict[str, int], where: str) -> tuple[PlacedInstance, ...]:
    """Instances for ``wanted`` ({profile: count}) on one GPU, each on an allowed, free placement."""
    profiles: list[GpuInstanceProfile] = []
    for name, count in wanted.items():
        profile = table.by_name.get(name)
        if profile is None:
            known = ", ".join(p.name for p in table.profiles)
            raise MigLayoutError(f"{where}: {table.model} has no MIG profile {name!r} (it has {known})")
        if count > profile.max_count:
            raise MigLayoutError(f"{where}: {table.model} takes at most {profile.max_count} {name}, not {count}")
        profiles += [profile] * count
    profiles.sort(key=lambda p: (-p.size, -p.compute_slices, p.profile_id))
    compute = sum(p.compute_slices for p in profiles)
    if compute > 7:
        raise MigLayoutError(f"{where}: {' + '.join(p.name for p in profiles)} needs {compute} compute slices; "
                             f"{table.model} has 7")

    def search(i: int, used: frozenset[int]) -> list[PlacedInstance] | None:
        if i == len(profiles):
            return []
        profile = profiles[i]
        for start in profile.starts:
            span = set(range(start, start + profile.size))
            if span & used:
                continue
            rest = search(i + 1, used | span)
            if rest is not None:
                return [PlacedInstance(profile, start), *rest]
        return None

    placed = search(0, frozenset())
    if placed is None:
        raise MigLayoutError(f"{where}: {' + '.join(p.name for p in profiles)} do not fit on {table.model}'s "
                             f"{table.memory_slices} memory slices in any allowed placement")
    return tuple(sorted(placed, key=lambda p: p.start))


def plan_layout(inventory: Inventory, name: str, entries: Sequence[MigConfigEntry]) -> list[GpuLayout]:
    """What every GPU the layout names must become; GPUs it does not name are left as they are (as mig-parted)."""
    layouts: list[GpuLayout] = []
    for gpu in inventory.gpus:
        entry = next((e for e in entries if e.matches(gpu.index, gpu.pci_device_id)), None)
        if entry is None:
            continue
        layouts.append(_gpu_layout(gpu, name, entry))
    if not layouts:
        ids = ", ".join(sorted({f"0x{g.pci_device_id:08X}" for g in inventory.gpus})) or "none"
        raise MigLayoutError(f"MIG config {name!r} has no entry for this node's GPUs (device IDs {ids})")
    return layouts


def _gpu_layout(gpu: GPU, name: str, entry: MigConfigEntry) -> GpuLayout:
    where = f"MIG config {name!r}, GPU {gpu.index} ({gpu.name})"
    if not entry.mig_enabled:
        return GpuLayout(gpu.index, gpu.uuid, False)
    table = profile_table(gpu)
    if table is None:
        why = "is not MIG-capable" if not gpu.mig_capable else f"(device ID 0x{gpu.pci_device_id:08X}) has no " \
            "MIG profile table in kgpu (A100, H100, H200 are known)"
        raise MigLayoutError(f"{where}: {gpu.name} {why}")
    return GpuLayout(gpu.index, gpu.uuid, True, place(table, entry.mig_devices, where))


def current_layout(gpu: GPU) -> GpuLayout:
    """What a GPU is now, in the same terms (instances whose placement the inventory does not know are skipped)."""
    table = profile_table(gpu)
    instances = []
    if table is not None:
        for mig in gpu.mig_devices:
            profile = table.by_name.get(mig.profile)
            if profile is not None and mig.placement_start is not None:
                instances.append(PlacedInstance(profile, mig.placement_start))
    return GpuLayout(gpu.index, gpu.uuid, gpu.mig_enabled, tuple(sorted(instances, key=lambda p: p.start)))
