"""``kgpu lint``: check workload manifests' GPU requests before Kubernetes refuses or strands them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("lint")(lint)


def lint(
    files: Annotated[list[str], typer.Argument(help="Manifest files (YAML or JSON, multi-document, Lists); - reads "
                                                    "standard input.", metavar="FILE…")],
    resources: Annotated[
        str | None, typer.Option("--resources", help="Comma-separated nvidia.com resources the nodes offer, to "
                                                     "flag requests for resources no node has.", metavar="NAMES"),
    ] = None,
    nodes: Annotated[
        Path | None, typer.Option("--nodes", help="kubectl get nodes -o yaml output: offered resources from "
                                                  "each node's allocatable.", metavar="FILE"),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="A node's labels (kgpu labels output, or a mapping): offered "
                                                   "resources from GFD's <resource>.count labels.", metavar="FILE"),
    ] = None,
    cluster: Annotated[
        bool, typer.Option("--cluster", help="Read the offered resources from the cluster's Nodes "
                                             "(see --kubeconfig)."),
    ] = False,
    kubeconfig: Annotated[
        Path | None, typer.Option("--kubeconfig", help="Kubeconfig for --cluster (default: in-cluster, then "
                                                       "$KUBECONFIG, then ~/.kube/config).", metavar="FILE"),
    ] = None,
    taint: Annotated[
        str, typer.Option("--taint", help="The taint GPU nodes carry (KEY=VALUE:EFFECT), or 'none' to skip the "
                                          "toleration check.", metavar="TAINT"),
    ] = "nvidia.com/gpu=present:NoSchedule",
    output: Annotated[str, typer.Option("--output", "-o", help="text or json.", metavar="FORMAT")] = "text",
) -> None:
    """Report GPU requests that Kubernetes will reject or that will never schedule, with the corrected YAML.

    Checks every Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob and PodTemplate
    (multi-document files and List objects): fractional nvidia.com quantities (0.5, 500m: use an MPS
    slice such as nvidia.com/gpu.shared: 1), requests without limits or different from limits, a GPU
    pod without a toleration for the GPU nodes' taint, and, given --resources, --nodes, --labels or
    --cluster, resources no node offers. Exit status 1 when an error is found.

    Examples:

      kgpu lint deploy.yaml

      helm template my-release ./chart | kgpu lint -

      kgpu lint job.yaml --nodes <(kubectl get nodes -o yaml)

      kgpu lint job.yaml --cluster --kubeconfig ~/.kube/config
    """
    from kgpu.errors import ConfigError
    from kgpu.lint import LintContext, Severity, Taint, lint_pod, load_documents, pod_templates
    from kgpu.lint import offered as offered_mod

    if output not in ("text", "json"):
        raise ConfigError(f"--output {output!r}: allowed values are text, json")
    if kubeconfig is not None and not cluster:
        raise ConfigError("--kubeconfig: only used with --cluster (read the offered resources from that cluster)")
    try:
        gpu_taint = None if taint == "none" else Taint.parse(taint)
    except ValueError as exc:
        raise ConfigError(f"--taint: {exc}") from None
    offered: set[str] | None = None

    def offer(names: frozenset[str]) -> None:
        nonlocal offered
        offered = set(names) | (offered or set())

    if resources is not None:
        offer(offered_mod.from_names(resources))
    if nodes is not None:
        offer(offered_mod.from_nodes((d.obj for d in load_documents(str(nodes), _read(str(nodes)))), str(nodes)))
    if labels is not None:
        offer(offered_mod.from_labels(_read(str(labels)), str(labels)))
    if cluster:
        offer(_cluster_offered(kubeconfig))
    ctx = LintContext(offered=frozenset(offered) if offered is not None else None, taint=gpu_taint)

    findings = []
    pods = 0
    for name in files:
        for doc in load_documents(name, _read(name)):
            for pod in pod_templates(doc):
                pods += 1
                findings.extend(lint_pod(pod, ctx))
    errors = sum(1 for f in findings if f.severity is Severity.ERROR)
    if output == "json":
        json.dump({"pods": pods, "errors": errors, "findings": [f.to_json() for f in findings]}, sys.stdout, indent=2)
        print()
    else:
        for f in findings:
            print(f"{f.where}: {f.severity} {f.rule}: {f.message}")
            print("  fix:")
            for line in f.fix.splitlines():
                print(f"    {line}")
        warnings = len(findings) - errors
        print(f"{pods} pod template(s) checked: {errors} error(s), {warnings} warning(s)", file=sys.stderr)
    if errors:
        raise typer.Exit(1)


def _read(name: str) -> str:
    from kgpu.fsio import MAX_READ_BYTES, decode, read_text

    if name == "-":
        return decode(sys.stdin.buffer.read(MAX_READ_BYTES), "standard input")
    return read_text(Path(name), name)


def _cluster_offered(kubeconfig: Path | None) -> frozenset[str]:
    from lightkube.resources.core_v1 import Node

    from kgpu.errors import KgpuError
    from kgpu.labels.node import kube_client
    from kgpu.lint.offered import from_nodes

    client = kube_client(kubeconfig)
    try:
        items = [n.to_dict() for n in client.list(Node)]
    except Exception as exc:  # lightkube raises HTTP and transport errors of many kinds
        raise KgpuError(f"--cluster: cannot list Nodes: {exc}") from None
    return from_nodes(({"kind": "Node", **item} for item in items), "--cluster")
