"""MIG manager: a mig-parted layout named by a node label becomes the simulated node's GPU instances, placed as
the hardware allows, and the device plugin's resources and the labels follow."""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from kgpu.config.resolve import resolve_config
from kgpu.deviceplugin.daemon import node_resources as build_logic
from kgpu.gpu.migstate import read_mig_state
from kgpu.gpu.simulated import SimulatedBackend
from kgpu.mig.config import parse_mig_config
from kgpu.mig.manager import MIG_STATE_LABEL, SimulatedMigControl, apply_named, run_manager
from kgpu.mig.plan import MigLayoutError, place
from kgpu.mig.profiles import A100_40GB, A100_80GB, H100_80GB, H200_141GB, ProfileTable

NVIDIA_DEFAULT = (resources.files("kgpu.mig") / "default-config.yaml").read_text()


def configs() -> dict[str, Any]:
    return parse_mig_config(NVIDIA_DEFAULT, "default-config.yaml")


def layout(table: ProfileTable, wanted: dict[str, int]) -> list[tuple[str, int]]:
    return [(i.profile.name, i.start) for i in place(table, wanted, "test")]


def test_nvidias_own_default_config_parses_every_layout() -> None:
    parsed = configs()
    assert {"all-disabled", "all-enabled", "all-1g.10gb", "all-balanced", "all-7g.141gb"} <= set(parsed)
    balanced = parsed["all-balanced"]
    h200 = next(e for e in balanced if 0x233510DE in e.device_filter)
    assert h200.mig_devices == {"1g.18gb": 2, "2g.35gb": 1, "3g.71gb": 1}


@pytest.mark.parametrize(
    ("table", "wanted", "expected"),
    [
        (A100_80GB, {"1g.10gb": 7}, [("1g.10gb", s) for s in range(7)]),
        # 3g on slices 0-3 would leave no start for the second 1g (1g starts at 0..6): 3g goes to 4-7.
        (A100_80GB, {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1},
         [("2g.20gb", 0), ("1g.10gb", 2), ("1g.10gb", 3), ("3g.40gb", 4)]),
        (A100_40GB, {"4g.20gb": 1, "3g.20gb": 1}, [("4g.20gb", 0), ("3g.20gb", 4)]),
        (H100_80GB, {"2g.20gb": 3, "1g.10gb": 1}, [("2g.20gb", 0), ("2g.20gb", 2), ("2g.20gb", 4), ("1g.10gb", 6)]),
        (H200_141GB, {"7g.141gb": 1}, [("7g.141gb", 0)]),
        (H200_141GB, {"1g.35gb": 4}, [("1g.35gb", 0), ("1g.35gb", 2), ("1g.35gb", 4), ("1g.35gb", 6)]),
    ],
)
def test_instances_go_on_allowed_free_placements(table: ProfileTable, wanted: dict[str, int],
                                                 expected: list[tuple[str, int]]) -> None:
    assert layout(table, wanted) == expected


def test_the_balanced_h100_layout_fills_every_compute_slice_without_overlap() -> None:
    got = place(H100_80GB, {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}, "test")
    spans = [set(i.slices) for i in got]
    assert sum(i.profile.compute_slices for i in got) == 7
    assert all(not (a & b) for n, a in enumerate(spans) for b in spans[n + 1:])
    assert all(i.start in i.profile.starts for i in got)


@pytest.mark.parametrize(
    ("wanted", "why"),
    [
        ({"1g.10gb": 8}, "at most 7"),
        ({"4g.40gb": 1, "2g.20gb": 2}, "needs 8 compute slices"),
        ({"3g.40gb": 2, "1g.10gb": 1}, "do not fit"),  # two 3g take all 8 memory slices
        ({"1g.5gb": 1}, "has no MIG profile '1g.5gb'"),
    ],
)
def test_a_layout_the_hardware_cannot_take_is_refused_with_the_reason(wanted: dict[str, int], why: str) -> None:
    with pytest.raises(MigLayoutError, match=why):
        place(H100_80GB, wanted, "test")


def _plugin_resources(backend: SimulatedBackend) -> dict[str, int]:
    logic = build_logic(backend.inventory(), resolve_config({"mig-strategy": "mixed"}))
    return {r.name: len(r.devices) for r in logic.resources()}


def test_labelling_a_simulated_h100_node_all_1g_10gb_gives_56_mig_devices_to_the_device_plugin(tmp_path: Path) -> None:
    state = tmp_path / "mig.json"
    control = SimulatedMigControl("h100x8", state)
    outcome = apply_named(control, configs(), "all-1g.10gb")
    assert (outcome.state, outcome.changed) == ("success", True)
    backend = SimulatedBackend.open("h100x8", mig_state=state)
    gpu0 = backend.inventory().gpus[0]
    assert gpu0.mig_enabled and [m.placement_start for m in gpu0.mig_devices] == list(range(7))
    assert {m.profile_id for m in gpu0.mig_devices} == {19}
    assert _plugin_resources(backend) == {"nvidia.com/mig-1g.10gb": 56}

    again = apply_named(control, configs(), "all-1g.10gb")
    assert (again.state, again.changed) == ("success", False), "a layout already applied changes nothing"

    assert apply_named(control, configs(), "all-disabled").changed
    assert _plugin_resources(SimulatedBackend.open("h100x8", mig_state=state)) == {"nvidia.com/gpu": 8}
    assert not state.exists(), "a node back to its fixture's layout keeps no state file"


