"""The NVML backend: the only module in kgpu that imports ``pynvml`` (nvidia-ml-py)."""

from __future__ import annotations

import ctypes
import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pynvml

from kgpu.errors import BackendError
from kgpu.gpu.health import HealthEvent, HealthEventKind
from kgpu.gpu.model import (
    GPU,
    ComputeCapability,
    ComputeMode,
    CudaVersion,
    GPUReadings,
    Inventory,
    MigDevice,
    MigEngines,
    NvLinkPeer,
    architecture_family,
    sysfs_bus_id,
)
from kgpu.host.driverroot import NVML_SONAME, WELL_KNOWN_DRIVER_ROOTS, find_library

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_BRANDS = {
    0: "Unknown", 1: "Quadro", 2: "Tesla", 3: "NVS", 4: "GRID", 5: "GeForce", 6: "Titan",
    7: "NVIDIA Virtual Applications", 8: "NVIDIA Virtual PC", 9: "NVIDIA Virtual Compute Server",
    10: "NVIDIA RTX Virtual Workstation", 11: "NVIDIA Cloud Gaming", 12: "Quadro RTX", 13: "NVIDIA RTX",
    14: "NVIDIA", 15: "GeForce RTX", 16: "Titan RTX",
}
_COMPUTE_MODES = {
    0: ComputeMode.DEFAULT, 1: ComputeMode.EXCLUSIVE_THREAD, 2: ComputeMode.PROHIBITED,
    3: ComputeMode.EXCLUSIVE_PROCESS,
}
# NVML's ceiling on NVLink links per GPU has grown (6 Volta, 12 Ampere, 18 Hopper, more since).
_MAX_NVLINKS = getattr(pynvml, "NVML_NVLINK_MAX_LINKS", 18)
_HEALTH_EVENTS = pynvml.nvmlEventTypeXidCriticalError | pynvml.nvmlEventTypeDoubleBitEccError
_LOST_PROBE_SECONDS = 5.0

_init_lock = threading.Lock()
_init_count = 0


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _optional(call: Callable[[], _T]) -> _T | None:
    """Sensors a GPU does not have answer NOT_SUPPORTED; that is 'no value', not an error."""
    try:
        return call()
    except pynvml.NVMLError:
        return None


def _gpu_instance_info(parent: Any, gpu_instance_id: int) -> Any:
    """NVML's GpuInstanceInfo (profile ID, placement) of one of ``parent``'s GPU instances; None when
    NVML will not say (a caller without the MIG management capability gets NO_PERMISSION)."""
    return _optional(
        lambda: pynvml.nvmlGpuInstanceGetInfo(pynvml.nvmlDeviceGetGpuInstanceById(parent, gpu_instance_id))
    )


def _load_library(driver_root: Path | None) -> str:
    """Load libnvidia-ml.so.1 and return where it came from; BackendError says where we looked."""
    looked: list[str] = []
    candidates: list[Path] = []
    if driver_root is not None:
        found = find_library(driver_root, NVML_SONAME)
        if found is None:
            raise BackendError(
                f"{NVML_SONAME} not found under driver root {driver_root} (looked in its lib64, lib, "
                f"usr/lib64, usr/lib/<arch>); point --driver-root at the directory holding the driver's "
                f"lib64/ or usr/lib/, or run on a simulated node with --simulate h100x8"
            )
        candidates.append(found)
    if driver_root is None:
        try:
            pynvml.nvmlLib = ctypes.CDLL(NVML_SONAME)
            return f"{NVML_SONAME} (dynamic loader path)"
        except OSError:
            looked.append("the dynamic loader path (LD_LIBRARY_PATH, /etc/ld.so.cache)")
        for root in WELL_KNOWN_DRIVER_ROOTS:
            lib = find_library(root, NVML_SONAME)
            if lib is not None:
                candidates.append(lib)
            looked.append(str(root))
    for lib in candidates:
        try:
            pynvml.nvmlLib = ctypes.CDLL(str(lib))
            return str(lib)
        except OSError as exc:
            looked.append(f"{lib} ({exc})")
    raise BackendError(
        f"NVML library {NVML_SONAME} not found; looked in: {'; '.join(looked)}. Is the NVIDIA driver installed? "
        f"If it lives elsewhere pass --driver-root DIR (e.g. /usr/local/nvidia, /run/nvidia/driver); "
        f"to try kgpu without a GPU use --simulate h100x8 (built-in nodes: p100, t4, a30, a100-mig, h100x8, mixed)"
    )


