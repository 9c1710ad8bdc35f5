"""``kgpu mps-daemon``: run and supervise one CUDA MPS control daemon per GPU shared through MPS."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kgpu.cli.state import global_options

if TYPE_CHECKING:
    from kgpu.sharing.config import MpsConfig

CONFIG_HELP = "The device plugin's config file (NVIDIA v1 format); its sharing.mps section says which GPUs to share."
ROOT_HELP = "Host directory for the daemons' pipe, log and status files (default /run/kgpu/mps, or flags.mpsRoot)."


def register(app: typer.Typer) -> None:
    app.command("mps-daemon")(mps_daemon)


def load_sharing(config_file: Path | None, mps_root: Path | None) -> tuple[MpsConfig, Path]:
    """``sharing.mps`` and the MPS root, read exactly as ``kgpu device-plugin`` reads them (its validation,
    flag > environment > file > default: --mps-root / MPS_ROOT, flags.mpsRoot, /run/kgpu/mps)."""
    from kgpu.deviceplugin.config import resolve_config
    from kgpu.sharing.config import MpsConfig

    flags: dict[str, object] = {"config-file": str(config_file) if config_file else None,
                                "mps-root": str(mps_root) if mps_root else None}
    config = resolve_config(flags, os.environ)
    return config.sharing.mps or MpsConfig(), Path(config.flags.mps_root)


def mps_daemon(
    ctx: typer.Context,
    config_file: Annotated[
        Path | None, typer.Option("--config-file", envvar="CONFIG_FILE", help=CONFIG_HELP, metavar="FILE")
    ] = None,
    mps_root: Annotated[
        Path | None, typer.Option("--mps-root", envvar="MPS_ROOT", help=ROOT_HELP, metavar="DIR")
    ] = None,
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
    config, root = load_sharing(config_file, mps_root)
    paths = MpsPaths(root)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    backend = options.open_backend()
    try:
        inventory = backend.inventory()
    finally:
        backend.close()
    layout = build_layout(inventory, config)
    if not layout.enabled:
        log.info("no GPU is shared through MPS (sharing.mps has no resources or slices); waiting for SIGTERM",
                 extra={"config": str(config_file) if config_file else None})
        wait_for_stop(stop)
        return

    roots = [options.driver_root] if options.driver_root else list(WELL_KNOWN_DRIVER_ROOTS)
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
