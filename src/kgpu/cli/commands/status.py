"""``kgpu status``: the cluster's GPU nodes and where each stands, from the API server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

STATUS_HELP = (
    "Show every GPU node's stages: driver, runtime, device plugin, allocatable, labels, validation.\n\n"
    "A GPU node is one labelled nvidia.com/gpu.present=true (kgpu's labeler, GFD) or "
    'feature.node.kubernetes.io/pci-10de.present=true (NFD). Driver, runtime, device plugin and '
    'validation are what kgpu node report (the kgpu-validator DaemonSet) found on the node; '
    'allocatable and labels are read from the Node. Failing stages are listed below the table with '
    "their evidence and exact fix. With the operator installed, the ClusterPolicy's state comes "
    'first. Exit code 1 when a node is not ready.\n\n'
    'Examples:\n\n'
    'kgpu status\n\n'
    "kgpu status --json | jq '.nodes[] | select(.ready | not)'"
)


def register(app: typer.Typer) -> None:
    app.command("status", help=STATUS_HELP)(status)


def status(
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print JSON: {clusterPolicy: {name, state, message, namespace, gpuNodes, readyNodes} or "
        "null, nodes: [{name, ready, stages: [{stage, ok, reason, evidence, fix}]}]}.")] = False,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(help="Kubeconfig (default: in-cluster, $KUBECONFIG, ~/.kube/config).", envvar="KUBECONFIG",
                     metavar="PATH"),
    ] = None,
    node: Annotated[str | None, typer.Option(help="Only this node.", metavar="NAME")] = None,
) -> None:
    """Show every GPU node's stages: driver, runtime, device plugin, allocatable, labels, validation."""
    from kgpu.cli.render_status import gather_status, print_status

    report = gather_status(kubeconfig, node)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_status(report)
    raise typer.Exit(0 if all(n["ready"] for n in report["nodes"]) else 1)


