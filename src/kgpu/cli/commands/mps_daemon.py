"""``kgpu mps-daemon``: run and supervise one CUDA MPS control daemon per GPU shared through MPS."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from kgpu.cli.flagopts import FlagCommand, Given, takes_flags
from kgpu.cli.state import GlobalOptions, global_options
from kgpu.config import DEVICE_PLUGIN, DriverRoot, MpsConfig

MPS_FLAGS = ("config-file", "mps-root")
"""The device plugin's flags the MPS commands take: its config file (sharing.mps) and the MPS root."""


def register(app: typer.Typer) -> None:
    app.command("mps-daemon", cls=FlagCommand)(mps_daemon)


def load_sharing(opts: GlobalOptions, given: Given) -> tuple[MpsConfig, Path, DriverRoot, Path | None]:
    """``sharing.mps``, the MPS root, the driver root and the config file, resolved exactly as ``kgpu
    device-plugin`` resolves them (flag > environment > file > default: --mps-root / MPS_ROOT,
    flags.mpsRoot, /run/kgpu/mps)."""
    from kgpu.config.resolve import resolve_config

    config = resolve_config(dict(opts.flags) | dict(given), os.environ)
    source = Path(config.config_file) if config.config_file else None
    return config.sharing.mps or MpsConfig(), Path(config.flags.mps_root), config.driver_root, source


@takes_flags(DEVICE_PLUGIN, MPS_FLAGS)
def mps_daemon(
    ctx: typer.Context,
    given: Given,
    control_binary: Annotated[
        Path | None,
        typer.Option(help="nvidia-cuda-mps-control to run (default: found under the driver root, then PATH).",
                     metavar="PATH"),
    ] = None,
    interval: Annotated[
        float, typer.Option(help="Seconds between health checks of every daemon (the device plugin treats a "
                                 "status older than 15 s as a dead supervisor).", min=0.05, max=5.0,
                                 metavar="SECONDS")
    ] = 2.0,
    default_limits: Annotated[
        bool,
        typer.Option(help="Set each daemon's default client limits to its GPU's largest slice, so a client "
                          "that drops its environment still cannot take the whole GPU."),
    ] = True,
    exclusive_process: Annotated[
        bool,
        typer.Option(help="Opt-in, for dedicated nodes: set the shared GPUs' compute mode to EXCLUSIVE_PROCESS "
                          "while the daemons run (as NVIDIA's daemon does) and restore it on exit. Changes GPU "
                          "settings; off by default."),
    ] = False,
    healthz: Annotated[
        str | None,
        typer.Option(help="Serve GET /healthz on HOST:PORT (e.g. :8084): 200 while the daemons are checked, "
                          "503 with why.", envvar="KGPU_HEALTHZ", metavar="ADDR"),
    ] = None,
) -> None:
    """Run one CUDA MPS control daemon per GPU that sharing.mps shares, and keep them running.

    For each shared GPU: nvidia-cuda-mps-control -d with CUDA_VISIBLE_DEVICES=<uuid> and its own
    pipe/log directories under the MPS root; restarted with backoff when it dies or stops answering;
    stopped with 'quit' on SIGTERM. Writes <root>/<uuid>/status.json every check (the device plugin
    marks a GPU's slices Unhealthy when it is not 'running' or goes stale), <root>/layout.json, and
    <root>/.ready once all daemons answer. A changed config file is applied without a restart.

    Examples:

      kgpu mps-daemon --config-file /etc/kgpu/config.yaml

      kgpu --driver-root /usr/local/nvidia mps-daemon --config-file mps.yaml \\
        --mps-root /tmp/mps
    """
    # Imported here: every command module is imported to build the command line (see device_plugin.py).
    from kgpu.sharing.serve import MpsDaemonSettings, serve

    options = global_options(ctx)
    settings = MpsDaemonSettings(
        options=options, control_binary=control_binary, interval=interval, default_limits=default_limits,
        exclusive_process=exclusive_process, healthz=healthz,
    )
    serve(settings, lambda: load_sharing(options, given))
