"""Scheduling throughput of kgpu-scheduler (the extender beside a real kube-scheduler), in pods per second.

Creates N pods at once (from many threads) that ask for GPU shares of different sizes with
``schedulerName: kgpu-scheduler``, then waits until each is bound or reported unplaceable
(a ``FilteringFailed`` event, or kube-scheduler's ``FailedScheduling``), and prints:

  - pods bound per second, from the first creation to the last binding;
  - the time to place or refuse every pod;
  - per GPU, what the bound pods' assignments (``hami.io/vgpu-devices-allocated``) add up to, against the
    GPU's memory, SMs and share count from the node's ``kgpu.io/dynamic-gpus`` — any excess is printed
    as OVERSUBSCRIBED and the exit status is 1.

It needs a cluster with the chart's scheduler (``scheduler.enabled=true``) and a device plugin sharing GPUs
dynamically, reached through $KUBECONFIG (or --kubeconfig). Pods are created in their own namespace, which
is deleted afterwards.

    .venv/bin/python bench/scheduler.py --pods 200
    .venv/bin/python bench/scheduler.py --in-process --pods 2000   # the extender's decisions alone, no cluster
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from kgpu.scheduler.assignment import decode  # noqa: E402
from kgpu.scheduler.inventory import NodeGPU, decode_gpus  # noqa: E402
from kgpu.scheduler.names import DEVICES_ALLOCATED, NODE_GPUS, SCHEDULER_NAME  # noqa: E402

NAMESPACE = "kgpu-bench-scheduler"


def sizes(i: int) -> tuple[int, int]:
    """Memory (MiB) and SMs (%) of pod ``i``: a spread of small and large shares, the same on every run."""
    return 4000 + (i * 7919) % 28000, 5 + (i * 13) % 30


def pod_manifest(i: int, image: str) -> dict[str, Any]:
    memory, cores = sizes(i)
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"share-{i:04d}", "namespace": NAMESPACE, "labels": {"app": "kgpu-bench"}},
        "spec": {
            "schedulerName": SCHEDULER_NAME,
            "terminationGracePeriodSeconds": 0,
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{
                "name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "sleep 3600"],
                "resources": {"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": str(memory),
                                         "nvidia.com/gpucores": str(cores)}},
            }],
        },
    }


def oversubscription(pods: list[dict[str, Any]], nodes: dict[str, tuple[NodeGPU, ...]]) -> list[str]:
    """What the bound pods' assignments put on each GPU beyond its memory, SMs or share count."""
    totals: dict[tuple[str, str], list[int]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        text = ((pod.get("metadata") or {}).get("annotations") or {}).get(DEVICES_ALLOCATED)
        if not node or text is None or (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded"):
            continue  # a pod that ended (or that its kubelet refused) holds no GPU
        for share in decode(text).shares:
            t = totals.setdefault((node, share.uuid), [0, 0, 0])
            t[0] += share.memory_mib
            t[1] += share.cores
            t[2] += 1
    problems = []
    for (node, uuid), (memory, cores, clients) in sorted(totals.items()):
        gpu = next((g for g in nodes.get(node, ()) if g.uuid == uuid), None)
        if gpu is None:
            problems.append(f"{node} {uuid}: assigned a GPU the node does not publish")
        elif memory > gpu.memory_mib or cores > gpu.cores or clients > gpu.shares:
            problems.append(f"{node} GPU {gpu.index}: {memory}/{gpu.memory_mib} MiB, {cores}/{gpu.cores} % of SMs, "
                            f"{clients}/{gpu.shares} clients")
    return problems


def gpus_in_use(pods: list[dict[str, Any]]) -> int:
    return len({(p["spec"].get("nodeName"), s.uuid) for p in pods if p["spec"].get("nodeName")
                for s in decode(p["metadata"]["annotations"].get(DEVICES_ALLOCATED, "")).shares})


def run_cluster(count: int, image: str, kubeconfig: Path | None, timeout: float) -> int:
    from lightkube import ApiError, Client, KubeConfig
    from lightkube.resources.core_v1 import Event, Namespace, Node, Pod

    config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
    client = Client(config=config, trust_env=False)
    nodes = {n.metadata.name: decode_gpus(n.metadata.annotations[NODE_GPUS]) for n in client.list(Node)
             if n.metadata.annotations and NODE_GPUS in n.metadata.annotations}
    if not nodes:
        print(f"no node publishes {NODE_GPUS}: deploy a device plugin with sharing.mps.dynamic first", file=sys.stderr)
        return 2
    # A namespace left by an earlier run may still be terminating (its pods going): wait for it to go.
    if not wait_gone(lambda: client.get(Namespace, NAMESPACE), ApiError, timeout):
        print(f"namespace {NAMESPACE} still terminating after {timeout:.0f} s", file=sys.stderr)
        return 2
    client.create(Namespace.from_dict({"metadata": {"name": NAMESPACE}}))
    try:
        manifests = [Pod.from_dict(pod_manifest(i, image)) for i in range(count)]
        started = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda p: client.create(p, namespace=NAMESPACE), manifests))
        created = time.monotonic() - started
        deadline = started + timeout
        last_bound, seen = started, 0
        while True:
            pods = [p.to_dict() for p in client.list(Pod, namespace=NAMESPACE)]
            bound = [p for p in pods if p["spec"].get("nodeName")]
            failed = [p for p in bound if p["status"].get("phase") == "Failed"]
            if len(bound) > seen:
                last_bound, seen = time.monotonic(), len(bound)
            refused = {e.involvedObject.name for e in client.list(Event, namespace=NAMESPACE)
                       if e.reason in ("FilteringFailed", "FailedScheduling")}
            settled = {p["metadata"]["name"] for p in bound} | refused
            if len(settled) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        total = time.monotonic() - started
        binding = last_bound - started
        problems = oversubscription(bound, nodes)
        print(f"\nkgpu-scheduler on {len(nodes)} node(s), {sum(len(g) for g in nodes.values())} dynamic GPUs")
        print(f"{'pods created':<44} {count:>8}   in {created:.2f} s")
        print(f"{'pods bound':<44} {len(bound):>8}   on {gpus_in_use(bound)} GPUs")
        print(f"{'  of which refused by their kubelet (Failed)':<44} {len(failed):>8}")
        print(f"{'pods left Pending with a reason':<44} {len(refused - {p['metadata']['name'] for p in bound}):>8}")
        print(f"{'time to bind them (first create → last bind)':<44} {binding:>8.2f} s")
        print(f"{'time until every pod was placed or refused':<44} {total:>8.2f} s")
        print(f"{'scheduling throughput':<44} {len(bound) / binding if binding > 0 else 0:>8.1f} pods/s")
        print(f"{'GPUs oversubscribed (memory, SMs, shares)':<44} {len(problems):>8}")
        for p in problems:
            print(f"  OVERSUBSCRIBED {p}")
        if len(settled) < count:
            print(f"  {count - len(settled)} pods neither bound nor refused after {timeout:.0f} s")
        return 1 if problems else 0
    finally:
        # the pods go with their namespace; wait, so that the next run (or the next test) finds the cluster clean
        client.delete(Namespace, NAMESPACE)
        wait_gone(lambda: client.get(Namespace, NAMESPACE), ApiError, timeout)


