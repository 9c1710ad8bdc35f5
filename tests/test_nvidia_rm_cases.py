"""NVIDIA's resource-manager test cases where the configuration decides (internal/rm/*_test.go, v0.20):
request validation under sharing, the shared-devices allocation policy, and the health-check
environment variables, replayed against kgpu's device plugin, case for case.

NVIDIA's tests build device maps by hand (``gpu0::1``); here the node is a simulated one (h100x8:
eight whole GPUs) and the replicas come from a config file, so ``gpuN`` is the Nth GPU's UUID.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pytest
from dp_helpers import build_logic, node, plugin_config

from kgpu.container import AllocationError
from kgpu.deviceplugin.health import APPLICATION_XIDS, XidPolicy
from kgpu.deviceplugin.resources import NodeResources
from kgpu.errors import ConfigError

H100 = node("h100x8")
UUIDS = [g.uuid for g in H100.gpus]


def shared(tmp_path: Path, section: str, gpus: int, replicas: int, extra: str = "", **flags: object) -> NodeResources:
    """The first ``gpus`` GPUs shared ``replicas`` times as nvidia.com/gpu.shared (only replicas in it)."""
    text = (f"sharing: {{{section}: {{{extra}resources: [{{name: nvidia.com/gpu, rename: nvidia.com/gpu.shared, "
            f"replicas: {replicas}, devices: {gpus}}}]}}}}")
    return build_logic(H100, plugin_config(tmp_path, text, **flags))


def replica(gpu: int, n: int) -> str:
    return f"{UUIDS[gpu]}::{n}"


def per_gpu(ids: list[str]) -> Counter[int]:
    return Counter(UUIDS.index(i.partition("::")[0]) for i in ids)


# --- rm_test.go: TestValidateRequest --------------------------------------------------------------
# NVIDIA's struct-built MPS config leaves failRequestsGreaterThanOne nil (false); read from a file it
# defaults to true (config_test.go), so the MPS cases without it say false in the file.

@pytest.mark.parametrize(
    ("section", "extra", "request_ids", "refused"),
    [
        pytest.param(None, "", ["whole:1"], False, id="valid device IDs -- no sharing"),
        pytest.param(None, "", ["whole:1", "GPU-device2"], True, id="invalid device IDs -- no sharing"),
        pytest.param("timeSlicing", "", [replica(0, 1)], False, id="timeslicing with single device"),
        pytest.param("timeSlicing", "", [replica(0, 1), replica(1, 0)], False, id="timeslicing with two devices"),
        pytest.param("timeSlicing", "failRequestsGreaterThanOne: true, ", [replica(0, 1), replica(1, 0)], True,
                     id="timeslicing with two devices -- failRequestsGreaterThanOne"),
        pytest.param("mps", "failRequestsGreaterThanOne: false, ", [replica(0, 1)], False,
                     id="MPS with single device"),
        # Accepted by NVIDIA, whose one MPS daemon serves every GPU of a resource. kgpu runs a daemon per
        # GPU and refuses MPS replicas of two GPUs in one request (README: "an MPS client reaches one GPU's
        # daemon"); the refusal is one line saying so. Two replicas of one GPU are accepted.
        pytest.param("mps", "failRequestsGreaterThanOne: false, ", [replica(0, 1), replica(1, 0)], True,
                     id="MPS with two devices"),
        pytest.param("mps", "failRequestsGreaterThanOne: false, ", [replica(0, 0), replica(0, 1)], False,
                     id="MPS with two devices -- of one GPU (kgpu)"),
        pytest.param("mps", "failRequestsGreaterThanOne: true, ", [replica(0, 1), replica(1, 0)], True,
                     id="MPS with two devices -- failRequestsGreaterThanOne"),
    ],
)
def test_validate_request(tmp_path: Path, section: str | None, extra: str, request_ids: list[str],
                          refused: bool) -> None:
    if section is None:
        logic, resource = build_logic(H100, plugin_config()), "nvidia.com/gpu"
        request_ids = [UUIDS[1] if i == "whole:1" else i for i in request_ids]
    else:
        logic, resource = shared(tmp_path, section, 2, 2, extra), "nvidia.com/gpu.shared"
    if refused:
        with pytest.raises(AllocationError):
            logic.allocate(resource, request_ids)
    else:
        logic.allocate(resource, request_ids)


# --- allocate_test.go: TestDistributedAlloc / TestPackedAlloc -------------------------------------

def preferred(tmp_path: Path, policy: str | None, gpus: int, replicas: int, size: int,
              available: list[str] | None = None) -> list[str]:
    flags = {} if policy is None else {"shared_devices_allocation_policy": policy}
    logic = shared(tmp_path, "timeSlicing", gpus, replicas, **flags)
    ids = available if available is not None else [replica(g, n) for g in range(gpus) for n in range(replicas)]
    return logic.preferred_allocation("nvidia.com/gpu.shared", ids, [], size)


@pytest.mark.parametrize(
    ("gpus", "replicas", "size", "expected"),
    [
        pytest.param(2, 4, 2, {0: 1, 1: 1}, id="2 GPUs, 4 replicas each, allocate 2 — should distribute across GPUs"),
        pytest.param(3, 2, 3, {0: 1, 1: 1, 2: 1},
                     id="3 GPUs, 2 replicas each, allocate 3 — should distribute across all GPUs"),
        pytest.param(2, 4, 4, {0: 2, 1: 2}, id="2 GPUs, 4 replicas each, allocate 4 — should distribute 2 per GPU"),
        pytest.param(1, 4, 1, {0: 1}, id="allocate 1 from single GPU — trivial case"),
        pytest.param(1, 2, 5, None, id="not enough devices — should return error"),
    ],
)
def test_distributed_alloc(tmp_path: Path, gpus: int, replicas: int, size: int,
                           expected: Mapping[int, int] | None) -> None:
    if expected is None:
        with pytest.raises(AllocationError):
            preferred(tmp_path, "distributed", gpus, replicas, size)
        return
    assert per_gpu(preferred(tmp_path, "distributed", gpus, replicas, size)) == expected


def test_distributed_alloc_with_partial_availability(tmp_path: Path) -> None:
    # "partial availability simulates pre-allocated state — should still distribute": gpu0 fully handed out
    available = [replica(1, n) for n in range(4)]
    assert per_gpu(preferred(tmp_path, "distributed", 2, 4, 2, available)) == {1: 2}


def test_distributed_alloc_partially_allocated_distributes_across_distinct_gpus(tmp_path: Path) -> None:
    # TestDistributedAlloc_PartiallyAllocated_DistributesAcrossDistinctGPUs: GPU-1::0 handed out
    available = [replica(0, 0), replica(0, 1), replica(1, 1)]
    assert per_gpu(preferred(tmp_path, "distributed", 2, 2, 2, available)) == {0: 1, 1: 1}


@pytest.mark.parametrize(
    ("gpus", "replicas", "size", "expected"),
    [
        pytest.param(2, 4, 2, [2], id="2 GPUs, 4 replicas each, allocate 2 — should pack onto same GPU"),
        pytest.param(3, 2, 3, [2, 1], id="3 GPUs, 2 replicas each, allocate 3 — should fill one GPU first"),
        pytest.param(2, 4, 4, [4], id="2 GPUs, 4 replicas each, allocate 4 — should pack onto single GPU"),
        pytest.param(2, 4, 5, [4, 1], id="2 GPUs, 4 replicas each, allocate 5 — should fill one GPU then overflow"),
        pytest.param(1, 4, 1, [1], id="allocate 1 from single GPU — trivial case"),
        pytest.param(1, 2, 5, None, id="not enough devices — should return error"),
    ],
)
def test_packed_alloc(tmp_path: Path, gpus: int, replicas: int, size: int, expected: list[int] | None) -> None:
    if expected is None:
        with pytest.raises(AllocationError):
            preferred(tmp_path, "packed", gpus, replicas, size)
        return
    assert sorted(per_gpu(preferred(tmp_path, "packed", gpus, replicas, size)).values(), reverse=True) == expected


# --- allocate_test.go: TestDistributedAllocIsDefault / TestPackedVsDistributedContrast -------------

def test_distributed_alloc_is_default(tmp_path: Path) -> None:
    for _ in range(10):
        assert per_gpu(preferred(tmp_path, None, 3, 4, 3)) == {0: 1, 1: 1, 2: 1}


def test_packed_vs_distributed_contrast(tmp_path: Path) -> None:
    distributed = per_gpu(preferred(tmp_path, "distributed", 2, 4, 4))
    packed = per_gpu(preferred(tmp_path, "packed", 2, 4, 4))
    assert distributed == {0: 2, 1: 2} and len(packed) == 1 and distributed != packed


# --- allocate_test.go: TestComparatorForPolicy ----------------------------------------------------
# The empty and unknown policies' fallback is internal to NVIDIA's allocator: its validateFlags
# refuses both at start-up ("invalid --shared-devices-allocation-policy option"), as kgpu does.

@pytest.mark.parametrize(("policy", "prefers_less_allocated"), [
    pytest.param("distributed", True, id="distributed prefers GPU with fewer allocated replicas"),
    pytest.param("packed", False, id="packed prefers GPU with more allocated replicas"),
])
def test_comparator_for_policy(tmp_path: Path, policy: str, prefers_less_allocated: bool) -> None:
    # GPU 0 has 3 of 4 replicas handed out, GPU 1 has 1 of 4
    available = [replica(0, 3), *(replica(1, n) for n in range(1, 4))]
    (picked,) = preferred(tmp_path, policy, 2, 4, 1, available)
    assert (UUIDS.index(picked.partition("::")[0]) == 1) is prefers_less_allocated


@pytest.mark.parametrize("policy", ["", "no-such-policy"],
                         ids=["empty policy falls back to distributed", "unknown policy falls back to distributed"])
def test_an_empty_or_unknown_policy_is_refused(policy: str) -> None:
    with pytest.raises(ConfigError, match="shared-devices-allocation-policy"):
        plugin_config(shared_devices_allocation_policy=policy)


# --- allocate_test.go: TestFullGPUNodeIgnoresAllocationPolicy -------------------------------------

def test_full_gpu_node_ignores_allocation_policy(tmp_path: Path) -> None:
    # "AlignedAllocation is selected regardless of sharedDevicesAllocationPolicy": whole GPUs are
    # picked by topology whatever the policy
    picks = {policy: build_logic(H100, plugin_config(shared_devices_allocation_policy=policy))
             .preferred_allocation("nvidia.com/gpu", UUIDS, [], 2) for policy in ("distributed", "packed", "spread")}
    assert picks["distributed"] == picks["packed"] == picks["spread"]


def test_mig_devices_and_replicas_follow_the_policy(tmp_path: Path) -> None:
    # "MIG devices do not take aligned allocation path" and "replicated devices do not take aligned
    # allocation path": on MIG devices of one GPU's type, packed and distributed differ by replicas handed out
    a100 = node("a100-mig")
    text = "sharing: {timeSlicing: {resources: [{name: nvidia.com/mig-1g.10gb, replicas: 2}]}}"
    migs = [m.uuid for m in a100.mig_devices if m.profile == "1g.10gb"]
    available = [f"{migs[0]}::1", f"{migs[1]}::0", f"{migs[1]}::1"]  # migs[0]::0 handed out
    picks = {policy: build_logic(a100, plugin_config(tmp_path, text, mig_strategy="mixed",
                                                      shared_devices_allocation_policy=policy))
             .preferred_allocation("nvidia.com/mig-1g.10gb", available, [], 1) for policy in ("distributed", "packed")}
    assert picks == {"distributed": [f"{migs[1]}::0"], "packed": [f"{migs[0]}::1"]}


# --- health_test.go: TestNewHealthCheckXIDs --------------------------------------------------------
# kgpu refuses an entry that is not an XID with one line naming the variable (kgpu.deviceplugin.health,
# tested in test_deviceplugin_health.py); NVIDIA skips it silently. Kept deliberately: a typo in
# DP_DISABLE_HEALTHCHECKS would otherwise leave health checks on that the admin meant off.

@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", set()),
        (",", set()),
        ("not-an-int", None),
        ("68", {68}),
        ("-68", None),
        ("68  ", {68}),
        ("68,", {68}),
        (",68", {68}),
        ("68,67", {67, 68}),
        ("68,not-an-int,67", None),
    ],
)
def test_new_health_check_xids(value: str, expected: set[int] | None) -> None:
    environ = {"DP_DISABLE_HEALTHCHECKS": value}
    if expected is None:
        with pytest.raises(ConfigError, match=r"DP_DISABLE_HEALTHCHECKS=.*is not an XID"):
            XidPolicy.from_environ(environ)
        return
    policy = XidPolicy.from_environ(environ)
    assert policy.ignored == expected | set(APPLICATION_XIDS)
    assert all(not policy.xid_is_fatal(x) for x in expected)


# --- health_test.go: TestGetDisabledHealthCheckXids ------------------------------------------------

DEFAULT_DISABLED = {13: True, 31: True, 43: True, 45: True, 68: True, 109: True}


@pytest.mark.parametrize(
    ("disabled", "enabled", "all_disabled", "expected_disabled"),
    [
        pytest.param("", "", False, DEFAULT_DISABLED, id="empty envvars are default disabled"),
        pytest.param("all", "", True, DEFAULT_DISABLED | {555: True}, id="disabled is all"),
        pytest.param("xids", "", True, DEFAULT_DISABLED | {555: True}, id="disabled is xids"),
        pytest.param("", "all", False, dict.fromkeys([*DEFAULT_DISABLED, 555], False), id="enabled is all"),
        pytest.param("11", "11", False, DEFAULT_DISABLED | {11: False, 555: False}, id="enabled overrides disabled"),
    ],
)
def test_get_disabled_health_check_xids(disabled: str, enabled: str, all_disabled: bool,
                                        expected_disabled: dict[int, bool]) -> None:
    policy = XidPolicy.from_environ({"DP_DISABLE_HEALTHCHECKS": disabled, "DP_ENABLE_HEALTHCHECKS": enabled})
    assert policy.disabled_all is all_disabled
    assert {x: not policy.xid_is_fatal(x) for x in expected_disabled} == expected_disabled
