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
) -> None:
    """Serve the node's GPUs to the kubelet (Device Plugin API v1beta1), as NVIDIA's plugin does.

    One socket and one registration per resource: nvidia.com/gpu, nvidia.com/mig-1g.10gb, nvidia.com/gpu.shared.

    Re-registers within a second when the kubelet restarts; stops cleanly on SIGTERM.

    XID and ECC failures reach the kubelet through ListAndWatch; a GPU that recovers is advertised healthy again.

    DP_DISABLE_HEALTHCHECKS and DP_ENABLE_HEALTHCHECKS work as in NVIDIA's plugin.

    Examples:

      kgpu device-plugin

      kgpu device-plugin --config-file /etc/kgpu/dp.yaml --mig-strategy mixed

      kgpu --simulate h100x8 device-plugin --kubelet-dir /tmp/dp \\
        --state-file /tmp/dp-state.json
    """
    import logging

    from kgpu.deviceplugin.health import parse_duration
    from kgpu.deviceplugin.service import DevicePluginSettings, check, serve
    from kgpu.handoff import hand_over
    from kgpu.process import log_memory

    opts = global_options(ctx)
    window = parse_duration(health_recovery_window, "--health-recovery-window")
    settings = DevicePluginSettings(
        options=opts,
        flags=dict(opts.flags) | dict(given),
        kubelet_dir=kubelet_dir or Path("/var/lib/kubelet/device-plugins"),
        recovery_window=window,
        state_file=state_file,
    )
    settings = check(settings)  # a bad flag, variable or config file fails here, with the command line's message
    if kubelet_dir is None and settings.config is not None:
        settings = replace(settings, kubelet_dir=settings.config.flags.plugin.kubelet_dir)
    log_memory(logging.getLogger("kgpu.deviceplugin"), "command line parsed")
    hand_over("device-plugin", settings.to_json())  # serves from a lean interpreter; returns in-process (tests)
    serve(settings)


