"""A GPU node's stages, as `kgpu node report` writes them onto its Node and the operator and `kgpu status` read them.

Six stages take a node from joined to validated. Four are found on the node by ``kgpu node report`` (from
``kgpu validate``'s steps and ``kgpu doctor``'s checks) and written as Node conditions, one per stage, with
the evidence in the message and, when failing, the exact fix after ``Fix:``. Two are read from the Node
object itself: what the kubelet advertises (allocatable) and what the labeler set (labels).

    kubectl describe node gpu-1      # Conditions: KgpuDriver True Passed "kernel driver 580.95.05 loaded" ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

FIX_SEPARATOR = " Fix: "
MAX_MESSAGE = 1024
"""Condition messages are cut to this many characters (the API server keeps up to 32 KiB; a table does not)."""


class Stage(StrEnum):
    DRIVER = "driver"
    RUNTIME = "runtime"
    DEVICE_PLUGIN = "devicePlugin"
    ALLOCATABLE = "allocatable"
    LABELS = "labels"
    VALIDATION = "validation"


STAGES: tuple[Stage, ...] = tuple(Stage)

# The stages `kgpu node report` writes, and the Node condition type of each.
CONDITION_TYPES: dict[Stage, str] = {
    Stage.DRIVER: "KgpuDriver",
    Stage.RUNTIME: "KgpuRuntime",
    Stage.DEVICE_PLUGIN: "KgpuDevicePlugin",
    Stage.VALIDATION: "KgpuValidation",
}

GPU_PRESENT_LABEL = "nvidia.com/gpu.present"
NFD_PCI_LABEL = "feature.node.kubernetes.io/pci-10de.present"
PRODUCT_LABEL = "nvidia.com/gpu.product"
RESOURCE_PREFIX = "nvidia.com/"


@dataclass(frozen=True, slots=True)
class StageResult:
    stage: Stage
    ok: bool | None
    """True passed, False failed, None unknown (not reported yet)."""
    reason: str
    evidence: str
    fix: str = ""
    heartbeat: str = ""
    """When the node last reported this stage (RFC 3339), for node-reported stages."""

    def to_json(self) -> dict[str, Any]:
        return {"stage": str(self.stage), "ok": self.ok, "reason": self.reason, "evidence": self.evidence,
                "fix": self.fix}


def is_gpu_node(labels: Mapping[str, str]) -> bool:
    """A node the node components run on: labelled by kgpu/GFD, or by NFD as having an NVIDIA PCI device."""
    return labels.get(GPU_PRESENT_LABEL) == "true" or labels.get(NFD_PCI_LABEL) == "true"


def _cut(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def condition(stage: Stage, ok: bool, reason: str, evidence: str, fix: str, now: str) -> dict[str, Any]:
    """The Node condition for one node-reported stage (lastTransitionTime is set by the caller's merge)."""
    message = evidence if ok or not fix else f"{evidence}{FIX_SEPARATOR}{fix}"
    return {
        "type": CONDITION_TYPES[stage],
        "status": "True" if ok else "False",
        "reason": reason,
        "message": _cut(message),
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }


def merge_conditions(current: Sequence[Mapping[str, Any]], new: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Node conditions with ``new`` replacing those of the same type; a condition whose status did not change
    keeps its lastTransitionTime, as the kubelet's own conditions do."""
    old = {c.get("type"): c for c in current}
    out: list[dict[str, Any]] = []
    for cond in new:
        prev = old.get(cond["type"])
        if prev is not None and prev.get("status") == cond["status"] and prev.get("lastTransitionTime"):
            cond = {**cond, "lastTransitionTime": prev["lastTransitionTime"]}
        out.append(cond)
    return out


def _from_condition(stage: Stage, conditions: Mapping[str, Mapping[str, Any]], name: str,
                    namespace: str) -> StageResult:
    cond = conditions.get(CONDITION_TYPES[stage])
    if cond is None:
        return StageResult(stage, None, "NotReported", "kgpu node report has not reported this stage yet",
                           f"look at the validator (kgpu node report) on {name}: "
                           f"{component_logs('validator', name, namespace)}")
    message = str(cond.get("message", ""))
    evidence, _, fix = message.partition(FIX_SEPARATOR)
    status = cond.get("status")
    ok = True if status == "True" else False if status == "False" else None
    return StageResult(stage, ok, str(cond.get("reason", "")), evidence, fix,
                       heartbeat=str(cond.get("lastHeartbeatTime", "")))


def component_logs(component: str, node: str, namespace: str = "") -> str:
    """The command that shows the logs of kgpu's ``component`` pod on ``node`` (``kubectl logs`` takes no field
    selector, so the pod is found by ``kubectl get`` first); without the namespace, the command that finds it."""
    find = f"-l app.kubernetes.io/component={component} --field-selector spec.nodeName={node}"
    if not namespace:
        return f"kubectl get pods -A -o wide {find}, then kubectl logs -n <its namespace> <its name>"
    return f"kubectl logs -n {namespace} $(kubectl get pods -n {namespace} -o name {find})"


def _allocatable(name: str, allocatable: Mapping[str, str], namespace: str) -> StageResult:
    gpus = {k: v for k, v in allocatable.items() if k.startswith(RESOURCE_PREFIX) and str(v) not in ("0", "")}
    if gpus:
        evidence = ", ".join(f"{k}: {v}" for k, v in sorted(gpus.items()))
        return StageResult(Stage.ALLOCATABLE, True, "Advertised", evidence)
    return StageResult(
        Stage.ALLOCATABLE, False, "NothingAdvertised", "the kubelet advertises no nvidia.com/* resource",
        f"look at the device plugin on {name}: {component_logs('device-plugin', name, namespace)} "
        "(or `kgpu validate` on the node)",
    )


def _labels(name: str, labels: Mapping[str, str], namespace: str) -> StageResult:
    product = labels.get(PRODUCT_LABEL)
    if labels.get(GPU_PRESENT_LABEL) == "true" and product:
        count = labels.get("nvidia.com/gpu.count", "?")
        return StageResult(Stage.LABELS, True, "Labelled", f"{count}x {product}")
    missing = GPU_PRESENT_LABEL if labels.get(GPU_PRESENT_LABEL) != "true" else PRODUCT_LABEL
    return StageResult(
        Stage.LABELS, False, "NotLabelled", f"label {missing} is missing",
        f"look at the labeler on {name}: {component_logs('labeler', name, namespace)}",
    )


def node_stages(node: Mapping[str, Any], namespace: str = "") -> list[StageResult]:
    """Every stage of one Node object, in order; ``namespace`` (kgpu's) goes into the fixes' commands."""
    meta = node.get("metadata") or {}
    status = node.get("status") or {}
    name = str(meta.get("name", ""))
    conditions = {str(c.get("type")): c for c in status.get("conditions") or []}
    out: list[StageResult] = []
    for stage in STAGES:
        if stage is Stage.ALLOCATABLE:
            out.append(_allocatable(name, status.get("allocatable") or {}, namespace))
        elif stage is Stage.LABELS:
            out.append(_labels(name, meta.get("labels") or {}, namespace))
        else:
            out.append(_from_condition(stage, conditions, name, namespace))
    return out


def first_failing(stages: Sequence[StageResult]) -> StageResult | None:
    return next((s for s in stages if s.ok is not True), None)
