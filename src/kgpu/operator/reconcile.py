"""What the operator decides, as plain functions: facts from the API server in, objects, actions and status out.

Nothing here talks to the API server; :mod:`kgpu.operator.handlers` feeds these from kopf's watches and
carries out what they return. A story, as the tests tell it::

    desired = desired_objects(policy, base_values, release="kgpu", namespace="kube-system")
    plan = plan_apply(desired.objects, actual)          # created / repaired / deleted, each with a reason
    rollout = plan_rollout(desired.pod_hashes, pods, nodes, in_flight, desired.max_unavailable, now)
    status = summarize(...)                              # ready / notReady / error, per-node stages, fixes
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from kgpu import __version__
from kgpu.errors import ConfigError
from kgpu.nodestatus import (
    CONDITION_TYPES,
    Stage,
    StageResult,
    first_failing,
    is_gpu_node,
    node_stages,
)
from kgpu.operator.components import COMPONENTS, documents
from kgpu.operator.policy import (
    COMPONENT_VALUES,
    GROUP,
    KIND,
    VERSION,
    check_effective_config,
    parse_spec,
    to_values,
)
from kgpu.operator.template import Context, evaluate_document, go_json
from kgpu.operator.values import coalesce

MANAGED_BY = "kgpu-operator"
TEMPLATE_HASH = "kgpu.io/template-hash"
"""Pod-template annotation: which rendering a pod was made from (a pod whose hash differs is out of date)."""
MAX_NODES_IN_STATUS = 20
ROLLOUT_STUCK_SECONDS = 600.0


# --------------------------------------------------------------------------------------------------
# Facts, as the watches deliver them (kept small: 500 nodes must fit in a few MB)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeFacts:
    name: str
    stages: tuple[StageResult, ...]

    @property
    def ready(self) -> bool:
        return all(s.ok is True for s in self.stages)

    def stage(self, stage: Stage) -> StageResult:
        return next(s for s in self.stages if s.stage is stage)


def node_facts(node: Mapping[str, Any], namespace: str = "") -> NodeFacts | None:
    """The stages of a GPU node (fixes name kgpu's ``namespace``); None for a node that is not one."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    if not is_gpu_node(labels):
        return None
    return NodeFacts(name=str(node["metadata"]["name"]), stages=tuple(node_stages(node, namespace)))


@dataclass(frozen=True, slots=True)
class PodFacts:
    name: str
    node: str
    daemonset: str
    template_hash: str
    ready: bool
    deleting: bool


def pod_facts(pod: Mapping[str, Any]) -> PodFacts | None:
    meta = pod.get("metadata") or {}
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("kind") == "DaemonSet"), None)
    if owner is None:
        return None
    status = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return PodFacts(
        name=str(meta.get("name")),
        node=str((pod.get("spec") or {}).get("nodeName") or ""),
        daemonset=str(owner.get("name")),
        template_hash=str((meta.get("annotations") or {}).get(TEMPLATE_HASH, "")),
        ready=ready,
        deleting=bool(meta.get("deletionTimestamp")),
    )


@dataclass(frozen=True, slots=True)
class PolicyRef:
    name: str
    uid: str
    generation: int
    created: str
    spec: Mapping[str, Any]


def active_policy(policies: Sequence[PolicyRef]) -> tuple[PolicyRef | None, list[PolicyRef]]:
    """The one ClusterPolicy in charge (the oldest) and the ones ignored because another came first."""
    ordered = sorted(policies, key=lambda p: (p.created, p.name))
    return (ordered[0] if ordered else None), ordered[1:]


# --------------------------------------------------------------------------------------------------
# What should exist
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Desired:
    objects: tuple[dict[str, Any], ...]
    """The config ConfigMap first, then one DaemonSet per enabled component."""
    pod_hashes: Mapping[str, str]
    """DaemonSet name → the template hash its current pods must carry."""
    operator_rolls: bool
    """True when the operator rolls changes out itself (RollingUpdate), False for OnDelete."""
    max_unavailable: int | str
    validator: bool
    turned_off: frozenset[str] = frozenset()
    """ClusterPolicy sections whose component the spec turns off (devicePlugin, gfd, validator)."""


