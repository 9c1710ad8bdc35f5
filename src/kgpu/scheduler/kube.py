"""The extender's I/O with the API server (lightkube): pod and node reflectors, and its few writes.

* :func:`reflect` lists a resource, hands the whole list to the state, then watches from that
  list's resourceVersion and hands over every event. Any error (including ``410 Gone``) starts
  again from a fresh list, so the state is rebuilt from the API server rather than patched up —
  the same path as a restart. Failures are logged once per distinct cause.
* :class:`KubeApi` makes the extender's writes: the pod's assignment (a JSON merge patch that
  carries ``metadata.uid`` and ``metadata.resourceVersion``, so the API server refuses it if the
  pod changed since it was read), the Binding (with the pod's UID as a precondition, as
  kube-scheduler's own binder sends it) and events.

RBAC (the chart's ClusterRole): pods get/list/watch/patch, pods/binding create, nodes
get/list/watch, events create/patch.

:class:`NodeShares` is the device plugin's side: it publishes the node's dynamically shared GPUs
(annotation ``kgpu.io/dynamic-gpus``) and, in Allocate, finds the pod being allocated
(:func:`kgpu.scheduler.handshake.pending_allocation` over a fresh list of the node's pods) and records
its container as handed out, with the pod's UID and resourceVersion as preconditions. RBAC: pods
list/patch, nodes patch.
"""

from __future__ import annotations

import datetime
import logging
import threading
import uuid as uuidlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
from lightkube import ApiError
from lightkube.core.resource import NamespacedResource
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Node, Pod
from lightkube.types import PatchType

from kgpu.kubeapi import kube_client as _client_from
from kgpu.kubeapi import transport_errors
from kgpu.scheduler.extender import ApiConflict, ApiFailure
from kgpu.scheduler.handshake import HandshakeError, PendingShare, pending_allocation
from kgpu.scheduler.inventory import NodeGPU, encode_gpus
from kgpu.scheduler.names import NODE_GPUS
from kgpu.scheduler.state import ClusterState

log = logging.getLogger(__name__)

COMPONENT = "kgpu-scheduler-extender"
RELIST_BACKOFF_MAX = 30.0


def kube_client(kubeconfig: Path | None = None) -> Any:
    """A lightkube client: ``kubeconfig``, else in-cluster, else ``$KUBECONFIG``, else ``~/.kube/config``."""
    return _client_from(kubeconfig, COMPONENT)


def _api_error(exc: Exception, what: str) -> Exception:
    if isinstance(exc, ApiError):
        code, message = exc.status.code, exc.status.message
        if code == 409:
            return ApiConflict(f"{what}: conflict: {message}")
        return ApiFailure(f"{what}: {code} {message}")
    return ApiFailure(f"{what}: cannot reach the API server: {exc}")


