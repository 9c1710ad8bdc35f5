"""Label the Node object directly: server-side apply with field manager ``kgpu``.

Each apply sends the complete set of labels kgpu owns. Server-side apply then keeps exactly
that set under the ``kgpu`` manager: a label kgpu applied before and leaves out now is removed,
labels set by anyone else are untouched. ``force`` takes over labels another manager set
(for example a hand-made ``kubectl label … nvidia.com/gpu.present=true``).

The Node must exist: apply would otherwise create one, so the node is read first (RBAC: ``get``
and ``patch`` on nodes, nothing more).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kgpu.kubeapi
from kgpu.errors import ConfigError, KgpuError

log = logging.getLogger(__name__)

FIELD_MANAGER = "kgpu"


class NodeLabelError(KgpuError):
    """The API server refused or could not be reached."""


def apply_body(node: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """The apply configuration sent for ``node``: only metadata.name and the owned labels."""
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": dict(sorted(labels.items()))}}


def kube_client(kubeconfig: Path | None = None) -> Any:
    """A lightkube client (:func:`kgpu.kubeapi.kube_client`); NodeLabelError when there is no usable config."""
    try:
        return kgpu.kubeapi.kube_client(kubeconfig, FIELD_MANAGER)
    except kgpu.kubeapi.KubeConfigError as exc:
        raise NodeLabelError(str(exc)) from exc


_transport_errors = kgpu.kubeapi.transport_errors


def apply_node_labels(client: Any, node: str, labels: Mapping[str, str]) -> dict[str, str]:
    """Apply ``labels`` as kgpu's complete set on ``node``; returns the node's labels afterwards."""
    from lightkube import ApiError
    from lightkube.resources.core_v1 import Node

    try:
        client.get(Node, node)
        result = client.apply(
            Node.from_dict(apply_body(node, labels)), field_manager=FIELD_MANAGER, force=True
        )
    except ApiError as exc:
        status = exc.status
        if status.code == 404:
            raise NodeLabelError(f"node {node!r} not found in the cluster; pass the node's name to --node") from exc
        if status.code == 403:
            raise NodeLabelError(
                f"not allowed to label node {node!r}: {status.message}; the labeler's ClusterRole needs "
                f"get and patch on nodes (deploy/manifests/labeler.yaml)"
            ) from exc
        raise NodeLabelError(f"labelling node {node!r} failed: {status.code} {status.message}") from exc
    except _transport_errors() as exc:
        raise NodeLabelError(f"cannot reach the Kubernetes API server to label node {node!r}: {exc}") from exc
    return dict(result.metadata.labels or {})


# -- the seed's workflow: mark a GPU node by hand (kgpu node label / kgpu node taint) -------------------

BOOTSTRAP_FIELD_MANAGER = "kgpu-node"
"""Field manager of ``kgpu node label``: separate from the labeler's, so neither removes the other's label."""

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True, slots=True)
class NodeTaint:
    key: str
    value: str
    effect: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"

    def to_json(self) -> dict[str, str]:
        out = {"key": self.key, "effect": self.effect}
        if self.value:
            out["value"] = self.value
        return out


GPU_TAINT = NodeTaint("nvidia.com/gpu", "present", "NoSchedule")
"""The taint commonly put on GPU nodes so only pods tolerating it (GPU pods) land there."""


def parse_taint(text: str) -> NodeTaint:
    """``key=value:Effect`` or ``key:Effect``, as ``kubectl taint`` spells a taint."""
    spec, sep, effect = text.rpartition(":")
    key, _, value = spec.partition("=")
    if not sep or not key or effect not in TAINT_EFFECTS:
        raise ConfigError(
            f"taint {text!r}: expected KEY=VALUE:EFFECT or KEY:EFFECT with EFFECT one of {', '.join(TAINT_EFFECTS)}, "
            f"e.g. {GPU_TAINT}"
        )
    return NodeTaint(key, value, effect)


def taint_list(current: list[dict[str, Any]], taint: NodeTaint, remove: bool) -> list[dict[str, Any]] | None:
    """The node's new ``spec.taints``, or ``None`` when nothing changes.

    Adding replaces a taint with the same key and effect (another value); removing drops taints with the
    key and effect. Other taints are kept in their order.
    """
    same = [t for t in current if t.get("key") == taint.key and t.get("effect") == taint.effect]
    others = [t for t in current if t not in same]
    if remove:
        return others if same else None
    if len(same) == 1 and same[0].get("value", "") == taint.value:
        return None  # already there (a NoExecute taint's timeAdded does not count)
    return [*others, taint.to_json()]


def set_node_taint(client: Any, node: str, taint: NodeTaint, remove: bool = False, attempts: int = 3) -> bool:
    """Add (or remove) ``taint`` on ``node``; True when the node changed.

    ``spec.taints`` is one atomic list to the API server, so it is changed by a JSON patch guarded by
    the resourceVersion read (retried if someone else wrote the node in between), never by apply.
    """
    from lightkube import ApiError
    from lightkube.resources.core_v1 import Node
    from lightkube.types import PatchType

    for attempt in range(attempts):
        try:
            obj = client.get(Node, node)
            current = [t.to_dict() for t in (obj.spec.taints or [])] if obj.spec is not None else []
            new = taint_list(current, taint, remove)
            if new is None:
                return False
            ops = [
                {"op": "test", "path": "/metadata/resourceVersion", "value": obj.metadata.resourceVersion},
                {"op": "add", "path": "/spec/taints", "value": new},
            ]
            client.patch(Node, node, ops, patch_type=PatchType.JSON, field_manager=BOOTSTRAP_FIELD_MANAGER)
            return True
        except ApiError as exc:
            if exc.status.code in (409, 422) and attempt + 1 < attempts:
                continue
            raise _api_error(node, exc) from exc
        except _transport_errors() as exc:
            raise NodeLabelError(f"cannot reach the Kubernetes API server to taint node {node!r}: {exc}") from exc
    return False  # pragma: no cover - the loop returns or raises


PRESENCE_LABEL = "nvidia.com/gpu.present"


@dataclass(frozen=True, slots=True)
class FieldOwner:
    """A field manager holding a field, as the object's ``metadata.managedFields`` records it."""

    manager: str
    operation: str  # Apply (server-side apply) or Update (create, edit, patch: kubectl label)

    def __str__(self) -> str:
        return f"{self.manager} ({self.operation})"


