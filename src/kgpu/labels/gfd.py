"""Node labels as gpu-feature-discovery (GFD) computes them, from the inventory, settings and host facts.

Pure: inventory + :class:`LabelSettings` + :class:`HostFacts` in, ``dict[str, str]`` out. Names and
value formats follow NVIDIA/k8s-device-plugin's ``internal/lm`` labelers; where GFD's behaviour is
undefined or fails, the choice made here is documented on the function and in
``tests/golden/labels/README.md``.

Example::

    inv = open_backend(simulate="h100x8").inventory()
    labels = node_labels(inv, LabelSettings(), HostFacts(machine_type="DGX H100"))
    labels["nvidia.com/gpu.product"]  # 'NVIDIA-H100-80GB-HBM3'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from kgpu.config.labels import LabelSettings, MigStrategy, MpsEntry, ReplicatedResource, SharingStrategy
from kgpu.errors import ConfigError
from kgpu.gpu.model import GPU, Inventory, MigDevice
from kgpu.labels.host import HostFacts
from kgpu.sharing.layout import select_gpus

log = logging.getLogger(__name__)

Labels = dict[str, str]

GPU_RESOURCE = "nvidia.com/gpu"
PRESENT = "nvidia.com/gpu.present"
PCI_PRESENT = "feature.node.kubernetes.io/pci-10de.present"
TIMESTAMP = "nvidia.com/gfd.timestamp"

_PCI_CLASS_MODES = {"0x030000": "graphics", "0x030200": "compute"}
_NOT_LABEL_CHARS = re.compile(r"[^A-Za-z0-9\-_. ]")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def sanitise(text: str) -> str:
    """GFD's product-name cleaning: drop characters other than ``[A-Za-z0-9-_. ]``, join words with ``-``."""
    return "-".join(_NOT_LABEL_CHARS.sub("", text).split())


def valid_label_value(value: str) -> bool:
    return len(value) <= 63 and _LABEL_VALUE.match(value) is not None


def make_valid(key: str, value: str) -> str:
    """A value Kubernetes accepts. GFD writes some values unchecked (a VM's DMI name such as
    ``Standard PC (Q35 + ICH9, 2009)``); the API server would then reject the whole patch, so kgpu
    cleans such a value the way GFD cleans product names and trims it to 63 characters."""
    if valid_label_value(value):
        return value
    fixed = sanitise(value.replace("-", " "))[:63].strip("-_.")
    log.warning("label value is not valid in Kubernetes; cleaned", extra={"label": key, "value": value, "now": fixed})
    return fixed


def mig_name(mig: MigDevice) -> str:
    """The MIG device type as GFD names resources after it: the profile with ``+`` turned into ``.``."""
    return mig.profile.replace("+", ".")


@dataclass(frozen=True, slots=True)
class _Resource:
    """Label helper for one resource name (``nvidia.com/gpu``, ``nvidia.com/mig-1g.10gb``).

    ``settings`` is ``None`` where GFD labels a resource "without sharing" (a MIG-enabled GPU
    counted as a full GPU): replicas are then 0.
    """

    name: str
    settings: LabelSettings | None
    advertised: str | None = None
    """The resource these devices are advertised as, when ``resources`` renames them (``nvidia.com/h100``):
    the name a sharing entry refers to them by. The label keys keep GFD's ``name``."""

    def key(self, suffix: str) -> str:
        return f"{self.name}.{suffix}"

    def _entry(self) -> ReplicatedResource | None:
        if self.settings is None:
            return None
        return self.settings.replicated(self.advertised or self.name)

    def replicas(self) -> int:
        if self.settings is None:
            return 0
        entry = self._entry()
        return entry.replicas if entry is not None and entry.replicas > 0 else 1

    def _shared(self) -> bool:
        entry = self._entry()
        return entry is not None and entry.replicas > 1

    def _renamed(self) -> bool:
        entry = self._entry()
        return entry is not None and entry.renamed

    def product(self, *parts: str) -> str:
        words = [sanitise(p) for p in parts if p]
        if words and self._shared() and not self._renamed():
            words.append("SHARED")
        return "-".join(words)

    def base(self, count: int, *parts: str) -> Labels:
        """product, count, replicas and sharing-strategy, as GFD's ``baseLabeler``."""
        replicas = self.replicas()
        strategy = SharingStrategy.NONE
        if self.settings is not None and replicas > 1:
            strategy = self.settings.active_sharing_strategy
        return {
            self.key("product"): self.product(*parts),
            self.key("count"): str(count),
            self.key("replicas"): str(replicas),
            self.key("sharing-strategy"): str(strategy),
        }

    def mig_attributes(self, mig: MigDevice) -> Labels:
        values = {
            "memory": mig.memory_total_mib,
            "multiprocessors": mig.multiprocessor_count,
            "slices.gi": mig.gpu_instance_slices,
            "slices.ci": mig.compute_instance_slices,
            "engines.copy": mig.engines.copy,
            "engines.decoder": mig.engines.decoder,
            "engines.encoder": mig.engines.encoder,
            "engines.jpeg": mig.engines.jpeg,
            "engines.ofa": mig.engines.ofa,
        }
        return {self.key(k): str(v) for k, v in values.items()}


