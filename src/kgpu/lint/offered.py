"""Which ``nvidia.com/…`` resources the cluster's nodes offer, from what an admin can hand ``kgpu lint``.

* ``--resources nvidia.com/gpu,nvidia.com/gpu-20gb``: a list;
* ``--nodes FILE``: ``kubectl get nodes -o yaml`` (a Node, a NodeList or a List): every resource in a
  node's ``status.allocatable`` or ``status.capacity`` with a positive amount;
* ``--labels FILE``: node labels (``key=value`` lines as ``kgpu labels`` prints them, or a JSON/YAML
  mapping): GFD's ``<resource>.count`` labels name the resources (kgpu labels MPS slice resources
  such as ``nvidia.com/gpu-20gb.count`` too), and a shared ``nvidia.com/gpu`` whose product lacks
  ``-SHARED`` was renamed to ``nvidia.com/gpu.shared`` — unless the node offers MPS slices
  (``<slice>.sharing-strategy=mps``): then ``nvidia.com/gpu.replicas`` counts the slices of a GPU and
  says nothing about a rename (a node with both slices and renamed equal replicas needs ``--nodes``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from kgpu.errors import ConfigError
from kgpu.lint.rules import GPU_PREFIX, parse_quantity


def from_names(text: str) -> frozenset[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if "/" not in n]
    if bad:
        raise ConfigError(f"--resources: {', '.join(bad)}: give full resource names such as nvidia.com/gpu")
    return frozenset(names)


def from_nodes(objs: Iterable[Mapping[str, Any]], source: str) -> frozenset[str]:
    offered: set[str] = set()
    nodes = 0
    for obj in objs:
        if obj.get("kind") != "Node":
            continue
        nodes += 1
        status = obj.get("status")
        for field in ("allocatable", "capacity"):
            amounts = status.get(field) if isinstance(status, Mapping) else None
            if not isinstance(amounts, Mapping):
                continue
            for name, amount in amounts.items():
                q = parse_quantity(amount)
                if str(name).startswith(GPU_PREFIX) and q is not None and q > 0:
                    offered.add(str(name))
    if nodes == 0:
        raise ConfigError(f"{source}: no Node objects (expected the output of kubectl get nodes -o yaml)")
    return frozenset(offered)


def from_labels(text: str, source: str) -> frozenset[str]:
    labels = _parse_labels(text, source)
    offered: set[str] = set()
    for key, value in labels.items():
        if key.startswith(GPU_PREFIX) and key.endswith(".count"):
            q = parse_quantity(value)
            if q is not None and q > 0:
                offered.add(key.removesuffix(".count"))
    replicas = parse_quantity(labels.get("nvidia.com/gpu.replicas", "1")) or 1
    renamed = not labels.get("nvidia.com/gpu.product", "").endswith("-SHARED")
    slices = any(key.endswith(".sharing-strategy") and value == "mps" and key != "nvidia.com/gpu.sharing-strategy"
                 for key, value in labels.items())
    if "nvidia.com/gpu" in offered and replicas > 1 and renamed and not slices:
        offered.add("nvidia.com/gpu.shared")
    return frozenset(offered)


def _parse_labels(text: str, source: str) -> dict[str, str]:
    """``key=value`` lines, or a YAML/JSON mapping of labels (or a Node object: its metadata.labels)."""

    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if lines and all("=" in line and ": " not in line and not line.startswith(("{", "-")) for line in lines):
        return {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in lines)}
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not key=value lines, YAML or JSON: {exc}") from None
    if isinstance(doc, Mapping):
        meta = doc.get("metadata")
        if isinstance(meta, Mapping) and isinstance(meta.get("labels"), Mapping):
            doc = meta["labels"]
        return {str(k): str(v) for k, v in doc.items()}
    raise ConfigError(f"{source}: expected node labels as key=value lines (kgpu labels) or a mapping")
