"""``kgpu device-plugin``: the kubelet device plugin daemon, with NVIDIA's flags and environment variables.

Its options are the rows of :mod:`kgpu.config.flags` for ``nvidia-device-plugin``; the same rows make the
command line of ``kgpu-device-plugin`` (:func:`kgpu.deviceplugin.daemon.main`), and both call
:func:`kgpu.deviceplugin.daemon.run`.
"""

from __future__ import annotations

import typer

from kgpu.cli.flagopts import FlagCommand, Given, takes_flags
from kgpu.cli.state import global_options
from kgpu.config.flags import DEVICE_PLUGIN


def register(app: typer.Typer) -> None:
    app.command("device-plugin", cls=FlagCommand)(device_plugin)


@takes_flags(DEVICE_PLUGIN, own_panel="kgpu daemon settings")
def device_plugin(ctx: typer.Context, given: Given) -> None:
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
    from kgpu.deviceplugin.daemon import run

    run(global_options(ctx), given)