def _owner(policy: PolicyRef) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": policy.name, "uid": policy.uid,
            "controller": True, "blockOwnerDeletion": False}


def template_hash(template: Mapping[str, Any]) -> str:
    return hashlib.sha256(go_json(template).encode()).hexdigest()[:16]


def desired_objects(policy: PolicyRef, base: Mapping[str, Any], release: str, namespace: str) -> Desired:
    """The objects the ClusterPolicy asks for; a ConfigError names what in its spec is wrong."""
    spec = parse_spec(dict(policy.spec))
    # The ClusterPolicy's status is built from the validator's reports: on unless the spec turns it off.
    values = to_values(spec, coalesce(dict(base), {"validator": {"enabled": True}}))
    check_effective_config(values, spec)
    strategy = values.get("updateStrategy") or {"type": "RollingUpdate"}
    operator_rolls = strategy.get("type", "RollingUpdate") == "RollingUpdate"
    max_unavailable = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1)
    # The operator is the rolling updater: the DaemonSet controller only replaces pods the operator deletes.
    values["updateStrategy"] = {"type": "OnDelete"}
    ctx = Context(values=values, release=release, namespace=namespace, managed_by=MANAGED_BY,
                  app_version=__version__)
    labels = {
        "app.kubernetes.io/name": "kgpu", "app.kubernetes.io/instance": release,
        "app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/part-of": "kgpu",
    }
    fullname = str(ctx.release if "kgpu" in ctx.release else f"{ctx.release}-kgpu")[:50].rstrip("-")
    configmap = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": f"{fullname}-config", "namespace": namespace, "labels": labels,
                     "ownerReferences": [_owner(policy)]},
        "data": {"config.yaml": yaml.safe_dump(values.get("config") or {}, sort_keys=False)},
    }
    objects: list[dict[str, Any]] = [configmap]
    hashes: dict[str, str] = {}
    for doc in documents():
        ds = evaluate_document(doc, ctx)
        if ds is None:
            continue
        template = ds["spec"]["template"]
        digest = template_hash(template)
        template["metadata"].setdefault("annotations", {})[TEMPLATE_HASH] = digest
        ds["metadata"]["ownerReferences"] = [_owner(policy)]
        hashes[ds["metadata"]["name"]] = digest
        objects.append(ds)
    off = frozenset(section for section, target in COMPONENT_VALUES.items()
                    if section in STAGE_COMPONENTS and not (values.get(target) or {}).get("enabled"))
    return Desired(tuple(objects), hashes, operator_rolls, max_unavailable,
                   validator=bool((values.get("validator") or {}).get("enabled")), turned_off=off)


def daemonset_names(release: str) -> set[str]:
    fullname = (release if "kgpu" in release else f"{release}-kgpu")[:50].rstrip("-")
    return {f"{fullname}-{suffix}" for suffix in COMPONENTS.values()}


# --------------------------------------------------------------------------------------------------
# Drift: what to create, repair or delete
# --------------------------------------------------------------------------------------------------


