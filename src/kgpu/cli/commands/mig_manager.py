"""``kgpu mig-manager``: apply the MIG layout the node's nvidia.com/mig.config label names."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Annotated

import typer

MIG_MANAGER_HELP = (
    "Apply the MIG layout named by this node's nvidia.com/mig.config label, from a config in NVIDIA "
    "mig-parted's format (version: v1, mig-configs: {name: [{devices, mig-enabled, mig-devices, "
    "device-filter}]}), as NVIDIA's mig-manager does.\n\n"
    "The label nvidia.com/mig.config.state goes pending while a layout is applied, then success or failed "
    "(the reason in the Node annotation kgpu.io/mig.config.message and the log). After a change the node's "
    "kgpu GPU pods (device plugin, labeler, exporter, MPS daemon, validator) are restarted, so the new MIG "
    "devices are advertised and labelled. A layout the GPUs already have changes nothing. On a simulated node "
    "(--simulate) the layout is kept in the file KGPU_SIMULATE_MIG_STATE, which the node's other simulated "
    "components read.\n\n"
    "Examples:\n\n"
    "kgpu mig-manager --node \"$NODE_NAME\" --config-file /etc/kgpu/mig/config.yaml\n\n"
    "kubectl label node gpu-1 nvidia.com/mig.config=all-1g.10gb --overwrite"
)


def register(app: typer.Typer) -> None:
    app.command("mig-manager", help=MIG_MANAGER_HELP)(mig_manager)


def mig_manager(
    ctx: typer.Context,
    node: Annotated[str, typer.Option(help="This node's name in the cluster.", envvar="NODE_NAME", metavar="NAME")],
    config_file: Annotated[
        Path, typer.Option(help="The mig-parted config (NVIDIA's format).", envvar="CONFIG_FILE", metavar="FILE")
    ] = Path("/etc/kgpu/mig/config.yaml"),
    default: Annotated[
        str, typer.Option(help="Layout for a node without the label ('' leaves such a node alone).",
                          envvar="DEFAULT_MIG_CONFIG", metavar="NAME")
    ] = "",
    namespace: Annotated[
        str, typer.Option(help="Namespace of the kgpu pods restarted after a change.", envvar="POD_NAMESPACE")
    ] = "kube-system",
    interval: Annotated[str, typer.Option(help="How often to read the node's label: 2s, 1m.", metavar="DURATION")]
    = "2s",
    once: Annotated[bool, typer.Option("--once", help="Apply the current label once and exit (1 on failure).")]
    = False,
    kubeconfig: Annotated[
        Path | None,
        typer.Option(help="Kubeconfig (default: in-cluster, $KUBECONFIG, ~/.kube/config).", envvar="KUBECONFIG",
                     metavar="PATH"),
    ] = None,
) -> None:
    """Apply the MIG layout the node's nvidia.com/mig.config label names."""

    from kgpu.cli.state import global_options
    from kgpu.daemon import StopSignals
    from kgpu.errors import ConfigError
    from kgpu.labels.daemon import parse_duration
    from kgpu.labels.node import kube_client
    from kgpu.mig.manager import MigControl, NvmlMigControl, SimulatedMigControl, run_manager

    seconds = parse_duration(interval, "--interval")
    g = global_options(ctx)
    control: MigControl
    if g.backend == "simulated" or (g.backend == "auto" and g.simulate):
        state = os.environ.get("KGPU_SIMULATE_MIG_STATE")
        if not state:
            raise ConfigError("a simulated node keeps its MIG layout in a file: set KGPU_SIMULATE_MIG_STATE "
                              "(the chart sets /run/kgpu/simulated-mig.json)")
        control = SimulatedMigControl(g.simulate or "h100x8", Path(state))
    else:
        control = NvmlMigControl(g.open_backend())
    client = kube_client(kubeconfig)
    stop = threading.Event()
    with StopSignals(stop):  # the daemon runtime's signal handling: heard at once, a deadline on stopping
        outcome = run_manager(client, control, node, config_file, default, namespace, seconds, stop, once=once)
    if once:
        typer.echo(f"{outcome.state}: {outcome.message}" if outcome else "no MIG config requested")
        raise typer.Exit(0 if outcome is None or outcome.state == "success" else 1)
