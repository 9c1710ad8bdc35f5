"""``kgpu mps-daemon`` as a process: one MPS control daemon per shared GPU, on the daemon runtime.

The :class:`~kgpu.sharing.daemon.Supervisor` checks every daemon as a supervised watcher; SIGTERM
stops them (``quit``) within the runtime's grace. With a config file, a changed ``sharing.mps``
(a ConfigMap update) is applied without a restart: the new layout is built first (an invalid one is
refused, one log line, and the running daemons stay), then daemons of GPUs no longer shared, or
whose default limits changed, are stopped, and the new ones started; ``layout.json`` is rewritten.

Example::

    serve(MpsDaemonSettings(GlobalOptions(simulate="h100x8"), config_file=Path("mps.yaml")), load)
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kgpu.config import DriverRoot, MpsConfig
from kgpu.daemon import ConfigReload, Daemon, parse_listen
from kgpu.errors import ConfigError
from kgpu.gpu.model import ComputeMode, Inventory
from kgpu.host.driverroot import CUDA_SONAME, WELL_KNOWN_DRIVER_ROOTS, find_binary, find_library
from kgpu.options import GlobalOptions
from kgpu.sharing.daemon import (
    DaemonError,
    GpuDaemon,
    Supervisor,
    driver_env,
    find_control_binary,
    set_compute_mode,
    spec_for,
)
from kgpu.sharing.layout import MpsLayout, build_layout, layout_to_json
from kgpu.sharing.paths import MpsPaths

log = logging.getLogger("kgpu.mps-daemon")

LoadSharing = Callable[[], tuple[MpsConfig, Path, DriverRoot, Path | None]]
"""Reads ``sharing.mps``, the MPS root, the driver root and which config file they came from (flag >
environment > config file > default)."""


@dataclass(frozen=True, slots=True)
class MpsDaemonSettings:
    options: GlobalOptions = field(default_factory=GlobalOptions)
    control_binary: Path | None = None
    interval: float = 2.0
    default_limits: bool = True
    exclusive_process: bool = False
    healthz: str | None = None


class _ComputeModes:
    """``--exclusive-process``: shared GPUs in EXCLUSIVE_PROCESS while their daemons run, restored after."""

    def __init__(self, nvidia_smi: Path | None, inventory: Inventory) -> None:
        self.nvidia_smi = nvidia_smi
        self.inventory = inventory
        self.restore: dict[str, str] = {}

    def share(self, uuids: list[str]) -> None:
        if self.nvidia_smi is None:
            return
        for uuid in [u for u in self.restore if u not in uuids]:
            self._set(uuid, self.restore.pop(uuid), "compute mode restored")
        for uuid in [u for u in uuids if u not in self.restore]:
            gpu = self.inventory.by_uuid(uuid)
            previous = gpu.compute_mode if gpu else ComputeMode.DEFAULT
            self._set(uuid, "EXCLUSIVE_PROCESS", "compute mode set")
            self.restore[uuid] = "PROHIBITED" if previous is ComputeMode.PROHIBITED else (
                "EXCLUSIVE_PROCESS" if previous is ComputeMode.EXCLUSIVE_PROCESS else "DEFAULT")

    def restore_all(self) -> None:
        self.share([])

    def _set(self, uuid: str, mode: str, what: str) -> None:
        assert self.nvidia_smi is not None
        set_compute_mode(self.nvidia_smi, uuid, mode)
        log.info(what, extra={"gpu": uuid, "mode": mode})


STOP_GRACE_SECONDS = 10.0
"""After SIGTERM, time to tell every control daemon to quit, one ``nvidia-cuda-mps-control`` client each, and
remove their files: the runtime's 1.5 s let a loaded node stop 3 of 8 (the lab's helm uninstall), leaving the
others running and their files behind. Still well inside Kubernetes' 30 s termination grace period."""


def serve(settings: MpsDaemonSettings, load: LoadSharing, stop: threading.Event | None = None) -> None:
    """Run and supervise the daemons until SIGTERM (or ``stop``); ConfigError/DaemonError before that."""
    with Daemon("mps-daemon", grace=STOP_GRACE_SECONDS, stop=stop) as runtime:
        config, root, driver_root, config_file = load()
        paths = MpsPaths(root)
        backend = settings.options.open_backend(driver_root)
        try:
            inventory = backend.inventory()
        finally:
            backend.close()
        layout = build_layout(inventory, config)
        if settings.healthz is not None:
            runtime.serve_http(parse_listen(settings.healthz, "--healthz"))
        roots = [driver_root.view] if driver_root.explicit else list(WELL_KNOWN_DRIVER_ROOTS)
        if not layout.enabled:
            log.info("no GPU is shared through MPS (sharing.mps has no resources or slices); waiting for a "
                     "config that shares one, or SIGTERM", extra={"config": str(config_file or "")})
        found: list[tuple[Path, dict[str, str]]] = []

        def daemons_for(layout: MpsLayout) -> list[GpuDaemon]:
            if not layout.enabled:
                return []
            if not found:  # looked for once there is something to run (a node may share nothing yet)
                binary = find_control_binary(roots, settings.control_binary)
                library = next((lib for r in roots if (lib := find_library(r, CUDA_SONAME)) is not None), None)
                found.append((binary, driver_env(binary, library.parent if library else None)))
            binary, extra_env = found[0]
            return [GpuDaemon(spec_for(g, paths, binary, extra_env, settings.default_limits)) for g in layout.gpus]

        nvidia_smi = None
        if settings.exclusive_process:
            nvidia_smi = next((b for r in roots if (b := find_binary(r, "nvidia-smi")) is not None), None)
            if nvidia_smi is None:
                raise DaemonError("--exclusive-process needs nvidia-smi, which is not under the driver root(s)")
        modes = _ComputeModes(nvidia_smi, inventory)
        runtime.on_stop(modes.restore_all)
        modes.share([g.uuid for g in layout.gpus])
        supervisor = Supervisor(daemons_for(layout), paths, interval=settings.interval,
                                layout_json=layout_to_json(layout) if layout.enabled else None)
        supervisor.prepare()
        runtime.on_stop(supervisor.stop_all)
        runtime.watch("mps-daemons", supervisor.check_all, interval=settings.interval)
        if config_file is not None:
            def reloaded() -> tuple[MpsLayout, list[GpuDaemon]]:
                new_config, new_root, _, _ = load()
                if new_root != root:
                    raise ConfigError(f"flags.mpsRoot changed from {root} to {new_root}; restart kgpu mps-daemon "
                                      "to move the MPS root (the running daemons stay where they are)")
                new = build_layout(inventory, new_config)
                return new, daemons_for(new)

            def apply(loaded: tuple[MpsLayout, list[GpuDaemon]]) -> None:
                new, daemons = loaded
                supervisor.replace(daemons, layout_to_json(new))
                modes.share([g.uuid for g in new.gpus])
                log.info("MPS layout reloaded", extra={"gpus": [g.uuid for g in new.gpus], "slices": len(new.slices)})

            runtime.reload(ConfigReload(config_file, reloaded, apply, what="sharing.mps configuration"))
        log.info("starting MPS daemons", extra={"gpus": [g.uuid for g in layout.gpus], "mps_root": str(paths.root),
                                                 "binary": str(found[0][0]) if found else None,
                                                 "slices": len(layout.slices)})
        runtime.serve()
    log.info("MPS daemons stopped", extra={"pid": os.getpid()})
