"""Which pod the kubelet is allocating: the device plugin's side of the extender's handshake (pure).

The kubelet's ``Allocate`` names device IDs only. The extender binds a pod to a node only when no
earlier pod it bound there is still waiting for its allocation (see :mod:`.extender`), so among the
pods on the node at most one is *in flight*: bound, with shares in ``hami.io/vgpu-devices-to-allocate``
not handed out yet, ``hami.io/bind-phase: allocating``, and no container status from the kubelet.
That pod is the one being allocated.

The plugin still refuses to guess: a pod placed on the node by another scheduler (or by
``spec.nodeName``) that asks for ``nvidia.com/gpu`` and has not been admitted yet could be the one
the kubelet is admitting as well; then :func:`pending_allocation` refuses, naming the pods, rather
than hand one pod's share to another.

The kubelet allocates a pod's containers in HAMi's order (init containers, then the others), one
``Allocate`` call each: the first entry not handed out yet is the container being allocated, and
:attr:`PendingShare.remaining` is the annotation to write back.

Example::

    pending = pending_allocation(pods_on_node, "node-1", device_ids)
    pending.shares[0].memory_mib, pending.patch()        # 20000, {...annotations to write...}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kgpu.errors import KgpuError
from kgpu.scheduler.assignment import Assignment, AssignmentError, Share, decode, encode
from kgpu.scheduler.names import (
    BIND_PHASE,
    DEVICES_TO_ALLOCATE,
    GPU_COUNT,
    PHASE_SUCCESS,
    SCHEDULER_NAME,
)
from kgpu.scheduler.requests import containers_in_order
from kgpu.scheduler.state import TERMINAL_PHASES, pod_record


class HandshakeError(KgpuError):
    """No pod, or more than one, could be the one the kubelet is allocating; the message says which and why."""


@dataclass(frozen=True, slots=True)
class PendingShare:
    """The pod being allocated, the container, its shares, and what is left to hand out after it."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    container_index: int
    container: str
    shares: tuple[Share, ...]
    remaining: Assignment

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def patch(self) -> dict[str, str]:
        """The annotations that record this container as handed out (and the pod as done, after its last)."""
        annotations = {DEVICES_TO_ALLOCATE: encode(self.remaining)}
        if self.remaining.next_pending() is None:
            annotations[BIND_PHASE] = PHASE_SUCCESS
        return annotations


def _asks_for_gpu(pod: Mapping[str, Any]) -> bool:
    for c in containers_in_order(pod):
        resources = c.get("resources") or {}
        if GPU_COUNT in (resources.get("limits") or {}) or GPU_COUNT in (resources.get("requests") or {}):
            return True
    return False


def _to_allocate(pod: Mapping[str, Any]) -> Assignment | None:
    text = ((pod.get("metadata") or {}).get("annotations") or {}).get(DEVICES_TO_ALLOCATE)
    if text is None:
        return None
    try:
        return decode(str(text))
    except AssignmentError:
        return None


def pending_allocation(pods: Sequence[Mapping[str, Any]], node: str, device_ids: Sequence[str]) -> PendingShare:
    """The one pod on ``node`` waiting for its shares; HandshakeError when there is none, or several."""
    assigned: list[tuple[Mapping[str, Any], Assignment]] = []
    others: list[str] = []
    for pod in pods:
        record = pod_record(pod)
        meta = pod.get("metadata") or {}
        if record.node != node or record.phase in TERMINAL_PHASES or record.admitted or meta.get("deletionTimestamp"):
            continue
        to_allocate = _to_allocate(pod)
        if record.in_flight and to_allocate is not None and to_allocate.next_pending() is not None:
            assigned.append((pod, to_allocate))
        elif record.assignment is None and not record.assignment_error and _asks_for_gpu(pod):
            # placed by someone else: the kubelet may be admitting it now. A pod with an assignment is either
            # in flight (above) or already handed out, even while the kubelet has not reported it yet.
            others.append(f"{record.namespace}/{record.name}")
    if len(assigned) == 1 and not others:
        pod, to_allocate = assigned[0]
        return _pending(pod, to_allocate, device_ids)
    if not assigned:
        unplaced = f" ({', '.join(others[:5])} asked for {GPU_COUNT} without it)" if others else ""
        raise HandshakeError(
            f"no pod on node {node} is waiting for a GPU share{unplaced}: the GPUs of this node are shared "
            f"dynamically, so pods that ask for {GPU_COUNT} here must be placed by the kgpu scheduler "
            f"(spec.schedulerName: {SCHEDULER_NAME}), which records their share on the pod"
        )
    names = [f"{(p.get('metadata') or {}).get('namespace')}/{(p.get('metadata') or {}).get('name')}"
             for p, _ in assigned] + others
    raise HandshakeError(
        f"{len(names)} pods on node {node} could be the one the kubelet is allocating ({', '.join(names[:5])}); "
        f"refusing to guess and give one pod's GPU share to another. Pods asking for {GPU_COUNT} on a node whose "
        f"GPUs are shared dynamically must all be placed by {SCHEDULER_NAME}"
    )


def _pending(pod: Mapping[str, Any], to_allocate: Assignment, device_ids: Sequence[str]) -> PendingShare:
    meta = pod.get("metadata") or {}
    index = to_allocate.next_pending()
    assert index is not None
    shares = to_allocate.containers[index]
    containers = containers_in_order(pod)
    container = str(containers[index].get("name", index)) if index < len(containers) else str(index)
    key = f"{meta.get('namespace')}/{meta.get('name')}"
    if len(device_ids) != len(shares):
        raise HandshakeError(
            f"the kubelet asks for {len(device_ids)} devices for a container of pod {key}, whose next container "
            f"({container!r}) was given {len(shares)} GPU shares; the pod's {DEVICES_TO_ALLOCATE} annotation does "
            "not match its containers"
        )
    return PendingShare(
        namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")), uid=str(meta.get("uid", "")),
        resource_version=str(meta.get("resourceVersion", "")), container_index=index, container=container,
        shares=shares, remaining=to_allocate.without(index),
    )