def mig_memory_gb(memory_mib: int, parent_total_bytes: int | None) -> int:
    """The ``NNgb`` of a profile name, as go-nvlib (NVIDIA's device plugin, GFD) computes it: the MIG
    device's share of the parent's memory rounded up to eighths, times the parent's whole GiB.
    (``ceil(MiB / 1024)`` gets full-size profiles wrong: 80896 MiB on an A100 80GB is ``7g.80gb``.)"""
    if not parent_total_bytes:
        return math.ceil(memory_mib / 1024)
    gib = 1024**3
    share = math.ceil(memory_mib * 1024 * 1024 / parent_total_bytes * 8) / 8
    return round(share * ((parent_total_bytes + gib - 1) // gib))


def mig_profile_name(attrs: Any, parent_total_bytes: int | None = None) -> str:
    """Profile name as NVIDIA's device plugin derives it from a MIG device's attributes."""
    gb = mig_memory_gb(attrs.memorySizeMB, parent_total_bytes)
    g, c = attrs.gpuInstanceSliceCount, attrs.computeInstanceSliceCount
    return f"{g}g.{gb}gb" if c == g else f"{c}c.{g}g.{gb}gb"


def read_numa_node(bus_id: str, sys_root: Path = Path("/")) -> int | None:
    path = sys_root / "sys/bus/pci/devices" / sysfs_bus_id(bus_id) / "numa_node"
    try:
        node = int(path.read_text(errors="replace").strip())
    except (OSError, ValueError):
        return None
    return node if node >= 0 else None


class NvmlBackend:
    name = "nvml"

    def __init__(self, library: str) -> None:
        self.library = library
        self._inventory: Inventory | None = None
        self._handles: dict[str, Any] = {}

    @classmethod
    def open(cls, driver_root: Path | None = None) -> NvmlBackend:
        global _init_count
        with _init_lock:
            library = "already loaded"
            if _init_count == 0:
                library = _load_library(driver_root)
                try:
                    pynvml.nvmlInit()
                except pynvml.NVMLError as exc:
                    raise BackendError(
                        f"NVML ({library}) failed to initialise: {exc}. Check that the nvidia kernel module is "
                        f"loaded (lsmod | grep nvidia) and that its version matches the user-space driver; "
                        f"'kgpu doctor' lists the usual causes. Without a GPU, use --simulate h100x8"
                    ) from exc
            _init_count += 1
        log.debug("NVML initialised from %s", library)
        return cls(library)

    def close(self) -> None:
        global _init_count
        with _init_lock:
            if _init_count > 0:
                _init_count -= 1
                if _init_count == 0:
                    _optional(pynvml.nvmlShutdown)

    # -- inventory -------------------------------------------------------------------------------

    def inventory(self) -> Inventory:
        if self._inventory is None:
            try:
                self._inventory = self._read_inventory()
            except pynvml.NVMLError as exc:
                raise BackendError(f"NVML failed while reading the GPU inventory: {exc}") from exc
        return self._inventory

    def _read_inventory(self) -> Inventory:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        cuda = CudaVersion.from_int(pynvml.nvmlSystemGetCudaDriverVersion())
        count = pynvml.nvmlDeviceGetCount()
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        bus_to_index: dict[str, int] = {}
        uuids: list[str] = []
        for i, h in enumerate(handles):
            uuid = _text(pynvml.nvmlDeviceGetUUID(h))
            uuids.append(uuid)
            self._handles[uuid] = h
            bus_to_index[sysfs_bus_id(_text(pynvml.nvmlDeviceGetPciInfo(h).busId))] = i
        gpus = tuple(self._read_gpu(i, h, uuids, bus_to_index) for i, h in enumerate(handles))
        return Inventory(backend="nvml", driver_version=driver, cuda_driver_version=cuda, gpus=gpus)

    def _read_gpu(self, index: int, h: Any, uuids: list[str], bus_to_index: dict[str, int]) -> GPU:
        uuid = uuids[index]
        pci = pynvml.nvmlDeviceGetPciInfo(h)
        bus_id = _text(pci.busId)
        cc = ComputeCapability(*pynvml.nvmlDeviceGetCudaComputeCapability(h))
        mig = _optional(lambda: pynvml.nvmlDeviceGetMigMode(h))
        mig_enabled = bool(mig and mig[0] == pynvml.NVML_DEVICE_MIG_ENABLE)
        ecc = _optional(lambda: pynvml.nvmlDeviceGetEccMode(h))
        attrs = _optional(lambda: pynvml.nvmlDeviceGetAttributes(h))
        return GPU(
            index=index,
            minor=pynvml.nvmlDeviceGetMinorNumber(h),
            uuid=uuid,
            name=_text(pynvml.nvmlDeviceGetName(h)),
            brand=_BRANDS.get(_optional(lambda: pynvml.nvmlDeviceGetBrand(h)) or 0, "Unknown"),
            family=architecture_family(cc),
            compute_capability=cc,
            memory_total_mib=pynvml.nvmlDeviceGetMemoryInfo(h).total // (1024 * 1024),
            pci_bus_id=bus_id,
            pci_device_id=pci.pciDeviceId,
            numa_node=read_numa_node(bus_id),
            multiprocessor_count=_multiprocessors(h, attrs, cc),
            persistence_mode=bool(_optional(lambda: pynvml.nvmlDeviceGetPersistenceMode(h))),
            compute_mode=_COMPUTE_MODES.get(
                _optional(lambda: pynvml.nvmlDeviceGetComputeMode(h)) or 0, ComputeMode.DEFAULT
            ),
            ecc_enabled=None if ecc is None else bool(ecc[0]),
            mig_capable=mig is not None,
            mig_enabled=mig_enabled,
            mig_devices=self._read_mig_devices(index, uuid, h) if mig_enabled else (),
            nvlink_peers=self._read_nvlinks(h, uuids, bus_to_index),
        )

    def _read_mig_devices(self, parent_index: int, parent_uuid: str, h: Any) -> tuple[MigDevice, ...]:
        out = []
        parent_total = pynvml.nvmlDeviceGetMemoryInfo(h).total
        for slot in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(h)):
            try:
                mh = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(h, slot)
            except pynvml.NVMLError:
                continue  # empty slot
            attrs = pynvml.nvmlDeviceGetAttributes(mh)
            uuid = _text(pynvml.nvmlDeviceGetUUID(mh))
            self._handles[uuid] = mh
            gi_id = pynvml.nvmlDeviceGetGpuInstanceId(mh)
            # The GPU instance's profile ID and placement name the device the way NVIDIA's DRA driver does.
            gi_info = _gpu_instance_info(h, gi_id)
            out.append(
                MigDevice(
                    uuid=uuid,
                    index=slot,
                    profile=mig_profile_name(attrs, parent_total),
                    gpu_instance_id=gi_id,
                    compute_instance_id=pynvml.nvmlDeviceGetComputeInstanceId(mh),
                    memory_total_mib=pynvml.nvmlDeviceGetMemoryInfo(mh).total // (1024 * 1024),
                    multiprocessor_count=attrs.multiprocessorCount,
                    parent_uuid=parent_uuid,
                    parent_index=parent_index,
                    profile_id=None if gi_info is None else gi_info.profileId,
                    placement_start=None if gi_info is None else gi_info.placement.start,
                    placement_size=None if gi_info is None else gi_info.placement.size,
                    gpu_instance_slices=attrs.gpuInstanceSliceCount,
                    compute_instance_slices=attrs.computeInstanceSliceCount,
                    engines=MigEngines(
                        copy=attrs.sharedCopyEngineCount,
                        decoder=attrs.sharedDecoderCount,
                        encoder=attrs.sharedEncoderCount,
                        jpeg=attrs.sharedJpegCount,
                        ofa=attrs.sharedOfaCount,
                    ),
                )
            )
        return tuple(out)

    def _read_nvlinks(self, h: Any, uuids: list[str], bus_to_index: dict[str, int]) -> tuple[NvLinkPeer, ...]:
        links: dict[int, int] = {}
        for link in range(_MAX_NVLINKS):
            try:
                if pynvml.nvmlDeviceGetNvLinkState(h, link) != pynvml.NVML_FEATURE_ENABLED:
                    continue
                remote = sysfs_bus_id(_text(pynvml.nvmlDeviceGetNvLinkRemotePciInfo(h, link).busId))
            except pynvml.NVMLError as exc:
                if exc.value in (pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_INVALID_ARGUMENT):
                    break  # no NVLink on this GPU, or past its last link
                continue
            # Links that end at an NVSwitch rather than a GPU are not counted as GPU peers.
            if remote in bus_to_index:
                links[bus_to_index[remote]] = links.get(bus_to_index[remote], 0) + 1
        return tuple(NvLinkPeer(peer_index=p, peer_uuid=uuids[p], links=n) for p, n in sorted(links.items()))

    # -- readings --------------------------------------------------------------------------------

    def _handle(self, uuid: str) -> Any:
        if uuid not in self._handles:
            self.inventory()
        if uuid not in self._handles:
            try:
                self._handles[uuid] = pynvml.nvmlDeviceGetHandleByUUID(uuid)
            except pynvml.NVMLError as exc:
                raise BackendError(f"no GPU with UUID {uuid}: {exc}") from exc
        return self._handles[uuid]

    def readings(self, uuid: str) -> GPUReadings:
        h = self._handle(uuid)
        try:
            # One mandatory query first: a lost or hung GPU fails here and the caller drops its series.
            pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
        except pynvml.NVMLError as exc:
            raise BackendError(f"GPU {uuid}: reading sensors failed: {exc}") from exc
        util = _optional(lambda: pynvml.nvmlDeviceGetUtilizationRates(h))
        mem = _optional(lambda: pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2))
        if mem is None:
            mem = _optional(lambda: pynvml.nvmlDeviceGetMemoryInfo(h))
        remap = _optional(lambda: pynvml.nvmlDeviceGetRemappedRows(h))
        power_mw = _optional(lambda: pynvml.nvmlDeviceGetPowerUsage(h))
        mem_temp = _optional(lambda: pynvml.nvmlDeviceGetFieldValues(h, [pynvml.NVML_FI_DEV_MEMORY_TEMP])[0])
        mib = 1024 * 1024
        return GPUReadings(
            uuid=uuid,
            gpu_utilization_percent=util.gpu if util is not None else None,
            memory_copy_utilization_percent=util.memory if util is not None else None,
            encoder_utilization_percent=_first(_optional(lambda: pynvml.nvmlDeviceGetEncoderUtilization(h))),
            decoder_utilization_percent=_first(_optional(lambda: pynvml.nvmlDeviceGetDecoderUtilization(h))),
            memory_used_mib=mem.used // mib if mem is not None else None,
            memory_free_mib=mem.free // mib if mem is not None else None,
            memory_reserved_mib=getattr(mem, "reserved", 0) // mib if mem is not None else None,
            temperature_c=_optional(lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),
            memory_temperature_c=(
                int(mem_temp.value.uiVal) if mem_temp is not None and mem_temp.nvmlReturn == 0 else None
            ),
            power_w=power_mw / 1000.0 if power_mw is not None else None,
            total_energy_mj=_optional(lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h)),
            sm_clock_mhz=_optional(lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM)),
            memory_clock_mhz=_optional(lambda: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM)),
            pcie_replay_counter=_optional(lambda: pynvml.nvmlDeviceGetPcieReplayCounter(h)),
            correctable_remapped_rows=remap[0] if remap is not None else None,
            uncorrectable_remapped_rows=remap[1] if remap is not None else None,
            row_remap_failure=bool(remap[3]) if remap is not None else None,
            nvlink_data_kib=_nvlink_data_kib(h),
            vgpu_license_status=_vgpu_license_status(h),
        )

    def probe(self, uuid: str) -> bool:
        try:
            h = self._handle(uuid)
            pynvml.nvmlDeviceGetUUID(h)
            pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)
        except (pynvml.NVMLError, BackendError):
            return False
        return True

    # -- health ----------------------------------------------------------------------------------

    def health_feed(self) -> NvmlHealthFeed:
        return NvmlHealthFeed(self)



