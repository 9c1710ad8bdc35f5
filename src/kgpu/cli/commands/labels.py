"""``kgpu labels`` (print/write/apply the node's labels once) and ``kgpu labeler`` (the daemon)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kgpu.cli.state import GlobalOptions, global_options

if TYPE_CHECKING:
    from kgpu.labels.gfd import Labels

log = logging.getLogger("kgpu.labeler")

_DEFAULT_FEATURE_FILE = "/etc/kubernetes/node-feature-discovery/features.d/kgpu"

ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config-file",
        help="NVIDIA device-plugin config file (YAML/JSON, version v1): flags.migStrategy and the sharing "
        "section (timeSlicing or mps) shape the labels. Env: GFD_CONFIG_FILE, CONFIG_FILE.",
        metavar="FILE",
    ),
]
MigStrategyOpt = Annotated[
    str | None,
    typer.Option(
        "--mig-strategy",
        help="none, single or mixed (overrides the config file). Env: GFD_MIG_STRATEGY, MIG_STRATEGY.",
        metavar="STRATEGY",
    ),
]
NoTimestamp = Annotated[
    bool, typer.Option("--no-timestamp", help="Leave out nvidia.com/gfd.timestamp (as GFD's --no-timestamp).")
]
MachineTypeFile = Annotated[
    Path | None,
    typer.Option(
        "--machine-type-file",
        help="File holding the machine type for nvidia.com/gpu.machine "
        "(default: <root>/sys/class/dmi/id/product_name).",
        metavar="FILE",
    ),
]
Root = Annotated[
    Path,
    typer.Option("--root", help="Host filesystem root for DMI and PCI facts (tests, or a container with the "
                 "host mounted elsewhere).", metavar="DIR"),
]
NodeOpt = Annotated[
    str | None,
    typer.Option(
        "--node",
        help="Label this Node through the API server (server-side apply, field manager kgpu) instead of "
        "writing an NFD feature file.",
        metavar="NAME",
    ),
]
Kubeconfig = Annotated[
    Path | None,
    typer.Option("--kubeconfig", help="Kubeconfig for --node (default: in-cluster, then $KUBECONFIG, then "
                 "~/.kube/config).", metavar="FILE"),
]


def register(app: typer.Typer) -> None:
    app.command("labels")(labels)
    app.command("labeler")(labeler)


def _computer(
    opts: GlobalOptions, config_file: Path | None, mig_strategy: str | None, root: Path,
    machine_type_file: Path | None,
) -> Any:
    from kgpu.labels.config import resolve_settings
    from kgpu.labels.gfd import node_labels
    from kgpu.labels.host import read_host_facts

    reported: list[str | None] = [None]

    def compute() -> Labels:
        settings = resolve_settings(config_file, mig_strategy, os.environ)
        backend = opts.open_backend()
        try:
            inventory = backend.inventory()
        finally:
            backend.close()
        host = read_host_facts(root, [g.pci_bus_id for g in inventory.gpus], machine_type_file)
        if host.machine_type_problem != reported[0]:  # once per cause: the labeler computes every --poll
            reported[0] = host.machine_type_problem
            if host.machine_type_problem is not None:
                log.warning("cannot read the machine type; labelling it unknown",
                            extra={"error": host.machine_type_problem})
        return node_labels(inventory, settings, host)

    return compute


def _node_publisher(node: str, kubeconfig: Path | None) -> Any:
    from kgpu.labels.node import apply_node_labels, kube_client

    client = kube_client(kubeconfig)

    def publish(labels: Labels) -> None:
        apply_node_labels(client, node, labels)

    return publish


def labels(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of key=value lines.")] = False,
    config_file: ConfigFile = None,
    mig_strategy: MigStrategyOpt = None,
    no_timestamp: NoTimestamp = False,
    machine_type_file: MachineTypeFile = None,
    root: Root = Path("/"),
    output_file: Annotated[
        Path | None,
        typer.Option("--output-file", "-o", help="Also write them as an NFD local feature file (atomically), "
                     f"e.g. {_DEFAULT_FEATURE_FILE}.", metavar="FILE"),
    ] = None,
    node: NodeOpt = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Print the node's GPU labels, named and formatted as gpu-feature-discovery does.

    The labels are a view of the GPU inventory plus the device-plugin config (MIG strategy,
    time-slicing / MPS replicas) and host facts (machine type, PCI class). They also include
    nvidia.com/gpu.present and NFD's feature.node.kubernetes.io/pci-10de.present.

    Examples:

      kgpu labels                             # key=value lines, sorted

      kgpu --simulate a100-mig labels --mig-strategy mixed --json

      kgpu labels --config-file /etc/kgpu/plugin.yaml \\
        -o /etc/kubernetes/node-feature-discovery/features.d/kgpu

      kgpu labels --node "$(hostname)"        # server-side apply to the Node
    """
    from kgpu.fsio import check_root
    from kgpu.labels.gfd import TIMESTAMP
    from kgpu.labels.output import format_json, format_lines, write_feature_file

    opts = global_options(ctx)
    check_root(root)
    computed = _computer(opts, config_file, mig_strategy, root, machine_type_file)()
    if not no_timestamp:
        computed[TIMESTAMP] = str(int(time.time()))
    result = dict(sorted(computed.items()))
    if output_file is not None:
        write_feature_file(output_file, result)
    if node is not None:
        _node_publisher(node, kubeconfig)(result)
    sys.stdout.write(format_json(result) if as_json else format_lines(result))


