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

from dataclasses import dataclass, field
from enum import StrEnum

from kgpu.config.values import DEFAULT_GPU_RESOURCE, DeviceSelector, PluginConfig, Resources


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
    renames: Resources = field(default_factory=Resources)
    """``resources``: the name each device is advertised under, which sharing entries refer to."""

    def gpu_resource(self, product: str) -> str:
        """The resource a whole GPU of ``product`` is advertised as (what its sharing entry names)."""
        return self.renames.gpu_resource(product)

    def mig_resource(self, profile: str) -> str | None:
        """The resource a MIG device of ``profile`` is advertised as under this MIG strategy."""
        return self.renames.mig_resource(profile, self.mig_strategy.value)

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


def settings_from_plugin_config(config: PluginConfig) -> LabelSettings:
    """:class:`LabelSettings` from a resolved :class:`PluginConfig`: what GFD reads of the same file.

    Renaming follows kgpu's plugin: an explicit ``rename`` (which NVIDIA's tools ignore with a
    warning) is honoured, so such replicas are "renamed" and the product gets no ``-SHARED``
    suffix. kgpu's MPS slices (``sharing.mps.slices``) are kept apart from GFD's replicated
    resources: they have names of their own, so they never make the product ``-SHARED``, but they
    make the node MPS-shared and set ``gpu.replicas`` to the slices per GPU.
    """
    mig = MigStrategy(config.flags.mig_strategy)
    sharing = config.sharing
    if sharing.mps is not None and sharing.mps.enabled:
        resources = tuple(
            ReplicatedResource(r.source, r.replicas, renamed=r.name != r.source) for r in sharing.mps.resources
        )
        # Every entry with its devices: kgpu's slices (resources of their own, nvidia.com/gpu-20gb, ...)
        # make gpu.replicas the number of MPS clients per GPU, so the labels need which GPUs each selects.
        entries = tuple(MpsEntry(r.name, r.replicas, r.devices) for r in sharing.mps.resources) + tuple(
            MpsEntry(s.name, s.count, s.devices, slice=True, memory_mib=s.memory_mib) for s in sharing.mps.slices
        )
        dynamic = sharing.mps.dynamic
        if dynamic is not None:
            # dynamic shares are nvidia.com/gpu replicas to the kubelet, as NVIDIA's MPS replicas are
            resources += (ReplicatedResource(DEFAULT_GPU_RESOURCE, dynamic.shares),)
            entries += (MpsEntry(DEFAULT_GPU_RESOURCE, dynamic.shares, dynamic.devices),)
        return LabelSettings(mig, SharingStrategy.MPS, resources, entries, config.resources)
    if sharing.time_slicing is not None and sharing.time_slicing.resources:
        sliced = tuple(
            ReplicatedResource(r.name, r.replicas, renamed=bool(r.rename) and r.rename != r.name)
            for r in sharing.time_slicing.resources
        )
        return LabelSettings(mig, SharingStrategy.TIME_SLICING, sliced, renames=config.resources)
    return LabelSettings(mig, renames=config.resources)


__all__ = [
    "DEFAULT_GPU_RESOURCE",
    "LabelSettings",
    "MigStrategy",
    "MpsEntry",
    "ReplicatedResource",
    "SharingStrategy",
    "settings_from_plugin_config",
]