ALL_LINKS = 0xFFFFFFFF
"""A field value's scope that means every NVLink of the GPU (as DCGM passes UINT_MAX)."""


def _nvlink_data_kib(handle: Any) -> int | None:
    """NVLink data received plus transmitted over every link, in KiB, as DCGM reads it for
    DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL; None where NVML has no NVLink counters for this GPU."""
    ids = [(pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, ALL_LINKS),
           (pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, ALL_LINKS)]
    values = _optional(lambda: pynvml.nvmlDeviceGetFieldValues(handle, ids))
    if values is None or any(v.nvmlReturn != pynvml.NVML_SUCCESS for v in values):
        return None
    return int(values[0].value.ullVal) + int(values[1].value.ullVal)


def _vgpu_license_status(handle: Any) -> int | None:
    """DCGM's DCGM_FI_DEV_VGPU_LICENSE_STATUS: 0 unless the vGPU feature is licensable and licensed."""
    features = _optional(lambda: pynvml.nvmlDeviceGetGridLicensableFeatures(handle))
    if features is None:
        return None
    if not features.isGridLicenseSupported:
        return 0
    for i in range(features.licensableFeaturesCount):
        feature = features.gridLicensableFeatures[i]
        if feature.featureCode == pynvml.NVML_GRID_LICENSE_FEATURE_CODE_VGPU:
            return 1 if feature.featureState > 0 else 0
    return None


