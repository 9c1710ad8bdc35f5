"""The node's GPUs as DRA devices, named and described exactly as NVIDIA's DRA driver publishes them.

Pure: the inventory (and the PCIe roots read from sysfs by the caller) in, devices out. Names and
attributes follow ``kubernetes-sigs/dra-driver-nvidia-gpu`` (``cmd/gpu-kubelet-plugin/deviceinfo.go``,
``mig.go``), so DeviceClasses and CEL selectors written for ``gpu.nvidia.com`` select the same devices:

* a whole GPU is ``gpu-<minor>`` with ``type: gpu``, ``uuid``, ``productName`` (NVML's name),
  ``brand`` and ``architecture`` (go-nvlib's spelling: ``Nvidia``, ``Hopper``), ``cudaComputeCapability``,
  ``driverVersion`` and ``cudaDriverVersion`` as semantic versions (``9.0.0``, ``580.95.5``: leading
  zeros dropped, as Masterminds/semver does), the standard ``resource.kubernetes.io/pciBusID``,
  ``resource.kubernetes.io/pcieRoot`` and ``resource.kubernetes.io/numaNode``; capacity ``memory`` in bytes;
* a MIG device is ``gpu-<minor>-mig-<profile without dots>-<profile id>-<placement start>`` with
  ``type: mig``, ``parentUUID``, ``profile`` and its parent's other attributes; capacities
  ``multiprocessors``, ``copyEngines``, ``decoders``, ``encoders``, ``jpegEngines``, ``ofaEngines``,
  ``memory`` and one ``memorySlice<i>`` per memory slice it spans. A GPU in MIG mode is published as its
  MIG devices only.

Consumable shares (``--consumable-shares``, NVIDIA's flag and values): ``memory`` (kgpu's default) marks
each whole GPU ``allowMultipleAllocations`` with a memory request policy whose default is the whole
memory, so a claim that asks for nothing still gets the GPU to itself and one that asks for ``30Gi``
shares it; ``unlimited`` defaults to 0; ``N`` adds a ``shares`` capacity of N; ``disabled`` publishes
plain devices. kgpu shares only whole GPUs of compute capability 7.0 or newer, where MPS enforces
memory and SM limits per client (the same rule as the device plugin's MPS slices).

Example::

    devices = build_devices(inventory, pcie_roots={}, shares=ConsumableShares.parse("memory"))
    devices[0].name, devices[0].attributes["productName"]   # ('gpu-0', {'string': 'NVIDIA H100 80GB HBM3'})
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kgpu.errors import ConfigError
from kgpu.gpu.model import GPU, ComputeCapability, Inventory, MigDevice

GPU_TYPE = "gpu"
MIG_TYPE = "mig"
PCI_BUS_ID = "resource.kubernetes.io/pciBusID"
PCIE_ROOT = "resource.kubernetes.io/pcieRoot"
NUMA_NODE = "resource.kubernetes.io/numaNode"
MIB = 1024 * 1024
MPS_MINIMUM_CC = ComputeCapability(7, 0)
"""Volta: the first architecture whose MPS enforces per-client memory and SM limits."""

# kgpu's inventory spells brands as nvidia-smi does; NVIDIA's DRA driver as go-nvlib's GetBrandAsString.
_BRANDS = {
    "Unknown": "Unknown", "Quadro": "Quadro", "Tesla": "Tesla", "NVS": "NVS", "GRID": "Grid",
    "GeForce": "GeForce", "Titan": "Titan", "NVIDIA Virtual Applications": "NvidiaVApps",
    "NVIDIA Virtual PC": "NvidiaVPC", "NVIDIA Virtual Compute Server": "NvidiaVCS",
    "NVIDIA RTX Virtual Workstation": "NvidiaVWS", "NVIDIA Cloud Gaming": "NvidiaCloudGaming",
    "Quadro RTX": "QuadroRTX", "NVIDIA RTX": "NvidiaRTX", "NVIDIA": "Nvidia", "GeForce RTX": "GeForceRTX",
    "Titan RTX": "TitanRTX",
}
# GFD's family names (kgpu.gpu.model.architecture_family) → go-nvlib's GetArchitectureAsString.
_ARCHITECTURES = {
    "kepler": "Kepler", "maxwell": "Maxwell", "pascal": "Pascal", "volta": "Volta", "turing": "Turing",
    "ampere": "Ampere", "ada-lovelace": "Ada Lovelace", "hopper": "Hopper", "blackwell": "Blackwell",
    "rubin": "Rubin",
}
_SEMVER = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$")
SHARES_MODES = ("disabled", "memory", "unlimited", "a positive integer")


def semver(text: str) -> str:
    """``9.0`` → ``9.0.0``, ``580.95.05`` → ``580.95.5``: Masterminds/semver's coercing parse, printed back."""
    m = _SEMVER.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not a version")
    out = f"{int(m[1])}.{int(m[2] or 0)}.{int(m[3] or 0)}"
    if m[4]:
        out += f"-{m[4]}"
    if m[5]:
        out += f"+{m[5]}"
    return out


