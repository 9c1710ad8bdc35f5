"""``kgpu device-plugin`` as a process: from its parsed flags to a daemon serving the kubelet.

On the daemon runtime (:mod:`kgpu.daemon`): SIGTERM is honoured from the first line on; the
reactions of :class:`~kgpu.deviceplugin.plugin.DevicePlugin` run as supervised watchers — the
kubelet's socket (registration), the GPUs' health events, recovery probes, the MPS daemons' status,
the state file, and the config file. A changed config file (a ConfigMap update, or a rewrite) is
resolved and built into new decisions first; only a configuration that fits the node replaces the
one being served, and the kubelet then sees the new resources. An invalid one is refused with one
log line, kept out, and reported in the state file and on ``/healthz``.

Two ways in, one behaviour: ``kgpu device-plugin`` (the command line) and ``kgpu-device-plugin`` /
``python -m kgpu.deviceplugin`` (:func:`main`, the lean entry point the chart runs) both parse the
rows of :mod:`kgpu.config.flags` for ``nvidia-device-plugin`` and call :func:`run`.

Example::

    settings = DevicePluginSettings(GlobalOptions(simulate="h100x8"), kubelet_dir=Path("/tmp/dp"))
    check(settings)      # ConfigError for flags, environment or config file that cannot work
    serve(settings)      # until SIGTERM
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from kgpu.config import PluginConfig
from kgpu.config.flags import DEVICE_PLUGIN, flag_named, flags_of, setting
from kgpu.config.resolve import resolve_config
from kgpu.daemon import ConfigReload, Daemon, parse_listen
from kgpu.daemon.entry import run_entry
from kgpu.deviceplugin.dynamic import DynamicShares, NodeRecord
from kgpu.deviceplugin.health import HealthTracker, XidPolicy, parse_duration, recover_due
from kgpu.deviceplugin.hostfacts import NoDriverFiles, read_host_facts
from kgpu.deviceplugin.mps import MpsHealthSource, layout_for
from kgpu.deviceplugin.plugin import DevicePlugin, PluginSettings, idle_state
from kgpu.deviceplugin.resources import NodeResources, build_node_resources
from kgpu.deviceplugin.statefile import DEFAULT_STATE_FILE, ConfigState, remove_state, write_state
from kgpu.errors import ConfigError, KgpuError
from kgpu.gpu.backend import BackendError, GPUBackend
from kgpu.gpu.health import POLL_SLICE_SECONDS
from kgpu.gpu.model import Inventory
from kgpu.options import GlobalOptions
from kgpu.sharing.dynamic import dynamic_gpus
from kgpu.sharing.paths import MpsPaths

if TYPE_CHECKING:
    from kgpu.scheduler.kube import NodeShares

log = logging.getLogger("kgpu.deviceplugin")

IDLE_STATE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class DevicePluginSettings:
    """What ``kgpu device-plugin`` was asked to serve: NVIDIA's settings given as flags (by their flag
    names, e.g. ``mig-strategy``; environment and config file are read when resolving) and kgpu's own."""

    options: GlobalOptions = field(default_factory=GlobalOptions)
    flags: Mapping[str, object] = field(default_factory=dict)
    kubelet_dir: Path = Path("/var/lib/kubelet/device-plugins")
    recovery_window: float = 300.0
    """Seconds; 0 disables recovery."""
    state_file: Path = DEFAULT_STATE_FILE
    healthz: str | None = None
    """HOST:PORT to serve /healthz on, if any."""


def run(options: GlobalOptions, given: Mapping[str, object], environ: Mapping[str, str] | None = None) -> None:
    """``kgpu device-plugin`` with what its command line set (by flag name): checked, then served until SIGTERM.
    ConfigError for a flag, variable or config file that cannot work, before anything is served."""
    environ = os.environ if environ is None else environ

    def own(name: str) -> object:
        return setting(name, DEVICE_PLUGIN, given, environ)

    kubelet_dir = own("kubelet-dir")
    healthz = own("healthz")
    settings = DevicePluginSettings(
        options=options,
        flags={**options.flags, **{k: v for k, v in given.items() if flag_named(k).origin == "nvidia"}},
        recovery_window=parse_duration(str(own("health-recovery-window")), "--health-recovery-window"),
        state_file=Path(str(own("state-file"))),
        healthz=str(healthz) if healthz is not None else None,
        **({"kubelet_dir": Path(str(kubelet_dir))} if kubelet_dir is not None else {}),
    )
    config = check(settings)  # a bad flag, variable or config file fails here, with the command line's message
    if kubelet_dir is None:  # the directory of --kubelet-socket, which the config file may also set
        settings = replace(settings, kubelet_dir=config.flags.plugin.kubelet_dir)
    serve(settings)


def main() -> None:
    """``kgpu-device-plugin``: ``kgpu device-plugin`` without kgpu's command line around it."""
    run_entry("kgpu-device-plugin", DEVICE_PLUGIN, flags_of(DEVICE_PLUGIN), run,
              "Serve the node's GPUs to the kubelet (Device Plugin API v1beta1), as NVIDIA's plugin does: "
              "kgpu device-plugin, with the same flags.")


