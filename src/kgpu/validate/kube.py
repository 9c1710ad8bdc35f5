"""Steps 6 (API half) and 7: the node's allocatable, and a pod that runs the CUDA check on a GPU.

The pod requests ``nvidia.com/gpu: 1``, tolerates the GPU taint, and runs ``kgpu validate --in-pod
--json``; its verdict is the CUDA step it prints. Building the pod and judging its outcome are pure;
:func:`run_pod` is the I/O (lightkube), and always deletes the pod it created.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgpu.validate.result import StepResult, failed, passed, skipped

if TYPE_CHECKING:
    from lightkube import Client

GPU_RESOURCE = "nvidia.com/gpu"
POD_LABELS = {"app.kubernetes.io/name": "kgpu", "app.kubernetes.io/component": "validation-pod"}


@dataclass(frozen=True, slots=True)
class PodSpec:
    image: str
    namespace: str
    node: str | None = None
    runtime_class: str | None = None
    image_pull_policy: str = "IfNotPresent"
    simulate: str | None = None
    """The simulated node's fixture (test clusters): the pod runs on it too, so its CUDA step is skipped."""


def build_pod_manifest(spec: PodSpec) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
        "containers": [
            {
                "name": "cuda-vectoradd",
                "image": spec.image,
                "imagePullPolicy": spec.image_pull_policy,
                "command": ["kgpu"],
                "args": ["validate", "--in-pod", "--json"],
                # The container runtime injects libcuda and the GPU's device nodes for these capabilities.
                "env": [{"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,utility"}],
                "resources": {"limits": {GPU_RESOURCE: 1}},
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                    "runAsNonRoot": True,
                },
            }
        ],
    }
    if spec.simulate:
        pod_spec["containers"][0]["env"].append({"name": "KGPU_SIMULATE", "value": spec.simulate})
    if spec.runtime_class:
        pod_spec["runtimeClassName"] = spec.runtime_class
    if spec.node:
        pod_spec["nodeSelector"] = {"kubernetes.io/hostname": spec.node}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "kgpu-validate-",
            "namespace": spec.namespace,
            "labels": dict(POD_LABELS),
        },
        "spec": pod_spec,
    }


@dataclass(frozen=True, slots=True)
class PodOutcome:
    name: str
    phase: str
    exit_code: int | None = None
    log: str = ""
    waiting: str = ""
    """Why the pod is not running yet (scheduler message or container waiting reason), if known."""
    timed_out: bool = False
    error: str = ""


