"""``kgpu mps-daemon``: run and supervise one CUDA MPS control daemon per GPU shared through MPS."""

from __future__ import annotations

import os
import signal
import threading
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


def load_sharing(opts: GlobalOptions, given: Given) -> tuple[MpsConfig, Path, DriverRoot]:
    """``sharing.mps``, the MPS root and the driver root, resolved exactly as ``kgpu device-plugin``
    resolves them (flag > environment > file > default: --mps-root / MPS_ROOT, flags.mpsRoot, /run/kgpu/mps)."""
    from kgpu.config.resolve import resolve_config

    config = resolve_config(dict(opts.flags) | dict(given), os.environ)
    return config.sharing.mps or MpsConfig(), Path(config.flags.mps_root), config.driver_root


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
) -> None:
    """Run one CUDA MPS control daemon per GPU that sharing.mps shares, and keep them running.

    For each shared GPU: nvidia-cuda-mps-control -d with CUDA_VISIBLE_DEVICES=<uuid> and its own
    pipe/log directories under the MPS root; restarted with backoff when it dies or stops answering;
    stopped with 'quit' on SIGTERM. Writes <root>/<uuid>/status.json every check (the device plugin
    marks a GPU's slices Unhealthy when it is not 'running' or goes stale), <root>/layout.json, and
    <root>/.ready once all daemons answer.

    Examples:

      kgpu mps-daemon --config-file /etc/kgpu/config.yaml

      kgpu --driver-root /usr/local/nvidia mps-daemon --config-file mps.yaml \\
        --mps-root /tmp/mps
    """
    import logging

    from kgpu.gpu.model import ComputeMode
    from kgpu.host.driverroot import CUDA_SONAME, WELL_KNOWN_DRIVER_ROOTS, find_binary, find_library
    from kgpu.process import wait_for_stop
    from kgpu.sharing.daemon import (
        DaemonError,
        GpuDaemon,
        Supervisor,
        driver_env,
        find_control_binary,
        set_compute_mode,
        spec_for,
    )
    from kgpu.sharing.layout import build_layout, layout_to_json
    from kgpu.sharing.paths import MpsPaths

    log = logging.getLogger("kgpu.mps-daemon")
    options = global_options(ctx)
    config, root, driver_root = load_sharing(options, given)
    paths = MpsPaths(root)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    backend = options.open_backend(driver_root)
    try:
        inventory = backend.inventory()
    finally:
        backend.close()
    layout = build_layout(inventory, config)
    if not layout.enabled:
        log.info("no GPU is shared through MPS (sharing.mps has no resources or slices); waiting for SIGTERM",
                 extra={"config": config.source})
        wait_for_stop(stop)
        return

    roots = [driver_root.view] if driver_root.explicit else list(WELL_KNOWN_DRIVER_ROOTS)
    binary = find_control_binary(roots, control_binary)
    library = next((lib for r in roots if (lib := find_library(r, CUDA_SONAME)) is not None), None)
    extra_env = driver_env(binary, library.parent if library else None)
    daemons = [GpuDaemon(spec_for(g, paths, binary, extra_env, default_limits)) for g in layout.gpus]
    log.info("starting MPS daemons", extra={"gpus": [g.uuid for g in layout.gpus], "mps_root": str(paths.root),
                                             "binary": str(binary), "slices": len(layout.slices)})

    restore: dict[str, str] = {}
    nvidia_smi: Path | None = None
    if exclusive_process:
        nvidia_smi = next((b for r in roots if (b := find_binary(r, "nvidia-smi")) is not None), None)
        if nvidia_smi is None:
            raise DaemonError("--exclusive-process needs nvidia-smi, which is not under the driver root(s)")
        for g in layout.gpus:
            gpu = inventory.by_uuid(g.uuid)
            previous = gpu.compute_mode if gpu else ComputeMode.DEFAULT
            set_compute_mode(nvidia_smi, g.uuid, "EXCLUSIVE_PROCESS")
            restore[g.uuid] = "PROHIBITED" if previous is ComputeMode.PROHIBITED else (
                "EXCLUSIVE_PROCESS" if previous is ComputeMode.EXCLUSIVE_PROCESS else "DEFAULT")
            log.info("compute mode set", extra={"gpu": g.uuid, "mode": "EXCLUSIVE_PROCESS", "was": str(previous)})
    try:
        Supervisor(daemons, paths, interval=interval, layout_json=layout_to_json(layout)).run(stop)
    finally:
        if nvidia_smi is not None:
            for uuid, mode in restore.items():
                set_compute_mode(nvidia_smi, uuid, mode)
                log.info("compute mode restored", extra={"gpu": uuid, "mode": mode})
    log.info("MPS daemons stopped", extra={"pid": os.getpid()})
