"""``kgpu labels`` (print/write/apply the node's labels once) and ``kgpu labeler`` (the daemon)."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kgpu.cli.flagopts import FlagCommand, Given, takes_flags
from kgpu.cli.state import GlobalOptions, global_options
from kgpu.config import GFD, Flag, PluginConfig
from kgpu.labels.config import label_config

if TYPE_CHECKING:
    from kgpu.labels.gfd import Labels

log = logging.getLogger("kgpu.labeler")

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

_INTERVAL = Flag("interval", "duration", "kgpu's older spelling of --sleep-interval.", {GFD: ()},
                 metavar="DURATION", origin="kgpu")

LABELS_FLAGS = ("mig-strategy", "config-file", "no-timestamp", "machine-type-file", "output-file",
                "device-discovery-strategy", "driver-root-ctr-path", "kubeconfig")
"""gpu-feature-discovery's flags that ``kgpu labels`` (one labelling, printed) takes."""


def register(app: typer.Typer) -> None:
    app.command("labels", cls=FlagCommand)(labels)
    app.command("labeler", cls=FlagCommand)(labeler)


def _config(opts: GlobalOptions, given: Given, root: Path) -> PluginConfig:
    """The configuration as GFD resolves it: flag > environment > config file > default."""
    return label_config(dict(opts.flags) | dict(given), os.environ)


def _computer(opts: GlobalOptions, given: Given, root: Path) -> Any:
    from kgpu.errors import BackendError
    from kgpu.gpu.model import CudaVersion, Inventory
    from kgpu.labels.config import node_settings
    from kgpu.labels.gfd import node_labels
    from kgpu.labels.host import read_host_facts

    reported: list[str | None] = [None]

    unavailable: list[str | None] = [None]

    def compute() -> Labels:
        config = _config(opts, given, root)
        try:
            backend = opts.open_backend(config.driver_root)
            try:
                inventory = backend.inventory()
            finally:
                backend.close()
        except BackendError as exc:
            if config.flags.fail_on_init_error:
                raise
            # GFD's NewFallbackToNullOnInitError: with failOnInitError false, a node whose GPUs cannot be
            # initialised is labelled as a node without GPUs (only the timestamp), and the run goes on
            if str(exc) != unavailable[0]:
                unavailable[0] = str(exc)
                log.warning("GPUs cannot be initialised; failOnInitError is false, so labelling no GPUs",
                            extra={"error": str(exc)})
            inventory = Inventory(backend="none", driver_version="", cuda_driver_version=CudaVersion(0, 0))
        settings = node_settings(config, inventory)
        machine = Path(config.flags.gfd.machine_type_file)
        machine_file = machine if "machine-type-file" in given else root / str(machine).lstrip("/")
        host = read_host_facts(root, [g.pci_bus_id for g in inventory.gpus], machine_file)
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


def _prune(node: str | None, kubeconfig: Path | None) -> None:
    from kgpu.labels.node import FIELD_MANAGER, kube_client, prune_node_labels
    from kgpu.scheduler.kube import withdraw_node_gpus
    from kgpu.scheduler.names import NODE_GPUS

    client = kube_client(kubeconfig)
    removed = prune_node_labels(client, node)
    if not removed:
        where = f"node/{node} carries no" if node else "no node carries a"
        print(f"{where} label of field manager {FIELD_MANAGER}: nothing to remove")
    for name, keys in removed.items():
        print(f"node/{name}: removed {len(keys)} label{'s' * (len(keys) != 1)}"
              + (f" ({', '.join(keys)})" if keys else ""))
    # the device plugin's record of dynamically shared GPUs: it withdraws it as it stops, unless helm uninstall
    # took its permission away first
    for name in withdraw_node_gpus(client, node):
        print(f"node/{name}: removed annotation {NODE_GPUS} (GPUs shared dynamically)")