@dataclass(frozen=True, slots=True)
class PresenceLabel:
    """``nvidia.com/gpu.present`` on a Node after kgpu applied or withdrew it."""

    node: str
    value: str | None
    """The label's value on the node now; None when the node no longer has it."""
    owners: tuple[FieldOwner, ...]
    """Who holds it now: while anyone does, the API server keeps the label."""


def label_owners(managed_fields: list[dict[str, Any]], key: str) -> tuple[FieldOwner, ...]:
    """The field managers that own label ``key``, read from an object's ``metadata.managedFields``."""
    owners = []
    for entry in managed_fields:
        labels = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:labels") or {}
        if f"f:{key}" in labels:
            owners.append(FieldOwner(str(entry.get("manager", "")), str(entry.get("operation", ""))))
    return tuple(owners)


def set_presence_label(client: Any, node: str, present: bool = True) -> PresenceLabel:
    """Apply (or withdraw) ``nvidia.com/gpu.present=true`` under the ``kgpu-node`` field manager.

    Withdrawing only gives up kgpu-node's ownership: server-side apply deletes the label when no
    other manager holds it, and keeps it (and says who holds it) when one does — the labeler
    (``kgpu``), or a ``kubectl label`` (``kubectl-label``).
    """
    from lightkube import ApiError
    from lightkube.resources.core_v1 import Node

    labels = {PRESENCE_LABEL: "true"} if present else {}
    try:
        client.get(Node, node)
        result = client.apply(
            Node.from_dict(apply_body(node, labels)), field_manager=BOOTSTRAP_FIELD_MANAGER, force=True
        )
    except ApiError as exc:
        raise _api_error(node, exc) from exc
    except _transport_errors() as exc:
        raise NodeLabelError(f"cannot reach the Kubernetes API server to label node {node!r}: {exc}") from exc
    metadata = result.to_dict().get("metadata", {})
    return PresenceLabel(
        node=node,
        value=(metadata.get("labels") or {}).get(PRESENCE_LABEL),
        owners=label_owners(metadata.get("managedFields") or [], PRESENCE_LABEL),
    )


