"""Step 7 (--pod) and step 6's allocatable check against a mock Kubernetes API server on 127.0.0.1.

The mock speaks the real wire format lightkube uses (JSON over HTTP, /api/v1 paths), so these tests
cover kubeconfig loading, pod creation, polling, log reading and deletion end to end.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from typer.testing import CliRunner

from kgpu.cli import app

HOST_STEPS = "driver,nvml,device-nodes,cuda,runtime,device-plugin"
IN_POD_PASSED = json.dumps([
    {"step": 4, "name": "cuda", "status": "passed", "fix": "",
     "detail": "libcuda /usr/lib/x86_64-linux-gnu/libcuda.so.1, CUDA 13.0; GPU 0 NVIDIA H100 80GB HBM3 "
               "(GPU-1): vectorAdd of 50000 floats: Test PASSED"},
])


@dataclass
class Cluster:
    """What the mock API server serves, and what it was asked."""

    phases: list[str] = field(default_factory=lambda: ["Succeeded"])
    exit_code: int = 0
    log: str = IN_POD_PASSED
    scheduled: bool = True
    waiting: dict[str, str] | None = None
    """The container's waiting state while the pod is Pending: {"reason": …, "message": …}."""
    allocatable: str | None = "8"
    nodes: list[dict[str, Any]] = field(default_factory=list)
    """What GET /api/v1/nodes lists."""
    created: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    gets: int = 0

    def pod(self, name: str, namespace: str) -> dict[str, Any]:
        phase = self.phases[min(self.gets, len(self.phases) - 1)]
        self.gets += 1
        status: dict[str, Any] = {"phase": phase}
        if not self.scheduled:
            status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]
        if self.waiting is not None and phase == "Pending":
            status["containerStatuses"] = [{
                "name": "cuda-vectoradd", "ready": False, "restartCount": 0, "image": "kgpu", "imageID": "",
                "state": {"waiting": dict(self.waiting)},
            }]
        if phase in ("Succeeded", "Failed"):
            status["containerStatuses"] = [{
                "name": "cuda-vectoradd", "ready": False, "restartCount": 0, "image": "kgpu", "imageID": "",
                "state": {"terminated": {"exitCode": self.exit_code, "reason": "Completed"}},
            }]
        body = dict(self.created[-1])
        body["metadata"] = {**body["metadata"], "name": name, "namespace": namespace, "uid": "u-1"}
        body["status"] = status
        return body


def _handler(cluster: Cluster) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: Any, ctype: str = "application/json") -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _not_found(self) -> None:
            self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                             "message": f"{self.path} not found", "code": 404})

        def do_POST(self) -> None:
            cluster.requests.append(f"POST {urlparse(self.path).path}")
            parts = urlparse(self.path).path.strip("/").split("/")
            if parts[:3] == ["api", "v1", "namespaces"] and parts[4:] == ["pods"]:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                cluster.created.append(body)
                name = body["metadata"]["generateName"] + "x7k2p"
                created = {**body, "metadata": {**body["metadata"], "name": name, "namespace": parts[3]}}
                self._send(201, created)
            else:
                self._not_found()

        def do_GET(self) -> None:
            path = urlparse(self.path).path
            cluster.requests.append(f"GET {path}")
            parts = path.strip("/").split("/")
            if parts == ["api", "v1", "nodes"]:
                self._send(200, {"apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": cluster.nodes})
            elif parts[:3] == ["api", "v1", "nodes"] and len(parts) == 4:
                alloc = {"cpu": "64", "memory": "512Gi"}
                if cluster.allocatable is not None:
                    alloc["nvidia.com/gpu"] = cluster.allocatable
                self._send(200, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": parts[3]},
                                 "status": {"allocatable": alloc, "capacity": alloc}})
            elif parts[:3] == ["api", "v1", "namespaces"] and parts[4:5] == ["pods"] and len(parts) == 6:
                self._send(200, cluster.pod(parts[5], parts[3]))
            elif parts[:3] == ["api", "v1", "namespaces"] and parts[4:5] == ["pods"] and parts[6:] == ["log"]:
                self._send(200, cluster.log, "text/plain")
            else:
                self._not_found()

        def do_DELETE(self) -> None:
            path = urlparse(self.path).path
            cluster.requests.append(f"DELETE {path}")
            parts = path.strip("/").split("/")
            cluster.deleted.append(parts[-1])
            self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200})

    return Handler


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Cluster, Path]]:
    state = Cluster()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "mock",
        "clusters": [{"name": "mock", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "admin", "user": {}}],
        "contexts": [{"name": "mock", "context": {"cluster": "mock", "user": "admin", "namespace": "gpu-test"}}],
    }))
    try:
        yield state, kubeconfig
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def validate_pod(kubeconfig: Path, *extra: str) -> tuple[int, dict[str, dict[str, Any]]]:
    result = CliRunner().invoke(app, ["validate", "--json", "--pod", "--skip", HOST_STEPS, "--kubeconfig",
                                      str(kubeconfig), "--namespace", "gpu-test", "--image", "reg.example/kgpu:0.1.0",
                                      *extra], env={})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, {r["name"]: r for r in json.loads(result.stdout)}


