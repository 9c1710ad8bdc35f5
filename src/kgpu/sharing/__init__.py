"""Fractional GPUs with enforced limits: CUDA MPS slices, their layout, allocation and daemons.

Example::

    from kgpu.sharing import build_layout, load_mps_config, slice_allocation, MpsPaths

    layout = build_layout(inventory, load_mps_config(Path("config.yaml")))
    alloc = slice_allocation(layout, [layout.slices[0].id], MpsPaths())
"""

from kgpu.sharing.allocation import resolve_slices, slice_allocation
from kgpu.sharing.config import MpsConfig, MpsSharingModel, load_mps_config, parse_mps_section
from kgpu.sharing.layout import MpsLayout, MpsSlice, SharedGPU, build_layout, gpu_of_device_id, layout_to_json
from kgpu.sharing.paths import DEFAULT_MPS_ROOT, MpsPaths

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
