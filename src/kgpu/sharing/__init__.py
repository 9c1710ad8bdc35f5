"""Fractional GPUs with enforced limits: CUDA MPS slices, their layout, allocation and daemons.

Example::

    from kgpu.sharing import build_layout, load_mps_config, slice_allocation, MpsPaths

    layout = build_layout(inventory, load_mps_config(Path("config.yaml")))
    alloc = slice_allocation(layout, [layout.slices[0].id], MpsPaths())
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kgpu.sharing.allocation import resolve_slices, slice_allocation
    from kgpu.sharing.config import MpsConfig, MpsSharingModel, load_mps_config, parse_mps_section
    from kgpu.sharing.layout import MpsLayout, MpsSlice, SharedGPU, build_layout, gpu_of_device_id, layout_to_json
    from kgpu.sharing.paths import DEFAULT_MPS_ROOT, MpsPaths

# Names are loaded from their modules on first use: importing kgpu.sharing.paths (the device plugin
# does, for a default path) must not load the config's pydantic models.
_HOME = {
    "resolve_slices": "allocation", "slice_allocation": "allocation",
    "MpsConfig": "config", "MpsSharingModel": "config", "load_mps_config": "config", "parse_mps_section": "config",
    "MpsLayout": "layout", "MpsSlice": "layout", "SharedGPU": "layout", "build_layout": "layout",
    "gpu_of_device_id": "layout", "layout_to_json": "layout",
    "DEFAULT_MPS_ROOT": "paths", "MpsPaths": "paths",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)


__all__ = [
    "DEFAULT_MPS_ROOT",
    "MpsConfig",
    "MpsLayout",
    "MpsPaths",
    "MpsSharingModel",
    "MpsSlice",
    "SharedGPU",
    "build_layout",
    "gpu_of_device_id",
    "layout_to_json",
    "load_mps_config",
    "parse_mps_section",
    "resolve_slices",
    "slice_allocation",
]
