"""The extender's three verbs — filter, prioritize, bind — over the cluster state and the API.

Wire types are those of ``k8s.io/kube-scheduler/extender/v1`` as kube-scheduler's Go client
marshals them (no JSON tags, so Go's field names): ``ExtenderArgs{Pod, Nodes, NodeNames}``,
``ExtenderFilterResult{Nodes, NodeNames, FailedNodes, FailedAndUnresolvableNodes, Error}``,
``HostPriorityList[{Host, Score}]``, ``ExtenderBindingArgs{PodName, PodNamespace, PodUID, Node}``,
``ExtenderBindingResult{Error}``. Keys are matched case-insensitively on input, as Go decodes them.

**Never two promises for one GPU.** Filter and prioritize only read. Bind decides: it reads the
pod afresh, chooses the GPUs against the node's current usage *and reserves them in one step
under the state lock* (so two binds can never choose from the same free memory), then writes the
assignment onto the pod with a merge patch that carries the pod's UID and resourceVersion (a pod
replaced or assigned by someone else since the read is a conflict, not an overwrite), and only
then creates the Binding. The reservation counts until the pod's watch event shows the binding;
a failed bind drops it.

**One pod in flight per node.** The kubelet names only device IDs in Allocate, so the node's
device plugin identifies the pod being allocated as the only pod on the node that is bound with
shares not yet handed out (``hami.io/bind-phase: allocating``). Bind keeps that true: it binds a
pod to a node only once every earlier pod bound there has been allocated (the plugin set
``bind-phase: success``, or the kubelet posted container statuses, or the pod ended or was
deleted). Binds to one node take turns; binds to different nodes run in parallel.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kgpu.errors import KgpuError
from kgpu.scheduler.assignment import encode
from kgpu.scheduler.fit import NodeUsage, Placement, Refusal, node_score, place
from kgpu.scheduler.names import (
    ASSIGNED_NODE,
    ASSIGNED_TIME,
    BIND_PHASE,
    BIND_TIME,
    DEFAULT_GPU_POLICY,
    DEFAULT_NODE_POLICY,
    DEVICES_ALLOCATED,
    DEVICES_TO_ALLOCATE,
    GPU_POLICY,
    LABEL_CORES,
    LABEL_MEMORY,
    NODE_POLICY,
    PHASE_ALLOCATING,
    PHASE_FAILED,
    POLICIES,
    Policy,
)
from kgpu.scheduler.requests import PodRequest, RequestError, pod_request
from kgpu.scheduler.state import ClusterState, Reservation

log = logging.getLogger(__name__)

FILTER_FAILED_REASON = "FilteringFailed"
"""HAMi's event reason when no node can take a pod's GPU request."""
MAX_EVENT_MESSAGE = 1024


class ApiConflict(KgpuError):
    """The object changed since it was read (HTTP 409)."""


class ApiFailure(KgpuError):
    """The API server refused or could not be reached; the message says which call and why."""


class ClusterApi(Protocol):
    """The writes (and the one read) the extender makes; :class:`kgpu.scheduler.kube.KubeApi` is the real one."""

    def get_pod(self, namespace: str, name: str) -> dict[str, Any]: ...

    def patch_pod_annotations(self, namespace: str, name: str, uid: str, resource_version: str,
                              annotations: Mapping[str, str | None],
                              labels: Mapping[str, str] | None = None) -> dict[str, Any]: ...

    def bind(self, namespace: str, name: str, uid: str, node: str) -> None: ...

    def event(self, pod: Mapping[str, Any], reason: str, message: str, kind: str = "Warning") -> None: ...


@dataclass(frozen=True, slots=True)
class ExtenderConfig:
    node_policy: Policy = DEFAULT_NODE_POLICY
    gpu_policy: Policy = DEFAULT_GPU_POLICY
    default_cores: int = 0
    """HAMi's ``defaultCores``: SMs (percent) for a container that asks for memory but not for SMs."""
    bind_wait: float = 20.0
    """How long a bind waits for the node's previous pod to be allocated (keep it under kube-scheduler's
    ``httpTimeout`` for the extender)."""


