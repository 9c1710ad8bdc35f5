"""The exporter's collector: one fresh snapshot of the node per scrape.

Each GPU is read by its own worker thread so that a hung GPU (an NVML call that never returns)
costs that GPU's series and an error count, never the scrape: the scrape waits at most
``read_timeout`` seconds, and a GPU whose previous read is still stuck is not asked again.

Example::

    collector = GPUCollector(open_backend(simulate="h100x8"), ExporterOptions(load_counters(None)))
    print(collector.render())
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from typing import Any, Protocol

from kgpu.exporter.attribution import Attribution, ContainerDevices, attribute
from kgpu.exporter.families import Family, render, to_prometheus
from kgpu.exporter.nvlink import NvlinkRates
from kgpu.exporter.pluginstate import PluginStateFile
from kgpu.exporter.snapshot import ExporterOptions, NodeSnapshot, build_families
from kgpu.exporter.xid import XidTracker
from kgpu.gpu.backend import GPUBackend
from kgpu.gpu.model import GPUReadings, Inventory

log = logging.getLogger(__name__)

DEFAULT_READ_TIMEOUT = 2.0


class PodDevicesSource(Protocol):
    """Where container → device assignments come from (the kubelet's PodResources API)."""

    description: str

    def available(self) -> bool:
        """False when the source is absent (no kubelet socket): no pod labels, no error."""
        ...

    def list(self) -> list[ContainerDevices]:
        """Raises an exception whose message says what failed."""
        ...

    def close(self) -> None: ...


class _GPUReader:
    """A daemon thread that reads one GPU's sensors on request."""

    def __init__(self, uuid: str, read: Callable[[str], GPUReadings]) -> None:
        self.uuid = uuid
        self._read = read
        self._requests: queue.SimpleQueue[Future[GPUReadings] | None] = queue.SimpleQueue()
        self.pending: Future[GPUReadings] | None = None
        self._thread = threading.Thread(target=self._run, name=f"kgpu-read-{uuid[:12]}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            future = self._requests.get()
            if future is None:
                return
            try:
                future.set_result(self._read(self.uuid))
            except BaseException as exc:
                future.set_exception(exc)

    def request(self) -> Future[GPUReadings]:
        future: Future[GPUReadings] = Future()
        self._requests.put(future)
        self.pending = future
        return future

    def stop(self) -> None:
        self._requests.put(None)


class GPUCollector:
    """Reads the node at scrape time and turns it into metric families."""

    def __init__(
        self,
        backend: GPUBackend,
        options: ExporterOptions,
        *,
        xids: XidTracker | None = None,
        pod_devices: PodDevicesSource | None = None,
        extra_resource_names: tuple[str, ...] = (),
        plugin_state: PluginStateFile | None = None,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
    ) -> None:
        self.backend = backend
        self.options = options
        self.inventory: Inventory = backend.inventory()
        self.xids = xids if xids is not None else XidTracker(self.inventory)
        self.pod_devices = pod_devices
        self.extra_resource_names = extra_resource_names
        self.plugin_state = plugin_state
        self.read_timeout = read_timeout
        self._readers = {g.uuid: _GPUReader(g.uuid, backend.readings) for g in self.inventory.gpus}
        self._errors: dict[str, int] = dict.fromkeys(self._readers, 0)
        self.nvlink = NvlinkRates()
        """The previous NVLink counters, for DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL."""
        self._failing: dict[str, str] = {}
        self._pod_state = "unknown"
        self._lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------------------

    def _read_gpus(self) -> dict[str, GPUReadings]:
        asked: dict[str, Future[GPUReadings]] = {}
        stuck: list[str] = []
        for uuid, reader in self._readers.items():
            if reader.pending is not None and not reader.pending.done():
                stuck.append(uuid)
            else:
                asked[uuid] = reader.request()
        wait_futures(list(asked.values()), timeout=self.read_timeout)
        out: dict[str, GPUReadings] = {}
        for uuid, future in asked.items():
            if not future.done():
                self._failed(uuid, f"no answer within {self.read_timeout:g}s")
                continue
            exc = future.exception()
            if exc is not None:
                self._failed(uuid, str(exc) or type(exc).__name__)
                continue
            out[uuid] = future.result()
            if self._failing.pop(uuid, None) is not None:
                log.info("GPU %s answers again", uuid, extra={"gpu_uuid": uuid})
        for uuid in stuck:
            self._failed(uuid, "a previous read has not returned yet")
        return out

    def _failed(self, uuid: str, why: str) -> None:
        self._errors[uuid] += 1
        if uuid not in self._failing:
            log.warning("reading GPU %s failed: %s; its series are left out until it answers", uuid, why,
                        extra={"gpu_uuid": uuid})
        self._failing[uuid] = why

    def _read_pods(self, plugin_resources: tuple[str, ...]) -> tuple[Attribution | None, bool | None]:
        source = self.pod_devices
        if source is None:
            return None, None
        if not source.available():
            self._pod_transition("absent", logging.WARNING,
                                 f"{source.description} is absent; metrics carry no pod labels until it appears")
            return None, None
        try:
            entries = source.list()
        except Exception as exc:
            self._pod_transition("failing", logging.WARNING,
                                 f"{source.description}: List failed ({exc}); metrics carry no pod labels")
            return None, False
        self._pod_transition("ok", logging.INFO, f"{source.description} answers; attributing GPUs to pods")
        attribution = attribute(entries, self.inventory, self.extra_resource_names + plugin_resources)
        if attribution.unresolved:
            log.debug("device IDs that match no GPU of this node: %s", ", ".join(attribution.unresolved))
        return attribution, True

    def _pod_transition(self, state: str, level: int, message: str) -> None:
        if state != self._pod_state:
            self._pod_state = state
            log.log(level, message)

    # -- scrape ----------------------------------------------------------------------------------

    def snapshot(self) -> NodeSnapshot:
        with self._lock:
            started = time.perf_counter()
            readings = self._read_gpus()
            state = self.plugin_state.read() if self.plugin_state is not None else None
            attribution, pods_ok = self._read_pods(state.resource_names if state is not None else ())
            xids = {g.uuid: r for g in self.inventory.gpus if (r := self.xids.last(g.uuid)) is not None}
            bandwidth = self.nvlink.update({u: r.nvlink_data_kib for u, r in readings.items()}, time.monotonic())
            return NodeSnapshot(
                inventory=self.inventory,
                readings=readings,
                nvlink_bandwidth=bandwidth,
                read_errors_total=dict(self._errors),
                xids=xids,
                attribution=attribution,
                pod_resources_ok=pods_ok,
                plugin_state=state,
                scrape_seconds=time.perf_counter() - started,
            )

    def families(self) -> list[Family]:
        return build_families(self.snapshot(), self.options)

    def render(self) -> str:
        return render(self.families())

    def collect(self) -> list[Any]:
        """``prometheus_client`` Collector protocol (note: its exposition renames counters to ``*_total``)."""
        return to_prometheus(self.families())

    def close(self) -> None:
        for reader in self._readers.values():
            reader.stop()
        if self.pod_devices is not None:
            self.pod_devices.close()
