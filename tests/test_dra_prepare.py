"""How a claim is prepared, decided before anything is touched: NVIDIA's GpuConfig, config precedence,
MPS client limits from consumable capacity, and the CDI spec that carries them."""

from __future__ import annotations

from typing import Any

import pytest
from dra_helpers import DRIVER, NODE, claim, gpu_config

from kgpu.dra.claims import ClaimError, config_for, parse_claim
from kgpu.dra.devices import ConsumableShares, DraDevice, build_devices
from kgpu.dra.gpuconfig import decode
from kgpu.dra.prepare import NodeEdits, PrepareSettings, claim_spec, plan_claim
from kgpu.errors import ConfigError
from kgpu.gpu import open_backend
from kgpu.sharing.paths import MpsPaths

SETTINGS = PrepareSettings(DRIVER, NODE, MpsPaths())


def devices(name: str = "h100x8") -> dict[str, DraDevice]:
    inv = open_backend(simulate=name).inventory()
    return {d.name: d for d in build_devices(inv, {}, ConsumableShares.parse("memory"))}


def plan(obj: dict[str, Any], node: str = "h100x8"):  # type: ignore[no-untyped-def]
    return plan_claim(parse_claim(obj), devices(node), SETTINGS)


# -- NVIDIA's GpuConfig -----------------------------------------------------------------------

def test_nvidias_mps_config_decodes_with_its_field_names() -> None:
    config = decode(gpu_config(defaultActiveThreadPercentage=40, defaultPinnedDeviceMemoryLimit="10Gi",
                               defaultPerDevicePinnedMemoryLimit={"0": "5Gi"}))
    assert config.uses_mps and config.sharing is not None and config.sharing.mps is not None
    assert config.sharing.mps.active_thread_percentage == 40
    assert config.sharing.mps.memory_limit_mib(0, "GPU-x") == 5 * 1024   # per device wins
    assert config.sharing.mps.memory_limit_mib(1, "GPU-y") == 10 * 1024  # else the default
    ts = decode({"apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig",
                 "sharing": {"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Long"}}})
    assert ts.sharing is not None and ts.sharing.interval == "Long" and not ts.uses_mps


@pytest.mark.parametrize(("parameters", "message"), [
    (gpu_config("Spatial"), "unknown GPU sharing strategy: Spatial, supported GPU sharing strategies: "
                            "TimeSlicing, MPS"),
    (gpu_config(defaultActiveThreadPercentage=101), "active thread percentage must not be greater than 100"),
    (gpu_config(defaultActiveThreadPercentage=-1), "active thread percentage must not be negative"),
    (gpu_config(defaultPinnedDeviceMemoryLimit="lots"), "not a Kubernetes quantity"),
    (gpu_config(defaultPinnedDeviceMemoryLimit="1Ki"), "value set too low"),
    (gpu_config(activeThreadPercentage=5), 'unknown field "sharing.mpsConfig.activeThreadPercentage"'),
    ({"apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig",
      "sharing": {"strategy": "TimeSlicing", "mpsConfig": {}}}, "cannot use MpsConfig with the 'TimeSlicing'"),
    ({"apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig",
      "sharing": {"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Forever"}}},
     "unknown time-slice interval: Forever"),
    ({"apiVersion": "resource.nvidia.com/v1beta1", "kind": "VfioDeviceConfig"}, "allowed GpuConfig, MigDeviceConfig"),
    ({"apiVersion": "resource.nvidia.com/v1", "kind": "GpuConfig"}, "kgpu reads resource.nvidia.com/v1beta1"),
])
def test_a_bad_config_is_refused_naming_the_field(parameters: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        decode(parameters)
    assert message in str(err.value)


def test_the_claims_config_beats_the_classes_and_a_later_one_an_earlier_one_as_in_nvidias_driver() -> None:
    obj = claim("c", [("a", "gpu-0"), ("b", "gpu-1"), ("c", "gpu-2")], configs=[
        {"source": "FromClaim", "requests": ["c"], "parameters": gpu_config(defaultActiveThreadPercentage=40)},
        {"source": "FromClaim", "parameters": gpu_config(defaultActiveThreadPercentage=20)},
        {"source": "FromClaim", "requests": ["b"], "parameters": gpu_config(defaultActiveThreadPercentage=30)},
        {"source": "FromClaim", "driver": "other.example.com", "parameters": {"anything": True}},
        {"source": "FromClass", "parameters": gpu_config(defaultActiveThreadPercentage=10)},
    ])
    c = parse_claim(obj)
    a, b, later = c.results
    # the class's config comes first whatever its place; the claim's last general one covers "c" too
    for result, pct in ((a, 20), (b, 30), (later, 20)):
        config = config_for(c, result, DRIVER, "gpu")
        assert config is not None and config.sharing is not None and config.sharing.mps is not None
        assert config.sharing.mps.active_thread_percentage == pct


def test_a_gpu_config_named_for_a_mig_request_is_refused() -> None:
    obj = claim("c", [("mig", "gpu-0-mig-3g40gb-9-4")],
                configs=[{"requests": ["mig"], "parameters": gpu_config(defaultActiveThreadPercentage=5)}])
    with pytest.raises(ClaimError, match="cannot apply GpuConfig to device 'gpu-0-mig-3g40gb-9-4' of type 'mig'"):
        plan(obj, "a100-mig")


# -- the plan --------------------------------------------------------------------------------

def test_a_memory_share_becomes_an_mps_client_limited_to_it() -> None:
    prepared = plan(claim("c", ["gpu-2"], memory="30Gi"))
    [d] = prepared.devices
    assert d.mps is not None
    assert (d.mps.memory_mib, d.mps.compute_percent) == (30 * 1024, None)
    assert prepared.mps_daemons == (devices()["gpu-2"].uuid,)


def test_the_whole_memory_or_no_request_is_the_plain_gpu_and_time_slicing_never_uses_mps() -> None:
    assert plan(claim("c", ["gpu-2"], memory="81559Mi")).devices[0].mps is None
    assert plan(claim("c", ["gpu-2"])).devices[0].mps is None
    shared = plan(claim("c", ["gpu-2"], memory="10Gi", configs=[
        {"parameters": {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig",
                        "sharing": {"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Short"}}}}]))
    assert shared.devices[0].mps is None and shared.devices[0].timeslice == "Short"