def _field(args: Mapping[str, Any], name: str) -> Any:
    """Go's encoding/json matches field names case-insensitively."""
    if name in args:
        return args[name]
    lower = name.lower()
    return next((v for k, v in args.items() if isinstance(k, str) and k.lower() == lower), None)


def _policy(pod: Mapping[str, Any], key: str, default: Policy) -> Policy:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(key)
    for p in POLICIES:
        if value == p:
            return p
    return default


def _annotations(pod: Mapping[str, Any]) -> Mapping[str, str]:
    return (pod.get("metadata") or {}).get("annotations") or {}


def _pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class Extender:
    def __init__(self, state: ClusterState, api: ClusterApi, config: ExtenderConfig | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.api = api
        self.config = config or ExtenderConfig()
        self._wall_clock = wall_clock
        self._turns: dict[str, threading.Lock] = {}
        self._turns_lock = threading.Lock()
        self._reported: OrderedDict[str, str] = OrderedDict()
        self._reported_lock = threading.Lock()

    # -- filter ------------------------------------------------------------------------------------------
    def filter(self, args: Mapping[str, Any]) -> dict[str, Any]:
        pod = _field(args, "Pod")
        names, nodes = self._candidates(args)
        if not isinstance(pod, Mapping):
            return {"NodeNames": None, "FailedNodes": None, "Error": "ExtenderArgs without a Pod"}
        if not self.state.synced.is_set():
            return {"NodeNames": None, "FailedNodes": None,
                    "Error": "kgpu scheduler extender: still reading pods and nodes from the API server"}
        try:
            request = pod_request(pod, self.config.default_cores)
        except RequestError as exc:
            message = f"GPU request can never be met: {exc}"
            self._report(pod, message)
            return self._filter_result(names, nodes, [], {}, dict.fromkeys(names, message))
        if not request.wants_gpu:
            return self._filter_result(names, nodes, names, {}, {})
        policy = _policy(pod, GPU_POLICY, self.config.gpu_policy)
        passed: list[str] = []
        failed: dict[str, str] = {}
        unresolvable: dict[str, str] = {}
        for name in names:
            outcome = self._place(name, request, policy, pod)
            if isinstance(outcome, Refusal):
                (unresolvable if outcome.unresolvable else failed)[name] = outcome.reason
            else:
                passed.append(name)
        if not passed and names:
            details = "; ".join(f"{n}: {r}" for n, r in {**failed, **unresolvable}.items())
            self._report(pod, f"no node can take the pod's GPU shares: {details}")
        return self._filter_result(names, nodes, passed, failed, unresolvable)

    def _candidates(self, args: Mapping[str, Any]) -> tuple[list[str], list[Mapping[str, Any]] | None]:
        names = _field(args, "NodeNames")
        if isinstance(names, list):
            return [str(n) for n in names], None
        node_list = _field(args, "Nodes")
        items = (node_list or {}).get("items") if isinstance(node_list, Mapping) else None
        if isinstance(items, list):
            for n in items:  # not nodeCacheCapable: the nodes come with the request
                if isinstance(n, Mapping):
                    self.state.upsert_node(n)
            return [str((n.get("metadata") or {}).get("name", "")) for n in items if isinstance(n, Mapping)], items
        return [], None

    @staticmethod
    def _filter_result(names: Sequence[str], nodes: list[Mapping[str, Any]] | None, passed: Sequence[str],
                       failed: Mapping[str, str], unresolvable: Mapping[str, str]) -> dict[str, Any]:
        result: dict[str, Any] = {"FailedNodes": dict(failed), "FailedAndUnresolvableNodes": dict(unresolvable),
                                  "Error": ""}
        if nodes is None:
            result["NodeNames"] = list(passed)
        else:
            keep = set(passed)
            result["Nodes"] = {"apiVersion": "v1", "kind": "NodeList",
                               "items": [n for n in nodes if (n.get("metadata") or {}).get("name") in keep]}
        return result

    def _place(self, node: str, request: PodRequest, policy: Policy, pod: Mapping[str, Any],
               usage: NodeUsage | None = None) -> Placement | Refusal | None:
        """A placement on a dynamic node; None when a node without dynamic GPUs can serve the pod as is."""
        usage = usage or self.state.usage(node)
        if usage is None:
            if not request.needs_dynamic:
                return None  # whole GPUs: kube-scheduler counts nvidia.com/gpu itself
            record = self.state.node(node)
            why = record.error if record is not None and record.error else \
                "node has no GPUs shared dynamically (no kgpu.io/dynamic-gpus annotation from its device plugin)"
            return Refusal(f"{why}; the pod asks for part of a GPU", unresolvable=True)
        return place(usage, request, policy, _annotations(pod))

    # -- prioritize --------------------------------------------------------------------------------------
    def prioritize(self, args: Mapping[str, Any]) -> list[dict[str, Any]]:
        pod = _field(args, "Pod")
        names, _ = self._candidates(args)
        if not isinstance(pod, Mapping):
            return [{"Host": n, "Score": 0} for n in names]
        try:
            request = pod_request(pod, self.config.default_cores)
        except RequestError:
            return [{"Host": n, "Score": 0} for n in names]
        node_policy = _policy(pod, NODE_POLICY, self.config.node_policy)
        gpu_policy = _policy(pod, GPU_POLICY, self.config.gpu_policy)
        out = []
        for name in names:
            outcome = self._place(name, request, gpu_policy, pod) if request.wants_gpu else None
            score = node_score(outcome.usage, node_policy) if isinstance(outcome, Placement) else 0
            out.append({"Host": name, "Score": score})
        return out

    # -- bind ----------------------------------------------------------------------------------------------
    def bind(self, args: Mapping[str, Any]) -> dict[str, Any]:
        name = str(_field(args, "PodName") or "")
        namespace = str(_field(args, "PodNamespace") or "")
        uid = str(_field(args, "PodUID") or "")
        node = str(_field(args, "Node") or "")
        if not (name and namespace and node):
            return {"Error": "ExtenderBindingArgs needs PodName, PodNamespace and Node"}
        try:
            self._bind(namespace, name, uid, node)
        except KgpuError as exc:
            log.warning("bind failed", extra={"pod": f"{namespace}/{name}", "node": node, "error": str(exc)})
            return {"Error": str(exc)}
        return {"Error": ""}

    def _bind(self, namespace: str, name: str, uid: str, node: str) -> None:
        pod = self.api.get_pod(namespace, name)
        meta = pod.get("metadata") or {}
        if uid and meta.get("uid") != uid:
            raise ApiFailure(f"pod {namespace}/{name} was replaced (UID {meta.get('uid')}, scheduled {uid})")
        uid = str(meta.get("uid", uid))
        try:
            request = pod_request(pod, self.config.default_cores)
        except RequestError as exc:
            raise ApiFailure(str(exc)) from None
        if not request.wants_gpu or self.state.usage(node) is None:
            if request.needs_dynamic:
                raise ApiFailure(f"node {node} has no GPUs shared dynamically; pod {namespace}/{name} asks for "
                                 "part of a GPU")
            self.api.bind(namespace, name, uid, node)
            return
        policy = _policy(pod, GPU_POLICY, self.config.gpu_policy)
        placement = self._reserve(node, uid, namespace, name, request, policy, pod)
        written: str | None = None
        try:
            with self._turn(node):
                busy = self.state.wait_idle(node, uid, self.config.bind_wait)
                if busy:
                    waiting = ", ".join(f"{key} (bound {age:.0f} s ago)" if age else key for key, _, age in busy)
                    raise ApiFailure(f"node {node} is still allocating {waiting}: its kubelet has not called the "
                                     "device plugin's Allocate yet; the pod is retried")
                written = self._write_assignment(pod, node, placement)
                self.api.bind(namespace, name, uid, node)
                self.state.mark_bound(uid)
        except KgpuError:
            self.state.release(uid)
            if written is not None:
                self._abandon(namespace, name, uid, written)
            raise
        shares = placement.assignment.shares
        log.info("bound", extra={"pod": f"{namespace}/{name}", "node": node,
                                 "shares": [f"{s.uuid}:{s.memory_mib}MiB:{s.cores}%" for s in shares]})

    def _reserve(self, node: str, uid: str, namespace: str, name: str, request: PodRequest, policy: Policy,
                 pod: Mapping[str, Any]) -> Placement:
        """Choose the GPUs and reserve them in one step under the state lock."""
        with self.state.changed:
            self.state.release(uid)  # a previous attempt of this pod
            outcome = self._place(node, request, policy, pod)
            if not isinstance(outcome, Placement):
                why = outcome.reason if outcome is not None else "no dynamic GPUs"
                raise ApiFailure(f"pod {namespace}/{name} no longer fits on node {node}: {why}")
            self.state.reserve(Reservation(uid=uid, namespace=namespace, name=name, node=node,
                                           assignment=outcome.assignment, since=time.monotonic()))
        return outcome

    def _turn(self, node: str) -> threading.Lock:
        with self._turns_lock:
            return self._turns.setdefault(node, threading.Lock())

    def _write_assignment(self, pod: Mapping[str, Any], node: str, placement: Placement) -> str:
        """Write the assignment onto the pod; returns the pod's resourceVersion after the write."""
        meta = pod.get("metadata") or {}
        namespace, name, uid = str(meta.get("namespace")), str(meta.get("name")), str(meta.get("uid"))
        now = str(int(self._wall_clock()))
        text = encode(placement.assignment)
        annotations: dict[str, str | None] = {
            ASSIGNED_NODE: node, ASSIGNED_TIME: now, DEVICES_ALLOCATED: text, DEVICES_TO_ALLOCATE: text,
            BIND_PHASE: PHASE_ALLOCATING, BIND_TIME: now,
        }
        shares = placement.assignment.shares
        labels = {LABEL_MEMORY: str(sum(s.memory_mib for s in shares)), LABEL_CORES: str(sum(s.cores for s in shares))}
        version = str(meta.get("resourceVersion", ""))
        for attempt in (1, 2):
            try:
                patched = self.api.patch_pod_annotations(namespace, name, uid, version, annotations, labels)
                return str((patched.get("metadata") or {}).get("resourceVersion", ""))
            except ApiConflict:
                if attempt == 2:
                    raise
            # Pending pods change often (kube-scheduler writes their conditions): read again, and
            # write only if the pod is still ours to assign.
            fresh = self.api.get_pod(namespace, name)
            fmeta = fresh.get("metadata") or {}
            if fmeta.get("uid") != uid or (fresh.get("spec") or {}).get("nodeName"):
                raise ApiFailure(f"pod {namespace}/{name} was replaced or bound elsewhere while being assigned")
            version = str(fmeta.get("resourceVersion", ""))
        raise AssertionError("unreachable")

    def _abandon(self, namespace: str, name: str, uid: str, version: str) -> None:
        """Mark an assignment whose binding failed, so no device plugin ever hands it out (best effort:
        the pod is not bound, so no kubelet allocates it anyway, and its next bind overwrites it)."""
        try:
            self.api.patch_pod_annotations(namespace, name, uid, version, {BIND_PHASE: PHASE_FAILED})
        except KgpuError as exc:
            log.info("could not mark a failed bind", extra={"pod": f"{namespace}/{name}", "error": str(exc)})

    # -- events -------------------------------------------------------------------------------------------
    def _report(self, pod: Mapping[str, Any], message: str) -> None:
        """One Warning event per pod and distinct message (kube-scheduler retries a Pending pod often)."""
        uid = str((pod.get("metadata") or {}).get("uid", ""))
        message = message if len(message) <= MAX_EVENT_MESSAGE else message[: MAX_EVENT_MESSAGE - 1] + "…"
        with self._reported_lock:
            if self._reported.get(uid) == message:
                return
            self._reported[uid] = message
            self._reported.move_to_end(uid)
            while len(self._reported) > 10_000:
                self._reported.popitem(last=False)
        log.info("pod fits nowhere", extra={"pod": _pod_key(pod), "reason": message})
        try:
            self.api.event(pod, FILTER_FAILED_REASON, message)
        except KgpuError as exc:
            log.warning("could not record an event", extra={"pod": _pod_key(pod), "error": str(exc)})