def _full_gpu_labels(gpu: GPU, count: int, settings: LabelSettings | None) -> Labels:
    res = _Resource(GPU_RESOURCE, settings, settings.gpu_resource(gpu.name) if settings is not None else None)
    labels = res.base(count, gpu.name)
    if gpu.memory_total_mib:
        labels[res.key("memory")] = str(gpu.memory_total_mib)
    if gpu.compute_capability.major:
        labels[res.key("family")] = gpu.family
        labels[res.key("compute.major")] = str(gpu.compute_capability.major)
        labels[res.key("compute.minor")] = str(gpu.compute_capability.minor)
    return labels


MpsSelection = Sequence[tuple[MpsEntry, Sequence[GPU]]]
"""Each ``sharing.mps`` entry with the GPUs (not in MIG mode) it puts MPS clients on."""


def mps_selection(gpus: Sequence[GPU], settings: LabelSettings) -> list[tuple[MpsEntry, list[GPU]]]:
    """The GPUs each ``sharing.mps`` entry selects, as the device plugin selects them
    (:func:`kgpu.sharing.layout.select_gpus`), leaving out GPUs in MIG mode (MPS does not run there).

    The layout is not checked here (oversubscription, architecture): the device plugin refuses a layout
    it cannot honour, and GFD likewise labels from the config. An entry naming GPUs this node does not
    have is left out with a warning.
    """

    out: list[tuple[MpsEntry, list[GPU]]] = []
    for entry in settings.mps:
        try:
            picked = select_gpus(entry.devices, gpus, f"sharing.mps ({entry.resource})")
        except ConfigError as exc:
            log.warning("a sharing.mps entry selects GPUs this node does not have; its MPS clients are not "
                        "labelled", extra={"resource": entry.resource, "reason": str(exc)})
            continue
        out.append((entry, [g for g in picked if not g.mig_enabled]))
    return out


def mps_clients(selection: MpsSelection) -> dict[str, int]:
    """MPS clients per GPU UUID: the number of slices (equal replicas included) the GPU is split into."""
    clients: dict[str, int] = {}
    for entry, picked in selection:
        for g in picked:
            clients[g.uuid] = clients.get(g.uuid, 0) + entry.count
    return clients


def _mps_sharing(chosen: GPU, gpus: Sequence[GPU], selection: MpsSelection) -> Labels:
    """``gpu.replicas`` and ``gpu.sharing-strategy`` when the config has kgpu MPS slices.

    A GPU split into slices is shared through MPS: ``sharing-strategy`` is ``mps`` and ``replicas`` is
    its number of MPS clients (its slices, or equal replicas of ``resources``). GFD labels one product,
    so one GPU decides: among the labelled product's GPUs, the lowest-index one shared through MPS.
    (GFD likewise labels the config's replicas whichever GPUs ``devices`` selects.) When the product's
    GPUs have different client counts, that GPU's count is labelled and a warning lists them. With no
    GPU of the product shared, GFD's labels stand.
    """
    clients = mps_clients(selection)
    same = sorted((g for g in gpus if g.name == chosen.name and not g.mig_enabled), key=lambda g: g.index)
    shared = [g for g in same if clients.get(g.uuid, 0) > 0]
    if not shared:
        return {}
    first = shared[0]
    per_gpu = {g.index: clients.get(g.uuid, 0) for g in same}
    if len(set(per_gpu.values())) > 1:
        log.warning("GPUs of the labelled product are split into different numbers of MPS slices; "
                    "nvidia.com/gpu.replicas is the first shared GPU's",
                    extra={"product": chosen.name, "gpu": first.index, "slices_per_gpu": per_gpu})
    res = _Resource(GPU_RESOURCE, None)
    return {res.key("replicas"): str(clients[first.uuid]), res.key("sharing-strategy"): str(SharingStrategy.MPS)}


