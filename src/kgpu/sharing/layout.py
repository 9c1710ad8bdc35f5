"""Which MPS slices a node offers: the config's ``sharing.mps`` applied to the node's GPUs.

Pure: an :class:`~kgpu.gpu.model.Inventory` and an :class:`~kgpu.config.MpsConfig` in,
an :class:`MpsLayout` out, or a :class:`~kgpu.errors.ConfigError` whose message shows the
arithmetic of the GPU it cannot fit::

    layout = build_layout(inventory, config)
    for s in layout.slices:
        print(s.id, s.resource, s.memory_mib, s.compute_percent)

Slice device IDs (what the kubelet sees) keep dcgm-exporter's ``<gpu-id>::<suffix>`` form so
pod attribution maps every slice back to its GPU:

* equal replicas (``resources``): ``<gpu-uuid>::<n>``, exactly as NVIDIA's plugin names them;
* heterogeneous slices (``slices``): ``<gpu-uuid>::<short-name>-<n>``, e.g.
  ``GPU-04af…::gpu-20gb-1`` for the second ``nvidia.com/gpu-20gb`` slice of that GPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kgpu.config.limits import MAX_MPS_CLIENTS_PER_GPU as MAX_CLIENTS_PER_DAEMON
from kgpu.config.values import DeviceSelector, MpsConfig
from kgpu.errors import ConfigError
from kgpu.gpu.model import GPU, ComputeCapability, Inventory

MIN_COMPUTE_CAPABILITY = ComputeCapability(7, 0)
"""Per-client memory and SM limits need Volta MPS."""

ID_SEPARATOR = "::"


@dataclass(frozen=True, slots=True)
class MpsSlice:
    """One schedulable piece of a GPU: what a container gets when the kubelet hands it this ID."""

    id: str
    resource: str
    gpu_uuid: str
    gpu_index: int
    memory_mib: int
    """Pinned device memory limit (``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT``)."""
    compute_percent: int
    """Active thread percentage (``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``): the share of SMs the client may use."""
    numa_node: int | None
    number: int
    """Position among this GPU's slices of the same resource (the ``<n>`` in the ID)."""


@dataclass(frozen=True, slots=True)
class SharedGPU:
    """A GPU shared through MPS: its slices, and the limits its control daemon applies by default."""

    uuid: str
    index: int
    name: str
    memory_total_mib: int
    multiprocessor_count: int
    slices: tuple[MpsSlice, ...]
    dynamic_shares: int = 0
    """For a GPU shared dynamically (``sharing.mps.dynamic``): how many containers it serves at once; it
    has no slices, each container's share comes from its pod."""

    @property
    def default_memory_mib(self) -> int | None:
        """The daemon's default client limit: the largest slice, so a client that drops its env gets no more.
        None for a dynamic GPU: its clients' shares differ per pod."""
        return max((s.memory_mib for s in self.slices), default=None)

    @property
    def default_compute_percent(self) -> int | None:
        return max((s.compute_percent for s in self.slices), default=None)

    @property
    def replicas(self) -> int:
        return self.dynamic_shares or len(self.slices)


@dataclass(frozen=True, slots=True)
class MpsLayout:
    gpus: tuple[SharedGPU, ...] = ()
    fail_requests_greater_than_one: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.gpus)

    @property
    def slices(self) -> tuple[MpsSlice, ...]:
        return tuple(s for g in self.gpus for s in g.slices)

    @property
    def shared_uuids(self) -> frozenset[str]:
        """GPUs shared through MPS: not advertised as whole GPUs."""
        return frozenset(g.uuid for g in self.gpus)

    def resource_names(self) -> tuple[str, ...]:
        """Advertised resource names in config order, each once."""
        return tuple(dict.fromkeys(s.resource for s in self.slices))

    def slices_of(self, resource: str) -> tuple[MpsSlice, ...]:
        return tuple(s for s in self.slices if s.resource == resource)

    def slice(self, device_id: str) -> MpsSlice | None:
        return next((s for s in self.slices if s.id == device_id), None)

    def gpu(self, uuid: str) -> SharedGPU | None:
        return next((g for g in self.gpus if g.uuid == uuid), None)


def gpu_of_device_id(device_id: str) -> str:
    """The GPU part of a shared device ID, as dcgm-exporter reads it: ``GPU-…::gpu-20gb-0`` → ``GPU-…``."""
    return device_id.split(ID_SEPARATOR, 1)[0]


