"""``kgpu device-plugin`` as a process: from its parsed flags to a serving daemon, without the CLI's libraries.

The command line (:mod:`kgpu.cli.commands.device_plugin`) turns flags into
:class:`DevicePluginSettings`, checks them (:func:`check`: the config file, NVIDIA's environment
variables) and then serves them here, in its own interpreter or — as a real ``kgpu device-plugin``
process does — in a lean one it hands over to (:mod:`kgpu.handoff`). The configuration travels
resolved, so the serving interpreter never loads the config file's pydantic models or YAML.

Example::

    settings = check(DevicePluginSettings(GlobalOptions(simulate="h100x8"), kubelet_dir=Path("/tmp/dp")))
    serve(settings)      # until SIGTERM
"""

from __future__ import annotations

import base64
import logging
import os
import pickle
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kgpu.errors import ConfigError
from kgpu.options import GlobalOptions
from kgpu.process import log_memory, settle_heap, wait_for_stop

if TYPE_CHECKING:
    from kgpu.config import PluginConfig
    from kgpu.deviceplugin.health import XidPolicy
    from kgpu.deviceplugin.logwriter import BatchingHandler
    from kgpu.gpu.backend import GPUBackend

log = logging.getLogger("kgpu.deviceplugin")


@dataclass(frozen=True, slots=True)
class DevicePluginSettings:
    """What ``kgpu device-plugin`` was asked to serve: NVIDIA's settings given as flags (by their flag
    names, e.g. ``mig-strategy``; environment and config file are read when resolving) and kgpu's own."""

    options: GlobalOptions = field(default_factory=GlobalOptions)
    flags: Mapping[str, object] = field(default_factory=dict)
    kubelet_dir: Path = Path("/var/lib/kubelet/device-plugins")
    recovery_window: float = 300.0
    """Seconds; 0 disables recovery."""
    state_file: Path = Path("/run/kgpu/device-plugin/state.json")
    config: PluginConfig | None = None
    """The configuration resolved from ``flags``, the environment and the file (:func:`check`)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "options": self.options.to_json(),
            "flags": dict(self.flags),
            "kubelet_dir": str(self.kubelet_dir),
            "recovery_window": self.recovery_window,
            "state_file": str(self.state_file),
            # Plain frozen dataclasses; pickled so that the serving interpreter needs no YAML or pydantic.
            "config": None if self.config is None else base64.b64encode(pickle.dumps(self.config)).decode(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DevicePluginSettings:
        config = data.get("config")
        return cls(
            options=GlobalOptions.from_json(data.get("options", {})),
            flags=dict(data.get("flags", {})),
            kubelet_dir=Path(data["kubelet_dir"]),
            recovery_window=float(data["recovery_window"]),
            state_file=Path(data["state_file"]),
            config=None if config is None else pickle.loads(base64.b64decode(config)),  # written by check()
        )


def resolve(settings: DevicePluginSettings) -> tuple[PluginConfig, XidPolicy]:
    """The config (flag > env > file > default) and health policy; ConfigError naming what is wrong."""
    from kgpu.deviceplugin.health import XidPolicy

    config = settings.config
    if config is None:
        from kgpu.config.resolve import resolve_config

        config = resolve_config(dict(settings.flags), os.environ)
    return config, XidPolicy.from_environ(os.environ, config.health)


def check(settings: DevicePluginSettings) -> DevicePluginSettings:
    """``settings`` with the configuration resolved; ConfigError for flags, environment or config file
    that cannot work. Logs nothing."""
    if settings.kubelet_dir.exists() and not settings.kubelet_dir.is_dir():
        raise ConfigError(
            f"--kubelet-dir {settings.kubelet_dir}: not a directory; it must be the kubelet's device-plugins "
            "directory, which holds kubelet.sock (default /var/lib/kubelet/device-plugins)"
        )
    config, _ = resolve(settings)
    return replace(settings, config=config)


def serve(settings: DevicePluginSettings) -> None:
    """Serve until SIGTERM/SIGINT; idles (without registering) where failOnInitError false allows it."""
    config, policy = resolve(settings)
    log_memory(log, "config resolved")
    stop = threading.Event()
    _on_signals(stop)
    logs = _log_in_background()
    try:
        _serve(settings, config, policy, stop)
    finally:
        logs.close()


def serve_handed_over(settings: dict[str, Any]) -> None:
    """:mod:`kgpu.handoff`'s entry: logging as the command line set it up, then :func:`serve`."""
    from kgpu.log import setup_logging

    parsed = DevicePluginSettings.from_json(settings)
    setup_logging(parsed.options.log_level)
    log_memory(log, "interpreter")
    serve(parsed)


