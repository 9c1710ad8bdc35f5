"""What preparing a claim means, decided without touching the node: which devices, which MPS client
limits, which CDI device ids, and the CDI spec that carries all of it into the container.

Pure. For each result of this driver on this node:

* the container gets the device's nodes (and the driver's files, spec-wide) through a per-claim CDI spec
  ``k8s.<driver>/claim`` with one device ``<claim uid>-<device>`` per result (NVIDIA's naming), plus
  ``NVIDIA_VISIBLE_DEVICES`` naming the claim's GPUs or MIG devices by UUID;
* a device is prepared as an **MPS client** of its GPU's control daemon when the claim's configuration
  says ``sharing.strategy: MPS``, or when it holds only part of a GPU's memory (consumable capacity)
  without a configuration that says otherwise: the client's pinned memory limit is the memory the
  scheduler gave the claim (lowered, never raised, by ``defaultPinnedDeviceMemoryLimit``), its share of
  SMs ``defaultActiveThreadPercentage`` (unset: 100 %, the GPU's SMs shared freely). These are the
  device plugin's MPS slice variables (:mod:`kgpu.sharing.allocation`), so the driver enforces them;
* ``sharing.strategy: TimeSlicing`` prepares the plain device (and asks for its time-slice interval).

An MPS client talks to one daemon, so a claim may hold one MPS device; MPS needs Volta or newer.

Example::

    prepared = plan_claim(claim, devices_by_name, settings)
    spec = claim_spec(prepared, NodeEdits(), settings)
    prepared.devices[0].cdi_id          # 'k8s.gpu.nvidia.com/claim=6f0c…-gpu-0'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kgpu.cdi.spec import ContainerEdits, Device, Mount, Spec
from kgpu.dra.claims import AllocatedDevice, Claim, ClaimError, config_for
from kgpu.dra.devices import DraDevice
from kgpu.dra.gpuconfig import MPS, TIME_SLICING, DeviceConfig
from kgpu.sharing.allocation import client_envs, slice_mounts
from kgpu.sharing.paths import MpsPaths

MIB = 1024 * 1024
CLAIM_CLASS = "claim"
VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
_RW_BIND = ("rw", "nosuid", "nodev", "bind")
_RO_BIND = ("ro", "nosuid", "nodev", "bind")


@dataclass(frozen=True, slots=True)
class PrepareSettings:
    driver: str
    pool: str
    """This node's pool: the node name, as NVIDIA's driver names it."""
    mps_paths: MpsPaths = field(default_factory=MpsPaths)
    shm_dir: str | None = None
    """Host directory mounted at /dev/shm in MPS clients (the one the daemons use); default ``<mps root>/shm``."""

    @property
    def cdi_kind(self) -> str:
        return f"k8s.{self.driver}/{CLAIM_CLASS}"


@dataclass(frozen=True, slots=True)
class MpsClient:
    """A device prepared as a client of ``daemon_uuid``'s MPS control daemon, with these limits."""

    daemon_uuid: str
    memory_mib: int | None
    compute_percent: int | None


@dataclass(frozen=True, slots=True)
class PreparedDevice:
    request: str
    pool: str
    device: str
    cdi_name: str
    """The device's name inside the claim's CDI spec."""
    uuid: str
    share_id: str | None = None
    mps: MpsClient | None = None
    timeslice: str | None = None

    def cdi_id(self, settings: PrepareSettings) -> str:
        return f"{settings.cdi_kind}={self.cdi_name}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"request": self.request, "pool": self.pool, "device": self.device,
                               "cdiName": self.cdi_name, "uuid": self.uuid}
        if self.share_id:
            out["shareID"] = self.share_id
        if self.mps is not None:
            out["mps"] = {"daemonUUID": self.mps.daemon_uuid, "memoryMiB": self.mps.memory_mib,
                          "computePercent": self.mps.compute_percent}
        if self.timeslice:
            out["timeslice"] = self.timeslice
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PreparedDevice:
        mps = data.get("mps")
        return cls(
            request=str(data["request"]), pool=str(data["pool"]), device=str(data["device"]),
            cdi_name=str(data["cdiName"]), uuid=str(data["uuid"]), share_id=data.get("shareID"),
            mps=None if mps is None else MpsClient(str(mps["daemonUUID"]), mps.get("memoryMiB"),
                                                   mps.get("computePercent")),
            timeslice=data.get("timeslice"),
        )


@dataclass(frozen=True, slots=True)
class PreparedClaim:
    uid: str
    namespace: str
    name: str
    devices: tuple[PreparedDevice, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name} ({self.uid})"

    @property
    def mps_daemons(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d.mps.daemon_uuid for d in self.devices if d.mps is not None))

    def to_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "name": self.name, "devices": [d.to_json() for d in self.devices]}

    @classmethod
    def from_json(cls, uid: str, data: Mapping[str, Any]) -> PreparedClaim:
        return cls(uid, str(data.get("namespace", "")), str(data.get("name", "")),
                   tuple(PreparedDevice.from_json(d) for d in data.get("devices") or ()))


@dataclass(frozen=True, slots=True)
class NodeEdits:
    """The node's CDI edits for its GPUs (device nodes per UUID, the driver's files spec-wide), from
    :func:`kgpu.cdi.generate_spec`; empty on a simulated node, which has neither."""

    common: ContainerEdits = field(default_factory=ContainerEdits)
    by_uuid: Mapping[str, ContainerEdits] = field(default_factory=dict)


