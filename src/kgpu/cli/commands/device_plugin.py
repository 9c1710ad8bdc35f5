"""``kgpu device-plugin``: the kubelet device plugin daemon, with NVIDIA's flags and environment variables."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from kgpu.cli.flagopts import FlagCommand, Given, takes_flags
from kgpu.cli.state import global_options
from kgpu.config.flags import DEVICE_PLUGIN

_PANEL_KGPU = "kgpu daemon settings"


def register(app: typer.Typer) -> None:
    app.command("device-plugin", cls=FlagCommand)(device_plugin)


@takes_flags(DEVICE_PLUGIN)
def device_plugin(
    ctx: typer.Context,
    given: Given,
    kubelet_dir: Annotated[
        Path | None,
        typer.Option(
            help="The kubelet's device-plugins directory (holds kubelet.sock and our sockets). "
            "Default: the directory of --kubelet-socket.",
            envvar="KGPU_KUBELET_DIR",
            metavar="DIR",
            rich_help_panel=_PANEL_KGPU,
        ),
    ] = None,
    health_recovery_window: Annotated[
        str,
        typer.Option(
            help="An unhealthy GPU becomes healthy again once it answers probes and no fatal event came "
            "for this long (e.g. 5m, 90s, 1h; 0 disables recovery).",
            envvar="KGPU_HEALTH_RECOVERY_WINDOW",
            metavar="DURATION",
            rich_help_panel=_PANEL_KGPU,
        ),
    ] = "5m",
    state_file: Annotated[
        Path,
        typer.Option(
            help="JSON snapshot of advertised devices, health and allocation counts (read by the exporter).",
            envvar="KGPU_DP_STATE_FILE",
            metavar="FILE",
            rich_help_panel=_PANEL_KGPU,
        ),
    ] = Path("/run/kgpu/device-plugin/state.json"),
    healthz: Annotated[
        str | None,
        typer.Option(
            help="Serve GET /healthz on HOST:PORT (e.g. :8082): 200 while every watcher works, 503 with why.",
            envvar="KGPU_HEALTHZ",
            metavar="ADDR",
            rich_help_panel=_PANEL_KGPU,
        ),
    ] = None,
) -> None:
    """Serve the node's GPUs to the kubelet (Device Plugin API v1beta1), as NVIDIA's plugin does.

    One socket and one registration per resource: nvidia.com/gpu, nvidia.com/mig-1g.10gb, nvidia.com/gpu.shared.

    Re-registers within a second when the kubelet restarts; a changed config file (a ConfigMap update)
    is applied without a restart; SIGTERM stops it within 2 s.

    XID and ECC failures reach the kubelet through ListAndWatch; a GPU that recovers is advertised healthy again.

    DP_DISABLE_HEALTHCHECKS and DP_ENABLE_HEALTHCHECKS work as in NVIDIA's plugin.

    Examples:

      kgpu device-plugin

      kgpu device-plugin --config-file /etc/kgpu/dp.yaml --mig-strategy mixed

      kgpu --simulate h100x8 device-plugin --kubelet-dir /tmp/dp \\
        --state-file /tmp/dp-state.json
    """
    # Imported here, not at the top: every command module is imported to build the command line, and
    # gRPC and the plugin's modules would add to every command's start (import kgpu.cli: 0.17 s; with
    # kgpu.deviceplugin.daemon: 0.57 s on the 2-core dev machine).
    from kgpu.deviceplugin.daemon import DevicePluginSettings, check, serve
    from kgpu.deviceplugin.health import parse_duration

    opts = global_options(ctx)
    window = parse_duration(health_recovery_window, "--health-recovery-window")
    settings = DevicePluginSettings(
        options=opts,
        flags=dict(opts.flags) | dict(given),
        kubelet_dir=kubelet_dir or Path("/var/lib/kubelet/device-plugins"),
        recovery_window=window,
        state_file=state_file,
        healthz=healthz,
    )
    config = check(settings)  # a bad flag, variable or config file fails here, with the command line's message
    if kubelet_dir is None:
        settings = replace(settings, kubelet_dir=config.flags.plugin.kubelet_dir)
    serve(settings)