def still_labelled_reason(result: PresenceLabel) -> str:
    """Why ``kgpu node label --remove`` left the label on, and how to remove it for good."""
    who = ", ".join(str(owner) for owner in result.owners) or "another field manager"
    advice = []
    if any(owner.manager == FIELD_MANAGER for owner in result.owners):
        advice.append("the kgpu labeler (field manager kgpu) publishes it while it runs on the node: stop it "
                      "there first (helm uninstall, or keep its DaemonSet off the node)")
    advice.append(f"kubectl label node {result.node} {PRESENCE_LABEL}- removes it whoever set it")
    return (f"{PRESENCE_LABEL}={result.value} is still on node/{result.node}: kgpu-node no longer sets it, but "
            f"{who} still {'own' if len(result.owners) > 1 else 'owns'} it; " + "; ".join(advice))


def _api_error(node: str, exc: Any) -> NodeLabelError:
    status = exc.status
    if status.code == 404:
        return NodeLabelError(f"node {node!r} not found in the cluster; pass the node's name with --node")
    if status.code == 403:
        return NodeLabelError(
            f"not allowed to change node {node!r}: {status.message}; this needs get and patch on nodes"
        )
    return NodeLabelError(f"changing node {node!r} failed: {status.code} {status.message}")


# -- helm uninstall: withdraw the labeler's labels from every node (as NFD's chart runs nfd-master -prune) --


def owned_labels(managed_fields: list[dict[str, Any]], manager: str = FIELD_MANAGER) -> set[str]:
    """Label keys that ``manager`` holds, read from an object's ``metadata.managedFields``."""
    keys: set[str] = set()
    for entry in managed_fields:
        if entry.get("manager") != manager:
            continue
        labels = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:labels") or {}
        keys.update(k[2:] for k in labels if k.startswith("f:"))
    return keys


def prune_node_labels(client: Any, node: str | None = None) -> dict[str, list[str]]:
    """Withdraw every label the labeler applied (field manager ``kgpu``) from ``node``, or from every Node
    that carries one: an apply of no labels as ``kgpu``, so a label another manager also holds (an
    admin's ``kubectl label``) stays. Returns, per node touched, the keys that are gone."""
    from lightkube import ApiError
    from lightkube.resources.core_v1 import Node

    removed: dict[str, list[str]] = {}
    try:
        nodes = [client.get(Node, node)] if node is not None else list(client.list(Node))
        for obj in nodes:
            meta = obj.to_dict().get("metadata", {})
            name = str(meta.get("name", ""))
            ours = owned_labels(meta.get("managedFields") or [])
            if not ours:
                continue
            result = client.apply(Node.from_dict(apply_body(name, {})), field_manager=FIELD_MANAGER, force=True)
            left = set(result.to_dict().get("metadata", {}).get("labels") or {})
            removed[name] = sorted(ours - left)
    except ApiError as exc:
        if exc.status.code == 403:
            raise NodeLabelError(f"not allowed to remove kgpu's node labels ({exc.status.message}); this needs "
                                 "list, get and patch on nodes") from exc
        raise _api_error(node or "(all)", exc) from exc
    except _transport_errors() as exc:
        raise NodeLabelError(f"cannot reach the Kubernetes API server to remove kgpu's labels: {exc}") from exc
    return removed