def _mps_client(claim: Claim, result: AllocatedDevice, device: DraDevice, config: DeviceConfig | None,
                position: int) -> MpsClient | None:
    consumed = result.consumed_bytes.get("memory")
    share_mib = None if consumed is None or consumed // MIB >= device.memory_mib else consumed // MIB
    strategy = config.sharing.strategy if config is not None and config.sharing is not None else None
    if strategy == TIME_SLICING or (strategy is None and not share_mib):
        return None
    if strategy == MPS and not device.mps_capable and device.type == "gpu":
        raise ClaimError(
            f"{claim.ref}: device {device.name} ({device.uuid}) has compute capability "
            f"{device.compute_capability}; MPS limits need 7.0 (Volta) or newer"
        )
    mps = config.sharing.mps if config is not None and config.sharing is not None else None
    memory = share_mib
    percent = None
    if mps is not None:
        configured = mps.memory_limit_mib(position, device.uuid)
        if configured is not None:
            memory = configured if memory is None else min(memory, configured)
        percent = mps.active_thread_percentage
    return MpsClient(daemon_uuid=device.uuid, memory_mib=memory, compute_percent=percent)


def plan_claim(claim: Claim, devices: Mapping[str, DraDevice], settings: PrepareSettings) -> PreparedClaim:
    """The devices of ``claim`` this node prepares, and how; ClaimError for a claim that cannot be."""
    if not claim.allocated:
        raise ClaimError(f"ResourceClaim {claim.ref} is not allocated")
    results = claim.results_for(settings.driver, settings.pool)
    prepared: list[PreparedDevice] = []
    names: dict[str, int] = {}
    for position, result in enumerate(results):
        device = devices.get(result.device)
        if device is None:
            raise ClaimError(
                f"ResourceClaim {claim.ref}: device {result.device!r} of pool {result.pool!r} is not one this "
                f"node publishes (it has {', '.join(sorted(devices)) or 'none'})"
            )
        config = config_for(claim, result, settings.driver, device.type)
        mps = _mps_client(claim, result, device, config, position)
        timeslice = None
        if config is not None and config.sharing is not None and config.sharing.strategy == TIME_SLICING:
            timeslice = config.sharing.interval
        n = names.get(result.device, 0)
        names[result.device] = n + 1
        cdi_name = f"{claim.uid}-{result.device}" + (f"-{n}" if n else "")
        prepared.append(PreparedDevice(
            request=result.request, pool=result.pool, device=result.device, cdi_name=cdi_name, uuid=device.uuid,
            share_id=result.share_id, mps=mps, timeslice=timeslice,
        ))
    daemons = {d.mps.daemon_uuid for d in prepared if d.mps is not None}
    if len(daemons) > 1 or (daemons and len({d.uuid for d in prepared}) > 1):
        raise ClaimError(
            f"ResourceClaim {claim.ref}: an MPS client talks to one GPU's daemon, so a claim shared through MPS "
            f"may hold one device; it was given {', '.join(d.device for d in prepared)}"
        )
    return PreparedClaim(claim.uid, claim.namespace, claim.name, tuple(prepared))


def _merge(*edits: ContainerEdits) -> ContainerEdits:
    return ContainerEdits(
        env=tuple(e for x in edits for e in x.env),
        device_nodes=tuple(dict.fromkeys(n for x in edits for n in x.device_nodes)),
        mounts=tuple(m for x in edits for m in x.mounts),
        hooks=tuple(h for x in edits for h in x.hooks),
    )


def mps_edits(client: MpsClient, settings: PrepareSettings) -> ContainerEdits:
    """The MPS client's environment and mounts (the device plugin's, as CDI container edits)."""
    envs = client_envs(client.daemon_uuid, settings.mps_paths, client.memory_mib, client.compute_percent)
    mounts = tuple(
        Mount(m.host_path, m.container_path, _RO_BIND if m.read_only else _RW_BIND)
        for m in slice_mounts(client.daemon_uuid, settings.mps_paths, settings.shm_dir)
    )
    return ContainerEdits(env=tuple(f"{k}={v}" for k, v in envs.items()), mounts=mounts)


def claim_spec(prepared: PreparedClaim, node: NodeEdits, settings: PrepareSettings) -> Spec:
    """The claim's CDI spec: the driver's files and ``NVIDIA_VISIBLE_DEVICES`` spec-wide, a device per result."""
    devices = []
    for d in prepared.devices:
        parts = [node.by_uuid.get(d.uuid, ContainerEdits())]
        if d.mps is not None:
            parts.append(mps_edits(d.mps, settings))
        edits = _merge(*parts)
        if not (edits.env or edits.device_nodes or edits.mounts or edits.hooks):
            # A CDI device needs some edit; on a simulated node the device has none of its own.
            edits = ContainerEdits(env=(f"KGPU_DRA_DEVICE_{d.device.upper().replace('-', '_')}={d.uuid}",))
        devices.append(Device(d.cdi_name, edits))
    visible = ",".join(dict.fromkeys(d.uuid for d in prepared.devices))
    common = node.common
    env = tuple(e for e in common.env if not e.startswith(f"{VISIBLE_DEVICES}="))
    spec_edits = ContainerEdits(
        env=(*env, f"{VISIBLE_DEVICES}={visible}"), device_nodes=common.device_nodes, mounts=common.mounts,
        hooks=common.hooks,
    )
    return Spec(kind=settings.cdi_kind, devices=tuple(devices), edits=spec_edits)