def mps_slice_labels(selection: MpsSelection) -> Labels:
    """kgpu's labels for each MPS slice resource (``nvidia.com/gpu-20gb``), so its name can be read
    off the node as GFD's ``<resource>.count`` labels name MIG resources:

    * ``<resource>.count``: slices of that resource on the node (what the kubelet's allocatable shows);
    * ``<resource>.memory``: a slice's pinned-memory limit in MiB, from the lowest-index GPU carrying it;
    * ``<resource>.sharing-strategy``: ``mps``.

    A resource whose label names would exceed Kubernetes' 63 characters is left out with a warning.
    """
    counts: dict[str, int] = {}
    memory: dict[str, tuple[int, int]] = {}
    for entry, picked in selection:
        if not entry.slice or not picked or entry.resource == GPU_RESOURCE:
            continue
        counts[entry.resource] = counts.get(entry.resource, 0) + entry.count * len(picked)
        first = min(g.index for g in picked)
        if entry.resource not in memory or first < memory[entry.resource][0]:
            memory[entry.resource] = (first, entry.memory_mib)
    labels: Labels = {}
    for name, count in counts.items():
        res = _Resource(name, None)
        values = {"count": str(count), "memory": str(memory[name][1]), "sharing-strategy": str(SharingStrategy.MPS)}
        keys = {res.key(k): v for k, v in values.items()}
        too_long = [k for k in keys if len(k.partition("/")[2]) > 63]
        if too_long:
            log.warning("slice resource name too long for its labels (at most 63 characters after the '/'); "
                        "not labelled", extra={"resource": name, "labels": too_long})
            continue
        labels |= keys
    return labels


def full_gpu_labels(gpus: Sequence[GPU], settings: LabelSettings, mps: MpsSelection = ()) -> Labels:
    """``nvidia.com/gpu.*`` for whole GPUs, as GFD's ``newGPULabelers``.

    GPUs are grouped by product; a MIG-enabled GPU counts towards its product but is labelled
    without sharing (replicas 0) unless a GPU of the same product is not in MIG mode. With
    several products on one node GFD labels one of them, picked by Go's random map order (and
    warns); kgpu picks deterministically: the product of the lowest-index GPU not in MIG mode,
    else of the lowest-index GPU. The count is that product's GPUs only, as in GFD.

    With kgpu's MPS slices configured (``mps``: :func:`mps_selection`), replicas and sharing strategy
    describe the product's first GPU split into slices (:func:`_mps_sharing`).
    """
    counts: dict[str, int] = {}
    for g in gpus:
        counts[g.name] = counts.get(g.name, 0) + 1
    if len(counts) > 1:
        log.warning("multiple GPU products on this node; labelling one of them as gpu-feature-discovery does",
                    extra={"products": sorted(counts)})
    whole = [g for g in gpus if not g.mig_enabled]
    chosen = whole[0] if whole else gpus[0]
    labels = _full_gpu_labels(chosen, counts[chosen.name], settings if whole else None)
    if whole and settings.slices:
        labels |= _mps_sharing(chosen, gpus, mps)
    return labels


def _invalid_single(gpu: GPU, reason: str) -> Labels:
    log.warning("invalid configuration for mig-strategy=single", extra={"reason": reason})
    res = _Resource(GPU_RESOURCE, None)
    return {
        res.key("product"): res.product(gpu.name, "MIG", "INVALID"),
        res.key("count"): "0",
        res.key("replicas"): "0",
        res.key("sharing-strategy"): "",  # GFD's newInvalidMigStrategyLabeler: empty, not "none"
        res.key("memory"): "0",
    }


def _group_migs(gpus: Sequence[GPU]) -> dict[str, list[MigDevice]]:
    groups: dict[str, list[MigDevice]] = {}
    for g in gpus:
        for m in g.mig_devices:
            groups.setdefault(mig_name(m), []).append(m)
    return groups


def _mig_resource_labels(resource: str, migs: list[MigDevice], gpus: Sequence[GPU],
                         settings: LabelSettings) -> Labels:
    first = migs[0]
    parent = next(g for g in gpus if g.uuid == first.parent_uuid)
    res = _Resource(resource, settings, settings.mig_resource(first.profile))
    return res.base(len(migs), parent.name, "MIG", mig_name(first)) | res.mig_attributes(first)


def mig_single_labels(gpus: Sequence[GPU], settings: LabelSettings) -> Labels:
    """MIG devices as ``nvidia.com/gpu``; ``…-MIG-INVALID`` with zero counts when the node breaks the
    single strategy's rule (every GPU in MIG mode, every MIG device of one type)."""
    enabled = [g for g in gpus if g.mig_enabled]
    if not enabled:
        return {}
    if any(not g.mig_devices for g in enabled):
        return _invalid_single(enabled[0], "at least one MIG device is enabled but empty")
    if len(enabled) != len(gpus):
        return _invalid_single(enabled[0], "devices with MIG enabled and disable detected")
    groups = _group_migs(gpus)
    if len(groups) != 1:
        return _invalid_single(enabled[0], "more than one MIG device type present on node")
    (migs,) = groups.values()
    return _mig_resource_labels(GPU_RESOURCE, migs, gpus, settings)


