"""Fractional GPUs with enforced limits: CUDA MPS slices, their layout, allocation and daemons.

Example::

    from kgpu.sharing import build_layout, slice_allocation, MpsPaths

    layout = build_layout(inventory, resolve_config(config_file="config.yaml").sharing.mps)
    alloc = slice_allocation(layout, [layout.slices[0].id], MpsPaths())
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kgpu.sharing.allocation import resolve_slices, slice_allocation
    from kgpu.sharing.layout import MpsLayout, MpsSlice, SharedGPU, build_layout, gpu_of_device_id, layout_to_json
    from kgpu.sharing.paths import DEFAULT_MPS_ROOT, MpsPaths

# Names are loaded from their modules on first use (the sharing.mps section itself: kgpu.config).
_HOME = {
    "resolve_slices": "allocation", "slice_allocation": "allocation",
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
    "MpsLayout",
    "MpsPaths",
    "MpsSlice",
    "SharedGPU",
    "build_layout",
    "gpu_of_device_id",
    "layout_to_json",
    "resolve_slices",
    "slice_allocation",
]
