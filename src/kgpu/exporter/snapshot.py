"""One scrape's facts in, metric families out: the pure heart of ``kgpu exporter``.

Example::

    snap = NodeSnapshot(inventory, readings={uuid: backend.readings(uuid) ...})
    text = render(build_families(snap, ExporterOptions(load_counters(None), hostname="node-1")))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kgpu.deviceplugin.statefile import PluginState
from kgpu.exporter.attribution import Attribution, PodRef
from kgpu.exporter.counters import CounterSet
from kgpu.exporter.families import Family, Labels, Sample
from kgpu.exporter.fields import FB_TOTAL_FIELD, FIELDS, NVLINK_BANDWIDTH_FIELD, XID_FIELD, Scope
from kgpu.exporter.xid import XidRecord, xid_description
from kgpu.gpu.model import GPU, GPUReadings, Inventory, MigDevice

HOSTNAME_LABELS = ("Hostname", "hostname", "none")


@dataclass(frozen=True, slots=True)
class ExporterOptions:
    counters: CounterSet
    hostname: str = ""
    hostname_label: str = "Hostname"
    """``Hostname`` (dcgm-exporter until 2026), ``hostname`` (since), or ``none``."""
    all_sharing_containers: bool = False
    """One series per container sharing a GPU, with a ``vgpu`` label (dcgm-exporter's
    ``--kubernetes-virtual-gpus``); by default the last container the kubelet lists wins."""


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    inventory: Inventory
    readings: Mapping[str, GPUReadings] = field(default_factory=dict)
    """Readings per GPU UUID; a GPU missing here could not be read this scrape."""
    read_errors_total: Mapping[str, int] = field(default_factory=dict)
    xids: Mapping[str, XidRecord] = field(default_factory=dict)
    attribution: Attribution | None = None
    pod_resources_ok: bool | None = None
    """None when pod attribution is off or the socket is absent; else whether ``List`` answered."""
    plugin_state: PluginState | None = None
    """The device plugin's state file, when present."""
    nvlink_bandwidth: Mapping[str, int] = field(default_factory=dict)
    """NVLink bandwidth per GPU UUID since the previous scrape (:class:`kgpu.exporter.nvlink.NvlinkRates`)."""
    scrape_seconds: float | None = None


def _hostname_labels(options: ExporterOptions) -> Labels:
    if options.hostname_label == "none" or not options.hostname:
        return ()
    return ((options.hostname_label, options.hostname),)


def gpu_labels(gpu: GPU, mig: MigDevice | None, options: ExporterOptions) -> Labels:
    """dcgm-exporter's fixed labels, in its order."""
    labels: Labels = (
        ("gpu", str(gpu.index)),
        ("UUID", gpu.uuid),
        ("pci_bus_id", gpu.pci_bus_id),
        ("device", f"nvidia{gpu.index}"),
        ("modelName", gpu.name),
    )
    if mig is not None:
        labels += (("GPU_I_PROFILE", mig.profile), ("GPU_I_ID", str(mig.gpu_instance_id)))
    return labels + _hostname_labels(options)


def _entities(inventory: Inventory) -> list[tuple[GPU, MigDevice | None]]:
    """dcgm-exporter's default ("flex") entities: each MIG instance of a GPU that has them, else the GPU."""
    out: list[tuple[GPU, MigDevice | None]] = []
    for gpu in inventory.gpus:
        if gpu.mig_enabled and gpu.mig_devices:
            out.extend((gpu, mig) for mig in gpu.mig_devices)
        else:
            out.append((gpu, None))
    return out


def _pod_attrs(ref: PodRef | None) -> Labels:
    if ref is None:
        return ()
    attrs: Labels = (("container", ref.container), ("namespace", ref.namespace), ("pod", ref.pod))
    return (*attrs, ("vgpu", ref.vgpu)) if ref.vgpu is not None else attrs