def covers(actual: Any, desired: Any) -> bool:
    """True when ``actual`` has everything ``desired`` sets (the API server adds defaults; it may not change ours)."""
    if isinstance(desired, Mapping):
        return isinstance(actual, Mapping) and all(k in actual and covers(actual[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(actual, list) and len(actual) == len(desired) and all(
            covers(a, d) for a, d in zip(actual, desired, strict=True))
    if isinstance(desired, int | float) and isinstance(actual, int | float) and not isinstance(desired, bool):
        return bool(actual == desired)
    return bool(actual == desired)


@dataclass(frozen=True, slots=True)
class Action:
    verb: str
    """apply (create or repair) or delete."""
    kind: str
    name: str
    reason: str
    body: dict[str, Any] | None = None


def _comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    keep = {k: obj[k] for k in ("spec", "data") if k in obj}
    meta = obj.get("metadata") or {}
    keep["metadata"] = {k: meta[k] for k in ("labels", "ownerReferences") if k in meta}
    return keep


def plan_apply(desired: Sequence[dict[str, Any]], actual: Mapping[tuple[str, str], Mapping[str, Any]],
               owned_daemonsets: Sequence[str]) -> list[Action]:
    """Apply what is missing or was changed by hand; delete our DaemonSets no longer wanted."""
    actions: list[Action] = []
    wanted: set[tuple[str, str]] = set()
    for obj in desired:
        key = (obj["kind"], obj["metadata"]["name"])
        wanted.add(key)
        current = actual.get(key)
        if current is None:
            actions.append(Action("apply", key[0], key[1], "missing: created", obj))
        elif not covers(current, _comparable(obj)):
            actions.append(Action("apply", key[0], key[1], "changed outside the ClusterPolicy: repaired", obj))
    for name in sorted(owned_daemonsets):
        if ("DaemonSet", name) not in wanted:
            actions.append(Action("delete", "DaemonSet", name, "component disabled in the ClusterPolicy: deleted"))
    return actions


# --------------------------------------------------------------------------------------------------
# Rollout: node by node within maxUnavailable, each node validating again before the next
# --------------------------------------------------------------------------------------------------


def max_unavailable_nodes(value: int | str, gpu_nodes: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return max(1, math.floor(gpu_nodes * int(value[:-1]) / 100))
    return max(1, int(value))


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    delete_pods: tuple[str, ...]
    in_flight: Mapping[str, str]
    """Node → when its pods were restarted (RFC 3339): waiting for it to validate again."""
    started: tuple[str, ...]
    finished: tuple[str, ...]
    outdated_nodes: int
    stuck: tuple[str, ...] = ()


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def node_validated_since(facts: NodeFacts | None, since: str, validator: bool) -> bool:
    """The node reported every stage passing after ``since`` (with no validator: its stages pass)."""
    if facts is None:
        return False
    if not validator:
        return facts.stage(Stage.ALLOCATABLE).ok is True
    if not facts.ready:
        return False
    beat = _parse_time(facts.stage(Stage.VALIDATION).heartbeat)
    start = _parse_time(since)
    return beat is not None and start is not None and beat >= start


def plan_rollout(pod_hashes: Mapping[str, str], pods: Sequence[PodFacts], nodes: Mapping[str, NodeFacts],
                 in_flight: Mapping[str, str], max_unavailable: int | str, now: str,
                 validator: bool = True) -> RolloutPlan:
    """Which pods to delete now so that at most ``max_unavailable`` nodes are being updated at once."""
    by_node: dict[str, list[PodFacts]] = {}
    for pod in pods:
        if pod.daemonset in pod_hashes and pod.node:
            by_node.setdefault(pod.node, []).append(pod)

    def outdated(node: str) -> list[PodFacts]:
        return [p for p in by_node.get(node, []) if not p.deleting and p.template_hash != pod_hashes[p.daemonset]]

    def settled(node: str) -> bool:
        mine = by_node.get(node, [])
        return all(p.ready and not p.deleting and p.template_hash == pod_hashes[p.daemonset] for p in mine)

    still: dict[str, str] = {}
    finished: list[str] = []
    stuck: list[str] = []
    now_t = _parse_time(now)
    for node, since in in_flight.items():
        if node not in nodes and node not in by_node:
            finished.append(node)  # the node left the cluster
        elif settled(node) and node_validated_since(nodes.get(node), since, validator):
            finished.append(node)
        else:
            still[node] = since
            start = _parse_time(since)
            if now_t and start and (now_t - start).total_seconds() > ROLLOUT_STUCK_SECONDS:
                stuck.append(node)
    waiting = sorted(n for n in by_node if n not in still and outdated(n))
    budget = max_unavailable_nodes(max_unavailable, max(len(nodes), 1)) - len(still)
    started = waiting[: max(budget, 0)]
    delete = [p.name for n in started for p in outdated(n)]
    for node in started:
        still[node] = now
    return RolloutPlan(tuple(delete), still, tuple(started), tuple(finished), len(waiting), tuple(stuck))


# --------------------------------------------------------------------------------------------------
# Status an admin reads
# --------------------------------------------------------------------------------------------------


def _condition(kind: str, ok: bool, reason: str, message: str, generation: int, now: str,
               previous: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    status = "True" if ok else "False"
    prev = previous.get(kind)
    since = prev.get("lastTransitionTime", now) if prev and prev.get("status") == status else now
    return {"type": kind, "status": status, "reason": reason, "message": message[:1024],
            "lastTransitionTime": since, "observedGeneration": generation}


STAGE_COMPONENTS: dict[str, tuple[Stage, ...]] = {
    "devicePlugin": (Stage.DEVICE_PLUGIN, Stage.ALLOCATABLE),
    "gfd": (Stage.LABELS,),
    "validator": (Stage.DRIVER, Stage.RUNTIME, Stage.DEVICE_PLUGIN, Stage.VALIDATION),
}
"""The ClusterPolicy section whose component makes each stage pass (the validator reports four of them)."""


def spec_fix(stage: Stage, turned_off: frozenset[str], policy: str) -> str:
    """The fix when the ClusterPolicy itself turned off the component a failing stage needs, else ''."""
    for section, stages in STAGE_COMPONENTS.items():
        if section in turned_off and stage in stages:
            patch = json.dumps({"spec": {section: {"enabled": True}}}, separators=(",", ":"))
            return (f"spec.{section}.enabled is false in ClusterPolicy {policy}: "
                    f"kubectl patch clusterpolicies.kgpu.io {policy} --type merge -p '{patch}'")
    return ""


def _edit_fix(policy: str) -> str:
    return (f"Fix: correct it with kubectl edit clusterpolicies.kgpu.io {policy}; "
            "until then the nodes keep running the last valid spec.")


@dataclass(frozen=True, slots=True)
class Report:
    status: dict[str, Any]
    events: tuple[tuple[str, str, str], ...] = field(default=())
    """(type Normal|Warning, reason, message) to post on the ClusterPolicy."""


def summarize(policy: PolicyRef, *, namespace: str, error: ConfigError | None, nodes: Mapping[str, NodeFacts],
              actions: Sequence[Action], failed_actions: Sequence[str], rollout: RolloutPlan | None,
              daemonsets_ready: Mapping[str, bool], previous: Mapping[str, Any], now: str,
              turned_off: frozenset[str] = frozenset()) -> Report:
    """The ClusterPolicy's status: state, conditions, counts, the not-ready nodes with their fix."""
    prev_conditions = {c.get("type"): c for c in previous.get("conditions") or []}
    gen = policy.generation
    events: list[tuple[str, str, str]] = []
    not_ready = sorted((n for n in nodes.values() if not n.ready), key=lambda n: n.name)
    entries = []
    for node in not_ready[:MAX_NODES_IN_STATUS]:
        stage = first_failing(node.stages)
        assert stage is not None
        fix = spec_fix(stage.stage, turned_off, policy.name) or stage.fix
        entries.append({"name": node.name, "stage": str(stage.stage),
                        "message": f"{stage.reason}: {stage.evidence}"[:512], "fix": fix[:512]})
    ready_count = len(nodes) - len(not_ready)
    in_sync = not failed_actions
    rolling = rollout is not None and (rollout.in_flight or rollout.outdated_nodes)
    first_run = not previous.get("state")
    repaired = [f"{a.kind} {a.name} {a.reason}" for a in actions if a.verb == "apply" and not first_run]
    prev_sync = prev_conditions.get("DaemonSetsInSync") or {}
    if failed_actions:
        sync_reason, sync_message = "ApplyFailed", "; ".join(failed_actions)
    elif repaired:
        sync_reason, sync_message = "DriftRepaired", (
            f"at {now}: " + "; ".join(repaired) + f". The operator owns them: change them with kubectl edit "
            f"clusterpolicies.kgpu.io {policy.name} (an edit or delete of the objects themselves is undone)")
    elif prev_sync.get("reason") == "DriftRepaired" and prev_sync.get("observedGeneration") == gen:
        # the last repair stays visible (with when it happened) until the spec changes
        sync_reason, sync_message = "DriftRepaired", str(prev_sync.get("message", ""))
    else:
        sync_reason, sync_message = "InSync", "every node DaemonSet matches the ClusterPolicy"
    error_text = f"{str(error).rstrip('.')}. {_edit_fix(policy.name)}" if error is not None else ""
    conditions = [
        _condition("SpecValid", error is None, "Invalid" if error else "Valid",
                   error_text or "the spec and its device-plugin config are valid", gen, now, prev_conditions),
        _condition("DaemonSetsInSync", in_sync, sync_reason, sync_message, gen, now, prev_conditions),
        _condition("RolloutComplete", not rolling, "RollingOut" if rolling else "Complete",
                   (f"{len(rollout.in_flight)} node(s) updating, {rollout.outdated_nodes} waiting"
                    if rollout is not None and rolling else "every GPU node runs the current spec"), gen, now,
                   prev_conditions),
        _condition("NodesReady", not not_ready, "AllReady" if not not_ready else "NodesNotReady",
                   f"{ready_count}/{len(nodes)} GPU nodes ready", gen, now, prev_conditions),
    ]
    if error is not None:
        state, message = "error", error_text
    elif failed_actions:
        state, message = "error", failed_actions[0]
    elif not_ready:
        first = entries[0]
        state = "notReady"
        message = f"{len(not_ready)}/{len(nodes)} GPU nodes not ready; {first['name']}: {first['stage']}: " \
                  f"{first['message']}" + (f" Fix: {first['fix']}" if first["fix"] else "")
    elif rolling:
        state, message = "notReady", conditions[2]["message"]
    elif not all(daemonsets_ready.values()):
        waiting = sorted(n for n, ok in daemonsets_ready.items() if not ok)
        state, message = "notReady", f"waiting for DaemonSet(s) {', '.join(waiting)} to be ready"
    else:
        state = "ready"
        message = f"{len(nodes)}/{len(nodes)} GPU nodes ready" if nodes else "ready; no GPU node in the cluster yet"
    ready_ok = state == "ready"
    conditions.insert(0, _condition("Ready", ready_ok, "Ready" if ready_ok else state[0].upper() + state[1:],
                                    message, gen, now, prev_conditions))
    if error is not None and prev_conditions.get("SpecValid", {}).get("status") != "False":
        events.append(("Warning", "InvalidSpec", error_text))
    for action in actions:
        text = f"{action.kind} {action.name} {action.reason}"
        if action.verb == "delete":
            events.append(("Normal", "Deleted", text))
        elif first_run:
            events.append(("Normal", "Created", text))
        else:
            events.append(("Warning", "DriftRepaired", text))
    if rollout is not None:
        for started in rollout.started:
            events.append(("Normal", "RolloutNode", f"node {started}: restarting kgpu pods with the new spec"))
        for done in rollout.finished:
            events.append(("Normal", "NodeUpdated", f"node {done}: runs the new spec and validated again"))
    status: dict[str, Any] = {
        "state": state,
        "message": message[:1024],
        "namespace": namespace,
        "gpuNodes": len(nodes),
        "readyNodes": ready_count,
        "observedGeneration": gen,
        "conditions": conditions,
        "nodes": entries,
        "rollout": {"inFlight": dict(rollout.in_flight) if rollout else {}},
    }
    return Report(status, tuple(events))


def ignored_status(policy: PolicyRef, active: PolicyRef, now: str) -> dict[str, Any]:
    message = (f"ignored: ClusterPolicy {active.name} was created first and is the one in charge; "
               f"delete {policy.name} (one ClusterPolicy per cluster)")
    return {"state": "ignored", "message": message, "observedGeneration": policy.generation,
            "conditions": [{"type": "Ready", "status": "False", "reason": "Ignored", "message": message,
                            "lastTransitionTime": now, "observedGeneration": policy.generation}],
            "nodes": [], "gpuNodes": 0, "readyNodes": 0}


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether a status patch is needed (transition times are carried over, so equal means equal)."""
    return dict(old) != dict(new)


__all__ = [
    "CONDITION_TYPES",
    "Action",
    "Desired",
    "NodeFacts",
    "PodFacts",
    "PolicyRef",
    "Report",
    "RolloutPlan",
    "active_policy",
    "covers",
    "desired_objects",
    "node_facts",
    "plan_apply",
    "plan_rollout",
    "pod_facts",
    "summarize",
]