def _cuda_verdict(log: str) -> str:
    """The CUDA step's detail from the in-pod ``--json`` output, or the log's last line.

    The pod log interleaves stdout (the JSON array) with stderr (JSON log lines), so the array is
    looked for at the start of every line and decoded without its trailing lines.
    """
    decoder = json.JSONDecoder()
    offset = 0
    for line in log.splitlines(keepends=True):
        if line.startswith("["):
            try:
                entries, _ = decoder.raw_decode(log, offset)
            except ValueError:
                entries = None
            for e in entries if isinstance(entries, list) else []:
                if isinstance(e, dict) and e.get("name") == "cuda":
                    return f"{e.get('status')}: {e.get('detail')}"
        offset += len(line)
    lines = [line for line in log.splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def judge_pod(outcome: PodOutcome, timeout_s: float) -> StepResult:
    if outcome.error:
        return failed(
            "pod",
            outcome.error,
            "check API access: --kubeconfig, or the Job's ServiceAccount needs "
            "create/get/delete on pods and get on pods/log in its namespace",
        )
    where = f"pod {outcome.name}"
    if outcome.timed_out:
        why = f" ({outcome.waiting})" if outcome.waiting else ""
        fix = (
            "no node has a free nvidia.com/gpu: check `kubectl describe node` allocatable, the device "
            "plugin, and that the GPU taint is tolerated"
        )
        if "image" in outcome.waiting.lower():
            fix = "the image cannot be pulled: pass --image with an image your nodes can pull"
        return failed("pod", f"{where} still {outcome.phase or 'Pending'} after {timeout_s:g}s{why}", fix)
    verdict = _cuda_verdict(outcome.log)
    if outcome.phase == "Succeeded" and verdict.startswith("skipped:"):
        # A simulated node: the pod got its GPU and ran, but no kernel did; that is not a pass.
        return skipped("pod", f"{where} with nvidia.com/gpu: 1 ran; CUDA {verdict}")
    if outcome.phase == "Succeeded":
        return passed("pod", f"{where} with nvidia.com/gpu: 1 succeeded: {verdict}")
    code = f" (exit code {outcome.exit_code})" if outcome.exit_code is not None else ""
    return failed(
        "pod",
        f"{where} {outcome.phase}{code}: {verdict}",
        "the container got a GPU but CUDA failed inside it: check the container runtime "
        "(step 5) and that the device plugin passes the GPU's device nodes",
    )


def open_client(kubeconfig: Path | None, namespace: str | None = None) -> Client:
    from lightkube import Client, KubeConfig

    config = KubeConfig.from_file(kubeconfig) if kubeconfig is not None else None
    return Client(config=config, namespace=namespace, field_manager="kgpu-validate")


def _waiting_reason(pod: dict[str, Any]) -> str:
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return str(cond.get("message") or cond.get("reason") or "unschedulable")
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return f"{waiting.get('reason', '')}: {waiting.get('message', '')}".strip(": ")
    return ""


def _exit_code(pod: dict[str, Any]) -> int | None:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        term = (cs.get("state") or {}).get("terminated")
        if term and term.get("exitCode") is not None:
            return int(term["exitCode"])
    return None


def run_pod(
    client: Client,
    spec: PodSpec,
    timeout_s: float,
    poll_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> PodOutcome:
    from lightkube import ApiError, codecs
    from lightkube.resources.core_v1 import Pod

    try:
        created = client.create(codecs.from_dict(build_pod_manifest(spec)))
    except Exception as exc:  # ApiError, or the HTTP client's transport errors (refused, TLS, DNS)
        return PodOutcome("", "", error=f"creating the validation pod in {spec.namespace} failed: {_api_error(exc)}")
    name = str(created.metadata.name) if created.metadata is not None else ""
    deadline = clock() + timeout_s
    pod: dict[str, Any] = {}
    try:
        while True:
            pod = client.get(Pod, name, namespace=spec.namespace).to_dict()
            phase = (pod.get("status") or {}).get("phase") or "Pending"
            if phase in ("Succeeded", "Failed"):
                try:
                    log = "".join(client.log(name, namespace=spec.namespace))
                except ApiError as exc:
                    log = f"(log unavailable: {_api_error(exc)})"
                return PodOutcome(name, phase, _exit_code(pod), log)
            if clock() >= deadline:
                return PodOutcome(name, phase, waiting=_waiting_reason(pod), timed_out=True)
            time.sleep(poll_s)
    except Exception as exc:  # as above: the API server went away or refused us mid-way
        return PodOutcome(name, "", error=f"watching pod {name} failed: {_api_error(exc)}")
    finally:
        with contextlib.suppress(Exception):
            client.delete(Pod, name, namespace=spec.namespace)


def _api_error(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    if status is not None and getattr(status, "code", None) is not None:
        return f"{status.code} {status.message}"
    return f"{type(exc).__name__}: {exc}"


def node_allocatable(client: Client, node: str) -> str:
    """The node's allocatable ``nvidia.com/*`` resources, e.g. ``nvidia.com/gpu: 8`` or, with MIG devices,
    ``nvidia.com/mig-1g.10gb: 56`` ("" when the node advertises none)."""
    from lightkube.resources.core_v1 import Node

    obj = client.get(Node, node)
    allocatable = (obj.status.allocatable or {}) if obj.status else {}
    gpus = {k: str(v) for k, v in allocatable.items() if k.startswith("nvidia.com/") and str(v) not in ("", "0")}
    first = [GPU_RESOURCE] if GPU_RESOURCE in gpus else []
    return ", ".join(f"{k}: {gpus[k]}" for k in first + sorted(set(gpus) - set(first)))
