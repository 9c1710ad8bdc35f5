"""The configuration every kgpu component shares, as NVIDIA keeps ``api/config/v1``.

* :mod:`~kgpu.config.values` — the resolved configuration as frozen values (:class:`PluginConfig`).
* :mod:`~kgpu.config.flags` — the one table of flags and environment variables (NVIDIA's names).
* :mod:`~kgpu.config.file` — NVIDIA's v1 config file format (pydantic, at the edge).
* :mod:`~kgpu.config.resolve` — flag > environment > file > default, and the cross-checks.
* :mod:`~kgpu.config.driverroot` — the one driver root: host path and where this process reads it.
* :mod:`~kgpu.config.limits` — bounds on every number an admin writes.
* :mod:`~kgpu.config.labels` — the view of the configuration the node labels need.

Imports run one way (values ← flags, file ← resolve) and nothing here imports a component. The
package itself exports the plain values, the table and the driver root; the file format and the
resolver, which load pydantic and YAML, are imported from their modules where a file is read.

Example::

    from kgpu.config.resolve import resolve_config

    config = resolve_config({"mig-strategy": "mixed"}, os.environ, "/etc/kgpu/config.yaml")
    config.flags.mig_strategy          # 'mixed'
    config.driver_root.view            # where this process reads the driver
"""

from kgpu.config.driverroot import resolve_driver_root
from kgpu.config.flags import (
    CONFIG_MANAGER,
    DEVICE_PLUGIN,
    FLAGS,
    GFD,
    GLOBAL_FLAGS,
    Flag,
    Program,
    flag_named,
    flags_of,
)
from kgpu.config.values import (
    DEFAULT_GPU_RESOURCE,
    DEFAULT_MPS_ROOT,
    DRIVER_MOUNTS,
    DeviceSelector,
    DriverRoot,
    DynamicShares,
    Flags,
    GfdFlags,
    Health,
    Imex,
    MpsConfig,
    PluginConfig,
    PluginFlags,
    ReplicaResource,
    ReplicatedResource,
    ReplicatedResources,
    ResourcePattern,
    Resources,
    Sharing,
    SliceSpec,
)

__all__ = [
    "CONFIG_MANAGER",
    "DEFAULT_GPU_RESOURCE",
    "DEFAULT_MPS_ROOT",
    "DEVICE_PLUGIN",
    "DRIVER_MOUNTS",
    "FLAGS",
    "GFD",
    "GLOBAL_FLAGS",
    "DeviceSelector",
    "DriverRoot",
    "DynamicShares",
    "Flag",
    "Flags",
    "GfdFlags",
    "Health",
    "Imex",
    "MpsConfig",
    "PluginConfig",
    "PluginFlags",
    "Program",
    "ReplicaResource",
    "ReplicatedResource",
    "ReplicatedResources",
    "ResourcePattern",
    "Resources",
    "Sharing",
    "SliceSpec",
    "flag_named",
    "flags_of",
    "resolve_driver_root",
]