def resolve(settings: DevicePluginSettings) -> tuple[PluginConfig, XidPolicy]:
    """The config (flag > env > file > default) and health policy; ConfigError naming what is wrong."""
    config = resolve_config(dict(settings.flags), os.environ)
    return config, XidPolicy.from_environ(os.environ, config.health)


def check(settings: DevicePluginSettings) -> PluginConfig:
    """The configuration; ConfigError for flags, environment or config file that cannot work. Logs nothing."""
    if settings.kubelet_dir.exists() and not settings.kubelet_dir.is_dir():
        raise ConfigError(
            f"--kubelet-dir {settings.kubelet_dir}: not a directory; it must be the kubelet's device-plugins "
            "directory, which holds kubelet.sock (default /var/lib/kubelet/device-plugins)"
        )
    if settings.healthz is not None:
        parse_listen(settings.healthz, "--healthz")
    return resolve(settings)[0]


def node_resources(inventory: Inventory, config: PluginConfig, host_root: Path = Path("/")) -> NodeResources:
    """What the plugin serves on this host: its facts read (under ``host_root``), then the decisions built.
    ConfigError for a config that does not fit the node."""
    facts = read_host_facts(config, host_root, check_cdi=inventory.backend != "simulated")
    return build_node_resources(inventory, config, facts)


class _Served:
    """What the plugin serves now, rebuilt from the config file on reload (or refused)."""

    def __init__(self, settings: DevicePluginSettings, inventory: Inventory, backend: GPUBackend) -> None:
        self.settings = settings
        self.inventory = inventory
        self.backend = backend
        self._claims: NodeShares | None = None

    def build(self) -> tuple[PluginConfig, XidPolicy, NodeResources | DynamicShares]:
        """Everything that can fail, before anything is swapped in: ConfigError names the problem."""
        config, policy = resolve(self.settings)
        resources = node_resources(self.inventory, config)
        dynamic = config.sharing.mps.dynamic if config.sharing.mps is not None else None
        if dynamic is None:
            return config, policy, resources
        gpus = dynamic_gpus(self.inventory, dynamic, config.sharing.mps.source)  # type: ignore[union-attr]
        return config, policy, DynamicShares(resources, gpus, self.claims(), MpsPaths(Path(config.flags.mps_root)))

    def claims(self) -> NodeShares:
        """The API calls of dynamic shares: the node's pods and its GPU record (NODE_NAME, in-cluster account)."""
        if self._claims is None:
            # Imported only here, as a GPU backend is (kgpu.gpu.backend): the API server's client (lightkube,
            # httpx: 7 MB resident) belongs in the plugin's memory only on nodes that share GPUs dynamically.
            from kgpu.scheduler.kube import NodeShares, kube_client

            node = os.environ.get("NODE_NAME", "")
            if not node:
                raise ConfigError("sharing.mps.dynamic: the plugin finds the pods being allocated on its node through "
                                  "the API server and needs the node's name: set NODE_NAME (the chart sets it from "
                                  "spec.nodeName)")
            try:
                client = kube_client(None)
            except KgpuError as exc:
                raise ConfigError(f"sharing.mps.dynamic needs the API server: {exc}") from None
            self._claims = NodeShares(client, node)
        return self._claims