def test_all_balanced_on_the_a100_node_reshapes_only_the_gpu_that_is_not_balanced_yet(tmp_path: Path) -> None:
    state = tmp_path / "mig.json"
    before = SimulatedBackend.open("a100-mig").inventory()
    outcome = apply_named(SimulatedMigControl("a100-mig", state), configs(), "all-balanced")
    assert outcome.state == "success", outcome.message
    inventory = SimulatedBackend.open("a100-mig", mig_state=state).inventory()
    for gpu in inventory.gpus:
        assert sorted(m.profile for m in gpu.mig_devices) == ["1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"]
        assert len({m.uuid for m in gpu.mig_devices}) == 4
    # GPU 0 of the fixture is balanced already (same profiles on the same placements): left as it is.
    assert inventory.gpus[0].mig_devices == before.gpus[0].mig_devices
    assert set(read_mig_state(state)) == {inventory.gpus[1].uuid}


def test_an_unknown_name_or_a_layout_for_other_gpus_fails_and_changes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "mig.json"
    control = SimulatedMigControl("h100x8", state)
    unknown = apply_named(control, configs(), "all-1g.5gbb")
    assert unknown.state == "failed" and "no MIG config named 'all-1g.5gbb'" in unknown.message
    other = apply_named(control, configs(), "all-1g.5gb")  # A100-40GB profile: not on an H100
    assert other.state == "failed" and "has no MIG profile '1g.5gb'" in other.message
    t4 = apply_named(SimulatedMigControl("t4", state), configs(), "all-enabled")
    assert t4.state == "failed" and "not MIG-capable" in t4.message
    assert not state.exists()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("version: v2\nmig-configs: {}", "version must be v1"),
        ("version: v1\nmig-configs: {a: [{devices: some, mig-enabled: true}]}", "neither 'all' nor a list"),
        ("version: v1\nmig-configs: {a: [{devices: all}]}", "missing required field: mig-enabled"),
        ("version: v1\nmig-configs: {a: [{devices: all, mig-enabled: true, mig-devices: {huge: 1}}]}",
         "not a MIG profile"),
        ("version: v1\nmig-configs: {a: [{devices: all, mig-enabled: false, mig-devices: {1g.10gb: 1}}]}",
         "mig-enabled is false"),
    ],
)
def test_a_malformed_mig_parted_config_names_the_field(text: str, why: str) -> None:
    with pytest.raises(Exception, match=why):
        parse_mig_config(text, "mig.yaml")


class FakeNodeClient:
    """A Node with labels, as lightkube's client shows it; patches land on it."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self.states: list[str] = []
        self.deleted: list[str] = []

    def get(self, _kind: Any, _name: str) -> Any:
        meta = type("Meta", (), {"labels": dict(self.labels)})()
        return type("Node", (), {"metadata": meta})()

    def patch(self, _kind: Any, _name: str, body: dict[str, Any], patch_type: Any = None) -> None:
        state = body["metadata"]["labels"][MIG_STATE_LABEL]
        self.states.append(state)
        if state is None:
            self.labels.pop(MIG_STATE_LABEL, None)
        else:
            self.labels[MIG_STATE_LABEL] = state

    def list(self, _kind: Any, **_: Any) -> list[Any]:
        meta = type("Meta", (), {"name": "kgpu-device-plugin-x"})()
        return [type("Pod", (), {"metadata": meta})()]

    def delete(self, _kind: Any, name: str, namespace: str = "") -> None:
        self.deleted.append(name)


def test_the_node_label_goes_pending_then_success_and_the_gpu_pods_restart(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(NVIDIA_DEFAULT)
    client = FakeNodeClient({"nvidia.com/mig.config": "all-balanced"})
    control = SimulatedMigControl("h100x8", tmp_path / "mig.json")
    outcome = run_manager(client, control, "gpu-1", config, "", "kube-system", 0.0, threading.Event(), once=True)
    assert outcome is not None and outcome.changed
    assert client.states == ["pending", "success"] and client.deleted == ["kgpu-device-plugin-x"]

    client.labels["nvidia.com/mig.config"] = "all-3g.99gb"
    run_manager(client, control, "gpu-1", config, "", "kube-system", 0.0, threading.Event(), once=True)
    assert client.states[-2:] == ["pending", "failed"] and client.deleted == ["kgpu-device-plugin-x"]

    stop = threading.Event()
    stop.set()  # SIGTERM: the manager takes its state label off the node
    run_manager(client, control, "gpu-1", config, "", "kube-system", 0.0, stop)
    assert MIG_STATE_LABEL not in client.labels


def test_the_labels_follow_the_new_layout(tmp_path: Path) -> None:
    from kgpu.labels.config import settings_from_plugin_config
    from kgpu.labels.gfd import node_labels
    from kgpu.labels.host import HostFacts

    state = tmp_path / "mig.json"
    apply_named(SimulatedMigControl("h100x8", state), configs(), "all-balanced")
    inventory = SimulatedBackend.open("h100x8", mig_state=state).inventory()
    labels = node_labels(inventory, settings_from_plugin_config(resolve_config({"mig-strategy": "mixed"})),
                         HostFacts())
    assert labels["nvidia.com/mig-1g.10gb.count"] == "16"
    assert labels["nvidia.com/mig-2g.20gb.count"] == "8"
    assert labels["nvidia.com/mig-3g.40gb.count"] == "8"
    assert labels["nvidia.com/mig.strategy"] == "mixed"
