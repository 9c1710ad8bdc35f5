"""The NVML backend maps NVML's answers onto the inventory, driven here by a fake NVML library.

The real library is exercised on the GPU machine (scripts/device/inventory.sh); this pins the mapping:
MIG profile names, NVLink peers (links to NVSwitches are not GPU peers), optional sensors and events.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from kgpu.gpu import BackendError, HealthEventKind
from kgpu.gpu import nvml as nvml_backend
from kgpu.gpu.health import follow


@dataclass
class FakeDevice:
    uuid: str
    bus: str
    name: str = "NVIDIA A100-SXM4-80GB"
    mig: list[SimpleNamespace] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    """Remote bus id per active NVLink."""


def _raise(code: int) -> None:
    raise pynvml.NVMLError(code)


class FakeNvml:
    def __init__(self, devices: list[FakeDevice]) -> None:
        self.devices = devices
        self.events: list[SimpleNamespace] = []

    def install(self, mp: pytest.MonkeyPatch) -> None:
        mp.setattr(nvml_backend, "_load_library", lambda root: "fake-libnvidia-ml.so.1")
        mp.setattr(nvml_backend, "_init_count", 0)
        dev = self.devices
        mib = 1024 * 1024

        def mig_of(h: Any) -> SimpleNamespace | None:
            return h if isinstance(h, SimpleNamespace) else None

        patches: dict[str, Any] = {
            "nvmlInit": lambda: None,
            "nvmlShutdown": lambda: None,
            "nvmlSystemGetDriverVersion": lambda: "580.95.05",
            "nvmlSystemGetCudaDriverVersion": lambda: 13000,
            "nvmlDeviceGetCount": lambda: len(dev),
            "nvmlDeviceGetHandleByIndex": lambda i: dev[i],
            "nvmlDeviceGetUUID": lambda h: h.uuid.encode(),
            "nvmlDeviceGetName": lambda h: h.name,
            "nvmlDeviceGetBrand": lambda h: 14,
            "nvmlDeviceGetMinorNumber": lambda h: dev.index(h),
            "nvmlDeviceGetPciInfo": lambda h: SimpleNamespace(busId=h.bus.encode(), pciDeviceId=0x20B210DE),
            "nvmlDeviceGetCudaComputeCapability": lambda h: (8, 0),
            "nvmlDeviceGetMemoryInfo": lambda h, version=None: SimpleNamespace(
                total=(h.mem if mig_of(h) else 81920) * mib, used=mib, free=2 * mib, reserved=3 * mib
            ),
            "nvmlDeviceGetAttributes": lambda h: h.attrs
            if mig_of(h)
            else (SimpleNamespace(multiprocessorCount=108) if h.mig else _raise(pynvml.NVML_ERROR_NOT_SUPPORTED)),
            "nvmlDeviceGetNumGpuCores": lambda h: 6912,
            "nvmlDeviceGetPersistenceMode": lambda h: 1,
            "nvmlDeviceGetComputeMode": lambda h: 3,
            "nvmlDeviceGetEccMode": lambda h: _raise(pynvml.NVML_ERROR_NOT_SUPPORTED),
            "nvmlDeviceGetMigMode": lambda h: (1, 1) if h.mig else (0, 0),
            "nvmlDeviceGetMaxMigDeviceCount": lambda h: 7,
            "nvmlDeviceGetMigDeviceHandleByIndex": lambda h, i: h.mig[i]
            if i < len(h.mig)
            else _raise(pynvml.NVML_ERROR_NOT_FOUND),
            "nvmlDeviceGetGpuInstanceId": lambda h: h.gi,
            # GPU instance 9 answers NO_PERMISSION (a non-root caller): its profile ID and placement stay unknown.
            "nvmlDeviceGetGpuInstanceById": lambda h, gi: next(m for m in h.mig if m.gi == gi)
            if gi != 9
            else _raise(pynvml.NVML_ERROR_NO_PERMISSION),
            "nvmlGpuInstanceGetInfo": lambda m: SimpleNamespace(
                profileId={2: 9, 3: 14}[m.gi],
                placement=SimpleNamespace(start={2: 4, 3: 0}[m.gi], size=m.attrs.gpuInstanceSliceCount),
            ),
            "nvmlDeviceGetComputeInstanceId": lambda h: 0,
            "nvmlDeviceGetNvLinkState": lambda h, link: 1
            if link < len(h.links)
            else _raise(pynvml.NVML_ERROR_INVALID_ARGUMENT),
            "nvmlDeviceGetNvLinkRemotePciInfo": lambda h, link: SimpleNamespace(busId=h.links[link]),
            "nvmlDeviceGetTemperature": lambda h, sensor: 41,
            "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=87, memory=12),
            "nvmlDeviceGetPowerUsage": lambda h: 312_500,
            "nvmlDeviceGetEncoderUtilization": lambda h: _raise(pynvml.NVML_ERROR_NOT_SUPPORTED),
            "nvmlEventSetCreate": lambda: object(),
            "nvmlEventSetFree": lambda s: None,
            "nvmlDeviceRegisterEvents": lambda h, mask, s: None,
            "nvmlEventSetWait": self._wait,
        }
        for name, fn in patches.items():
            mp.setattr(pynvml, name, fn)

    def _wait(self, event_set: object, timeout_ms: int) -> SimpleNamespace:
        if self.events:
            return self.events.pop(0)
        _raise(pynvml.NVML_ERROR_TIMEOUT)
        raise AssertionError("unreachable")


def _mig(uuid: str, gi: int, slices: int, mem: int, sms: int, ci_slices: int | None = None) -> SimpleNamespace:
    attrs = SimpleNamespace(
        gpuInstanceSliceCount=slices, computeInstanceSliceCount=ci_slices or slices, memorySizeMB=mem,
        multiprocessorCount=sms, sharedCopyEngineCount=slices, sharedDecoderCount=slices // 2,
        sharedEncoderCount=0, sharedJpegCount=int(slices == 7), sharedOfaCount=int(slices == 7),
    )
    return SimpleNamespace(uuid=uuid, gi=gi, mem=mem, attrs=attrs)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    nvswitch = "00000000:C1:00.0"
    gpu0 = FakeDevice(
        "GPU-00000000-0000-0000-0000-000000000000", "00000000:07:00.0",
        mig=[
            _mig("MIG-00000000-0000-0000-0000-000000000001", 2, 3, 40192, 42),
            _mig("MIG-00000000-0000-0000-0000-000000000002", 9, 1, 9856, 14),
            _mig("MIG-00000000-0000-0000-0000-000000000003", 3, 2, 19968, 14, ci_slices=1),
        ],
        links=["00000000:0F:00.0"] * 12 + [nvswitch] * 6,
    )
    gpu1 = FakeDevice("GPU-11111111-1111-1111-1111-111111111111", "00000000:0F:00.0", links=["00000000:07:00.0"] * 12)
    f = FakeNvml([gpu0, gpu1])
    f.install(monkeypatch)
    return f


def test_inventory_maps_nvml_answers(fake: FakeNvml) -> None:
    inv = nvml_backend.NvmlBackend.open().inventory()
    assert (inv.backend, inv.driver_version, str(inv.cuda_driver_version)) == ("nvml", "580.95.05", "13.0")
    g0, g1 = inv.gpus
    assert g0.uuid == "GPU-00000000-0000-0000-0000-000000000000"
    assert (g0.family, g0.memory_total_mib, g0.multiprocessor_count) == ("ampere", 81920, 108)
    # GPU 1 is not in MIG mode: NVML's attributes answer NOT_SUPPORTED, so SMs come from cores (6912 / 64).
    assert g1.multiprocessor_count == 108
    assert g0.ecc_enabled is None
    assert str(g0.compute_mode) == "Exclusive_Process"
    assert g0.mig_enabled and not g1.mig_enabled and g1.mig_capable
    assert [(m.profile, m.gpu_instance_id, m.memory_total_mib) for m in g0.mig_devices] == [
        ("3g.40gb", 2, 40192),
        ("1g.10gb", 9, 9856),
        ("1c.2g.20gb", 3, 19968),
    ]
    assert [(m.profile_id, m.placement_start, m.placement_size) for m in g0.mig_devices] == [
        (9, 4, 3), (None, None, None), (14, 0, 2),
    ]
    # 12 links to GPU 1; the 6 links to the NVSwitch are not GPU peers.
    assert [(p.peer_index, p.links) for p in g0.nvlink_peers] == [(1, 12)]
    assert [(p.peer_uuid, p.links) for p in g1.nvlink_peers] == [(g0.uuid, 12)]


def test_readings_leave_unsupported_sensors_empty(fake: FakeNvml) -> None:
    backend = nvml_backend.NvmlBackend.open()
    r = backend.readings("GPU-11111111-1111-1111-1111-111111111111")
    assert (r.temperature_c, r.gpu_utilization_percent, r.memory_copy_utilization_percent) == (41, 87, 12)
    assert r.power_w == pytest.approx(312.5)
    assert (r.memory_used_mib, r.memory_free_mib, r.memory_reserved_mib) == (1, 2, 3)
    assert r.encoder_utilization_percent is None


def test_xid_event_becomes_a_health_event(fake: FakeNvml) -> None:
    backend = nvml_backend.NvmlBackend.open()
    gpu1 = fake.devices[1]
    fake.events.append(SimpleNamespace(device=gpu1, eventType=pynvml.nvmlEventTypeXidCriticalError, eventData=79))
    stop = threading.Event()
    event = next(iter(follow(backend.health_feed(), stop)))
    stop.set()
    assert (event.uuid, event.kind, event.xid) == (gpu1.uuid, HealthEventKind.XID, 79)


def test_init_failure_names_the_library_and_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml_backend, "_load_library", lambda root: "/opt/drv/lib64/libnvidia-ml.so.1")
    monkeypatch.setattr(nvml_backend, "_init_count", 0)
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: _raise(pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    with pytest.raises(BackendError) as err:
        nvml_backend.NvmlBackend.open()
    assert "/opt/drv/lib64/libnvidia-ml.so.1" in str(err.value)
    assert "--simulate h100x8" in str(err.value)
