"""``kgpu exporter`` as a process: GPU metrics on ``/metrics``, on the daemon runtime.

The collector reads the node afresh per scrape (:mod:`kgpu.exporter.collector`); the runtime
(:mod:`kgpu.daemon`) owns the rest: SIGTERM, the HTTP endpoint (``/metrics``, ``/healthz``), a
supervised watcher following the GPUs' health events for the XID counter (a feed that fails is
polled again where it was), and — with ``--collect FILE`` — a watcher that reloads the counters
file when it changes (an invalid one is refused and the previous counters kept).

``kgpu exporter`` and ``kgpu-exporter`` / ``python -m kgpu.exporter`` (:func:`main`, the lean entry
point the chart runs) both parse the rows of :mod:`kgpu.config.flags` for ``dcgm-exporter`` and call
:func:`run`.

Example::

    settings = ExporterSettings(GlobalOptions(simulate="h100x8"), listen="127.0.0.1:9400")
    check(settings)      # ConfigError for a bad flag, before anything starts
    serve(settings)      # until SIGTERM
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

from kgpu.config.flags import DCGM_EXPORTER, DEVICE_PLUGIN, GLOBAL_FLAGS, flags_of, setting
from kgpu.config.values import DEFAULT_DEVICE_PLUGIN_STATE_FILE, DEFAULT_POD_RESOURCES_SOCKET
from kgpu.daemon import ConfigReload, Daemon, Response, parse_listen
from kgpu.daemon.entry import run_entry
from kgpu.errors import ConfigError
from kgpu.exporter.collector import GPUCollector
from kgpu.exporter.counters import DEFAULT_COUNTERS_CSV, CounterSet, load_counters
from kgpu.exporter.families import CONTENT_TYPE
from kgpu.exporter.pluginstate import PluginStateFile
from kgpu.exporter.podresources import PodResourcesClient
from kgpu.exporter.snapshot import HOSTNAME_LABELS, ExporterOptions
from kgpu.exporter.xid import XidTracker
from kgpu.gpu.backend import GPUBackend
from kgpu.options import GlobalOptions

FLAGS = (*flags_of(DCGM_EXPORTER), *flags_of(DEVICE_PLUGIN, GLOBAL_FLAGS))
"""The exporter's command line: its own rows and where the NVIDIA driver is."""
MIN_READ_TIMEOUT = 0.01

log = logging.getLogger("kgpu.exporter")

_INDEX = b'<html><body><a href="/metrics">/metrics</a> <a href="/healthz">/healthz</a></body></html>\n'


@dataclass(frozen=True, slots=True)
class ExporterSettings:
    """What ``kgpu exporter`` was asked to serve, as its flags say (see the command's ``--help``)."""

    options: GlobalOptions = field(default_factory=GlobalOptions)
    listen: str = "0.0.0.0:9400"
    collect: Path | None = None
    kubelet_pod_resources: str = DEFAULT_POD_RESOURCES_SOCKET
    device_plugin_state: str = DEFAULT_DEVICE_PLUGIN_STATE_FILE
    hostname_label: str = "Hostname"
    hostname: str | None = None
    kubernetes_virtual_gpus: bool = False
    nvidia_resource_names: str = ""
    read_timeout: float = 2.0


def check(settings: ExporterSettings) -> CounterSet:
    """The counters; ConfigError for a flag that cannot work (label name, counters file, listen address)."""
    if settings.hostname_label not in HOSTNAME_LABELS:
        raise ConfigError(
            f"--hostname-label {settings.hostname_label!r}: allowed values are {', '.join(HOSTNAME_LABELS)}"
        )
    if not settings.read_timeout >= MIN_READ_TIMEOUT:
        raise ConfigError(f"--read-timeout {settings.read_timeout:g}: a GPU needs at least {MIN_READ_TIMEOUT:g} s")
    parse_listen(settings.listen, "--listen")
    return load_counters(settings.collect)