def _log_in_background() -> BatchingHandler:
    """Write log lines from a thread of their own, in batches.

    An Allocate only appends its line's fields to a list: it never waits on a log write (a container's
    stderr pipe can block), builds no LogRecord and wakes no thread. The writer flushes every 50 ms and on exit.
    """
    from kgpu.deviceplugin.logwriter import BatchingHandler

    return BatchingHandler.install(interval=0.05)


def _serve(settings: DevicePluginSettings, config: PluginConfig, policy: XidPolicy, stop: threading.Event) -> None:
    from kgpu.deviceplugin.allocate import NoDriverFiles
    from kgpu.deviceplugin.daemon import DaemonSettings, DevicePluginDaemon
    from kgpu.deviceplugin.health import HealthTracker
    from kgpu.deviceplugin.resources import build_logic
    from kgpu.gpu.backend import BackendError

    state_file, kubelet_dir, window = settings.state_file, settings.kubelet_dir, settings.recovery_window
    log.info("configuration", extra={"event": "config", "config": config.to_dict()})
    log_memory(log, "imports")  # gRPC and the plugin's own modules
    try:
        backend = _open_backend(settings.options, config)
        log_memory(log, "backend opened")
        inventory = backend.inventory()
        log_memory(log, "inventory")
    except BackendError as exc:
        if config.flags.fail_on_init_error:
            raise
        log.error(
            "GPUs cannot be initialised; failOnInitError is false, so idling without registering",
            extra={"event": "idle", "error": str(exc)},
        )
        _idle(stop, state_file, kubelet_dir, f"GPUs cannot be initialised: {exc}")
        return
    try:
        try:
            logic = build_logic(inventory, config)
        except NoDriverFiles as exc:  # containers admitted now could not run CUDA: never advertise them
            if config.flags.fail_on_init_error:
                raise
            log.error("no driver files to hand to containers; failOnInitError is false, so idling without "
                      "registering", extra={"event": "idle", "error": str(exc)})
            _idle(stop, state_file, kubelet_dir, str(exc))
            return
        for warning in getattr(logic, "warnings", ()):
            log.warning(warning, extra={"event": "config"})
        if not any(r.devices for r in logic.resources()):
            log.warning(
                "no devices to advertise on this node; idling without registering",
                extra={"event": "idle", "gpus": len(inventory.gpus), "mig_strategy": config.flags.mig_strategy},
            )
            _idle(stop, state_file, kubelet_dir, "no devices to advertise on this node")
            return
        parents = {m.uuid: m.parent_uuid for m in inventory.mig_devices}
        tracker = HealthTracker(policy, parents=parents, recovery_window=window if window > 0 else float("inf"))
        if config.sharing.mps is not None and config.sharing.mps.enabled:
            from kgpu.sharing.paths import MpsPaths
            from kgpu.sharing.plugin import layout_for, start_health_feed

            # Slices of a GPU are Unhealthy while its MPS daemon (kgpu mps-daemon) is not running.
            start_health_feed(layout_for(inventory, config.sharing.mps), MpsPaths(Path(config.flags.mps_root)),
                              tracker, stop)
        daemon_settings = DaemonSettings(
            kubelet_dir=kubelet_dir, state_file=state_file,
            device_list_strategy=tuple(config.flags.plugin.device_list_strategy),
            nvidia_driver_root=config.flags.nvidia_driver_root or "/",
        )
        daemon = DevicePluginDaemon(logic, tracker, backend, daemon_settings)
        settle_heap()  # start-up objects out of the collector's reach: no full-collection pause in an Allocate
        log_memory(log, "serving")
        daemon.run(stop)
    finally:
        backend.close()


def _idle(stop: threading.Event, state_file: Path, kubelet_dir: Path, reason: str) -> None:
    """Serve nothing until SIGTERM; the state file says why (and that the daemon is alive)."""
    from kgpu.deviceplugin.daemon import idle_state, write_state

    problem = ""
    while True:
        try:
            write_state(state_file, idle_state(kubelet_dir, reason))
        except OSError as exc:
            if str(exc) != problem:
                log.warning("cannot write the state file", extra={"path": str(state_file), "error": str(exc)})
            problem = str(exc)
        if wait_for_stop(stop, 30.0):
            return


def _on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _open_backend(opts: GlobalOptions, config: PluginConfig) -> GPUBackend:
    """The simulated node when asked for; else NVML from the one driver root (:attr:`PluginConfig.driver_root`)."""
    return opts.open_backend(config.driver_root)
