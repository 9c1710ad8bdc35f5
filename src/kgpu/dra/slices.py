"""The node's ResourceSlices: what the driver publishes so the scheduler can allocate its devices. Pure.

One pool per node, named after the node (as NVIDIA's driver names it), in one ResourceSlice
``<node>-<driver>`` (or ``<node>-<driver>-<i>`` when more than 128 devices need several). The pool's
``generation`` grows with every change, so the scheduler never mixes an old slice with a new one.
Unhealthy devices are left out, or tainted (:mod:`kgpu.dra.health`).

Example::

    [s["metadata"]["name"] for s in build_slices("node-1", "gpu.nvidia.com", devices, {}, generation=3)]
    # ['node-1-gpu.nvidia.com']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kgpu.dra.devices import DraDevice

API_VERSION = "resource.k8s.io/v1"
MAX_DEVICES_PER_SLICE = 128
"""resource.k8s.io/v1's limit on the devices of one ResourceSlice."""


def slice_names(node: str, driver: str, count: int) -> list[str]:
    base = f"{node}-{driver}"
    return [base] if count <= 1 else [f"{base}-{i}" for i in range(count)]


def build_slices(
    node: str,
    driver: str,
    devices: Sequence[DraDevice],
    unhealthy: Mapping[str, list[dict[str, Any]]],
    *,
    generation: int,
    mode: str = "remove",
    owner: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The ResourceSlice objects for ``devices``; ``unhealthy`` maps a device name to its taints.

    ``mode`` ``remove`` leaves unhealthy devices out, ``taint`` publishes them with their taints.
    ``owner`` (the Node's name and uid) makes the slices go with the Node object.
    """
    published = []
    for d in devices:
        if d.name in unhealthy:
            if mode == "remove":
                continue
            published.append(d.to_json(taints=unhealthy[d.name]))
        else:
            published.append(d.to_json())
    chunks = [published[i:i + MAX_DEVICES_PER_SLICE] for i in range(0, len(published), MAX_DEVICES_PER_SLICE)]
    chunks = chunks or [[]]
    names = slice_names(node, driver, len(chunks))
    out = []
    for name, chunk in zip(names, chunks, strict=True):
        meta: dict[str, Any] = {"name": name}
        if owner:
            meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": owner["name"],
                                        "uid": owner["uid"], "controller": True}]
        out.append({
            "apiVersion": API_VERSION,
            "kind": "ResourceSlice",
            "metadata": meta,
            "spec": {
                "driver": driver,
                "nodeName": node,
                "pool": {"name": node, "generation": generation, "resourceSliceCount": len(chunks)},
                "devices": chunk,
            },
        })
    return out
