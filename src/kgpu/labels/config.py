"""Label settings from the device plugin's configuration: the same file, flags and env vars.

GFD reads NVIDIA's device-plugin config; kgpu's labeler reads it through the device plugin's own
:func:`kgpu.deviceplugin.config.resolve_config` (flag > environment > file > default, one validated
model), so the labels describe exactly what kgpu's plugin advertises. GFD's own variable names
``GFD_MIG_STRATEGY`` and ``GFD_CONFIG_FILE`` are accepted too.

Renaming follows kgpu's plugin: an explicit ``rename`` (which NVIDIA's tools ignore with a warning)
is honoured, so such replicas are "renamed" and the product gets no ``-SHARED`` suffix. kgpu's MPS
slices (``sharing.mps.slices``) are kept apart from GFD's replicated resources: they have names of
their own, so they never make the product ``-SHARED``, but they make the node MPS-shared and set
``gpu.replicas`` to the slices per GPU (see :func:`kgpu.labels.gfd.full_gpu_labels`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from kgpu.errors import ConfigError
from kgpu.labels.settings import LabelSettings, MigStrategy, MpsEntry, ReplicatedResource, SharingStrategy

if TYPE_CHECKING:
    from kgpu.deviceplugin.config import PluginConfig

GFD_ENV = {"GFD_MIG_STRATEGY": "mig-strategy", "GFD_CONFIG_FILE": "config-file"}
FULL_GPU = "nvidia.com/gpu"


def settings_from_plugin_config(config: PluginConfig) -> LabelSettings:
    """:class:`LabelSettings` from a resolved :class:`kgpu.deviceplugin.config.PluginConfig`."""
    mig = MigStrategy(config.flags.mig_strategy)
    sharing = config.sharing
    if sharing.mps is not None and sharing.mps.enabled:
        # MPS replicas always share nvidia.com/gpu; their name is the advertised one (after rename).
        resources = tuple(
            ReplicatedResource(FULL_GPU, r.replicas, renamed=r.name != FULL_GPU) for r in sharing.mps.resources
        )
        # Every entry with its devices: kgpu's slices (resources of their own, nvidia.com/gpu-20gb, ...)
        # make gpu.replicas the number of MPS clients per GPU, so the labels need which GPUs each selects.
        entries = tuple(MpsEntry(r.name, r.replicas, r.devices) for r in sharing.mps.resources) + tuple(
            MpsEntry(s.name, s.count, s.devices, slice=True, memory_mib=s.memory_mib) for s in sharing.mps.slices
        )
        return LabelSettings(mig, SharingStrategy.MPS, resources, entries)
    if sharing.time_slicing is not None and sharing.time_slicing.resources:
        sliced = tuple(
            ReplicatedResource(r.name, r.replicas, renamed=bool(r.rename) and r.rename != r.name)
            for r in sharing.time_slicing.resources
        )
        return LabelSettings(mig, SharingStrategy.TIME_SLICING, sliced)
    return LabelSettings(mig)


def resolve_settings(
    config_file: Path | None,
    mig_strategy: str | None,
    environ: Mapping[str, str],
) -> LabelSettings:
    """Settings from the flags given (``None`` = not given), the environment and the config file.

    Raises :class:`kgpu.errors.ConfigError` naming the file, key, value and allowed values.
    """
    from kgpu.deviceplugin.config import resolve_config

    flags: dict[str, object] = {}
    for env, flag in GFD_ENV.items():
        if environ.get(env):
            flags[flag] = environ[env]
    gfd_mig = environ.get("GFD_MIG_STRATEGY")
    if mig_strategy is None and gfd_mig and gfd_mig not in {s.value for s in MigStrategy}:
        raise ConfigError(f"environment variable GFD_MIG_STRATEGY={gfd_mig}: {gfd_mig!r} is not one of "
                          f"{', '.join(s.value for s in MigStrategy)}")
    if mig_strategy is not None:
        flags["mig-strategy"] = mig_strategy
    return settings_from_plugin_config(resolve_config(flags, environ, config_file))


def settings_from_document(doc: object, source: str) -> LabelSettings:
    """Settings from an already-parsed config document (e.g. a ConfigMap's ``config.yaml``), validated
    by the device plugin's own schema; errors name ``source``. Flags and env vars play no part."""
    import yaml

    from kgpu.deviceplugin.config import Flags, PluginConfig, Sharing, parse_config_text
    from kgpu.sharing.config import parse_mps_section

    spec = parse_config_text(yaml.safe_dump(doc), source)
    mig = spec.flags.mig_strategy if spec.flags is not None and spec.flags.mig_strategy else "none"
    sharing = spec.sharing
    time_slicing = sharing.time_slicing.to_value() if sharing is not None and sharing.time_slicing else None
    mps = parse_mps_section(sharing.mps, source) if sharing is not None and sharing.mps is not None else None
    return settings_from_plugin_config(
        PluginConfig(flags=Flags(mig_strategy=mig), sharing=Sharing(time_slicing=time_slicing, mps=mps))
    )
