"""What the extender knows of the cluster: each dynamic GPU node and each pod holding GPU shares.

The API server is the source of truth. Pods carry their assignment (``hami.io/vgpu-devices-allocated``)
and nodes their GPUs (``kgpu.io/dynamic-gpus``); the reflectors in :mod:`.kube` feed every pod and
node event here, so a restarted extender rebuilds the same state from one list of each.

On top of what the API shows, the extender keeps **reservations**: shares it has decided in a bind
that the API does not show yet. A reservation counts from the moment the bind chooses the GPUs
until the pod's watch event shows it bound with its assignment (or the pod is gone, or the bind
failed), so no GPU is promised twice in the gap between a decision and its watch event.

A pod is **in flight** on a node from its binding until the kubelet has allocated it: the node's
device plugin finds the pod being allocated as the only one in flight (see :mod:`.extender`).

Example::

    state = ClusterState()
    state.upsert_node(node_dict); state.upsert_pod(pod_dict)
    state.usage("node-1").gpus[0].memory_mib
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from kgpu.scheduler.assignment import Assignment, AssignmentError, Share, decode
from kgpu.scheduler.fit import GPUUsage, NodeUsage
from kgpu.scheduler.inventory import InventoryError, NodeGPU, decode_gpus
from kgpu.scheduler.names import BIND_PHASE, DEVICES_ALLOCATED, NODE_GPUS, PHASE_ALLOCATING
from kgpu.scheduler.requests import containers_in_order

TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True, slots=True)
class NodeRecord:
    name: str
    gpus: tuple[NodeGPU, ...]
    error: str | None = None
    """Why the node's GPU annotation could not be read (then it has no dynamic GPUs)."""


@dataclass(frozen=True, slots=True)
class PodRecord:
    """The parts of a pod the extender needs, from its API object."""

    uid: str
    namespace: str
    name: str
    node: str
    """``spec.nodeName``: empty until bound."""
    assignment: Assignment | None
    bind_phase: str
    phase: str
    admitted: bool
    """The kubelet has posted container statuses, so it has admitted (and allocated) the pod."""
    containers: tuple[str, ...] = ()
    """Container names in HAMi order (init containers first), for metrics."""
    assignment_error: str | None = None

    @property
    def holds_shares(self) -> bool:
        return bool(self.node) and self.assignment is not None and not self.assignment.empty \
            and self.phase not in TERMINAL_PHASES

    @property
    def in_flight(self) -> bool:
        """Bound with shares the kubelet has not allocated yet."""
        return self.holds_shares and self.bind_phase == PHASE_ALLOCATING and not self.admitted \
            and self.phase == "Pending"


def pod_record(pod: Mapping[str, Any]) -> PodRecord:
    meta = pod.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    status = pod.get("status") or {}
    assignment: Assignment | None = None
    error = None
    text = annotations.get(DEVICES_ALLOCATED)
    if text is not None:
        try:
            assignment = decode(str(text))
        except AssignmentError as exc:
            error = str(exc)
    return PodRecord(
        uid=str(meta.get("uid", "")),
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        node=str((pod.get("spec") or {}).get("nodeName") or ""),
        assignment=assignment,
        bind_phase=str(annotations.get(BIND_PHASE, "")),
        phase=str(status.get("phase") or "Pending"),
        admitted=bool(status.get("containerStatuses") or status.get("initContainerStatuses")),
        containers=tuple(str(c.get("name", "")) for c in containers_in_order(pod)),
        assignment_error=error,
    )


def node_record(node: Mapping[str, Any]) -> NodeRecord:
    meta = node.get("metadata") or {}
    text = (meta.get("annotations") or {}).get(NODE_GPUS)
    name = str(meta.get("name", ""))
    if text is None:
        return NodeRecord(name, ())
    try:
        return NodeRecord(name, decode_gpus(str(text)))
    except InventoryError as exc:
        return NodeRecord(name, (), error=f"node {name}: annotation {NODE_GPUS}: {exc}")


@dataclass(frozen=True, slots=True)
class Reservation:
    uid: str
    namespace: str
    name: str
    node: str
    assignment: Assignment
    since: float
    bound: bool = False
    """The binding was created: the pod is in flight until its watch event says otherwise."""


