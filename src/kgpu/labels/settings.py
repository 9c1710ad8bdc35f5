"""What the labels need from the device-plugin configuration: the MIG strategy and how GPUs are shared.

gpu-feature-discovery reads the same config file as NVIDIA's device plugin; so does kgpu. Only a few
values matter for labels, kept here as one small value so the label logic stays independent of the
config file's full schema.

Example::

    settings = LabelSettings(
        mig_strategy=MigStrategy.NONE,
        sharing=SharingStrategy.TIME_SLICING,
        resources=(ReplicatedResource("nvidia.com/gpu", replicas=4),),
    )
    settings.active_sharing_strategy  # SharingStrategy.TIME_SLICING
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kgpu.sharing.config import DeviceSelector


class MigStrategy(StrEnum):
    NONE = "none"
    SINGLE = "single"
    MIXED = "mixed"


class SharingStrategy(StrEnum):
    """Spelled as the ``nvidia.com/gpu.sharing-strategy`` label values."""

    NONE = "none"
    TIME_SLICING = "time-slicing"
    MPS = "mps"


@dataclass(frozen=True, slots=True)
class ReplicatedResource:
    """One ``sharing.<strategy>.resources[]`` entry: a resource advertised ``replicas`` times per device."""

    name: str
    replicas: int
    renamed: bool = False
    """True when the replicas are advertised under another name (``nvidia.com/gpu.shared``)."""


@dataclass(frozen=True, slots=True)
class MpsEntry:
    """One ``sharing.mps`` entry: ``count`` MPS clients of ``resource`` on each GPU ``devices`` selects.

    NVIDIA's equal replicas (``resources[]``, ``slice=False``) and kgpu's heterogeneous slices
    (``slices[]``, ``slice=True``, with their own resource names and memory limits) alike.
    """

    resource: str
    """The advertised resource name (after ``rename`` / ``renameByDefault`` for equal replicas)."""
    count: int
    devices: DeviceSelector
    slice: bool = False
    memory_mib: int = 0
    """A slice's pinned-memory limit in MiB (0 for equal replicas: their GPU's memory / count)."""


@dataclass(frozen=True, slots=True)
class LabelSettings:
    mig_strategy: MigStrategy = MigStrategy.NONE
    sharing: SharingStrategy = SharingStrategy.NONE
    """The sharing section the config file fills in (``sharing.mps`` wins over ``sharing.timeSlicing``)."""
    resources: tuple[ReplicatedResource, ...] = ()
    """That section's resources, as GFD sees them (kgpu's MPS slices are not among them)."""
    mps: tuple[MpsEntry, ...] = ()
    """Every ``sharing.mps`` entry with the GPUs it selects, when MPS is the section in force."""

    @property
    def slices(self) -> tuple[MpsEntry, ...]:
        """kgpu's heterogeneous MPS slices (resources of their own, such as ``nvidia.com/gpu-20gb``)."""
        return tuple(e for e in self.mps if e.slice)

    @property
    def active_sharing_strategy(self) -> SharingStrategy:
        """The strategy in force: a section counts only if one of its resources has more than one replica,
        or (kgpu's own) it offers MPS slices: a GPU with slices is served through its MPS daemon."""
        if self.sharing is SharingStrategy.NONE:
            return SharingStrategy.NONE
        if any(r.replicas > 1 for r in self.resources) or (self.sharing is SharingStrategy.MPS and self.slices):
            return self.sharing
        return SharingStrategy.NONE

    def replicated(self, resource_name: str) -> ReplicatedResource | None:
        """The first entry for ``resource_name``, as the device plugin and GFD both look it up."""
        return next((r for r in self.resources if r.name == resource_name), None)