def wait_gone(get: Callable[[], object], missing: type[Exception], timeout: float) -> bool:
    """True once ``get`` raises ``missing`` with a 404 (the object is gone), False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            get()
        except missing as exc:
            if getattr(getattr(exc, "status", None), "code", None) == 404:
                return True
            raise
        time.sleep(0.5)
    return False


def run_in_process(count: int) -> int:
    """The extender's filter + prioritize + bind alone, against an in-memory API: its own cost per pod."""
    import logging

    logging.disable(logging.WARNING)  # the binds refused once the GPUs are full
    sys.path.insert(0, str(REPO / "tests"))
    from scheduler_helpers import MemoryApi, gpu_pod, gpus, node_dict

    from kgpu.scheduler.extender import Extender
    from kgpu.scheduler.names import BIND_PHASE, DEVICES_TO_ALLOCATE, PHASE_SUCCESS
    from kgpu.scheduler.state import ClusterState

    names = [f"n{i}" for i in range(16)]
    state = ClusterState()
    state.replace_nodes([node_dict(n, gpus(8, node=n, shares=48)) for n in names])
    api = MemoryApi()
    api.watchers.append(state.upsert_pod)
    state.synced.set()
    ext = Extender(state, api)
    allocated: Callable[[dict[str, Any]], None] = lambda p: p["metadata"]["annotations"].update(  # noqa: E731
        {BIND_PHASE: PHASE_SUCCESS, DEVICES_TO_ALLOCATE: ";"})
    lock = threading.Lock()
    bound = 0

    def schedule(i: int) -> None:
        nonlocal bound
        memory, cores = sizes(i)
        pod = gpu_pod(f"p{i}", memory=memory, cores=cores)
        api.add(pod)
        passed = ext.filter({"Pod": pod, "NodeNames": names})["NodeNames"]
        if not passed:
            return
        scores = ext.prioritize({"Pod": pod, "NodeNames": passed})
        node = max(scores, key=lambda s: s["Score"])["Host"]
        meta = pod["metadata"]
        if ext.bind({"PodName": meta["name"], "PodNamespace": "default", "PodUID": meta["uid"],
                     "Node": node})["Error"] == "":
            api.update("default", meta["name"], allocated)  # the node's kubelet allocates it
            with lock:
                bound += 1

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(schedule, range(count)))
    seconds = time.monotonic() - started
    problems = oversubscription(list(api.pods.values()),
                                {n: tuple(g for g in gpus(8, node=n, shares=48)) for n in names})
    print(f"\nthe extender alone: {len(names)} nodes × 8 GPUs, {count} pods from 16 threads")
    print(f"{'pods bound':<44} {bound:>8}")
    print(f"{'filter + prioritize + bind throughput':<44} {count / seconds:>8.1f} pods/s")
    print(f"{'GPUs oversubscribed':<44} {len(problems):>8}")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=200, help="pods created at once (default 200)")
    parser.add_argument("--image", default="local/busybox:1", help="the pods' image (default: the lab's busybox)")
    parser.add_argument("--kubeconfig", type=Path, default=None, help="default: $KUBECONFIG")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for every pod (default 300)")
    parser.add_argument("--in-process", action="store_true", help="no cluster: the extender's decisions alone")
    args = parser.parse_args()
    if not 1 <= args.pods <= 5000:
        parser.error(f"--pods {args.pods}: allowed 1 to 5000")
    if args.in_process:
        return run_in_process(args.pods)
    if args.kubeconfig is None and not os.environ.get("KUBECONFIG"):
        parser.error("no cluster: set $KUBECONFIG or pass --kubeconfig (or --in-process)")
    return run_cluster(args.pods, args.image, args.kubeconfig, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