def test_the_configured_memory_limit_may_lower_the_share_but_never_raise_it() -> None:
    lower = plan(claim("c", ["gpu-0"], memory="30Gi", configs=[gpu_config(defaultPinnedDeviceMemoryLimit="8Gi")]))
    higher = plan(claim("c", ["gpu-0"], memory="30Gi", configs=[gpu_config(defaultPinnedDeviceMemoryLimit="40Gi")]))
    whole = plan(claim("c", ["gpu-0"], configs=[gpu_config(defaultPinnedDeviceMemoryLimit="40Gi",
                                                           defaultActiveThreadPercentage=50)]))
    assert [p.devices[0].mps.memory_mib for p in (lower, higher, whole)] == [8 * 1024, 30 * 1024, 40 * 1024]
    assert whole.devices[0].mps.compute_percent == 50


def test_a_claim_shared_through_mps_holds_one_device_and_mps_needs_volta() -> None:
    with pytest.raises(ClaimError, match="may hold one device; it was given gpu-0, gpu-1"):
        plan(claim("c", ["gpu-0", "gpu-1"], memory="10Gi"))
    with pytest.raises(ClaimError, match=r"compute capability 6\.0; MPS limits need 7\.0"):
        plan(claim("c", ["gpu-0"], configs=[gpu_config()]), "p100")


def test_only_this_drivers_results_in_this_nodes_pool_are_prepared_and_unknown_devices_are_refused() -> None:
    obj = claim("c", ["gpu-1"])
    obj["status"]["allocation"]["devices"]["results"] += [
        {"request": "nic", "driver": "nic.example.com", "pool": NODE, "device": "eth0"},
        {"request": "gpu", "driver": DRIVER, "pool": "other-node", "device": "gpu-1"},
    ]
    assert [d.device for d in plan(obj).devices] == ["gpu-1"]
    with pytest.raises(ClaimError, match="device 'gpu-9' of pool 'node-1' is not one this node publishes"):
        plan(claim("c", ["gpu-9"]))
    unallocated = claim("c", ["gpu-1"])
    del unallocated["status"]
    with pytest.raises(ClaimError, match="is not allocated"):
        plan(unallocated)


def test_the_claims_cdi_spec_names_its_gpus_and_carries_the_mps_client_edits() -> None:
    obj = claim("c", ["gpu-0"], memory="30Gi", configs=[gpu_config(defaultActiveThreadPercentage=25)])
    prepared = plan(obj)
    doc = claim_spec(prepared, NodeEdits(), SETTINGS).to_json()
    uid = obj["metadata"]["uid"]
    uuid = devices()["gpu-0"].uuid
    assert doc["kind"] == "k8s.gpu.nvidia.com/claim"
    assert doc["containerEdits"]["env"] == [f"NVIDIA_VISIBLE_DEVICES={uuid}"]
    [device] = doc["devices"]
    assert device["name"] == f"{uid}-gpu-0"
    assert device["containerEdits"]["env"] == [
        f"CUDA_MPS_PIPE_DIRECTORY=/run/kgpu/mps/{uuid}/pipe", f"CUDA_MPS_LOG_DIRECTORY=/run/kgpu/mps/{uuid}/log",
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=30720M", "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25",
    ]
    assert device["containerEdits"]["mounts"] == [
        {"hostPath": f"/run/kgpu/mps/{uuid}/pipe", "containerPath": f"/run/kgpu/mps/{uuid}/pipe",
         "options": ["rw", "nosuid", "nodev", "bind"]},
        {"hostPath": f"/run/kgpu/mps/{uuid}/log", "containerPath": f"/run/kgpu/mps/{uuid}/log",
         "options": ["ro", "nosuid", "nodev", "bind"]},
        {"hostPath": "/run/kgpu/mps/shm", "containerPath": "/dev/shm", "options": ["rw", "nosuid", "nodev", "bind"]},
    ]
    assert prepared.devices[0].cdi_id(SETTINGS) == f"k8s.gpu.nvidia.com/claim={uid}-gpu-0"
