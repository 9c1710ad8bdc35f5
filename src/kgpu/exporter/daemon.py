"""The long-running exporter: XID follower, collector and HTTP server, stopped by SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import TextIO

from kgpu.exporter.collector import DEFAULT_READ_TIMEOUT, GPUCollector, PodDevicesSource
from kgpu.exporter.pluginstate import PluginStateFile
from kgpu.exporter.server import MetricsServer
from kgpu.exporter.snapshot import ExporterOptions
from kgpu.exporter.xid import XidTracker
from kgpu.gpu.backend import GPUBackend
from kgpu.process import log_memory, wait_for_stop

log = logging.getLogger("kgpu.exporter")


def run_exporter(
    backend: GPUBackend,
    options: ExporterOptions,
    *,
    host: str = "0.0.0.0",
    port: int = 9400,
    pod_devices: PodDevicesSource | None = None,
    extra_resource_names: tuple[str, ...] = (),
    plugin_state: PluginStateFile | None = None,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    once: bool = False,
    out: TextIO | None = None,
    stop: threading.Event | None = None,
    on_serving: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop``); with ``once``, print one scrape to ``out`` instead.

    ``on_serving`` is called once the listener is up (the process settles its heap there).
    """
    stop = stop or threading.Event()
    collector = None
    try:
        inventory = backend.inventory()
        log_memory(log, "inventory")
        xids = XidTracker(inventory)
        if not once:
            from kgpu.daemon import Watcher

            feed = backend.health_feed()
            Watcher("xid", xids.follow(feed), interval=0.0).start(stop)
        collector = GPUCollector(backend, options, xids=xids, pod_devices=pod_devices,
                                 extra_resource_names=extra_resource_names, plugin_state=plugin_state,
                                 read_timeout=read_timeout)
        if once:
            (out or sys.stdout).write(collector.render())
            return
        server = MetricsServer(collector, host, port).start()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            signal.signal(signal.SIGINT, lambda *_: stop.set())
        if on_serving is not None:
            on_serving()
        log.info("serving GPU metrics on http://%s:%d/metrics", host, server.port,
                 extra={"gpus": len(inventory.gpus), "backend": inventory.backend,
                        "counters": len(options.counters.metrics)})
        wait_for_stop(stop)  # not stop.wait(): SIGTERM may land on another thread
        log.info("stopping: closing the listener and the GPU readers")
        server.stop()
    finally:
        stop.set()
        if collector is not None:
            collector.close()
        if pod_devices is not None:
            pod_devices.close()
        backend.close()
