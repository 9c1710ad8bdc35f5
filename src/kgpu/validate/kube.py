"""Steps 6 (API half) and 7: the node's allocatable, and a pod that runs the CUDA check on a GPU.

The pod requests ``nvidia.com/gpu: 1``, tolerates the GPU taint, and runs ``kgpu validate --in-pod
--json``; its verdict is the CUDA step it prints. Building the pod and judging its outcome are pure;
:func:`run_pod` is the I/O (lightkube), and always deletes the pod it created.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
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
    reason: str = ""
    """The waiting reason's code: ``Unschedulable``, ``ErrImagePull``, ``CreateContainerConfigError``, …"""
    stuck: bool = False
    """The container can never start as things are (the kubelet refuses its config): not worth waiting for."""


# Waiting reasons the kubelet keeps retrying but that never clear on their own.
STUCK_REASONS = frozenset({"CreateContainerConfigError", "InvalidImageName", "ErrImageNeverPull"})
_IMAGE_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName",
                            "RegistryUnavailable"})
_START_REASONS = frozenset({"CreateContainerError", "RunContainerError", "CrashLoopBackOff", "StartError",
                            "ContainerCannotRun"})


def pod_problem_fix(reason: str, message: str) -> str:
    """The fix for why the validation pod's container did not start, from the kubelet's own reason."""
    text = message.lower()
    if reason == "Unschedulable" or "insufficient" in text or "untolerated taint" in text:
        if "insufficient nvidia.com/gpu" in text:
            return ("no node has a free nvidia.com/gpu: check `kubectl describe node` (allocatable and what is "
                    "allocated), the device plugin (step 6), and GPU pods holding every GPU")
        if "untolerated taint" in text:
            return ("the nodes carry a taint the validation pod does not tolerate (it tolerates "
                    "nvidia.com/gpu:NoSchedule only): see `kubectl describe node`, or pass --node NAME of a GPU node")
        if "node affinity" in text or "node selector" in text:
            return "--node names no schedulable node: use a name from `kubectl get nodes`"
        return "the scheduler placed the pod nowhere: see the reason above and `kubectl describe node`"
    if "runasnonroot" in text and "non-numeric user" in text:
        return ("the image's USER is a name, so the kubelet cannot check runAsNonRoot: set a numeric non-root "
                "USER in the image (kgpu's deploy/Dockerfile uses USER 65532:65532), or pass --image with kgpu's")
    if "runasnonroot" in text and "root" in text:
        return ("the image runs as root (no USER, or USER 0) and the validation pod requires runAsNonRoot: pass "
                "--image with kgpu's image (deploy/Dockerfile runs as 65532) or one whose USER is a numeric "
                "non-root UID")
    if reason in _IMAGE_REASONS:
        return ("the image cannot be pulled: pass --image with an image your nodes can pull (or load it into "
                "the nodes' runtime, e.g. `ctr -n k8s.io images import kgpu.tar`)")
    if reason == "CreateContainerConfigError":
        return f"the kubelet refuses the container's configuration: {message or reason}"
    if reason in _START_REASONS:
        return ("the container runtime could not start the container: check the runtime (step 5) and, if "
                "the NVIDIA runtime is not the default, pass --runtime-class nvidia")
    return ("no node has a free nvidia.com/gpu: check `kubectl describe node` allocatable, the device "
            "plugin, and that the GPU taint is tolerated")


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
    if outcome.stuck:
        return failed("pod", f"{where} cannot start its container: {outcome.waiting}",
                      pod_problem_fix(outcome.reason, outcome.waiting))
    if outcome.timed_out:
        why = f" ({outcome.waiting})" if outcome.waiting else ""
        return failed("pod", f"{where} still {outcome.phase or 'Pending'} after {timeout_s:g}s{why}",
                      pod_problem_fix(outcome.reason, outcome.waiting))
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