def mig_mixed_labels(gpus: Sequence[GPU], settings: LabelSettings) -> Labels:
    """``nvidia.com/mig-<type>.*`` for each MIG device type on the node."""
    labels: Labels = {}
    for name, migs in _group_migs(gpus).items():
        labels |= _mig_resource_labels(f"nvidia.com/mig-{name}", migs, gpus, settings)
    return labels


def version_labels(inventory: Inventory) -> Labels:
    """Driver version (split) and the CUDA driver API version, new names and the deprecated ones."""
    parts = inventory.driver_version.split(".")
    if not 2 <= len(parts) <= 3:
        log.warning("driver version does not match X.Y[.Z]; no version labels",
                    extra={"driver_version": inventory.driver_version})
        return {}
    major, minor, rev = parts[0], parts[1], parts[2] if len(parts) > 2 else ""
    cuda = inventory.cuda_driver_version
    return {
        "nvidia.com/cuda.driver.major": major,
        "nvidia.com/cuda.driver.minor": minor,
        "nvidia.com/cuda.driver.rev": rev,
        "nvidia.com/cuda.runtime.major": str(cuda.major),
        "nvidia.com/cuda.runtime.minor": str(cuda.minor),
        "nvidia.com/cuda.driver-version.major": major,
        "nvidia.com/cuda.driver-version.minor": minor,
        "nvidia.com/cuda.driver-version.revision": rev,
        "nvidia.com/cuda.driver-version.full": inventory.driver_version,
        "nvidia.com/cuda.runtime-version.major": str(cuda.major),
        "nvidia.com/cuda.runtime-version.minor": str(cuda.minor),
        "nvidia.com/cuda.runtime-version.full": f"{cuda.major}.{cuda.minor}",
    }


def gpu_mode(gpus: Sequence[GPU], host: HostFacts) -> str:
    """``compute`` for PCI class 0x0302 (3D controller), ``graphics`` for 0x0300 (VGA), else ``unknown``.

    As GFD's ``getModeForClasses``: GPUs of different classes on one node give ``unknown``. Where a
    class cannot be read GFD also labels ``unknown``.
    """
    classes = {host.pci_class(g.pci_bus_id) for g in gpus}
    if len(classes) != 1:
        return "unknown"
    (cls,) = classes
    return _PCI_CLASS_MODES.get(cls or "", "unknown")


def mps_capable(gpus: Sequence[GPU], settings: LabelSettings) -> bool:
    """True when MPS sharing is configured and no GPU is in MIG mode. (With MIG on, GFD fails the
    labelling with "MPS sharing is not supported for mig devices"; kgpu says ``false``.)"""
    if settings.active_sharing_strategy is not SharingStrategy.MPS:
        return False
    if any(g.mig_enabled for g in gpus):
        log.warning("MPS sharing is not supported for MIG devices; labelling mps.capable=false")
        return False
    return True


def node_labels(inventory: Inventory, settings: LabelSettings, host: HostFacts,
                timestamp: int | None = None) -> Labels:
    """Every label kgpu owns for this node, in GFD's names and formats.

    GFD's labels plus ``nvidia.com/gpu.present`` (the GPU Operator's) and
    ``feature.node.kubernetes.io/pci-10de.present`` (NFD's vendor label). ``timestamp`` (unix
    seconds) becomes ``nvidia.com/gfd.timestamp``; ``None`` leaves it out (GFD's ``--no-timestamp``).
    On a node without GPUs only the timestamp remains, as with GFD (its device labeler, machine type
    included, is empty without devices).
    """
    labels: Labels = {}
    if timestamp is not None:
        labels[TIMESTAMP] = str(timestamp)
    gpus = inventory.gpus
    if gpus:
        labels["nvidia.com/gpu.machine"] = host.machine_type.replace(" ", "-")
        labels |= version_labels(inventory)
        labels["nvidia.com/mig.capable"] = str(any(g.mig_capable for g in gpus)).lower()
        labels["nvidia.com/mps.capable"] = str(mps_capable(gpus, settings)).lower()
        selection = mps_selection(gpus, settings) if settings.slices else []
        labels |= full_gpu_labels(gpus, settings, selection)
        labels |= mps_slice_labels(selection)
        if settings.mig_strategy is not MigStrategy.NONE:
            labels["nvidia.com/mig.strategy"] = str(settings.mig_strategy)
            if settings.mig_strategy is MigStrategy.SINGLE:
                labels |= mig_single_labels(gpus, settings)
            else:
                labels |= mig_mixed_labels(gpus, settings)
        labels["nvidia.com/gpu.mode"] = gpu_mode(gpus, host)
        labels[PRESENT] = "true"
        labels[PCI_PRESENT] = "true"
    return {key: make_valid(key, value) for key, value in sorted(labels.items())}