def test_pod_with_a_gpu_runs_the_cuda_check_and_is_deleted(cluster: tuple[Cluster, Path]) -> None:
    state, kubeconfig = cluster
    code, results = validate_pod(kubeconfig, "--runtime-class", "nvidia")
    pod = results["pod"]
    assert pod["status"] == "passed", pod
    assert pod["detail"].startswith("pod kgpu-validate-x7k2p with nvidia.com/gpu: 1 succeeded: passed: libcuda")
    assert "Test PASSED" in pod["detail"]
    assert code == 0
    (created,) = state.created
    spec = created["spec"]
    container = spec["containers"][0]
    assert created["metadata"]["namespace"] == "gpu-test"
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert container["image"] == "reg.example/kgpu:0.1.0"
    assert [container["command"], container["args"]] == [["kgpu"], ["validate", "--in-pod", "--json"]]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["restartPolicy"] == "Never"
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert state.deleted == ["kgpu-validate-x7k2p"]
    assert "GET /api/v1/namespaces/gpu-test/pods/kgpu-validate-x7k2p/log" in state.requests


def test_verdict_is_found_among_the_pods_log_lines(cluster: tuple[Cluster, Path]) -> None:
    state, kubeconfig = cluster
    state.log = ('{"ts": "2026-01-01T00:00:00.000Z", "level": "warning", "msg": "odd [thing]"}\n'
                 + IN_POD_PASSED.replace("[{", "[\n  {") + "\n"
                 + '{"ts": "2026-01-01T00:00:01.000Z", "level": "info", "msg": "done"}\n')
    _, results = validate_pod(kubeconfig)
    assert results["pod"]["detail"].endswith("vectorAdd of 50000 floats: Test PASSED")


def test_pod_is_polled_until_it_finishes(cluster: tuple[Cluster, Path]) -> None:
    state, kubeconfig = cluster
    state.phases = ["Pending", "Succeeded"]
    code, results = validate_pod(kubeconfig)
    assert results["pod"]["status"] == "passed"
    assert state.gets == 2
    assert code == 0


def test_failed_cuda_inside_the_pod_fails_step_7_with_its_verdict(cluster: tuple[Cluster, Path]) -> None:
    state, kubeconfig = cluster
    state.phases, state.exit_code = ["Failed"], 1
    state.log = json.dumps([{"step": 4, "name": "cuda", "status": "failed", "fix": "...",
                             "detail": "libcuda.so.1 could not be loaded; looked in: the dynamic loader path"}])
    code, results = validate_pod(kubeconfig)
    pod = results["pod"]
    assert pod["status"] == "failed"
    assert pod["detail"] == ("pod kgpu-validate-x7k2p Failed (exit code 1): failed: libcuda.so.1 could not be "
                             "loaded; looked in: the dynamic loader path")
    assert "container runtime" in pod["fix"]
    assert state.deleted == ["kgpu-validate-x7k2p"]
    assert code == 1