def waiting_reason(pod: dict[str, Any]) -> tuple[str, str]:
    """(reason, what it says) for a pod that is not running: the scheduler's, or the container's waiting state."""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return str(cond.get("reason") or "Unschedulable"), str(cond.get("message") or "unschedulable")
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            reason = str(waiting.get("reason") or "")
            return reason, f"{reason}: {waiting.get('message', '')}".strip(": ")
    return "", ""


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
            reason, waiting = waiting_reason(pod)
            if reason in STUCK_REASONS:
                return PodOutcome(name, phase, waiting=waiting, reason=reason, stuck=True)
            if clock() >= deadline:
                return PodOutcome(name, phase, waiting=waiting, reason=reason, timed_out=True)
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


def pick_node(nodes: list[dict[str, Any]], hostname: str, local_ips: frozenset[str]) -> tuple[str | None, str]:
    """Which Node is this machine, and how that was decided; (None, why not) when no Node matches.

    The Node's name is whatever the kubelet registered (``--hostname-override``, a cloud's instance
    name, ``lab-node``), not necessarily the host name: a Node named like the host, else one whose
    addresses (Hostname, InternalIP, ExternalIP) include the host name or one of this machine's IPs,
    else the only Node of a one-node cluster.
    """
    names = [str((n.get("metadata") or {}).get("name", "")) for n in nodes]
    if hostname in names:
        return hostname, "named like this host"
    matches = []
    for name, node in zip(names, nodes, strict=True):
        addresses = {str(a.get("address", "")) for a in (node.get("status") or {}).get("addresses") or []}
        if hostname in addresses or addresses & local_ips:
            matches.append(name)
    if len(matches) == 1:
        return matches[0], "its addresses are this machine's"
    if len(names) == 1 and not matches:
        return names[0], "the cluster's only node"
    listed = ", ".join(sorted(names)[:10]) + (" …" if len(names) > 10 else "")
    if matches:
        return None, f"several Nodes have this machine's addresses ({', '.join(sorted(matches))})"
    return None, f"no Node is named {hostname!r} or has one of this machine's addresses (Nodes: {listed})"


def this_node(client: Client, hostname: str, local_ips: frozenset[str], pod: tuple[str, str] | None) -> tuple[str, str]:
    """This machine's Node name from the API: the pod's spec.nodeName when running in one, else :func:`pick_node`.

    ``pod`` is (namespace, name) inside a pod. Raises ``LookupError`` saying why when no Node matches.
    """
    from lightkube.resources.core_v1 import Node, Pod

    if pod is not None:
        with contextlib.suppress(Exception):  # no RBAC to read our own pod: fall back to the Node list
            me = client.get(Pod, pod[1], namespace=pod[0])
            if me.spec is not None and me.spec.nodeName:
                return str(me.spec.nodeName), f"the node pod {pod[0]}/{pod[1]} runs on"
    nodes = [n.to_dict() for n in client.list(Node)]
    name, how = pick_node(nodes, hostname, local_ips)
    if name is None:
        raise LookupError(how)
    return name, how


def local_addresses(root: Path = Path("/")) -> frozenset[str]:
    """This machine's own IPv4 and IPv6 addresses, from the kernel's routing tables (no interface library)."""
    found: set[str] = set()
    try:
        lines = (root / "proc/net/fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    for previous, line in itertools.pairwise(lines):
        if line.strip() == "/32 host LOCAL" and "|--" in previous:
            found.add(previous.split("|--")[1].strip())
    try:
        for line in (root / "proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            if len(raw) == 32:
                found.add(str(ipaddress.IPv6Address(bytes.fromhex(raw))))
    except OSError:
        pass
    return frozenset(found - {"127.0.0.1", "::1"})


def node_allocatable(client: Client, node: str) -> str:
    """The node's allocatable ``nvidia.com/*`` resources, e.g. ``nvidia.com/gpu: 8`` or, with MIG devices,
    ``nvidia.com/mig-1g.10gb: 56`` ("" when the node advertises none)."""
    from lightkube.resources.core_v1 import Node

    obj = client.get(Node, node)
    allocatable = (obj.status.allocatable or {}) if obj.status else {}
    gpus = {k: str(v) for k, v in allocatable.items() if k.startswith("nvidia.com/") and str(v) not in ("", "0")}
    first = [GPU_RESOURCE] if GPU_RESOURCE in gpus else []
    return ", ".join(f"{k}: {gpus[k]}" for k in first + sorted(set(gpus) - set(first)))