class KubeApi:
    """:class:`kgpu.scheduler.extender.ClusterApi` over a lightkube client."""

    def __init__(self, client: Any, instance: str = "") -> None:
        self.client = client
        self.instance = instance or COMPONENT

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            return dict(self.client.get(Pod, name, namespace=namespace).to_dict())
        except (ApiError, *transport_errors()) as exc:  # type: ignore[misc]
            raise _api_error(exc, f"reading pod {namespace}/{name}") from None

    def patch_pod_annotations(self, namespace: str, name: str, uid: str, resource_version: str,
                              annotations: Mapping[str, str | None],
                              labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"uid": uid, "annotations": dict(annotations)}
        if labels:
            meta["labels"] = dict(labels)
        if resource_version:
            meta["resourceVersion"] = resource_version
        try:
            patched = self.client.patch(Pod, name, {"metadata": meta}, namespace=namespace,
                                        patch_type=PatchType.MERGE)
        except (ApiError, *transport_errors()) as exc:  # type: ignore[misc]
            raise _api_error(exc, f"writing the GPU assignment of pod {namespace}/{name}") from None
        return dict(patched.to_dict())

    def bind(self, namespace: str, name: str, uid: str, node: str) -> None:
        binding = Pod.Binding(metadata=ObjectMeta(name=name, namespace=namespace, uid=uid or None),
                              target=ObjectReference(apiVersion="v1", kind="Node", name=node))
        try:
            self.client.create(binding, name=name, namespace=namespace)
        except msgspec.ValidationError:
            # The API server answers a binding with a Status (201), which lightkube tries to read as a
            # Binding; it checked the HTTP status first, so the pod is bound.
            return
        except (ApiError, *transport_errors()) as exc:  # type: ignore[misc]
            raise _api_error(exc, f"binding pod {namespace}/{name} to node {node}") from None

    def event(self, pod: Mapping[str, Any], reason: str, message: str, kind: str = "Warning") -> None:
        meta = pod.get("metadata") or {}
        namespace, name = str(meta.get("namespace", "default")), str(meta.get("name", ""))
        now = datetime.datetime.now(datetime.UTC)
        event = Event(
            metadata=ObjectMeta(name=f"{name}.{uuidlib.uuid4().hex[:16]}", namespace=namespace),
            involvedObject=ObjectReference(apiVersion="v1", kind="Pod", name=name, namespace=namespace,
                                           uid=str(meta.get("uid", "")) or None),
            reason=reason, message=message, type=kind, count=1, firstTimestamp=now, lastTimestamp=now,
            source=EventSource(component=COMPONENT), reportingComponent=COMPONENT,
            reportingInstance=self.instance,
        )
        try:
            self.client.create(event, namespace=namespace)
        except (ApiError, *transport_errors()) as exc:  # type: ignore[misc]
            raise _api_error(exc, f"recording an event on pod {namespace}/{name}") from None


def reflect(
    client: Any,
    resource: type,
    replace: Callable[[Iterable[Mapping[str, Any]]], None],
    upsert: Callable[[Mapping[str, Any]], None],
    delete: Callable[[Mapping[str, Any]], None],
    stop: threading.Event,
    listed: Callable[[], None] = lambda: None,
) -> None:
    """List then watch ``resource`` until ``stop``; any error starts over from a fresh list."""

    kind = resource.__name__
    # lightkube lists the client's own namespace unless told "*": every namespace
    where = {"namespace": "*"} if issubclass(resource, NamespacedResource) else {}
    backoff = 0.5
    last_cause = ""
    while not stop.is_set():
        try:
            items = client.list(resource, chunk_size=500, **where)
            objects = [o.to_dict() for o in items]
            version = items.resourceVersion
            if stop.is_set():
                return
            replace(objects)
            listed()
            backoff, last_cause = 0.5, ""
            log.info("listed", extra={"resource": kind, "count": len(objects), "resource_version": version})
            for event_type, obj in client.watch(resource, resource_version=version, **where):
                if stop.is_set():
                    return
                data = obj.to_dict()
                if event_type == "DELETED":
                    delete(data)
                else:
                    upsert(data)
        except (ApiError, msgspec.MsgspecError, *transport_errors()) as exc:  # type: ignore[misc]
            # an object lightkube cannot read is a failed list or watch like any other: start over
            cause = f"{type(exc).__name__}: {getattr(getattr(exc, 'status', None), 'message', None) or exc}"
            if cause != last_cause:
                log.warning("watch ended; listing again", extra={"resource": kind, "error": cause[:300],
                                                                  "retry_s": backoff})
                last_cause = cause
            stop.wait(backoff)  # the daemon runtime sets stop on SIGTERM from its own thread
            backoff = min(backoff * 2, RELIST_BACKOFF_MAX)


