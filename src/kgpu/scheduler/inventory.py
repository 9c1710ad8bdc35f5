"""A node's dynamically shared GPUs, as its device plugin records them on the Node for the extender.

The node annotation ``kgpu.io/dynamic-gpus`` holds a JSON list in the shape of HAMi's
``DeviceInfo`` (``hami.io/node-nvidia-register``): ``id`` (UUID), ``index``, ``count`` (shares:
the most containers the GPU serves at once), ``devmem`` (MiB), ``devcore`` (100), ``type``
(product name), ``numa``, ``mode`` (``mps``), ``health``. As in HAMi's JSON, zero values and
``false`` are left out. The device plugin writes it (:func:`encode_gpus`); the extender reads it
(:func:`decode_gpus`).

Example::

    gpus = decode_gpus(node["metadata"]["annotations"]["kgpu.io/dynamic-gpus"])
    gpus[0].memory_mib, gpus[0].shares      # (81559, 10)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kgpu.errors import KgpuError

MODE = "mps"
MAX_GPUS_PER_NODE = 64
MAX_ANNOTATION_CHARS = 64 * 1024


class InventoryError(KgpuError):
    """A node's GPU annotation that cannot be read; the node is left out of dynamic scheduling."""


@dataclass(frozen=True, slots=True)
class NodeGPU:
    uuid: str
    index: int
    type: str
    memory_mib: int
    shares: int
    """The most containers this GPU serves at once (its ``nvidia.com/gpu`` count)."""
    numa: int = 0
    healthy: bool = True
    cores: int = 100


def encode_gpus(gpus: Sequence[NodeGPU]) -> str:
    items: list[dict[str, Any]] = []
    for g in gpus:
        item: dict[str, Any] = {"id": g.uuid, "index": g.index, "count": g.shares, "devmem": g.memory_mib,
                                "devcore": g.cores, "type": g.type, "numa": g.numa, "mode": MODE,
                                "health": g.healthy}
        items.append({k: v for k, v in item.items() if v not in (0, False, "")})
    return json.dumps(items, separators=(",", ":"))


def decode_gpus(text: str) -> tuple[NodeGPU, ...]:
    """The GPUs in ``text``; InventoryError says what is wrong (the node is then not scheduled onto)."""
    if len(text) > MAX_ANNOTATION_CHARS:
        raise InventoryError(f"{len(text)} characters, more than {MAX_ANNOTATION_CHARS}")
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise InventoryError(f"not JSON: {exc}") from None
    if not isinstance(raw, list) or len(raw) > MAX_GPUS_PER_NODE:
        raise InventoryError(f"expected a list of at most {MAX_GPUS_PER_NODE} GPUs")
    gpus: list[NodeGPU] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InventoryError(f"GPU [{i}] is not an object")
        uuid = item.get("id")
        numbers = {k: item.get(k, 0) for k in ("index", "count", "devmem", "devcore", "numa")}
        if not isinstance(uuid, str) or not uuid or any(
            not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in numbers.values()
        ):
            raise InventoryError(f"GPU [{i}]: needs a string id and whole numbers index, count, devmem, devcore")
        if numbers["count"] < 1 or numbers["devmem"] < 1:
            raise InventoryError(f"GPU [{i}] ({uuid}): count and devmem must be at least 1")
        gpus.append(NodeGPU(uuid=uuid, index=numbers["index"], type=str(item.get("type", "")),
                            memory_mib=numbers["devmem"], shares=numbers["count"], numa=numbers["numa"],
                            healthy=item.get("health") is True, cores=numbers["devcore"] or 100))
    return tuple(sorted(gpus, key=lambda g: g.index))