class NvmlHealthFeed:
    """XID and double-bit ECC events from NVML's event set, and GPUs that stop (or start again)
    answering, probed every few seconds. The event set lives as long as the feed, so a poll that
    failed is simply called again."""

    def __init__(self, backend: NvmlBackend) -> None:
        self._backend = backend
        self._gpus = [g.uuid for g in backend.inventory().gpus]
        self._lost: set[str] = set()
        self._next_probe = 0.0
        self._event_set = pynvml.nvmlEventSetCreate()
        for uuid in self._gpus:
            try:
                pynvml.nvmlDeviceRegisterEvents(backend._handle(uuid), _HEALTH_EVENTS, self._event_set)
            except pynvml.NVMLError as exc:
                log.warning("GPU %s does not report XID/ECC events (%s); only loss is detected", uuid, exc)

    def poll(self, timeout: float) -> list[HealthEvent]:
        events = []
        now = time.monotonic()
        if now >= self._next_probe:
            self._next_probe = now + _LOST_PROBE_SECONDS
            for uuid in self._gpus:
                ok = self._backend.probe(uuid)
                if not ok and uuid not in self._lost:
                    self._lost.add(uuid)
                    events.append(HealthEvent(uuid, HealthEventKind.LOST, detail="NVML no longer answers"))
                elif ok and uuid in self._lost:
                    self._lost.discard(uuid)
                    events.append(HealthEvent(uuid, HealthEventKind.RECOVERED, detail="NVML answers again"))
            if events:
                return events
        try:
            data = pynvml.nvmlEventSetWait(self._event_set, max(int(timeout * 1000), 1))
        except pynvml.NVMLError as exc:
            if exc.value == pynvml.NVML_ERROR_TIMEOUT:
                return []
            if exc.value == pynvml.NVML_ERROR_GPU_IS_LOST:
                self._next_probe = 0.0  # find out which GPU on the next poll
                return []
            raise BackendError(f"waiting for NVML events failed: {exc}") from None
        event = _event_from(data)
        return [event] if event is not None else []

    def close(self) -> None:
        _optional(lambda: pynvml.nvmlEventSetFree(self._event_set))