def start_reflectors(client: Any, state: ClusterState, stop: threading.Event) -> list[threading.Thread]:
    """Pods and nodes into ``state``; ``state.synced`` is set once both have been listed."""

    done: set[str] = set()
    lock = threading.Lock()

    def listed(kind: str) -> Callable[[], None]:
        def mark() -> None:
            with lock:
                done.add(kind)
                if done == {"pods", "nodes"}:
                    state.synced.set()
        return mark

    def uid_of(pod: Mapping[str, Any]) -> str:
        return str((pod.get("metadata") or {}).get("uid", ""))

    def name_of(node: Mapping[str, Any]) -> str:
        return str((node.get("metadata") or {}).get("name", ""))

    threads = [
        threading.Thread(target=reflect, name="reflect-pods", daemon=True, args=(
            client, Pod, state.replace_pods, state.upsert_pod, lambda p: state.delete_pod(uid_of(p)), stop,
            listed("pods"))),
        threading.Thread(target=reflect, name="reflect-nodes", daemon=True, args=(
            client, Node, state.replace_nodes, state.upsert_node, lambda n: state.delete_node(name_of(n)), stop,
            listed("nodes"))),
    ]
    for t in threads:
        t.start()
    return threads


def withdraw_node_gpus(client: Any, node: str | None = None) -> list[str]:
    """Remove ``kgpu.io/dynamic-gpus`` from ``node``, or from every Node carrying it; returns the nodes changed.

    The device plugin withdraws it as it stops, but ``helm uninstall`` deletes the plugin's RBAC while its pods
    are still terminating (seen on the lab: 403 on the patch), so the chart's post-delete hook runs this too.
    The extender would otherwise keep offering the GPUs of a node that no longer serves shares."""
    try:
        nodes = [client.get(Node, node)] if node is not None else list(client.list(Node))
        changed = []
        for obj in nodes:
            if NODE_GPUS in (obj.metadata.annotations or {}):
                client.patch(Node, obj.metadata.name, {"metadata": {"annotations": {NODE_GPUS: None}}},
                             patch_type=PatchType.MERGE)
                changed.append(str(obj.metadata.name))
    except (ApiError, *transport_errors()) as exc:  # type: ignore[misc]
        raise _api_error(exc, f"withdrawing the dynamic GPUs of {f'node {node}' if node else 'every node'}") from None
    return changed


class NodeShares:
    """The device plugin's API calls for the dynamic shares of ``node``."""

    ATTEMPTS = 3

    def __init__(self, client: Any, node: str) -> None:
        self.client = client
        self.node = node

    def publish(self, gpus: Sequence[NodeGPU]) -> None:
        """Write the node's dynamically shared GPUs (and their health) where the extender reads them."""

        patch = {"metadata": {"annotations": {NODE_GPUS: encode_gpus(gpus) if gpus else None}}}
        try:
            self.client.patch(Node, self.node, patch, patch_type=PatchType.MERGE)
        except (ApiError, *transport_errors()) as exc:  # type: ignore[misc]
            raise _api_error(exc, f"publishing the GPUs of node {self.node}") from None

    def _pods(self) -> list[dict[str, Any]]:
        try:
            return [p.to_dict() for p in self.client.list(Pod, namespace="*", fields={"spec.nodeName": self.node})]
        except msgspec.MsgspecError as exc:
            raise ApiFailure(f"listing the pods of node {self.node}: a pod could not be read: {exc}") from None
        except (ApiError, *transport_errors()) as exc:  # type: ignore[misc]
            raise _api_error(exc, f"listing the pods of node {self.node}") from None

    def peek(self, size: int) -> PendingShare:
        """The pod being allocated (for GetPreferredAllocation), without recording anything."""
        return pending_allocation(self._pods(), self.node, ["?"] * size)

    def claim(self, device_ids: Sequence[str]) -> PendingShare:
        """The pod being allocated and its next container's shares, recorded as handed out on the pod."""

        for attempt in range(1, self.ATTEMPTS + 1):
            pending = pending_allocation(self._pods(), self.node, device_ids)
            patch = {"metadata": {"uid": pending.uid, "resourceVersion": pending.resource_version,
                                  "annotations": pending.patch()}}
            try:
                self.client.patch(Pod, pending.name, patch, namespace=pending.namespace, patch_type=PatchType.MERGE)
                return pending
            except (ApiError, *transport_errors()) as exc:  # type: ignore[misc]
                error = _api_error(exc, f"recording the GPU share of pod {pending.key} as handed out")
                if not isinstance(error, ApiConflict) or attempt == self.ATTEMPTS:
                    raise error from None
        raise HandshakeError("unreachable")