def _value(field_name: str, gpu: GPU, mig: MigDevice | None, readings: GPUReadings,
           xid: XidRecord | None, nvlink_bandwidth: int | None = None) -> int | float | None:
    spec = FIELDS[field_name]
    if field_name == XID_FIELD:
        return xid.xid if xid is not None else 0
    if field_name == NVLINK_BANDWIDTH_FIELD:
        return nvlink_bandwidth
    if field_name == FB_TOTAL_FIELD:
        return mig.memory_total_mib if mig is not None else gpu.memory_total_mib
    if mig is not None and spec.scope is not Scope.DEVICE:
        # Utilization is not reported for MIG instances (as in DCGM); per-instance frame-buffer use would
        # need MIG handles the backends do not read, so only the instance's size is published.
        return None
    return spec.read(readings)


def build_dcgm_families(snapshot: NodeSnapshot, options: ExporterOptions) -> list[Family]:
    inventory = snapshot.inventory
    label_values = {"DCGM_FI_DRIVER_VERSION": inventory.driver_version}
    extra = tuple(sorted((c.field, label_values[c.field]) for c in options.counters.labels))
    entities = []
    for gpu, mig in _entities(inventory):
        readings = snapshot.readings.get(gpu.uuid)
        if readings is None:
            continue  # the read failed or timed out: no series for this GPU, the error counter says why
        attribution = snapshot.attribution
        refs: tuple[PodRef | None, ...] = (None,)
        if attribution is not None:
            found = attribution.containers(mig.uuid if mig else gpu.uuid, all_sharing=options.all_sharing_containers)
            refs = found or (None,)
        entities.append((gpu, mig, readings, gpu_labels(gpu, mig, options) + extra, refs))

    families = []
    for counter in options.counters.metrics:
        samples = []
        double = FIELDS[counter.field].double
        for gpu, mig, readings, labels, refs in entities:
            xid = snapshot.xids.get(gpu.uuid)
            value = _value(counter.field, gpu, mig, readings, xid, snapshot.nvlink_bandwidth.get(gpu.uuid))
            if value is None:
                continue
            xid_attrs: Labels = ()
            if counter.field == XID_FIELD:
                code = int(value)
                xid_attrs = (("err_code", str(code)), ("err_msg", xid_description(code)))
            for ref in refs:
                attrs = tuple(sorted(_pod_attrs(ref) + xid_attrs))
                samples.append(Sample(labels + attrs, value, double))
        families.append(Family(counter.field, counter.prom_type, counter.help, tuple(samples)))
    return families


def build_kgpu_families(snapshot: NodeSnapshot, options: ExporterOptions) -> list[Family]:
    """kgpu's own series: what dcgm-exporter does not tell (read health, XIDs, sharing, plugin view)."""
    inventory = snapshot.inventory
    per_gpu = [(gpu, gpu_labels(gpu, None, options)) for gpu in inventory.gpus]
    read_ok = tuple(Sample(labels, int(gpu.uuid in snapshot.readings)) for gpu, labels in per_gpu)
    read_errors = tuple(Sample(labels, snapshot.read_errors_total.get(gpu.uuid, 0)) for gpu, labels in per_gpu)
    last_xid, xid_count, xid_time = [], [], []
    for gpu, labels in per_gpu:
        record = snapshot.xids.get(gpu.uuid)
        last_xid.append(Sample(labels, record.xid if record else 0))
        xid_count.append(Sample(labels, record.count if record else 0))
        if record is not None:
            xid_time.append(Sample(labels, record.timestamp, double=True))
    families = [
        Family("kgpu_gpu_read_ok", "gauge",
               "1 when this scrape read the GPU's sensors, 0 when the read failed or timed out "
               "(its DCGM_FI_* series are then missing).", read_ok),
        Family("kgpu_gpu_read_errors_total", "counter",
               "Failed or timed-out sensor reads of this GPU since the exporter started.", read_errors),
        Family("kgpu_gpu_last_xid", "gauge", "The last XID error the GPU reported (0: none seen).",
               tuple(last_xid)),
        Family("kgpu_gpu_last_xid_timestamp_seconds", "gauge",
               "When the GPU reported its last XID error (Unix time).", tuple(xid_time)),
        Family("kgpu_gpu_xid_errors_total", "counter",
               "XID errors the GPU reported since the exporter started following its health events.",
               tuple(xid_count)),
    ]
    if snapshot.attribution is not None:
        allocated = snapshot.attribution.allocated_per_gpu
        families.append(Family(
            "kgpu_gpu_allocated_devices", "gauge",
            "Devices on this GPU the kubelet has assigned to containers: the whole GPU, each shared "
            "replica, or each MIG device counts one.",
            tuple(Sample(labels, allocated.get(gpu.uuid, 0)) for gpu, labels in per_gpu),
        ))
    if snapshot.pod_resources_ok is not None:
        families.append(Family("kgpu_exporter_pod_resources_up", "gauge",
                               "1 when the kubelet's PodResources List answered this scrape.",
                               (Sample((), int(snapshot.pod_resources_ok)),)))
    if snapshot.plugin_state is not None:
        families.extend(build_plugin_families(snapshot.plugin_state, inventory, options))
    if snapshot.scrape_seconds is not None:
        families.append(Family("kgpu_exporter_scrape_duration_seconds", "gauge",
                               "Time this scrape spent reading GPUs, the kubelet and the plugin state.",
                               (Sample((), snapshot.scrape_seconds, double=True),)))
    return families