def labeler(
    ctx: typer.Context,
    interval: Annotated[
        str, typer.Option("--interval", "--sleep-interval", envvar="GFD_SLEEP_INTERVAL",
                          help="Time between relabelling when nothing changes: seconds or a Go duration "
                          "(60, 60s, 1m30s) as GFD's --sleep-interval.", metavar="DURATION")
    ] = "60s",
    poll: Annotated[
        float, typer.Option("--poll", min=0.05, help="Seconds between checks for a changed inventory, config "
                            "file or host facts; a change relabels at once.", metavar="SECONDS")
    ] = 5.0,
    oneshot: Annotated[bool, typer.Option("--oneshot", envvar="GFD_ONESHOT",
                                          help="Label once and exit (non-zero on failure).")] = False,
    config_file: ConfigFile = None,
    mig_strategy: MigStrategyOpt = None,
    no_timestamp: Annotated[bool, typer.Option("--no-timestamp", envvar="GFD_NO_TIMESTAMP",
                                               help="Leave out nvidia.com/gfd.timestamp.")] = False,
    machine_type_file: Annotated[
        Path | None,
        typer.Option("--machine-type-file", envvar="GFD_MACHINE_TYPE_FILE", metavar="FILE",
                     help="File holding the machine type (default: <root>/sys/class/dmi/id/product_name)."),
    ] = None,
    root: Root = Path("/"),
    output_file: Annotated[
        Path,
        typer.Option("--output-file", "-o", envvar="GFD_OUTPUT_FILE", metavar="FILE",
                     help="NFD local feature file to keep up to date (ignored with --node); removed when the "
                     "labeler stops, as GFD does."),
    ] = Path(_DEFAULT_FEATURE_FILE),
    node: NodeOpt = None,
    kubeconfig: Kubeconfig = None,
    healthz: Annotated[
        str | None,
        typer.Option("--healthz", help="Serve GET /healthz on HOST:PORT (200 while labels are being published).",
                     metavar="ADDR"),
    ] = None,
) -> None:
    """Keep the node's GPU labels up to date: relabel every --interval, and at once when the inventory,
    the config file or the host facts change. SIGTERM stops it cleanly.

    Labels go to an NFD local feature file (default) or, with --node, straight onto the Node
    object by server-side apply (field manager kgpu; labels kgpu no longer computes are removed).

    Examples:

      kgpu labeler                            # NFD feature file, every 60 s

      kgpu labeler --node "$NODE_NAME" --config-file /etc/kgpu/plugin.yaml \\
        --healthz :8081

      kgpu --simulate h100x8 labeler --oneshot -o /tmp/kgpu.labels
    """
    from kgpu.fsio import check_root
    from kgpu.labels.daemon import LabelerState, LoopTiming, parse_duration, run_labeler, serve_health
    from kgpu.labels.output import remove_feature_file, write_feature_file

    seconds = parse_duration(interval, "--interval")
    opts = global_options(ctx)
    keepalive = opts.open_backend()  # fail fast; keeps NVML initialised between polls
    check_root(root)
    compute = _computer(opts, config_file, mig_strategy, root, machine_type_file)
    if node is not None:
        publish = _node_publisher(node, kubeconfig)
        target = f"node {node}"
    else:
        def publish(labels: Labels) -> None:
            write_feature_file(output_file, labels)

        target = str(output_file)
    timing = LoopTiming(interval=seconds, poll=poll, with_timestamp=not no_timestamp)
    state = LabelerState()
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    server = serve_health(healthz, state, timing) if healthz else None
    log.info("labeler started", extra={"target": target, "interval_s": seconds, "poll_s": poll, "oneshot": oneshot})
    try:
        run_labeler(compute, publish, stop, timing, oneshot=oneshot, state=state)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        keepalive.close()
        if node is None and not oneshot and remove_feature_file(output_file):
            log.info("removed the feature file", extra={"path": str(output_file)})
    log.info("labeler stopped", extra={"publishes": state.publishes})
