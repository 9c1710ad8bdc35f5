"""``kgpu config-manager``: NVIDIA's config-manager — the node label picks the device plugin's config."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from kgpu.cli.flagopts import FlagCommand, Given, takes_flags
from kgpu.config.flags import CONFIG_MANAGER


def register(app: typer.Typer) -> None:
    app.command("config-manager", cls=FlagCommand)(config_manager)


@takes_flags(CONFIG_MANAGER)
def config_manager(
    given: Given,
    healthz: Annotated[
        str | None,
        typer.Option("--healthz", help="Serve GET /healthz on HOST:PORT (503 while the label names a config "
                     "that cannot be used).", metavar="ADDR", rich_help_panel="kgpu daemon settings"),
    ] = None,
) -> None:
    """Point the device plugin's config file at the config the node label nvidia.com/device-plugin.config names.

    The configs are the files of --config-file-srcdir (a ConfigMap with several named configs); the daemons read
    --config-file-dst, a symlink swapped atomically, and reload it when it changes. Without a label:
    --default-config, then each --fallback-strategies entry (named, single, empty). An unknown name is refused
    and the previous config stays. kgpu's daemons reload the file themselves: pass --send-signal=false.

    Examples:

      kgpu config-manager --node-name "$NODE_NAME" --default-config default \\
        --config-file-srcdir /configs --config-file-dst /config/config.yaml

      kgpu config-manager --oneshot ...   # choose once and exit
    """
    from kgpu.configmanager import resolve_manager_settings, run

    run(resolve_manager_settings(given, os.environ), healthz)