def quantity(value: int) -> str:
    """A byte count as Kubernetes prints a BinarySI quantity: the largest exact suffix (``80Gi``), else plain."""
    for suffix, factor in (("Ei", 1 << 60), ("Pi", 1 << 50), ("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20),
                           ("Ki", 1 << 10)):
        if value and value % factor == 0:
            return f"{value // factor}{suffix}"
    return str(value)


def rfc1123(name: str) -> str:
    """NVIDIA's toRFC1123Compliant: lower case, anything but ``[a-z0-9-.]`` becomes ``-``, trimmed."""
    name = re.sub(r"[^a-z0-9-.]", "-", name.lower()).strip("-")
    return name.removesuffix(".")[:253]


@dataclass(frozen=True, slots=True)
class ConsumableShares:
    """How whole GPUs are shared between claims (NVIDIA's ``--consumable-shares``)."""

    mode: str = "memory"
    """``disabled``, ``memory``, ``unlimited`` or ``count``."""
    count: int = 0
    """With mode ``count``: the ``shares`` capacity per GPU."""

    @classmethod
    def parse(cls, text: str, where: str = "--consumable-shares") -> ConsumableShares:
        value = text.strip()
        if value in ("disabled", "memory", "unlimited"):
            return cls(value)
        if value.isdigit() and int(value) > 0:
            return cls("count", int(value))
        raise ConfigError(f"{where}={text!r}: allowed {', '.join(SHARES_MODES)}")

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def __str__(self) -> str:
        return str(self.count) if self.mode == "count" else self.mode


@dataclass(frozen=True, slots=True)
class DraDevice:
    """One device of the ResourceSlice, with what prepare needs to know about it."""

    name: str
    type: str
    """``gpu`` or ``mig``."""
    uuid: str
    gpu_uuid: str
    """The physical GPU (itself for a whole GPU, the parent for a MIG device)."""
    gpu_index: int
    minor: int
    memory_mib: int
    multiprocessors: int
    compute_capability: ComputeCapability
    attributes: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """Attribute name → ``{"string"|"int"|"bool"|"version": value}``, as resource.k8s.io/v1 writes them."""
    capacity: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    """Capacity name → ``{"value": quantity[, "requestPolicy": {...}]}``."""
    shareable: bool = False
    """Published with ``allowMultipleAllocations: true``: several claims may hold parts of it."""
    mig_profile: str | None = None
    mig_gpu_instance_id: int | None = None
    mig_compute_instance_id: int | None = None

    @property
    def health_uuids(self) -> tuple[str, ...]:
        """UUIDs whose health decides this device's: the GPU; for MIG, the MIG device and its parent."""
        return (self.uuid,) if self.uuid == self.gpu_uuid else (self.uuid, self.gpu_uuid)

    @property
    def mps_capable(self) -> bool:
        return self.type == GPU_TYPE and self.compute_capability >= MPS_MINIMUM_CC

    def to_json(self, taints: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The device as a ResourceSlice lists it."""
        out: dict[str, Any] = {
            "name": self.name,
            "attributes": {k: dict(v) for k, v in sorted(self.attributes.items())},
            "capacity": {k: dict(v) for k, v in sorted(self.capacity.items())},
        }
        if self.shareable:
            out["allowMultipleAllocations"] = True
        if taints:
            out["taints"] = taints
        return out


def _common_attributes(gpu: GPU, inventory: Inventory, pcie_root: str | None) -> dict[str, dict[str, Any]]:
    attrs: dict[str, dict[str, Any]] = {
        "productName": {"string": gpu.name},
        "brand": {"string": _BRANDS.get(gpu.brand, gpu.brand)},
        "architecture": {"string": _ARCHITECTURES.get(gpu.family, "Unknown")},
        "cudaComputeCapability": {"version": semver(str(gpu.compute_capability))},
        "driverVersion": {"version": semver(inventory.driver_version)},
        "cudaDriverVersion": {"version": semver(str(inventory.cuda_driver_version))},
        PCI_BUS_ID: {"string": gpu.sysfs_bus_id},
    }
    if pcie_root:
        attrs[PCIE_ROOT] = {"string": pcie_root}
    if gpu.numa_node is not None and gpu.numa_node >= 0:
        attrs[NUMA_NODE] = {"int": gpu.numa_node}
    return attrs


def _int_capacity(value: int) -> dict[str, Any]:
    return {"value": quantity(value) if value else "0"}


def _memory_capacity(memory_mib: int, shares: ConsumableShares) -> dict[str, dict[str, Any]]:
    """NVIDIA's applyConsumableShares: a 1Mi step, a maximum of the whole memory, a default per mode."""
    total = quantity(memory_mib * MIB)
    if not shares.enabled:
        return {"memory": {"value": total}}
    step = "1Mi"
    if shares.mode == "memory":
        policy = {"default": total, "validRange": {"min": step, "max": total, "step": step}}
    else:
        policy = {"default": "0", "validRange": {"min": "0", "max": total, "step": step}}
    capacity: dict[str, dict[str, Any]] = {"memory": {"value": total, "requestPolicy": policy}}
    if shares.mode == "count":
        n = str(shares.count)
        capacity["shares"] = {"value": n, "requestPolicy": {"default": "1", "validRange": {"min": "1", "max": n,
                                                                                          "step": "1"}}}
    return capacity


def mig_device_name(gpu: GPU, mig: MigDevice) -> str:
    """NVIDIA's canonical MIG name ``gpu-<minor>-mig-<profile>-<profile id>-<placement start>``; without the
    profile ID and placement (NVML would not say) the GPU and compute instance IDs stand in for them."""
    profile = rfc1123(mig.profile.replace(".", ""))
    if mig.profile_id is not None and mig.placement_start is not None:
        return f"gpu-{gpu.minor}-mig-{profile}-{mig.profile_id}-{mig.placement_start}"
    return f"gpu-{gpu.minor}-mig-{profile}-gi{mig.gpu_instance_id}-ci{mig.compute_instance_id}"


def gpu_device(gpu: GPU, inventory: Inventory, pcie_root: str | None, shares: ConsumableShares) -> DraDevice:
    attrs = {"type": {"string": GPU_TYPE}, "uuid": {"string": gpu.uuid},
             **_common_attributes(gpu, inventory, pcie_root)}
    shareable = shares.enabled and gpu.compute_capability >= MPS_MINIMUM_CC
    return DraDevice(
        name=f"gpu-{gpu.minor}", type=GPU_TYPE, uuid=gpu.uuid, gpu_uuid=gpu.uuid, gpu_index=gpu.index,
        minor=gpu.minor, memory_mib=gpu.memory_total_mib, multiprocessors=gpu.multiprocessor_count,
        compute_capability=gpu.compute_capability, attributes=attrs,
        capacity=_memory_capacity(gpu.memory_total_mib, shares if shareable else ConsumableShares("disabled")),
        shareable=shareable,
    )


def mig_device(gpu: GPU, mig: MigDevice, inventory: Inventory, pcie_root: str | None) -> DraDevice:
    attrs = {
        "type": {"string": MIG_TYPE},
        "uuid": {"string": mig.uuid},
        "parentUUID": {"string": gpu.uuid},
        "profile": {"string": mig.profile},
        **_common_attributes(gpu, inventory, pcie_root),
    }
    capacity = {
        "multiprocessors": _int_capacity(mig.multiprocessor_count),
        "copyEngines": _int_capacity(mig.engines.copy),
        "decoders": _int_capacity(mig.engines.decoder),
        "encoders": _int_capacity(mig.engines.encoder),
        "jpegEngines": _int_capacity(mig.engines.jpeg),
        "ofaEngines": _int_capacity(mig.engines.ofa),
        "memory": {"value": quantity(mig.memory_total_mib * MIB)},
    }
    if mig.placement_start is not None:
        for i in range(mig.placement_start, mig.placement_start + (mig.placement_size or mig.gpu_instance_slices)):
            capacity[f"memorySlice{i}"] = {"value": "1"}
    return DraDevice(
        name=mig_device_name(gpu, mig), type=MIG_TYPE, uuid=mig.uuid, gpu_uuid=gpu.uuid, gpu_index=gpu.index,
        minor=gpu.minor, memory_mib=mig.memory_total_mib, multiprocessors=mig.multiprocessor_count,
        compute_capability=gpu.compute_capability, attributes=attrs, capacity=capacity,
        mig_profile=mig.profile, mig_gpu_instance_id=mig.gpu_instance_id,
        mig_compute_instance_id=mig.compute_instance_id,
    )


def build_devices(
    inventory: Inventory,
    pcie_roots: Mapping[str, str],
    shares: ConsumableShares = ConsumableShares(),
    gpus: frozenset[str] | None = None,
) -> tuple[DraDevice, ...]:
    """Every device this node offers, in NVIDIA's order (by GPU, MIG devices by name).

    ``pcie_roots`` maps a GPU's sysfs bus id to its PCIe root (``pci0000:00``); ``gpus`` limits the
    devices to those GPU UUIDs (the GPUs this driver was told are its own).
    """
    out: list[DraDevice] = []
    for gpu in sorted(inventory.gpus, key=lambda g: g.minor):
        if gpus is not None and gpu.uuid not in gpus:
            continue
        root = pcie_roots.get(gpu.sysfs_bus_id)
        if gpu.mig_enabled:
            out.extend(sorted((mig_device(gpu, m, inventory, root) for m in gpu.mig_devices), key=lambda d: d.name))
        else:
            out.append(gpu_device(gpu, inventory, root, shares))
    return tuple(out)
