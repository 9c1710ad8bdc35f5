"""``kgpu exporter``: GPU metrics for Prometheus under dcgm-exporter's names, without DCGM."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kgpu.cli.state import global_options

DEFAULT_POD_RESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
DEFAULT_DEVICE_PLUGIN_STATE = "/run/kgpu/device-plugin/state.json"
"""The same as :mod:`kgpu.exporter.daemon`'s (kept here so --help needs no import of it)."""


def register(app: typer.Typer) -> None:
    app.command("exporter")(exporter)


def exporter(
    ctx: typer.Context,
    listen: Annotated[
        str, typer.Option(help="Address to serve /metrics and /healthz on: HOST:PORT, :PORT or [::]:PORT.",
                          envvar="KGPU_EXPORTER_LISTEN", metavar="ADDR")
    ] = "0.0.0.0:9400",
    collect: Annotated[
        Path | None,
        typer.Option(help="Counters to publish, in dcgm-exporter's CSV format ('FIELD, gauge|counter|label, help'). "
                     "Default: kgpu's built-in list (see --print-default-counters).",
                     envvar="KGPU_EXPORTER_COLLECT", metavar="FILE"),
    ] = None,
    kubelet_pod_resources: Annotated[
        str, typer.Option(help="The kubelet's PodResources socket, for pod/namespace/container labels; "
                          "'none' turns pod attribution off.", envvar="KGPU_KUBELET_POD_RESOURCES",
                          metavar="SOCKET")
    ] = DEFAULT_POD_RESOURCES_SOCKET,
    device_plugin_state: Annotated[
        str, typer.Option(help="The device plugin's state file (health and allocations per advertised device) "
                          "for the kgpu_device_plugin_* series; 'none' turns them off.", metavar="FILE",
                          envvar="KGPU_DEVICE_PLUGIN_STATE")
    ] = DEFAULT_DEVICE_PLUGIN_STATE,
    hostname_label: Annotated[
        str, typer.Option(help="Name of the host label: Hostname (dcgm-exporter before 2026), hostname "
                          "(dcgm-exporter since), or none.", metavar="NAME")
    ] = "Hostname",
    hostname: Annotated[
        str | None, typer.Option(help="Value of the host label. Default: $NODE_NAME, else this machine's host name.",
                                 metavar="NAME")
    ] = None,
    kubernetes_virtual_gpus: Annotated[
        bool, typer.Option("--kubernetes-virtual-gpus",
                           help="One series per container sharing a GPU, with a vgpu=<replica> label, as "
                           "dcgm-exporter's flag of that name. Default: the last container the kubelet lists wins.")
    ] = False,
    nvidia_resource_names: Annotated[
        str, typer.Option(help="Extra extended-resource names (comma-separated) whose devices are GPUs, e.g. "
                          "nvidia.com/gpu.shared. nvidia.com/gpu and nvidia.com/mig-* are always included.",
                          metavar="NAMES")
    ] = "",
    read_timeout: Annotated[
        float, typer.Option(help="Seconds a scrape waits for one GPU; a GPU slower than this is left out of "
                            "that scrape and counted in kgpu_gpu_read_errors_total.", min=0.01,
                            metavar="SECONDS")
    ] = 2.0,
    once: Annotated[
        bool, typer.Option("--once", help="Print one scrape to stdout and exit instead of serving.")
    ] = False,
    print_default_counters: Annotated[
        bool, typer.Option("--print-default-counters", help="Print the built-in counters CSV and exit.")
    ] = False,
) -> None:
    """Serve GPU metrics with dcgm-exporter's names, labels and types, read straight from NVML.

    Every scrape reads each GPU afresh; a GPU that fails or hangs loses its series for that scrape
    and counts in kgpu_gpu_read_errors_total, the scrape itself never fails. Containers holding a GPU
    (from the kubelet's PodResources API) become pod/namespace/container labels.

    Examples:

      kgpu exporter                           # on a GPU node: :9400/metrics

      kgpu --simulate h100x8 exporter --once  # one scrape of a simulated node

      kgpu exporter --collect my-counters.csv --hostname-label hostname

    A changed --collect file is applied without a restart (an invalid one is refused; the previous
    counters stay). SIGTERM stops the exporter.
    """
    # Imported here: every command module is imported to build the command line (see device_plugin.py).
    from kgpu.exporter.daemon import ExporterSettings, check, serve

    if print_default_counters:
        from kgpu.exporter.counters import DEFAULT_COUNTERS_CSV

        sys.stdout.write(DEFAULT_COUNTERS_CSV)
        return
    settings = ExporterSettings(
        options=global_options(ctx),
        listen=listen,
        collect=collect,
        kubelet_pod_resources=kubelet_pod_resources,
        device_plugin_state=device_plugin_state,
        hostname_label=hostname_label,
        hostname=hostname,
        kubernetes_virtual_gpus=kubernetes_virtual_gpus,
        nvidia_resource_names=nvidia_resource_names,
        read_timeout=read_timeout,
    )
    check(settings)  # a bad flag fails here, with the command line's message
    serve(settings, once=once)
