"""``kgpu exporter``: GPU metrics under dcgm-exporter's names, labels and types, from kgpu's inventory.

Example::

    from kgpu.exporter import GPUCollector, ExporterOptions, load_counters
    from kgpu.gpu import open_backend

    collector = GPUCollector(open_backend(simulate="h100x8"), ExporterOptions(load_counters(None), hostname="n1"))
    print(collector.render())   # DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-…",...} 30 ...
"""

from kgpu.exporter.attribution import Attribution, ContainerDevices, PodRef, attribute, resolve_device_id
from kgpu.exporter.collector import GPUCollector, PodDevicesSource
from kgpu.exporter.counters import DEFAULT_COUNTERS_CSV, Counter, CounterSet, load_counters, parse_counters
from kgpu.exporter.families import CONTENT_TYPE, Family, Sample, render
from kgpu.exporter.snapshot import HOSTNAME_LABELS, ExporterOptions, NodeSnapshot, build_families
from kgpu.exporter.xid import XidTracker, xid_description

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_COUNTERS_CSV",
    "HOSTNAME_LABELS",
    "Attribution",
    "ContainerDevices",
    "Counter",
    "CounterSet",
    "ExporterOptions",
    "Family",
    "GPUCollector",
    "NodeSnapshot",
    "PodDevicesSource",
    "PodRef",
    "Sample",
    "XidTracker",
    "attribute",
    "build_families",
    "load_counters",
    "parse_counters",
    "render",
    "resolve_device_id",
    "xid_description",
]
