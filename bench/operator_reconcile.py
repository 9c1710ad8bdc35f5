#!/usr/bin/env python3
"""The operator at scale: 500 GPU Node objects (fake nodes, no kubelets) created through a real API server.

Measures, with `kgpu operator` running as its own process against the lab of ../shared/lab:

* start → the ClusterPolicy's status counts every GPU node (kopf lists and watches 500 nodes, one reconcile);
* a spec change → its status observed again (a full reconcile of all nodes, steady state);
* the operator's resident memory (peak, from /proc).

Targets (issue 14): full reconcile of 500 nodes under 10 s, under 150 MB resident. The fake nodes carry the
labels and the stage conditions a GPU node would (some failing, so the status has nodes to name); the
ClusterPolicy's DaemonSets select no node, so no pod is created for them. Everything it creates is deleted
at the end. Run it under the lab's lock::

    flock -o /work/lab.lock .venv/bin/python bench/operator_reconcile.py [--nodes 500]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LAB = REPO.parent / "shared" / "lab" / "lab"
NAMESPACE = "kgpu-bench"
PREFIX = "kgpu-bench-node-"
STAGES = ("KgpuDriver", "KgpuRuntime", "KgpuDevicePlugin", "KgpuValidation")


def lab_kubeconfig() -> str:
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    out = subprocess.run(["bash", str(LAB), "env"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if "KUBECONFIG=" in line:
            return line.split("KUBECONFIG=", 1)[1].strip().strip('"').strip("'")
    raise SystemExit("no KUBECONFIG: start the lab (../shared/lab/lab up) or set KUBECONFIG")


def fake_node(i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    name = f"{PREFIX}{i:04d}"
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    failing = "KgpuDriver" if i % 50 == 7 else None
    conditions = [{"type": t, "status": "False" if t == failing else "True",
                   "reason": "Failed" if t == failing else "Passed",
                   "message": ("driver: no /proc/driver/nvidia/version Fix: install the NVIDIA driver"
                               if t == failing else f"{t} passed"),
                   "lastHeartbeatTime": now, "lastTransitionTime": now} for t in STAGES]
    body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {
        "nvidia.com/gpu.present": "true", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        "nvidia.com/gpu.count": "8", "kgpu.io/bench": "true"}}}
    status = {"status": {"capacity": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"},
                         "allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": "8"},
                         "conditions": conditions}}
    return body, status


def create_nodes(client: Any, count: int) -> float:
    from lightkube import codecs
    from lightkube.resources.core_v1 import Node
    from lightkube.types import PatchType

    def one(i: int) -> None:
        body, status = fake_node(i)
        client.create(codecs.from_dict(body))
        client.patch(Node.Status, body["metadata"]["name"], status, patch_type=PatchType.MERGE)

    start = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(count)))
    return time.monotonic() - start


def delete_everything(client: Any) -> None:
    from lightkube.generic_resource import create_global_resource
    from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
    from lightkube.resources.core_v1 import Namespace, Node

    from kgpu.operator.policy import GROUP, KIND, PLURAL, VERSION

    names = [n.metadata.name for n in client.list(Node, labels={"kgpu.io/bench": "true"}) if n.metadata]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: client.delete(Node, n), names))
    policy = create_global_resource(GROUP, VERSION, KIND, PLURAL)
    try:
        for p in client.list(policy):
            client.delete(policy, p.metadata.name)
    except Exception as exc:  # no CRD: no ClusterPolicy either
        if "404" not in str(exc) and "not found" not in str(exc).lower():
            raise
    for obj, name in ((CustomResourceDefinition, f"{PLURAL}.{GROUP}"), (Namespace, NAMESPACE)):
        try:
            client.delete(obj, name)
        except Exception as exc:  # already gone
            if "not found" not in str(exc).lower():
                raise


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def wait_status(client: Any, resource: Any, name: str, pred: Any, proc: subprocess.Popen[bytes], peak: list[float],
                timeout: float = 120.0) -> tuple[float, dict[str, Any]]:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        peak[0] = max(peak[0], rss_mb(proc.pid))
        obj = client.get(resource, name)
        status = dict(obj.get("status") or {}) if isinstance(obj, dict) else dict(obj.status or {})
        if pred(obj, status):
            return time.monotonic() - start, status
        if proc.poll() is not None:
            raise SystemExit(f"the operator exited with {proc.returncode}")
        time.sleep(0.1)
    raise SystemExit(f"timed out after {timeout:.0f} s waiting for the ClusterPolicy's status")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=500, help="fake GPU nodes to create (default 500)")
    args = parser.parse_args()
    kubeconfig = lab_kubeconfig()
    os.environ["KUBECONFIG"] = kubeconfig
    from lightkube import codecs
    from lightkube.generic_resource import create_global_resource
    from lightkube.resources.core_v1 import Namespace
    from lightkube.types import PatchType

    from kgpu.labels.node import kube_client
    from kgpu.operator.crd import crd
    from kgpu.operator.policy import GROUP, KIND, PLURAL, VERSION

    client = kube_client(Path(kubeconfig))
    delete_everything(client)
    client.create(codecs.from_dict(crd()))
    client.create(Namespace(metadata={"name": NAMESPACE}))  # type: ignore[arg-type]
    time.sleep(2)  # the CRD's API becomes served
    policy = create_global_resource(GROUP, VERSION, KIND, PLURAL)
    spec = {"daemonsets": {"nodeSelector": {"kgpu.io/bench-no-pods": "true"}}, "gfd": {"enabled": False}}
    client.create(policy(apiVersion=f"{GROUP}/{VERSION}", kind=KIND, metadata={"name": "bench"}, spec=spec))
    proc: subprocess.Popen[bytes] | None = None
    rows: list[tuple[str, str, str]] = []
    try:
        created = create_nodes(client, args.nodes)
        rows.append((f"create {args.nodes} Node objects (+ status)", f"{created:.1f} s", "-"))
        peak = [0.0]
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "kgpu", "operator", "--namespace", NAMESPACE, "--release",
                                 "bench", "--kubeconfig", kubeconfig, "--liveness", ""],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        took, status = wait_status(client, policy, "bench",
                                   lambda o, s: s.get("gpuNodes") == args.nodes, proc, peak)
        rows.append(("operator start → status counts every GPU node", f"{time.monotonic() - started:.1f} s",
                     "-"))
        client.patch(policy, "bench", {"spec": {"logLevel": "warning"}}, patch_type=PatchType.MERGE)
        generation = client.get(policy, "bench").metadata.generation
        took, status = wait_status(client, policy, "bench",
                                   lambda o, s: s.get("observedGeneration") == generation, proc, peak)
        rows.append(("spec change → full reconcile of all nodes observed", f"{took:.2f} s", "< 10 s"))
        for _ in range(20):  # settle: the operator idles with its watches open
            peak[0] = max(peak[0], rss_mb(proc.pid))
            time.sleep(0.1)
        rows.append(("operator resident memory (peak)", f"{peak[0]:.0f} MB", "< 150 MB"))
        rows.append(("status", f"{status.get('state')}: {status.get('readyNodes')}/{status.get('gpuNodes')} ready",
                     "-"))
        first = (status.get("nodes") or [{}])[0]
        rows.append(("first node named in status", f"{first.get('name')}: {first.get('stage')}", "-"))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        delete_everything(client)
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'value':>22}  target")
    for label, value, target in rows:
        print(f"{label:<{width}}  {value:>22}  {target}")
    print(json.dumps({"nodes": args.nodes}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