def short_name(resource: str) -> str:
    """``nvidia.com/gpu-20gb`` → ``gpu-20gb``."""
    return resource.rsplit("/", 1)[-1]


def select_gpus(selector: DeviceSelector, gpus: Iterable[GPU], where: str) -> list[GPU]:
    ordered = sorted(gpus, key=lambda g: g.index)
    if selector.all:
        return ordered
    if selector.count is not None:
        if selector.count > len(ordered):
            raise ConfigError(
                f"{where}: devices: {selector.count} but this node has {len(ordered)} GPU(s)"
            )
        return ordered[: selector.count]
    picked: list[GPU] = []
    for ref in selector.refs:
        found = next(
            (g for g in ordered if (ref.isdigit() and g.index == int(ref)) or g.uuid.lower() == ref.lower()), None
        )
        if found is None:
            known = ", ".join(f"{g.index} ({g.uuid})" for g in ordered) or "none"
            raise ConfigError(f"{where}: devices: {ref!r} is not a GPU of this node; GPUs: {known}")
        if found not in picked:
            picked.append(found)
    return picked


def _describe(gpu: GPU) -> str:
    return f"GPU {gpu.index} ({gpu.name}, {gpu.memory_total_mib} MiB)"


def _check_gpu(gpu: GPU, source: str, entries: list[tuple[str, int, int, int]], allow_compute: bool) -> None:
    """``entries``: (resource, count, memory MiB, compute %) per config entry on this GPU."""
    if gpu.mig_enabled:
        raise ConfigError(
            f"{source}: sharing.mps selects GPU {gpu.index} ({gpu.name}) which has MIG enabled: "
            "MPS sharing is not supported on MIG devices; disable MIG on it or leave it out of devices"
        )
    if gpu.compute_capability < MIN_COMPUTE_CAPABILITY:
        raise ConfigError(
            f"{source}: sharing.mps selects GPU {gpu.index} ({gpu.name}, compute capability "
            f"{gpu.compute_capability}): per-client MPS memory and compute limits need Volta "
            f"({MIN_COMPUTE_CAPABILITY}) or newer; use sharing.timeSlicing for this GPU"
        )
    clients = sum(count for _, count, _, _ in entries)
    if clients > MAX_CLIENTS_PER_DAEMON:
        terms = " + ".join(f"{count} {name}" for name, count, _, _ in entries)
        raise ConfigError(
            f"{source}: sharing.mps: {_describe(gpu)}: {terms} = {clients} slices > "
            f"{MAX_CLIENTS_PER_DAEMON}, the most MPS clients one daemon serves on Volta and newer"
        )
    memory = sum(count * mib for _, count, mib, _ in entries)
    if memory > gpu.memory_total_mib:
        terms = " + ".join(f"{count}×{mib}" for _, count, mib, _ in entries)
        parts = ", ".join(f"{name} {count}×{mib} MiB" for name, count, mib, _ in entries)
        raise ConfigError(
            f"{source}: sharing.mps oversubscribes memory of {_describe(gpu)}: {terms} = {memory} MiB > "
            f"{gpu.memory_total_mib} MiB ({parts}); make slices smaller or fewer"
        )
    compute = sum(count * pct for _, count, _, pct in entries)
    if compute > 100 and not allow_compute:
        terms = " + ".join(f"{count}×{pct}" for _, count, _, pct in entries)
        raise ConfigError(
            f"{source}: sharing.mps oversubscribes the SMs of GPU {gpu.index} ({gpu.name}, "
            f"{gpu.multiprocessor_count} SMs): {terms} = {compute} % > 100 %; lower computePercent, "
            "or set sharing.mps.allowComputeOversubscription: true to let slices compete for SMs"
        )


