"""Node labels in gpu-feature-discovery's names and formats, as a view of the GPU inventory.

Example::

    from kgpu.gpu import open_backend
    from kgpu.labels import HostFacts, LabelSettings, node_labels

    inv = open_backend(simulate="h100x8").inventory()
    node_labels(inv, LabelSettings(), HostFacts(machine_type="DGX H100"))["nvidia.com/gpu.count"]  # '8'
"""

from kgpu.config.labels import LabelSettings, MigStrategy, ReplicatedResource, SharingStrategy
from kgpu.labels.gfd import PCI_PRESENT, PRESENT, TIMESTAMP, Labels, node_labels
from kgpu.labels.host import HostFacts, read_host_facts
from kgpu.labels.output import DEFAULT_FEATURE_FILE, format_json, format_lines, write_feature_file

__all__ = [
    "DEFAULT_FEATURE_FILE",
    "PCI_PRESENT",
    "PRESENT",
    "TIMESTAMP",
    "HostFacts",
    "LabelSettings",
    "Labels",
    "MigStrategy",
    "ReplicatedResource",
    "SharingStrategy",
    "format_json",
    "format_lines",
    "node_labels",
    "read_host_facts",
    "write_feature_file",
]
