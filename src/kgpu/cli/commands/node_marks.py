"""``kgpu node label`` and ``kgpu node taint``: mark this GPU node in the cluster by hand.

The usual bootstrap: the node components are scheduled on ``nvidia.com/gpu.present=true`` nodes, and
GPU nodes carry ``nvidia.com/gpu=present:NoSchedule`` so only GPU pods land there. These commands join
the ``kgpu node`` group (``kgpu node prepare`` lives in ``node.py``).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from kgpu.cli.state import global_options


def register(app: typer.Typer) -> None:
    from kgpu.cli.commands.node import node_app

    node_app.command("label")(label)
    node_app.command("taint")(taint)


NodeName = Annotated[
    str | None,
    typer.Option("--node", help="The Node's name (default: $NODE_NAME, else this host's name).", metavar="NAME"),
]
Kubeconfig = Annotated[
    Path | None,
    typer.Option("--kubeconfig", help="Kubeconfig (default: in-cluster, then $KUBECONFIG, then ~/.kube/config).",
                 metavar="FILE"),
]


def _node_name(node: str | None) -> str:

    return node or os.environ.get("NODE_NAME") or socket.gethostname().lower()


def label(
    ctx: typer.Context,
    node: NodeName = None,
    kubeconfig: Kubeconfig = None,
    remove: Annotated[bool, typer.Option("--remove", help="Withdraw the label instead.")] = False,
) -> None:
    """Label this node nvidia.com/gpu.present=true, after checking it has an NVIDIA GPU.

    The label (server-side apply, field manager kgpu-node) lets kgpu's DaemonSets, which select
    nvidia.com/gpu.present=true, start on the node; the labeler then keeps it with the other labels.

    Examples:

      kgpu node label            # this host, kubeconfig from the usual places

      kgpu node label --node gpu-node-1 --kubeconfig ~/.kube/admin.conf

      kgpu node label --remove   # names who else keeps it, if anyone
    """
    from kgpu.errors import KgpuError
    from kgpu.labels.node import kube_client, set_presence_label, still_labelled_reason

    name = _node_name(node)
    if not remove:
        backend = global_options(ctx).open_backend()
        try:
            gpus = backend.inventory().gpus
        finally:
            backend.close()
        if not gpus:
            raise KgpuError(f"no NVIDIA GPU on this node (backend {backend.name}); not labelling {name!r} "
                            f"nvidia.com/gpu.present=true")
    result = set_presence_label(kube_client(kubeconfig), name, present=not remove)
    if not remove:
        typer.echo(f"node/{name} labeled nvidia.com/gpu.present=true")
    elif result.value is None:
        typer.echo(f"node/{name} unlabeled nvidia.com/gpu.present")
    else:
        raise KgpuError(still_labelled_reason(result))


def taint(
    node: NodeName = None,
    kubeconfig: Kubeconfig = None,
    spec: Annotated[
        str, typer.Option("--taint", help="KEY=VALUE:EFFECT (EFFECT: NoSchedule, PreferNoSchedule, NoExecute).",
                          metavar="TAINT")
    ] = "nvidia.com/gpu=present:NoSchedule",
    remove: Annotated[bool, typer.Option("--remove", help="Remove the taint (same key and effect) instead.")]
    = False,
) -> None:
    """Taint this node so that only pods tolerating the taint (GPU pods) are scheduled on it.

    Other taints are kept; the change is a JSON patch guarded by the node's resourceVersion.

    Examples:

      kgpu node taint            # nvidia.com/gpu=present:NoSchedule, this host

      kgpu node taint --node gpu-node-1 --remove
    """
    from kgpu.labels.node import kube_client, parse_taint, set_node_taint

    name = _node_name(node)
    wanted = parse_taint(spec)
    changed = set_node_taint(kube_client(kubeconfig), name, wanted, remove=remove)
    verb = ("untainted" if remove else "tainted") if changed else "unchanged"
    typer.echo(f"node/{name} {verb} ({wanted})")
