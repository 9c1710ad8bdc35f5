"""What `kgpu status` reads from the API server and how it prints it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kgpu.nodestatus import STAGES, is_gpu_node, node_stages

_MARK = {True: "ok", False: "FAIL", None: "?"}


def gather_status(kubeconfig: Path | None, only: str | None = None) -> dict[str, Any]:
    from lightkube.core.exceptions import ApiError
    from lightkube.generic_resource import create_global_resource
    from lightkube.resources.core_v1 import Node

    from kgpu.labels.node import kube_client
    from kgpu.operator.policy import GROUP, KIND, PLURAL, VERSION

    client = kube_client(kubeconfig)
    policy: dict[str, Any] | None = None
    try:
        resource = create_global_resource(GROUP, VERSION, KIND, PLURAL)
        policies = [p.to_dict() if hasattr(p, "to_dict") else dict(p) for p in client.list(resource)]
        if policies:
            p = min(policies, key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]))
            st = p.get("status") or {}
            policy = {"name": p["metadata"]["name"], "state": st.get("state", ""), "message": st.get("message", ""),
                      "namespace": st.get("namespace", ""), "gpuNodes": st.get("gpuNodes", 0),
                      "readyNodes": st.get("readyNodes", 0)}
    except ApiError:
        policy = None  # no operator installed (the CRD does not exist)
    namespace = (policy or {}).get("namespace", "")
    nodes = []
    for obj in client.list(Node):
        body = obj.to_dict()
        labels = body.get("metadata", {}).get("labels") or {}
        if not is_gpu_node(labels) or (only and body["metadata"]["name"] != only):
            continue
        stages = node_stages(body, namespace)
        nodes.append({"name": body["metadata"]["name"], "ready": all(s.ok is True for s in stages),
                      "stages": [s.to_json() for s in stages]})
    return {"clusterPolicy": policy, "nodes": sorted(nodes, key=lambda n: n["name"])}


def print_status(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 120), highlight=False)
    policy = report.get("clusterPolicy")
    if policy:
        console.print(f"ClusterPolicy {policy['name']}: {policy['state'] or 'no status yet'}  {policy['message']}")
    if not report["nodes"]:
        console.print("No GPU node: none is labelled nvidia.com/gpu.present=true or "
                      "feature.node.kubernetes.io/pci-10de.present=true.")
        return
    table = Table(box=None, pad_edge=False)
    table.add_column("NODE")
    for stage in STAGES:
        table.add_column(str(stage).upper() if stage != "devicePlugin" else "DEVICE-PLUGIN")
    table.add_column("READY")
    for node in report["nodes"]:
        table.add_row(node["name"], *[_MARK[s["ok"]] for s in node["stages"]], "yes" if node["ready"] else "no")
    console.print(table)
    for node in report["nodes"]:
        for s in node["stages"]:
            if s["ok"] is not True:
                console.print(f"{node['name']} {s['stage']}: {s['reason']}: {s['evidence']}")
                if s["fix"]:
                    console.print(f"  fix: {s['fix']}")
