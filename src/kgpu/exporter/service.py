"""``kgpu exporter`` as a process: from its parsed flags to a serving daemon, without the CLI's libraries.

The command line (:mod:`kgpu.cli.commands.exporter`) turns flags into :class:`ExporterSettings`,
checks them (:func:`check`) and then serves them here, in its own interpreter or — as a real
``kgpu exporter`` process does — in a lean one it hands over to (:mod:`kgpu.handoff`).

Example::

    settings = ExporterSettings(GlobalOptions(simulate="h100x8"), listen="127.0.0.1:9400")
    check(settings)      # ConfigError for a bad flag, before anything starts
    serve(settings)      # until SIGTERM
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from kgpu.errors import ConfigError
from kgpu.options import GlobalOptions
from kgpu.process import log_memory, settle_heap

DEFAULT_POD_RESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
DEFAULT_DEVICE_PLUGIN_STATE = "/run/kgpu/device-plugin/state.json"

log = logging.getLogger("kgpu.exporter")


@dataclass(frozen=True, slots=True)
class ExporterSettings:
    """What ``kgpu exporter`` was asked to serve, as its flags say (see the command's ``--help``)."""

    options: GlobalOptions = field(default_factory=GlobalOptions)
    listen: str = "0.0.0.0:9400"
    collect: Path | None = None
    kubelet_pod_resources: str = DEFAULT_POD_RESOURCES_SOCKET
    device_plugin_state: str = DEFAULT_DEVICE_PLUGIN_STATE
    hostname_label: str = "Hostname"
    hostname: str | None = None
    kubernetes_virtual_gpus: bool = False
    nvidia_resource_names: str = ""
    read_timeout: float = 2.0

    def to_json(self) -> dict[str, Any]:
        return {
            "options": self.options.to_json(),
            "listen": self.listen,
            "collect": None if self.collect is None else str(self.collect),
            "kubelet_pod_resources": self.kubelet_pod_resources,
            "device_plugin_state": self.device_plugin_state,
            "hostname_label": self.hostname_label,
            "hostname": self.hostname,
            "kubernetes_virtual_gpus": self.kubernetes_virtual_gpus,
            "nvidia_resource_names": self.nvidia_resource_names,
            "read_timeout": self.read_timeout,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExporterSettings:
        collect = data.get("collect")
        return cls(
            options=GlobalOptions.from_json(data.get("options", {})),
            listen=data["listen"],
            collect=None if collect is None else Path(collect),
            kubelet_pod_resources=data["kubelet_pod_resources"],
            device_plugin_state=data["device_plugin_state"],
            hostname_label=data["hostname_label"],
            hostname=data.get("hostname"),
            kubernetes_virtual_gpus=bool(data["kubernetes_virtual_gpus"]),
            nvidia_resource_names=data["nvidia_resource_names"],
            read_timeout=float(data["read_timeout"]),
        )


def check(settings: ExporterSettings) -> None:
    """ConfigError for a flag that cannot work (label name, counters file, listen address); logs nothing."""
    from kgpu.exporter.counters import load_counters
    from kgpu.exporter.server import parse_listen
    from kgpu.exporter.snapshot import HOSTNAME_LABELS

    if settings.hostname_label not in HOSTNAME_LABELS:
        raise ConfigError(
            f"--hostname-label {settings.hostname_label!r}: allowed values are {', '.join(HOSTNAME_LABELS)}"
        )
    load_counters(settings.collect)
    parse_listen(settings.listen)


def serve(settings: ExporterSettings, *, once: bool = False, out: TextIO | None = None) -> None:
    """Serve until SIGTERM/SIGINT; with ``once``, print one scrape to ``out`` (stdout) instead."""
    from kgpu.exporter.counters import load_counters
    from kgpu.exporter.daemon import run_exporter
    from kgpu.exporter.server import parse_listen
    from kgpu.exporter.snapshot import ExporterOptions

    check(settings)
    counters = load_counters(settings.collect)
    for skipped in counters.skipped:
        log.warning("%s needs DCGM; kgpu does not provide it and skips it", skipped)
    options = ExporterOptions(
        counters=counters,
        hostname=settings.hostname or os.environ.get("NODE_NAME") or socket.gethostname(),
        hostname_label=settings.hostname_label,
        all_sharing_containers=settings.kubernetes_virtual_gpus,
    )
    host, port = parse_listen(settings.listen)
    pod_devices = None
    if settings.kubelet_pod_resources != "none":
        from kgpu.exporter.podresources import PodResourcesClient

        pod_devices = PodResourcesClient(Path(settings.kubelet_pod_resources))
    plugin_state = None
    if settings.device_plugin_state != "none":
        from kgpu.exporter.pluginstate import PluginStateFile

        plugin_state = PluginStateFile(Path(settings.device_plugin_state))
    log_memory(log, "imports")
    backend = settings.options.open_backend()
    log_memory(log, "backend opened")
    run_exporter(
        backend, options, host=host, port=port, pod_devices=pod_devices,
        extra_resource_names=tuple(n.strip() for n in settings.nvidia_resource_names.split(",") if n.strip()),
        plugin_state=plugin_state, read_timeout=settings.read_timeout, once=once, out=out,
        on_serving=None if once else _serving,
    )


def _serving() -> None:
    settle_heap()
    log_memory(log, "serving")


def serve_handed_over(settings: dict[str, Any]) -> None:
    """:mod:`kgpu.handoff`'s entry: logging as the command line set it up, then :func:`serve`."""
    from kgpu.log import setup_logging

    parsed = ExporterSettings.from_json(settings)
    setup_logging(parsed.options.log_level)
    log_memory(log, "interpreter")
    serve(parsed)