@takes_flags(GFD, LABELS_FLAGS)
def labels(
    ctx: typer.Context,
    given: Given,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of key=value lines.")] = False,
    root: Root = Path("/"),
    node: NodeOpt = None,
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
    root = check_root(root)
    config = _config(opts, given, root)
    computed = _computer(opts, given, root)()
    if not config.flags.gfd.no_timestamp:
        computed[TIMESTAMP] = str(int(time.time()))
    result = dict(sorted(computed.items()))
    if "output-file" in given:
        write_feature_file(Path(config.flags.gfd.output_file), result)
    if node is not None:
        _node_publisher(node, _kubeconfig(given))(result)
    sys.stdout.write(format_json(result) if as_json else format_lines(result))


def _node_feature_publisher(given: Given, environ: Mapping[str, str]) -> tuple[Any, str]:
    """GFD's NodeFeature output: --node-name, --namespace and --pod-name (or NODE_NAME, NAMESPACE, POD_NAME)."""
    from kgpu.config.resolve import resolve_settings
    from kgpu.errors import ConfigError
    from kgpu.kubeapi import kube_client
    from kgpu.labels.nodefeature import apply_node_feature, node_feature_name, pod_owners

    values = {n: str(s.value) for n, s in resolve_settings(GFD, given, environ).items() if s.value is not None}
    node, namespace = values.get("node-name", ""), values.get("namespace", "default")
    if not node:
        raise ConfigError("--use-node-feature-api needs the node's name: --node-name or NODE_NAME")
    client = kube_client(_kubeconfig(given))
    owners = pod_owners(client, namespace, values.get("pod-name", ""))

    def publish(labels: Labels) -> None:
        apply_node_feature(client, namespace, node, labels, owners)

    return publish, f"NodeFeature {namespace}/{node_feature_name(node)}"


def _kubeconfig(given: Given) -> Path | None:
    value = given.get("kubeconfig") or os.environ.get("KUBECONFIG")
    return Path(str(value)) if value else None


@takes_flags(GFD, extra=(_INTERVAL,))
def labeler(
    ctx: typer.Context,
    given: Given,
    poll: Annotated[
        float, typer.Option("--poll", min=0.05, help="Seconds between checks for a changed inventory, config "
                            "file or host facts; a change relabels at once.", metavar="SECONDS")
    ] = 5.0,
    root: Root = Path("/"),
    node: NodeOpt = None,
    healthz: Annotated[
        str | None,
        typer.Option("--healthz", help="Serve GET /healthz on HOST:PORT (200 while labels are being published).",
                     metavar="ADDR"),
    ] = None,
    prune: Annotated[
        bool,
        typer.Option("--prune", help="Instead of labelling: remove the labels the labeler applied (field manager "
                     "kgpu) from every Node, or only from --node, and exit; a label someone else also set "
                     "stays; the device plugin's kgpu.io/dynamic-gpus annotation goes too. `helm uninstall` "
                     "runs this, as NFD's chart runs nfd-master -prune."),
    ] = False,
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

      kgpu labeler --prune                    # every node: kgpu's labels removed
    """
    if prune:
        _prune(node, _kubeconfig(given))
        return
    from kgpu.daemon import Daemon, parse_listen
    from kgpu.errors import BackendError, ConfigError, KgpuError
    from kgpu.fsio import check_root
    from kgpu.labels.daemon import Labeler, LoopTiming
    from kgpu.labels.output import remove_feature_file, write_feature_file

    opts = global_options(ctx)
    root = check_root(root)
    gfd_given = dict(given)
    interval = gfd_given.pop("interval", None)
    if interval is not None and "sleep-interval" not in gfd_given:
        gfd_given["sleep-interval"] = interval  # kgpu's older spelling
    config = _config(opts, gfd_given, root)  # a bad flag, variable or file fails here, before anything runs
    gfd = config.flags.gfd
    oneshot, output_file = gfd.oneshot, Path(gfd.output_file)
    seconds = gfd.sleep_interval
    address = parse_listen(healthz, "--healthz") if healthz else None
    with Daemon("labeler") as runtime:
        try:
            keepalive = opts.open_backend(config.driver_root)  # fail fast; keeps NVML initialised between polls
        except BackendError:
            if config.flags.fail_on_init_error:
                raise
            # failOnInitError false: each labelling tries again, and meanwhile labels no GPUs (GFD's fallback)
        else:
            runtime.on_stop(keepalive.close)
        compute = _computer(opts, gfd_given, root)
        if config.flags.use_node_feature_api:
            publish, target = _node_feature_publisher(given, os.environ)
        elif node is not None:
            publish = _node_publisher(node, _kubeconfig(given))
            target = f"node {node}"
        else:
            def publish(labels: Labels) -> None:
                write_feature_file(output_file, labels)

            target = str(output_file)
        timing = LoopTiming(interval=seconds, poll=poll, with_timestamp=not gfd.no_timestamp)
        labeler = Labeler(compute, publish, timing)
        log.info("labeler started",
                 extra={"target": target, "interval_s": seconds, "poll_s": poll, "oneshot": oneshot})
        if oneshot:
            labeler.tick()  # the labels, or the reason there are none (a non-zero exit)
            return
        try:
            labeler.tick()
        except ConfigError:
            raise  # a configuration that cannot work stops the labeler at once, in one line
        except KgpuError:
            pass  # the GPUs or the API server failing now: retried by the watcher below, which logs it
        if node is None and not config.flags.use_node_feature_api and not math.isinf(seconds):
            def remove() -> None:
                if remove_feature_file(output_file):
                    log.info("removed the feature file", extra={"path": str(output_file)})

            runtime.on_stop(remove)
        runtime.watch("labels", labeler.tick, interval=poll, backoff=labeler.backoff(),
                      unhealthy_after=timing.unhealthy_after)
        if address is not None:
            runtime.serve_http(address)
        runtime.serve()
    log.info("labeler stopped", extra={"publishes": labeler.state.publishes})