class ClusterState:
    """Thread-safe; every reader gets a consistent snapshot. ``changed`` wakes binds waiting on a node."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self._nodes: dict[str, NodeRecord] = {}
        self._pods: dict[str, PodRecord] = {}
        self._on_node: dict[str, set[str]] = {}
        """Node name → UIDs of the pods bound there (so a node's usage reads only its own pods)."""
        self._reserved: dict[str, Reservation] = {}
        self.synced = threading.Event()

    # -- fed by the reflectors ------------------------------------------------------------------------
    def replace_nodes(self, nodes: Iterable[Mapping[str, Any]]) -> None:
        records = {r.name: r for r in map(node_record, nodes)}
        with self.changed:
            self._nodes = records
            self.changed.notify_all()

    def upsert_node(self, node: Mapping[str, Any]) -> None:
        record = node_record(node)
        with self.changed:
            self._nodes[record.name] = record
            self.changed.notify_all()

    def delete_node(self, name: str) -> None:
        with self.changed:
            self._nodes.pop(name, None)
            self.changed.notify_all()

    def replace_pods(self, pods: Iterable[Mapping[str, Any]]) -> None:
        records = {r.uid: r for r in map(pod_record, pods) if r.assignment is not None or r.assignment_error}
        with self.changed:
            self._pods = records
            self._on_node = {}
            for r in records.values():
                self._on_node.setdefault(r.node, set()).add(r.uid)
            for uid in list(self._reserved):
                self._settle(uid)
            self.changed.notify_all()

    def upsert_pod(self, pod: Mapping[str, Any]) -> None:
        record = pod_record(pod)
        with self.changed:
            self._forget(record.uid)
            if record.assignment is not None or record.assignment_error:
                self._pods[record.uid] = record
                self._on_node.setdefault(record.node, set()).add(record.uid)
            self._settle(record.uid)
            self.changed.notify_all()

    def delete_pod(self, uid: str) -> None:
        with self.changed:
            self._forget(uid)
            self._reserved.pop(uid, None)
            self.changed.notify_all()

    def _forget(self, uid: str) -> None:
        old = self._pods.pop(uid, None)
        if old is not None:
            uids = self._on_node.get(old.node)
            if uids is not None:
                uids.discard(uid)
                if not uids:
                    del self._on_node[old.node]

    def _settle(self, uid: str) -> None:
        """Drop a reservation the API now shows (the pod bound with its shares, or finished)."""
        r = self._reserved.get(uid)
        p = self._pods.get(uid)
        if r is None or p is None:
            return
        if (p.holds_shares and p.node == r.node) or p.phase in TERMINAL_PHASES:
            del self._reserved[uid]

    # -- reservations (the bind path) ----------------------------------------------------------------
    def reserve(self, reservation: Reservation) -> None:
        with self.changed:
            self._reserved[reservation.uid] = reservation
            self.changed.notify_all()

    def mark_bound(self, uid: str) -> None:
        with self.changed:
            r = self._reserved.get(uid)
            if r is not None:
                self._reserved[uid] = replace(r, bound=True)
                self._settle(uid)
            self.changed.notify_all()

    def release(self, uid: str) -> None:
        with self.changed:
            self._reserved.pop(uid, None)
            self.changed.notify_all()

    # -- readers ----------------------------------------------------------------------------------------
    def node(self, name: str) -> NodeRecord | None:
        with self.changed:
            return self._nodes.get(name)

    def nodes(self) -> list[NodeRecord]:
        with self.changed:
            return sorted(self._nodes.values(), key=lambda n: n.name)

    def pod(self, uid: str) -> PodRecord | None:
        with self.changed:
            return self._pods.get(uid)

    def pods(self) -> list[PodRecord]:
        with self.changed:
            return list(self._pods.values())

    def usage(self, node: str) -> NodeUsage | None:
        """The node's dynamic GPUs with everything allocated or reserved on them; None for other nodes."""
        with self.changed:
            record = self._nodes.get(node)
            if record is None or not record.gpus:
                return None
            counted: set[str] = set()
            shares: list[Share] = []
            for p in (self._pods[uid] for uid in self._on_node.get(node, ())):
                if p.holds_shares and p.assignment is not None:
                    counted.add(p.uid)
                    shares.extend(p.assignment.shares)
            for r in self._reserved.values():
                if r.node == node and r.uid not in counted:
                    shares.extend(r.assignment.shares)
        usage = NodeUsage(node, tuple(GPUUsage(g) for g in record.gpus))
        known = {g.uuid for g in record.gpus}
        return usage.plus([s for s in shares if s.uuid in known])

    def in_flight(self, node: str, *, other_than: str = "") -> list[tuple[str, str, float]]:
        """``(namespace/name, uid, seconds bound)`` of pods bound to ``node`` that the kubelet has not allocated."""
        now = time.monotonic()
        with self.changed:
            return self._in_flight(node, other_than, now)

    def _in_flight(self, node: str, other_than: str, now: float) -> list[tuple[str, str, float]]:
        out: dict[str, tuple[str, str, float]] = {}
        for r in self._reserved.values():
            if r.node == node and r.bound and r.uid != other_than:
                out[r.uid] = (f"{r.namespace}/{r.name}", r.uid, now - r.since)
        for p in (self._pods[uid] for uid in self._on_node.get(node, ())):
            if p.in_flight and p.uid != other_than and p.uid not in out:
                out[p.uid] = (f"{p.namespace}/{p.name}", p.uid, 0.0)
        return list(out.values())

    def wait_idle(self, node: str, uid: str, timeout: float) -> list[tuple[str, str, float]]:
        """Block until no pod but ``uid`` is in flight on ``node``; returns those still in flight at ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                now = time.monotonic()
                busy = self._in_flight(node, uid, now)
                if not busy or now >= deadline:
                    return busy
                self.changed.wait(min(deadline - now, 1.0))