def serve(settings: DevicePluginSettings, stop: threading.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop``); idles without registering where failOnInitError false
    allows it. Raises ConfigError/BackendError before serving for what cannot work."""
    with Daemon("device-plugin", stop=stop) as runtime:
        config, policy = resolve(settings)
        log.info("configuration", extra={"event": "config", "config": config.to_dict()})
        if settings.healthz is not None:
            runtime.serve_http(parse_listen(settings.healthz, "--healthz"))
        try:
            backend = _open_backend(settings.options, config)
            inventory = backend.inventory()
        except BackendError as exc:
            if config.flags.fail_on_init_error:
                raise
            log.error("GPUs cannot be initialised; failOnInitError is false, so idling without registering",
                      extra={"event": "idle", "error": str(exc)})
            _idle(runtime, settings, f"GPUs cannot be initialised: {exc}")
            return
        runtime.on_stop(backend.close)
        served = _Served(settings, inventory, backend)
        reload = ConfigReload(Path(config.config_file), served.build, lambda new: None) if config.config_file else None
        try:
            config, policy, resources = served.build()
        except NoDriverFiles as exc:  # containers admitted now could not run CUDA: never advertise them
            if config.flags.fail_on_init_error:
                raise
            log.error("no driver files to hand to containers; failOnInitError is false, so idling without "
                      "registering", extra={"event": "idle", "error": str(exc)})
            _idle(runtime, settings, str(exc))
            return
        for warning in resources.warnings:
            log.warning(warning, extra={"event": "config"})
        if not any(r.devices for r in resources.resources()):
            log.warning("no devices to advertise on this node; idling without registering",
                        extra={"event": "idle", "gpus": len(inventory.gpus), "mig_strategy": config.flags.mig_strategy})
            _idle(runtime, settings, "no devices to advertise on this node")
            return
        window = settings.recovery_window
        parents = {m.uuid: m.parent_uuid for m in inventory.mig_devices}
        tracker = HealthTracker(policy, parents=parents, recovery_window=window if window > 0 else float("inf"))
        plugin = DevicePlugin(
            resources, tracker, _plugin_settings(settings, config),
            config=lambda: ConfigState(config.config_file, reload.reloads, reload.refused) if reload else ConfigState(),
        )
        mps = _MpsHealth(tracker, inventory)
        mps.follow(config)
        runtime.on_stop(plugin.close)
        if reload is not None:
            def apply(new: tuple[PluginConfig, XidPolicy, NodeResources | DynamicShares]) -> None:
                new_config, new_policy, new_resources = new
                for warning in new_resources.warnings:
                    log.warning(warning, extra={"event": "config"})
                tracker.policy = new_policy
                mps.follow(new_config)
                plugin.settings = _plugin_settings(settings, new_config)
                plugin.replace(new_resources)

            reload.apply = apply
            reload.reported = plugin.state_changed
            runtime.reload(reload)
        attach(runtime, plugin, tracker, backend, mps.tick)
        record = NodeRecord(lambda: plugin.logic, lambda uuid: tracker.device_health((uuid,))[0])
        runtime.watch("dynamic-gpus", record.tick, interval=1.0)
        runtime.on_stop(record.withdraw)
        log.info("device plugin starting", extra={
            "event": "start", "resources": [r.name for r in plugin.resources],
            "kubelet_dir": str(settings.kubelet_dir), "health_policy": tracker.policy.describe(),
        })
        if not plugin.kubelet_socket.exists():
            log.info("waiting for the kubelet's socket before serving",
                     extra={"event": "kubelet", "socket": str(plugin.kubelet_socket)})
        runtime.serve()


def _plugin_settings(settings: DevicePluginSettings, config: PluginConfig) -> PluginSettings:
    return PluginSettings(
        kubelet_dir=settings.kubelet_dir, state_file=settings.state_file,
        device_list_strategy=tuple(config.flags.plugin.device_list_strategy),
        nvidia_driver_root=config.flags.nvidia_driver_root or "/",
    )


def run_plugin(plugin: DevicePlugin, backend: GPUBackend | None, stop: threading.Event,
               mps_tick: Callable[[], None] | None = None) -> None:
    """Serve ``plugin`` on a runtime of its own until ``stop`` is set (tests, benches, embedding)."""
    with Daemon("device-plugin", stop=stop) as runtime:
        runtime.on_stop(plugin.close)
        attach(runtime, plugin, plugin.tracker, backend, mps_tick)
        runtime.serve()


def attach(runtime: Daemon, plugin: DevicePlugin, tracker: HealthTracker, backend: GPUBackend | None,
           mps_tick: Callable[[], None] | None = None) -> None:
    """The plugin's watchers: registration, health events, recovery, MPS daemons, state file."""
    runtime.watch("kubelet", plugin.reconcile, interval=0.1)
    runtime.watch("state-file", plugin.write_state_when_due, interval=0.0)
    if mps_tick is not None:
        runtime.watch("mps-daemons", mps_tick, interval=0.5)
    if backend is None or not tracker.policy.monitoring:
        return
    feed = backend.health_feed()
    runtime.on_stop(feed.close)

    def health_events() -> None:
        for event in feed.poll(POLL_SLICE_SECONDS):
            tracker.handle_event(event)

    runtime.watch("health-events", health_events, interval=0.0)
    interval = min(max(tracker.recovery_window / 5, 0.05), 5.0)

    def recovery() -> None:
        recover_due(tracker, backend.probe)

    runtime.watch("recovery", recovery, interval=interval)


class _MpsHealth:
    """Slices of a GPU are Unhealthy while its MPS daemon (kgpu mps-daemon) is not running."""

    def __init__(self, tracker: HealthTracker, inventory: Inventory) -> None:
        self.tracker = tracker
        self.inventory = inventory
        self.source: MpsHealthSource | None = None

    def follow(self, config: PluginConfig) -> None:
        mps = config.sharing.mps
        layout = layout_for(self.inventory, mps if mps is not None and mps.enabled else None)
        source = None
        if layout.enabled:
            source = MpsHealthSource(layout, MpsPaths(Path(config.flags.mps_root)), self.tracker)
            source.tick()  # the first reading before any slice is offered
        self.source = source

    def tick(self) -> None:
        if self.source is not None:
            self.source.tick()


def _idle(runtime: Daemon, settings: DevicePluginSettings, reason: str) -> None:
    """Serve nothing until SIGTERM; the state file says why (and that the daemon is alive)."""
    runtime.watch("state-file", lambda: write_state(settings.state_file, idle_state(settings.kubelet_dir, reason)),
                  interval=IDLE_STATE_SECONDS)
    runtime.on_stop(lambda: remove_state(settings.state_file))
    runtime.serve()


def _open_backend(opts: GlobalOptions, config: PluginConfig) -> GPUBackend:
    """The simulated node when asked for; else NVML from the one driver root (:attr:`PluginConfig.driver_root`)."""
    return opts.open_backend(config.driver_root)