def test_unschedulable_pod_times_out_with_the_schedulers_reason(cluster: tuple[Cluster, Path]) -> None:
    state, kubeconfig = cluster
    state.phases, state.scheduled = ["Pending"], False
    code, results = validate_pod(kubeconfig, "--timeout", "1s")
    pod = results["pod"]
    assert pod["status"] == "failed"
    assert pod["detail"] == ("pod kgpu-validate-x7k2p still Pending after 1s (0/3 nodes are available: "
                             "3 Insufficient nvidia.com/gpu.)")
    assert "kubectl describe node" in pod["fix"]
    assert state.deleted == ["kgpu-validate-x7k2p"]
    assert code == 1


def test_unreachable_api_server_fails_step_7(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "u"}}],
    }))
    code, results = validate_pod(kubeconfig)
    assert results["pod"]["status"] == "failed"
    assert results["pod"]["detail"] == ("creating the validation pod in gpu-test failed: "
                                        "ConnectError: [Errno 111] Connection refused")
    assert code == 1


def test_missing_kubeconfig_fails_step_7(tmp_path: Path) -> None:
    code, results = validate_pod(tmp_path / "absent")
    assert results["pod"]["status"] == "failed"
    assert results["pod"]["detail"].startswith("no Kubernetes API access")
    assert code == 1


def test_device_plugin_step_reads_the_nodes_allocatable(cluster: tuple[Cluster, Path], node: Any) -> None:
    state, kubeconfig = cluster
    args = ["--simulate", "t4", "validate", "--json", "--root", str(node.root), "--kubeconfig", str(kubeconfig),
            "--node", "gpu-node-1"]
    result = CliRunner().invoke(app, args, env={})
    dp = {r["name"]: r for r in json.loads(result.stdout)}["device-plugin"]
    assert dp["status"] == "passed"
    assert dp["detail"].endswith("node allocatable nvidia.com/gpu: 8 (node gpu-node-1: --node)")
    assert "GET /api/v1/nodes/gpu-node-1" in state.requests

    state.allocatable = None
    result = CliRunner().invoke(app, args, env={})
    dp = {r["name"]: r for r in json.loads(result.stdout)}["device-plugin"]
    assert dp["status"] == "failed"
    assert "allocatable nvidia.com/gpu is absent" in dp["detail"]
    assert result.exit_code == 1


def test_on_a_simulated_node_the_pod_skips_cuda_and_step_7_is_skipped_not_passed(
        cluster: tuple[Cluster, Path]) -> None:
    state, kubeconfig = cluster
    state.log = json.dumps([{"step": 4, "name": "cuda", "status": "skipped", "fix": "",
                             "detail": "no real GPU (simulated backend): the CUDA kernel was not run"}])
    result = CliRunner().invoke(app, ["--simulate", "h100x8", "validate", "--json", "--pod", "--skip", HOST_STEPS,
                                      "--kubeconfig", str(kubeconfig), "--namespace", "gpu-test"], env={})
    results = {r["name"]: r for r in json.loads(result.stdout)}
    assert results["pod"]["status"] == "skipped"
    assert results["pod"]["detail"] == ("pod kgpu-validate-x7k2p with nvidia.com/gpu: 1 ran; CUDA skipped: no real "
                                        "GPU (simulated backend): the CUDA kernel was not run")
    assert result.exit_code == 0
    (created,) = state.created
    assert {"name": "KGPU_SIMULATE", "value": "h100x8"} in created["spec"]["containers"][0]["env"]


def test_an_image_that_runs_as_root_is_named_at_once_not_after_the_timeout(cluster: tuple[Cluster, Path]) -> None:
    """The kubelet refuses to start a runAsNonRoot container whose image runs as root
    (CreateContainerConfigError): validate says that, with the fix for it, without waiting out --timeout."""
    state, kubeconfig = cluster
    state.phases = ["Pending"]
    state.waiting = {"reason": "CreateContainerConfigError",
                     "message": "container has runAsNonRoot and image will run as root (pod: "
                                "\"kgpu-validate-x7k2p_gpu-test(u-1)\", container: cuda-vectoradd)"}
    code, results = validate_pod(kubeconfig, "--timeout", "10m")
    pod = results["pod"]
    assert pod["status"] == "failed"
    assert pod["detail"] == ("pod kgpu-validate-x7k2p cannot start its container: CreateContainerConfigError: "
                             "container has runAsNonRoot and image will run as root (pod: "
                             "\"kgpu-validate-x7k2p_gpu-test(u-1)\", container: cuda-vectoradd)")
    assert pod["fix"].startswith("the image runs as root (no USER, or USER 0) and the validation pod requires "
                                 "runAsNonRoot")
    assert "cannot be pulled" not in pod["fix"]
    assert state.gets == 1 and state.deleted == ["kgpu-validate-x7k2p"]
    assert code == 1


