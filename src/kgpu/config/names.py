"""Which resources a node advertises before sharing, and whether the sharing entries name them.

``resources`` renames devices (``NVIDIA H100*`` → ``nvidia.com/h100``) and ``sharing`` entries name
the resource whose devices they share — after the rename, the name the kubelet sees. The device
plugin and the labels both apply this rule through :func:`check_sharing_names`, so allocatable and
labels always describe the same configuration.

An entry that names nothing on this node is an error listing the names the node has, when
nothing could make it right on this node: a whole-GPU name (``nvidia.com/gpu``, a ``resources.gpus``
name) on a node whose whole GPUs are advertised under other names (the README's old example: H100s
renamed to ``nvidia.com/h100``, time-slicing still naming ``nvidia.com/gpu``), or a name no node can
ever advertise (a typo). A MIG resource this node lacks is skipped, as NVIDIA does: one cluster-wide
config lists profiles that only some nodes have.

Example::

    check_sharing_names(config, inventory)     # ConfigError if an entry shares nvidia.com/gpu of renamed H100s
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from kgpu.config.values import DEFAULT_GPU_RESOURCE, RESOURCE_NAME_PREFIX, PluginConfig
from kgpu.errors import ConfigError


class _Mig(Protocol):
    @property
    def profile(self) -> str: ...


class _Gpu(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def mig_enabled(self) -> bool: ...
    @property
    def mig_devices(self) -> Sequence[_Mig]: ...


class Inventory(Protocol):
    """What these rules read of :class:`kgpu.gpu.model.Inventory` (kgpu.config does not import kgpu.gpu)."""

    @property
    def gpus(self) -> Sequence[_Gpu]: ...


def node_resource_names(inventory: Inventory, config: PluginConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The resources ``inventory``'s whole GPUs and MIG devices are advertised as under ``config``, before
    sharing: (whole-GPU names, MIG names), each in GPU order."""
    strategy = config.flags.mig_strategy
    whole: list[str] = []
    mig: list[str] = []
    for gpu in sorted(inventory.gpus, key=lambda g: g.index):
        if not gpu.mig_enabled:
            whole.append(config.resources.gpu_resource(gpu.name))
        elif strategy != "none":
            mig.extend(n for m in gpu.mig_devices if (n := config.resources.mig_resource(m.profile, strategy)))
    return tuple(dict.fromkeys(whole)), tuple(dict.fromkeys(mig))


def check_sharing_names(config: PluginConfig, inventory: Inventory) -> None:
    """ConfigError for a ``sharing`` entry that names no resource of this node where it must (module doc)."""
    whole, mig = node_resource_names(inventory, config)
    names = (*whole, *mig)
    where = f"config file {config.config_file}" if config.config_file else "configuration"
    whole_names = {DEFAULT_GPU_RESOURCE, *(r.name for r in config.resources.gpus)}
    mig_names = {r.name for r in config.resources.mig}
    entries: list[tuple[str, str]] = []
    ts = config.sharing.time_slicing
    if ts is not None:
        entries += [(f"sharing.timeSlicing.resources[{i}].name", r.name) for i, r in enumerate(ts.resources)]
    mps = config.sharing.mps
    if mps is not None:
        entries += [(f"sharing.mps.resources[{i}].name", r.source) for i, r in enumerate(mps.resources)]
    for key, name in entries:
        if name in names:
            continue
        is_whole = name in whole_names
        is_mig = name in mig_names or name.startswith(f"{RESOURCE_NAME_PREFIX}/mig-")
        if (is_whole and whole) or not (is_whole or is_mig):
            renamed = is_whole and bool(config.resources.gpus)
            hint = "; resources.gpus renames this node's GPUs, so share the renamed resource" if renamed else ""
            raise ConfigError(
                f"{where}: {key}: {name!r} is not a resource this node advertises; it advertises "
                f"{', '.join(names) or 'nothing'}{hint}"
            )