def build_families(snapshot: NodeSnapshot, options: ExporterOptions) -> list[Family]:
    return build_dcgm_families(snapshot, options) + build_kgpu_families(snapshot, options)


def build_plugin_families(state: PluginState, inventory: Inventory, options: ExporterOptions) -> list[Family]:
    """The device plugin's view of each advertised device, from its state file."""
    base: dict[str, Labels] = {g.uuid: gpu_labels(g, None, options) for g in inventory.gpus}
    registered, healthy, allocations, mps_memory, mps_compute = [], [], [], [], []
    advertised: dict[tuple[str, str], int] = {}
    for resource in state.resources:
        registered.append(Sample((("resource", resource.name),), int(resource.registered)))
        for device in resource.devices:
            gpu = base.get(device.gpu_uuid, (("UUID", device.gpu_uuid),))
            labels = (*gpu, ("resource", resource.name), ("device_id", device.id))
            healthy.append(Sample(labels, int(device.healthy)))
            allocations.append(Sample(labels, device.allocations))
            advertised[(device.gpu_uuid, resource.name)] = advertised.get((device.gpu_uuid, resource.name), 0) + 1
            if device.mps is not None and device.mps.memory_mib is not None:
                mps_memory.append(Sample(labels, device.mps.memory_mib))
            if device.mps is not None and device.mps.compute_percent is not None:
                mps_compute.append(Sample(labels, device.mps.compute_percent))
    per_gpu = tuple(
        Sample((*base.get(uuid, (("UUID", uuid),)), ("resource", name)), count)
        for (uuid, name), count in advertised.items()
    )
    return [
        Family("kgpu_device_plugin_resource_registered", "gauge",
               "1 while the device plugin is registered with the kubelet for this resource.", tuple(registered)),
        Family("kgpu_device_plugin_device_healthy", "gauge",
               "1 when the device plugin reports the device Healthy to the kubelet, 0 when Unhealthy.",
               tuple(healthy)),
        Family("kgpu_device_plugin_device_allocations_total", "counter",
               "Allocate calls that included the device since the device plugin started.", tuple(allocations)),
        Family("kgpu_gpu_advertised_devices", "gauge",
               "Devices the plugin advertises on this GPU per resource (replicas or slices of a shared GPU).",
               per_gpu),
        Family("kgpu_mps_slice_pinned_memory_limit_mib", "gauge",
               "Device memory an MPS client of this slice may pin (CUDA_MPS_PINNED_DEVICE_MEM_LIMIT), in MiB.",
               tuple(mps_memory)),
        Family("kgpu_mps_slice_active_thread_percentage", "gauge",
               "Share of the GPU's SMs an MPS client of this slice may use (CUDA_MPS_ACTIVE_THREAD_PERCENTAGE).",
               tuple(mps_compute)),
    ]