def _event_from(data: Any) -> HealthEvent | None:
    uuid = _optional(lambda: _text(pynvml.nvmlDeviceGetUUID(data.device)))
    if uuid is None:
        return None
    if data.eventType == pynvml.nvmlEventTypeXidCriticalError:
        return HealthEvent(uuid, HealthEventKind.XID, xid=int(data.eventData))
    if data.eventType == pynvml.nvmlEventTypeDoubleBitEccError:
        return HealthEvent(uuid, HealthEventKind.ECC, detail="double-bit ECC error")
    return None


def cuda_cores_per_sm(cc: ComputeCapability) -> int:
    """CUDA cores per SM by architecture (CUDA C Programming Guide, "Arithmetic Instructions")."""
    if cc.major == 6:
        return 64 if cc.minor == 0 else 128
    if cc.major in (7,) or cc == ComputeCapability(8, 0):
        return 64
    return 128


def _multiprocessors(h: Any, attrs: Any, cc: ComputeCapability) -> int:
    """SM count. NVML's device attributes answer only for MIG-capable parts, and on a whole (non-MIG)
    GPU some drivers report NOT_SUPPORTED, so fall back to cores / cores-per-SM (H100 SXM: 16896/128)."""
    if attrs is not None and attrs.multiprocessorCount:
        return int(attrs.multiprocessorCount)
    cores = _optional(lambda: pynvml.nvmlDeviceGetNumGpuCores(h))
    return cores // cuda_cores_per_sm(cc) if cores else 0