def run(options: GlobalOptions, given: Mapping[str, object], environ: Mapping[str, str] | None = None,
        out: TextIO | None = None) -> None:
    """``kgpu exporter`` with what its command line set (by flag name): checked, then served until SIGTERM
    (or one scrape printed with --once). ConfigError for a flag that cannot work, before anything starts."""
    environ = os.environ if environ is None else environ

    def own(name: str) -> object:
        return setting(name, DCGM_EXPORTER, given, environ)

    if own("print-default-counters"):
        (out or sys.stdout).write(DEFAULT_COUNTERS_CSV)
        return
    collect, hostname = own("collect"), own("hostname")
    settings = ExporterSettings(
        options=replace(options, flags={**options.flags, **{n: given[n] for n in GLOBAL_FLAGS if n in given}}),
        listen=str(own("listen")),
        collect=Path(str(collect)) if collect is not None else None,
        kubelet_pod_resources=str(own("kubelet-pod-resources")),
        device_plugin_state=str(own("device-plugin-state")),
        hostname_label=str(own("hostname-label")),
        hostname=str(hostname) if hostname is not None else None,
        kubernetes_virtual_gpus=bool(own("kubernetes-virtual-gpus")),
        nvidia_resource_names=str(own("nvidia-resource-names")),
        read_timeout=float(str(own("read-timeout"))),
    )
    check(settings)  # a bad flag fails here, with the command line's message
    serve(settings, once=bool(own("once")), out=out)


def main() -> None:
    """``kgpu-exporter``: ``kgpu exporter`` without kgpu's command line around it."""
    run_entry("kgpu-exporter", DCGM_EXPORTER, FLAGS, run,
              "Serve GPU metrics with dcgm-exporter's names, labels and types, read straight from NVML: "
              "kgpu exporter, with the same flags.")


def _options(settings: ExporterSettings, counters: CounterSet) -> ExporterOptions:
    for skipped in counters.skipped:
        log.warning("%s needs DCGM; kgpu does not provide it and skips it", skipped)
    return ExporterOptions(
        counters=counters,
        hostname=settings.hostname or os.environ.get("NODE_NAME") or socket.gethostname(),
        hostname_label=settings.hostname_label,
        all_sharing_containers=settings.kubernetes_virtual_gpus,
    )


def serve(settings: ExporterSettings, *, once: bool = False, out: TextIO | None = None,
          stop: threading.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop``); with ``once``, print one scrape to ``out`` (stdout) instead."""
    if once:
        _print_once(settings, out or sys.stdout)
        return
    with Daemon("exporter", stop=stop) as runtime:
        options = _options(settings, check(settings))
        backend = settings.options.open_backend()
        runtime.on_stop(backend.close)
        inventory = backend.inventory()
        xids = XidTracker(inventory)
        collector = _collector(settings, backend, options, xids)
        runtime.on_stop(collector.close)
        feed = backend.health_feed()
        runtime.on_stop(feed.close)
        runtime.watch("xid", xids.follow(feed), interval=0.0)
        if settings.collect is not None:
            def apply(counters: CounterSet) -> None:
                collector.options = _options(settings, counters)

            runtime.reload(ConfigReload(settings.collect, lambda: load_counters(settings.collect), apply,
                                        what="counters file"))
        endpoint = runtime.serve_http(parse_listen(settings.listen, "--listen"), {
            "/metrics": lambda: Response(200, collector.render().encode(), CONTENT_TYPE),
            "/health": runtime.health_response,
            "/": lambda: Response(200, _INDEX, "text/html; charset=utf-8"),
        }, flag="--listen")
        host = parse_listen(settings.listen, "--listen")[0]
        log.info("serving GPU metrics on http://%s:%d/metrics", host, endpoint.port,
                 extra={"gpus": len(inventory.gpus), "backend": inventory.backend,
                        "counters": len(options.counters.metrics)})
        runtime.serve()


def _collector(settings: ExporterSettings, backend: GPUBackend, options: ExporterOptions,
               xids: XidTracker | None) -> GPUCollector:
    pod_devices = None
    if settings.kubelet_pod_resources != "none":
        pod_devices = PodResourcesClient(Path(settings.kubelet_pod_resources))
    plugin_state = None
    if settings.device_plugin_state != "none":
        plugin_state = PluginStateFile(Path(settings.device_plugin_state))
    return GPUCollector(
        backend, options, xids=xids, pod_devices=pod_devices, plugin_state=plugin_state,
        extra_resource_names=tuple(n.strip() for n in settings.nvidia_resource_names.split(",") if n.strip()),
        read_timeout=settings.read_timeout,
    )


def _print_once(settings: ExporterSettings, out: TextIO) -> None:
    options = _options(settings, check(settings))
    backend = settings.options.open_backend()
    try:
        collector = _collector(settings, backend, options, None)
        try:
            out.write(collector.render())
        finally:
            collector.close()
    finally:
        backend.close()