def test_an_image_user_by_name_gets_its_own_fix(cluster: tuple[Cluster, Path]) -> None:
    state, kubeconfig = cluster
    state.phases = ["Pending"]
    state.waiting = {"reason": "CreateContainerConfigError",
                     "message": "container has runAsNonRoot and image has non-numeric user (kgpu), cannot verify "
                                "user is non-root (pod: \"kgpu-validate-x7k2p_gpu-test(u-1)\", container: c)"}
    _, results = validate_pod(kubeconfig)
    assert results["pod"]["fix"].startswith("the image's USER is a name")


def test_an_image_that_cannot_be_pulled_is_named_after_the_timeout(cluster: tuple[Cluster, Path]) -> None:
    state, kubeconfig = cluster
    state.phases = ["Pending"]
    state.waiting = {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "reg.example/kgpu:0.1.0"'}
    _, results = validate_pod(kubeconfig, "--timeout", "1s")
    pod = results["pod"]
    assert "still Pending after 1s (ImagePullBackOff: Back-off pulling image" in pod["detail"]
    assert pod["fix"].startswith("the image cannot be pulled: pass --image")


def test_without_node_the_allocatable_is_read_from_the_node_this_machine_is(
    cluster: tuple[Cluster, Path], node: Any
) -> None:
    """The Node's name is what the kubelet registered (lab-node), not the host name: validate finds the Node
    whose addresses are this machine's, instead of failing with nodes "<hostname>" not found."""
    from kgpu.validate.kube import local_addresses

    mine = sorted(local_addresses())
    if not mine:
        pytest.skip("this machine has no address but loopback")
    state, kubeconfig = cluster
    state.nodes = [_node("other-node", ("InternalIP", "203.0.113.9")),
                   _node("lab-node", ("InternalIP", mine[0]), ("Hostname", "lab-node"))]
    args = ["--simulate", "t4", "validate", "--json", "--root", str(node.root), "--kubeconfig", str(kubeconfig)]
    result = CliRunner().invoke(app, args, env={"NODE_NAME": ""})
    dp = {r["name"]: r for r in json.loads(result.stdout)}["device-plugin"]
    assert dp["status"] == "passed", dp
    assert dp["detail"].endswith("nvidia.com/gpu: 8 (node lab-node: its addresses are this machine's)")
    assert "GET /api/v1/nodes/lab-node" in state.requests

    state.nodes = state.nodes[:1] * 2  # two Nodes, neither this machine: say so, and how to name it
    result = CliRunner().invoke(app, args, env={"NODE_NAME": ""})
    dp = {r["name"]: r for r in json.loads(result.stdout)}["device-plugin"]
    assert dp["status"] == "failed"
    assert dp["detail"].startswith("which Node is this machine? no Node is named")
    assert dp["fix"] == "pass --node NAME (or set NODE_NAME)"


def _node(name: str, *addresses: tuple[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"addresses": [{"type": t, "address": a} for t, a in addresses]}}


def test_which_node_this_machine_is() -> None:
    from kgpu.validate.kube import pick_node

    ips = frozenset({"192.0.2.2"})
    nodes = [_node("gpu-1", ("InternalIP", "192.0.2.7")), _node("gpu-2", ("InternalIP", "192.0.2.2"))]
    assert pick_node(nodes, "vm", ips) == ("gpu-2", "its addresses are this machine's")
    assert pick_node([*nodes, _node("vm")], "vm", ips) == ("vm", "named like this host")
    assert pick_node([_node("gpu-1", ("Hostname", "vm"))], "vm", frozenset()) == ("gpu-1",
                                                                                  "its addresses are this machine's")
    assert pick_node([_node("lab-node")], "vm", frozenset()) == ("lab-node", "the cluster's only node")
    name, why = pick_node(nodes[:1] * 2, "vm", ips)
    assert name is None and why == "no Node is named 'vm' or has one of this machine's addresses (Nodes: gpu-1, gpu-1)"