def build_layout(inventory: Inventory, config: MpsConfig) -> MpsLayout:
    """Apply ``sharing.mps`` to the node's GPUs; raises ConfigError for a layout that cannot be honoured."""
    if not config.enabled:
        return MpsLayout(fail_requests_greater_than_one=config.fail_requests_greater_than_one)
    source = config.source
    # Per GPU, in config order: (resource, count, memory MiB, compute %, named slice rather than NVIDIA replica)
    plan: dict[str, list[tuple[str, int, int, int, bool]]] = {}
    by_uuid = {g.uuid: g for g in inventory.gpus}
    for i, r in enumerate(config.resources):
        where = f"{source}: sharing.mps.resources[{i}] ({r.name})"
        for gpu in select_gpus(r.devices, inventory.gpus, where):
            plan.setdefault(gpu.uuid, []).append(
                (r.name, r.replicas, gpu.memory_total_mib // r.replicas, 100 // r.replicas, False)
            )
    for i, s in enumerate(config.slices):
        where = f"{source}: sharing.mps.slices[{i}] ({s.name})"
        for gpu in select_gpus(s.devices, inventory.gpus, where):
            plan.setdefault(gpu.uuid, []).append((s.name, s.count, s.memory_mib, s.compute_percent, True))

    dynamic: dict[str, int] = {}
    if config.dynamic is not None:
        for gpu in select_gpus(config.dynamic.devices, inventory.gpus, f"{source}: sharing.mps.dynamic"):
            if gpu.uuid in plan:
                raise ConfigError(
                    f"{source}: sharing.mps.dynamic selects GPU {gpu.index} ({gpu.name}), which sharing.mps "
                    f"already splits into {', '.join(dict.fromkeys(e[0] for e in plan[gpu.uuid]))}: a GPU is whole, "
                    "in fixed slices, or shared dynamically; leave it out of one of them"
                )
            _check_gpu(gpu, source, [], config.allow_compute_oversubscription)
            dynamic[gpu.uuid] = config.dynamic.shares
    shared: list[SharedGPU] = []
    for gpu in sorted((by_uuid[u] for u in dynamic), key=lambda g: g.index):
        shared.append(SharedGPU(uuid=gpu.uuid, index=gpu.index, name=gpu.name, memory_total_mib=gpu.memory_total_mib,
                                multiprocessor_count=gpu.multiprocessor_count, slices=(),
                                dynamic_shares=dynamic[gpu.uuid]))
    for gpu in sorted((by_uuid[u] for u in plan), key=lambda g: g.index):
        entries = plan[gpu.uuid]
        _check_gpu(gpu, source, [(n, c, m, p) for n, c, m, p, _ in entries], config.allow_compute_oversubscription)
        numbers: dict[str, int] = {}
        slices: list[MpsSlice] = []
        for name, count, mib, pct, named in entries:
            for _ in range(count):
                n = numbers.get(name, 0)
                numbers[name] = n + 1
                suffix = f"{short_name(name)}-{n}" if named else str(n)
                device_id = f"{gpu.uuid}{ID_SEPARATOR}{suffix}"
                slices.append(
                    MpsSlice(
                        id=device_id,
                        resource=name,
                        gpu_uuid=gpu.uuid,
                        gpu_index=gpu.index,
                        memory_mib=mib,
                        compute_percent=pct,
                        numa_node=gpu.numa_node,
                        number=n,
                    )
                )
        shared.append(
            SharedGPU(
                uuid=gpu.uuid,
                index=gpu.index,
                name=gpu.name,
                memory_total_mib=gpu.memory_total_mib,
                multiprocessor_count=gpu.multiprocessor_count,
                slices=tuple(slices),
            )
        )
    shared.sort(key=lambda g: g.index)
    return MpsLayout(gpus=tuple(shared), fail_requests_greater_than_one=config.fail_requests_greater_than_one)


def expected_sms(multiprocessor_count: int, compute_percent: int) -> float:
    """SMs a client limited to ``compute_percent`` should see (MPS rounds to whole TPCs)."""
    return multiprocessor_count * compute_percent / 100


def layout_to_json(layout: MpsLayout) -> dict[str, object]:
    """Stable JSON for the exporter, the labeler and ``kgpu mps-daemon --print-layout``."""
    return {
        "gpus": [
            {
                "uuid": g.uuid,
                "index": g.index,
                "name": g.name,
                "memory_total_mib": g.memory_total_mib,
                "multiprocessor_count": g.multiprocessor_count,
                **({"dynamic_shares": g.dynamic_shares} if g.dynamic_shares else {}),
                "slices": [
                    {
                        "id": s.id,
                        "resource": s.resource,
                        "memory_mib": s.memory_mib,
                        "compute_percent": s.compute_percent,
                    }
                    for s in g.slices
                ],
            }
            for g in layout.gpus
        ]
    }
