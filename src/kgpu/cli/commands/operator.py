"""``kgpu operator``: run the kgpu operator (ClusterPolicy → node DaemonSets, status)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

OPERATOR_HELP = (
    'Run the kgpu operator: one ClusterPolicy (clusterpolicies.kgpu.io) takes every GPU node from '
    'joined to validated.\n\n'
    'It renders the node DaemonSets (device plugin, labeler, exporter, MPS daemon, validator, MIG '
    "manager) from the chart's definitions with the ClusterPolicy's spec over the chart's values, "
    'repairs them when they are edited or deleted, rolls a changed spec out node by node within '
    'daemonsets.rollingUpdate.maxUnavailable (each node must validate again before the next), and '
    "writes the ClusterPolicy's status: state ready/notReady/error, conditions, and each not-ready "
    'node with its failing stage and fix. A second ClusterPolicy is ignored and says so in its '
    'status.\n\n'
    'Examples:\n\n'
    "kgpu operator --namespace kube-system --release kgpu     # in the cluster (the chart's operator "
    'mode)\n\n'
    "kgpu operator --kubeconfig ~/.kube/config --liveness ''  # from a workstation, while developing"
)


def register(app: typer.Typer) -> None:
    app.command("operator", help=OPERATOR_HELP)(operator)


def operator(
    namespace: Annotated[
        str, typer.Option(help="Namespace of the node DaemonSets the operator owns.", envvar="POD_NAMESPACE")
    ] = "kube-system",
    release: Annotated[
        str, typer.Option(help="The chart release the objects are named after (kgpu-device-plugin, ...).")
    ] = "kgpu",
    values: Annotated[
        Path | None,
        typer.Option(help="The chart's values as the base the ClusterPolicy's spec applies over (default: the "
                     "chart's defaults).", metavar="FILE"),
    ] = None,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(help="Kubeconfig, to run the operator outside the cluster (default: in-cluster).",
                     metavar="PATH"),
    ] = None,
    liveness: Annotated[
        str | None, typer.Option(help="Liveness endpoint URL.", metavar="URL")
    ] = "http://0.0.0.0:8080/healthz",
    resync: Annotated[float, typer.Option(help="Seconds between full reconciles without any change.")] = 10.0,
    delete_policies: Annotated[
        bool,
        typer.Option("--delete-policies", help="Delete every ClusterPolicy, wait until the node DaemonSets and "
                     "their pods are gone, and exit (the chart's pre-delete hook runs this on uninstall)."),
    ] = False,
) -> None:
    """Run the kgpu operator."""
    from kgpu.operator.run import delete_policies as delete_all
    from kgpu.operator.run import run_operator

    if delete_policies:
        gone = delete_all(namespace, release, kubeconfig)
        typer.echo(f"deleted ClusterPolicy {', '.join(gone)}" if gone else "no ClusterPolicy to delete")
        return
    run_operator(namespace, release, values, kubeconfig, liveness or None, resync)
