"""kopf's side of the operator: watches feed what the cluster holds into :class:`ClusterView`, one loop reconciles.

kopf owns the watches, their reconnects and back-off; each handler below only records the facts it was
given and marks the view dirty. One reconcile loop (started at start-up) wakes on that, or every
``resync`` seconds, and runs :func:`reconcile_once` in a worker thread: the decisions of
:mod:`kgpu.operator.reconcile`, then the API calls they ask for.

No kopf handler is a timer, daemon or deletion handler on the ClusterPolicy: those make kopf put a finalizer
on it, and an uninstall that removes the operator before the CRD would then hang. The DaemonSets carry an
ownerReference to the ClusterPolicy instead, so deleting the ClusterPolicy (or its CRD) deletes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from kgpu.errors import ConfigError
from kgpu.operator.policy import GROUP, KIND, PLURAL, VERSION
from kgpu.operator.reconcile import (
    MANAGED_BY,
    Action,
    NodeFacts,
    PodFacts,
    PolicyRef,
    Report,
    active_policy,
    daemonset_names,
    desired_objects,
    ignored_status,
    node_facts,
    now_rfc3339,
    plan_apply,
    plan_rollout,
    pod_facts,
    summarize,
)

log = logging.getLogger(__name__)


@dataclass
class ClusterView:
    """What the watches have delivered so far: only the fields the decisions read."""

    namespace: str
    release: str
    base_values: Mapping[str, Any]
    policies: dict[str, PolicyRef] = field(default_factory=dict)
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    nodes: dict[str, NodeFacts] = field(default_factory=dict)
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    daemonsets_ready: dict[str, bool] = field(default_factory=dict)
    pods: dict[str, PodFacts] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    dirty: asyncio.Event | None = None
    reconciles: int = 0

    def mark(self) -> None:
        if self.dirty is not None:
            self.dirty.set()


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (_plain(v) if isinstance(v, Mapping) else v) for k, v in body.items()}


def record_policy(view: ClusterView, event_type: str | None, body: Mapping[str, Any]) -> None:
    meta = body.get("metadata") or {}
    name = str(meta.get("name"))
    with view.lock:
        if event_type == "DELETED" or meta.get("deletionTimestamp"):
            view.policies.pop(name, None)
            view.statuses.pop(name, None)
        else:
            uid = str(meta.get("uid", ""))
            known = view.policies.get(name)
            view.policies[name] = PolicyRef(name=name, uid=uid, generation=int(meta.get("generation") or 0),
                                            created=str(meta.get("creationTimestamp", "")),
                                            spec=_plain(body.get("spec") or {}))
            if known is None or known.uid != uid:
                # Only the operator writes the status, and it keeps what it wrote last: a watch event can still
                # deliver an older one (a node it has let go, in flight again, would be finished twice).
                view.statuses[name] = _plain(body.get("status") or {})
    view.mark()


def record_node(view: ClusterView, event_type: str | None, body: Mapping[str, Any]) -> None:
    name = str((body.get("metadata") or {}).get("name"))
    facts = None if event_type == "DELETED" else node_facts(body, view.namespace)
    with view.lock:
        before = view.nodes.get(name)
        if facts is None:
            view.nodes.pop(name, None)
        else:
            view.nodes[name] = facts
    if before != facts:
        view.mark()


def record_object(view: ClusterView, event_type: str | None, body: Mapping[str, Any]) -> None:
    """An object the operator owns (DaemonSet, ConfigMap): kept whole, for drift checks."""
    kind = str(body.get("kind"))
    name = str((body.get("metadata") or {}).get("name"))
    with view.lock:
        if event_type == "DELETED":
            view.objects.pop((kind, name), None)
            view.daemonsets_ready.pop(name, None)
        else:
            view.objects[(kind, name)] = _plain(body)
            if kind == "DaemonSet":
                status = body.get("status") or {}
                desired = int(status.get("desiredNumberScheduled") or 0)
                view.daemonsets_ready[name] = int(status.get("numberReady") or 0) >= desired
    view.mark()


def record_pod(view: ClusterView, event_type: str | None, body: Mapping[str, Any]) -> None:
    name = str((body.get("metadata") or {}).get("name"))
    facts = None if event_type == "DELETED" else pod_facts(body)
    with view.lock:
        if facts is None:
            view.pods.pop(name, None)
        else:
            view.pods[name] = facts
    view.mark()


# --------------------------------------------------------------------------------------------------
# Carrying decisions out
# --------------------------------------------------------------------------------------------------


class ApiWriter:
    """The API calls the decisions ask for (lightkube, synchronous: run from a worker thread)."""

    def __init__(self, client: Any, namespace: str) -> None:
        from lightkube.generic_resource import create_global_resource

        self.client = client
        self.namespace = namespace
        self.policy_resource = create_global_resource(GROUP, VERSION, KIND, PLURAL)

    def apply(self, action: Action) -> None:
        from lightkube import codecs
        from lightkube.resources.apps_v1 import DaemonSet

        if action.verb == "delete":
            self.client.delete(DaemonSet, action.name, namespace=self.namespace)
            return
        assert action.body is not None
        self.client.apply(codecs.from_dict(action.body), field_manager=MANAGED_BY, force=True)

    def delete_pod(self, name: str) -> None:
        from lightkube.resources.core_v1 import Pod

        self.client.delete(Pod, name, namespace=self.namespace)

    def patch_status(self, policy: str, status: dict[str, Any]) -> None:
        from lightkube.types import PatchType

        self.client.patch(self.policy_resource.Status, policy, {"status": status}, patch_type=PatchType.MERGE)

    def post_event(self, policy: PolicyRef, kind: str, reason: str, message: str) -> None:
        from lightkube.models.core_v1 import EventSource, ObjectReference
        from lightkube.models.meta_v1 import ObjectMeta
        from lightkube.resources.core_v1 import Event

        now = datetime.now(UTC)
        # A cluster-scoped object's events live in the default namespace (the API server refuses others).
        event = Event(
            metadata=ObjectMeta(generateName=f"{policy.name}.", namespace="default"),
            involvedObject=ObjectReference(apiVersion=f"{GROUP}/{VERSION}", kind=KIND, name=policy.name,
                                           uid=policy.uid),
            reason=reason, message=message[:1024], type=kind, source=EventSource(component=MANAGED_BY),
            firstTimestamp=now, lastTimestamp=now, count=1,
        )
        self.client.create(event)


def _api_error(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    message = getattr(status, "message", None)
    return str(message or exc)


def reconcile_once(view: ClusterView, writer: ApiWriter) -> Report | None:
    """One pass: decide from the view, then apply, delete pods, write status and post events."""
    with view.lock:
        policies = list(view.policies.values())
        statuses = {k: dict(v) for k, v in view.statuses.items()}
        nodes = dict(view.nodes)
        objects = dict(view.objects)
        ready = dict(view.daemonsets_ready)
        pods = list(view.pods.values())
        view.reconciles += 1
    now = now_rfc3339()
    active, ignored = active_policy(policies)
    for policy in ignored:
        status = ignored_status(policy, active, now) if active else {}
        old = statuses.get(policy.name, {})
        if old.get("message") != status.get("message"):
            writer.patch_status(policy.name, status)
            with view.lock:
                view.statuses[policy.name] = status
            writer.post_event(policy, "Warning", "Ignored", status["message"])
    if active is None:
        return None
    previous = statuses.get(active.name, {})
    error: ConfigError | None = None
    actions: list[Action] = []
    failed: list[str] = []
    rollout = None
    desired = None
    try:
        desired = desired_objects(active, view.base_values, view.release, view.namespace)
    except ConfigError as exc:
        error = exc
    if desired is not None:
        owned = [name for (kind, name), obj in objects.items() if kind == "DaemonSet" and name in
                 daemonset_names(view.release)]
        actions = plan_apply(desired.objects, objects, owned)
        for action in actions:
            try:
                writer.apply(action)
            except Exception as exc:  # one object's failure is reported; the others still go ahead
                failed.append(f"{action.kind} {action.name}: {_api_error(exc)}")
        if desired.operator_rolls:
            in_flight = (previous.get("rollout") or {}).get("inFlight") or {}
            rollout = plan_rollout(desired.pod_hashes, pods, nodes, in_flight, desired.max_unavailable, now,
                                   desired.validator)
            for pod in rollout.delete_pods:
                try:
                    writer.delete_pod(pod)
                except Exception as exc:  # a pod already gone is fine; others are retried next pass
                    log.info("deleting pod %s: %s", pod, _api_error(exc))
        wanted = set(desired.pod_hashes)
        ready = {name: ok for name, ok in ready.items() if name in wanted}
        ready.update({name: False for name in wanted if name not in ready})
    report = summarize(active, namespace=view.namespace, error=error, nodes=nodes, actions=actions,
                       failed_actions=failed, rollout=rollout, daemonsets_ready=ready, previous=previous, now=now,
                       turned_off=desired.turned_off if desired is not None else frozenset())
    if report.status != previous:
        writer.patch_status(active.name, report.status)
        with view.lock:
            view.statuses[active.name] = report.status
    for kind, reason, message in report.events:
        try:
            writer.post_event(active, kind, reason, message)
        except Exception as exc:  # events are a courtesy; status carries the truth
            log.info("posting event %s: %s", reason, _api_error(exc))
    return report


# --------------------------------------------------------------------------------------------------
# Wiring into kopf
# --------------------------------------------------------------------------------------------------


def build_registry(view: ClusterView, writer_factory: Any, resync_s: float = 10.0) -> kopf.OperatorRegistry:
    """The kopf registry of the operator's handlers, all recording into ``view``."""
    registry = kopf.OperatorRegistry()
    ours = {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/instance": view.release}
    pods_of_release = {"app.kubernetes.io/name": "kgpu", "app.kubernetes.io/instance": view.release}

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    def _policy(type: str | None, body: kopf.Body, **_: Any) -> None:
        record_policy(view, type, body)

    @kopf.on.event("", "v1", "nodes", registry=registry)
    def _node(type: str | None, body: kopf.Body, **_: Any) -> None:
        record_node(view, type, body)

    @kopf.on.event("apps", "v1", "daemonsets", labels=ours, registry=registry)
    def _daemonset(type: str | None, body: kopf.Body, **_: Any) -> None:
        record_object(view, type, body)

    @kopf.on.event("", "v1", "configmaps", labels=ours, registry=registry)
    def _configmap(type: str | None, body: kopf.Body, **_: Any) -> None:
        record_object(view, type, body)

    @kopf.on.event("", "v1", "pods", labels=pods_of_release, registry=registry)
    def _pod(type: str | None, body: kopf.Body, **_: Any) -> None:
        record_pod(view, type, body)

    @kopf.on.startup(registry=registry)
    async def _start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        settings.posting.enabled = False  # events are posted by reconcile_once, about the ClusterPolicy
        settings.watching.server_timeout = 300
        view.dirty = asyncio.Event()
        memo["reconciler"] = asyncio.create_task(_loop(view, writer_factory(), resync_s))

    @kopf.on.cleanup(registry=registry)
    async def _stop(memo: kopf.Memo, **_: Any) -> None:
        task = memo.get("reconciler")
        if task is not None:
            task.cancel()

    return registry


async def _loop(view: ClusterView, writer: ApiWriter, resync_s: float) -> None:
    assert view.dirty is not None
    last_error = ""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(view.dirty.wait(), timeout=resync_s)
        await asyncio.sleep(0.2)  # let a burst of watch events land before deciding
        view.dirty.clear()
        try:
            await asyncio.to_thread(reconcile_once, view, writer)
            last_error = ""
        except Exception as exc:  # the API refused something: say so once, retry on the next pass
            text = f"{type(exc).__name__}: {_api_error(exc)}"
            if text != last_error:
                log.warning("reconcile failed: %s", text)
            last_error = text
            await asyncio.sleep(1.0)