def _first(pair: Any) -> int | None:
    return int(pair[0]) if pair is not None else None


# -- MIG layout changes (kgpu mig-manager) -----------------------------------------------------------
# Never run by kgpu's tests or device scripts: the shared H200's MIG mode must not change. The calls are
# NVML's documented sequence, as mig-parted makes them: set the MIG mode, destroy every compute and GPU
# instance, then create each GPU instance at its placement with its default (all-slices, shared-engine)
# compute instance.

_CI_PROFILE_BY_SLICES = {1: "NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE", 2: "NVML_COMPUTE_INSTANCE_PROFILE_2_SLICE",
                         3: "NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE", 4: "NVML_COMPUTE_INSTANCE_PROFILE_4_SLICE",
                         7: "NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE"}
_MAX_INSTANCES = 16


def _destroy_instances(h: Any) -> None:
    for profile in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
        try:
            info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(h, profile)
        except pynvml.NVMLError:
            continue  # a profile this GPU does not have
        instances = (pynvml.c_nvmlGpuInstance_t * _MAX_INSTANCES)()
        count = ctypes.c_uint(0)
        pynvml.nvmlDeviceGetGpuInstances(h, info.id, instances, ctypes.byref(count))
        for gi in instances[: count.value]:
            for ci_profile in range(pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
                try:
                    ci_info = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                        gi, ci_profile, pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
                except pynvml.NVMLError:
                    continue
                cis = (pynvml.c_nvmlComputeInstance_t * _MAX_INSTANCES)()
                ci_count = ctypes.c_uint(0)
                pynvml.nvmlGpuInstanceGetComputeInstances(gi, ci_info.id, cis, ctypes.byref(ci_count))
                for ci in cis[: ci_count.value]:
                    pynvml.nvmlComputeInstanceDestroy(ci)
            pynvml.nvmlGpuInstanceDestroy(gi)


def apply_mig_layout(backend: NvmlBackend, uuid: str, enabled: bool,
                     instances: list[tuple[int, int, int]]) -> None:
    """Make one GPU MIG-enabled with these GPU instances ((NVML profile constant, start, compute slices)),
    or MIG-disabled. Raises BackendError naming the call that failed."""
    h = backend._handle(uuid)
    try:
        current = pynvml.nvmlDeviceGetMigMode(h)[0]
        wanted = pynvml.NVML_DEVICE_MIG_ENABLE if enabled else pynvml.NVML_DEVICE_MIG_DISABLE
        if current == pynvml.NVML_DEVICE_MIG_ENABLE:
            _destroy_instances(h)
        if current != wanted:
            pynvml.nvmlDeviceSetMigMode(h, wanted)
            if pynvml.nvmlDeviceGetMigMode(h)[0] != wanted:
                raise BackendError(f"GPU {uuid}: the MIG mode change is pending a GPU reset (stop every process on "
                                   "the GPU, then nvidia-smi -r, or reboot the node)")
        for profile, start, slices in instances:
            info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(h, profile)
            placement = pynvml.c_nvmlGpuInstancePlacement_t()
            placement.start = start
            placement.size = _placement_size(h, info.id, start)
            gi = pynvml.nvmlDeviceCreateGpuInstanceWithPlacement(h, info.id, ctypes.byref(placement))
            ci_profile = getattr(pynvml, _CI_PROFILE_BY_SLICES[slices])
            ci_info = pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                gi, ci_profile, pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
            pynvml.nvmlGpuInstanceCreateComputeInstance(gi, ci_info.id)
    except pynvml.NVMLError as exc:
        raise BackendError(f"GPU {uuid}: changing the MIG layout failed: {exc}") from exc
    backend._inventory = None  # read the new layout on the next inventory()


def _placement_size(h: Any, profile_id: int, start: int) -> int:
    placements = (pynvml.c_nvmlGpuInstancePlacement_t * 8)()
    count = ctypes.c_uint(0)
    pynvml.nvmlDeviceGetGpuInstancePossiblePlacements(h, profile_id, placements, ctypes.byref(count))
    for p in placements[: count.value]:
        if p.start == start:
            return int(p.size)
    raise BackendError(f"the driver allows no placement starting at memory slice {start} for profile {profile_id}")
