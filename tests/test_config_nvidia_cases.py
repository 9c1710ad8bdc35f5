"""NVIDIA's own config test cases (api/config/v1/*_test.go, v0.20), replayed against kgpu's config.

Each table below is NVIDIA's, case for case; where kgpu adds to the format (MPS slices), the
additions are tested elsewhere. A case NVIDIA expects to fail must be refused by kgpu with one
line naming the key.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from kgpu.config import DeviceSelector, ResourcePattern
from kgpu.config.file import parse_config_document, parse_devices
from kgpu.config.resolve import resolve_config
from kgpu.deviceplugin.resources import build_resources
from kgpu.errors import ConfigError
from kgpu.gpu import open_backend

GPU_UUID = "GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c"


# --- resources_test.go: TestResourcePatternMatches ------------------------------------------------

@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        ("1g.24gb", "1g.24gb", True),  # exact match
        ("1g.24gb", "2g.48gb", False),  # no match on different string
        ("1g.24gb", "1g.24gb-me", False),  # does not substring match with suffix
        ("1g.24gb", "1g.24gb+me.all", False),  # does not substring match with plus suffix
        ("1g.24gb", "x1g.24gb", False),  # does not substring match with prefix
        ("1g.24gb-me", "1g.24gb-me", True),  # dash-me suffix matches its own pattern
        ("1g.24gb+me.all", "1g.24gb+me.all", True),  # plus-me.all suffix matches its own pattern
        ("*", "1g.24gb-me", True),  # wildcard matches everything
        ("1g.*", "1g.24gb", True),  # wildcard prefix match
        ("1g.*", "2g.48gb", False),  # wildcard prefix does not match different prefix
        ("1g.24gb+gfx", "1g.24gb+gfx", True),  # gfx suffix matches its own pattern
        ("1g.24gb", "1g.24gb+gfx", False),  # base pattern does not match +gfx suffix
        ("1g.24gb+gfx", "1g.24gb", False),  # gfx pattern does not match base
        ("1g.24gb+gfx", "1g.24gb-me", False),  # gfx pattern does not match -me suffix
        ("2g.48gb+gfx", "2g.48gb+gfx", True),  # 2g gfx suffix matches its own pattern
        ("2g.48gb", "2g.48gb+gfx", False),  # 2g base does not match +gfx suffix
        ("*gb", "1g.24gb", True),  # wildcard suffix match
        ("*gb", "1g.24gb-me", False),  # wildcard suffix does not match -me suffix
    ],
)
def test_resource_patterns_match_the_whole_name(pattern: str, text: str, expected: bool) -> None:
    assert ResourcePattern(pattern, "nvidia.com/x").matches(text) is expected


# --- replicas_test.go: TestUnmarshalReplicatedDevices ---------------------------------------------

@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("not-all", None),
        (-2, None),
        (2.0, None),  # a count is an integer: 2.0 is refused
        ([-1], None),
        (["-1"], None),
        (["invalid-UUID"], None),
        (["GPU-UUID"], None),
        (["MIG-UUID"], None),
        (["MIG-GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c"], None),
        ("all", DeviceSelector(all=True)),
        (2, DeviceSelector(all=False, count=2)),
        ([0], DeviceSelector(all=False, refs=("0",))),
        (["0"], DeviceSelector(all=False, refs=("0",))),
        (["0:0"], DeviceSelector(all=False, refs=("0:0",))),
        ([GPU_UUID], DeviceSelector(all=False, refs=(GPU_UUID,))),
        (["MIG-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c"],
         DeviceSelector(all=False, refs=("MIG-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c",))),
        ([f"MIG-{GPU_UUID}/0/0"], DeviceSelector(all=False, refs=(f"MIG-{GPU_UUID}/0/0",))),
        ([0, "0:0", GPU_UUID], DeviceSelector(all=False, refs=("0", "0:0", GPU_UUID))),
        (["0", "0:0", GPU_UUID], DeviceSelector(all=False, refs=("0", "0:0", GPU_UUID))),
    ],
)
def test_replicated_devices(value: Any, expected: DeviceSelector | None) -> None:
    if expected is None:
        with pytest.raises(ValueError):
            parse_devices(value)
    else:
        assert parse_devices(value) == expected


@pytest.mark.parametrize("section", ["timeSlicing", "mps"])
def test_devices_two_point_zero_is_refused_under_either_sharing_strategy(section: str) -> None:
    doc = {"sharing": {section: {"resources": [{"name": "gpu", "replicas": 2, "devices": 2.0}]}}}
    with pytest.raises(ConfigError, match=rf"sharing\.{section}\.resources\[0\]\.devices"):
        parse_config_document(doc, "config.yaml")


# --- replicas_test.go: TestUnmarshalReplicatedResource / TestUnmarshalReplicatedResources -------

def time_slicing(*resources: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"sharing": {"timeSlicing": {"resources": list(resources), **extra}}}


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({}, None),
        ({"name": "valid"}, None),
        ({"name": "valid", "devices": "all"}, None),
        ({"name": "valid", "devices": "all", "rename": "valid-shared"}, None),
        ({"name": "valid", "devices": "all", "replicas": 2}, ("nvidia.com/valid", 2, None, True)),
        ({"name": "valid", "devices": "all", "replicas": 2, "rename": "valid-shared"},
         ("nvidia.com/valid", 2, "nvidia.com/valid-shared", True)),
        ({"name": "valid", "replicas": -1}, None),
        ({"name": "valid", "replicas": 0}, None),
        ({"name": "valid", "replicas": 2}, ("nvidia.com/valid", 2, None, True)),
        ({"name": "valid", "replicas": 2, "rename": "valid-shared"},
         ("nvidia.com/valid", 2, "nvidia.com/valid-shared", True)),
        ({"name": "$invalid$", "replicas": 2, "rename": "valid-shared"}, None),
        ({"name": "valid", "replicas": 2, "rename": "$invalid$"}, None),
    ],
)
def test_replicated_resource(entry: dict[str, Any], expected: tuple[str, int, str | None, bool] | None) -> None:
    if expected is None:
        with pytest.raises(ConfigError, match=r"sharing\.timeSlicing\.resources\[0\]"):
            parse_config_document(time_slicing(entry), "config.yaml")
        return
    spec = parse_config_document(time_slicing(entry), "config.yaml")
    assert spec.sharing is not None and spec.sharing.time_slicing is not None
    (r,) = spec.sharing.time_slicing.to_value().resources
    assert (r.name, r.replicas, r.rename, r.devices.all) == expected


@pytest.mark.parametrize("section", ["timeSlicing", "mps"])
@pytest.mark.parametrize("body", [{}, {"resources": []}], ids=["empty", "no-resources"])
def test_a_sharing_section_without_resources_is_refused(section: str, body: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=rf"sharing\.{section}: no resources specified"):
        parse_config_document({"sharing": {section: body}}, "config.yaml")


def test_replicated_resources_keep_their_order_and_refuse_a_bad_name() -> None:
    spec = parse_config_document(time_slicing({"name": "valid1", "replicas": 2}, {"name": "valid2", "replicas": 2}))
    assert spec.sharing is not None and spec.sharing.time_slicing is not None
    names = [r.name for r in spec.sharing.time_slicing.to_value().resources]
    assert names == ["nvidia.com/valid1", "nvidia.com/valid2"]
    with pytest.raises(ConfigError, match="must be lower-case letters"):
        parse_config_document(time_slicing({"name": "$invalid$", "replicas": 2}))


# --- flags_test.go: TestUnmarshalFlags ------------------------------------------------------------

@pytest.mark.parametrize(
    ("flags", "check"),
    [
        ({}, lambda c: c.flags.gfd.sleep_interval == 60.0),
        ({"gfd": {}}, lambda c: c.flags.gfd.sleep_interval == 60.0),
        ({"gfd": {"sleepInterval": 0}}, lambda c: c.flags.gfd.sleep_interval == 0.0),
        ({"gfd": {"sleepInterval": "0s"}}, lambda c: c.flags.gfd.sleep_interval == 0.0),
        ({"gfd": {"sleepInterval": 5}}, lambda c: c.flags.gfd.sleep_interval == 5e-9),  # Go: nanoseconds
        ({"gfd": {"sleepInterval": "5s"}}, lambda c: c.flags.gfd.sleep_interval == 5.0),
        ({"gfd": {"sleepInterval": "infinite"}}, lambda c: math.isinf(c.flags.gfd.sleep_interval)),
        ({"plugin": {"deviceListStrategy": "envvar"}}, lambda c: c.flags.plugin.device_list_strategy == ("envvar",)),
        ({"plugin": {"deviceListStrategy": ["envvar", "cdi-annotations"]}},
         lambda c: c.flags.plugin.device_list_strategy == ("envvar", "cdi-annotations")),
    ],
)
def test_flags_in_the_file(tmp_path: Path, flags: dict[str, Any], check: Any) -> None:
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"version": "v1", "flags": flags}))
    assert check(resolve_config({}, {}, path))


def test_an_infinite_sleep_interval_is_logged_as_nvidia_writes_it(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("flags: {gfd: {sleepInterval: infinite}}")
    assert resolve_config({}, {}, path).to_dict()["flags"]["gfd"]["sleepInterval"] == "infinite"
    assert math.isinf(resolve_config({"sleep-interval": "infinite"}, {}, program="gpu-feature-discovery")
                      .flags.gfd.sleep_interval)


# --- imex_test.go: TestImexUnmarshal --------------------------------------------------------------

@pytest.mark.parametrize(
    ("imex", "expected"),
    [
        ({}, ()),
        ({"channelIDs": None}, ()),  # null channel ID is valid
        ({"channelIDs": []}, ()),
        ({"channelIDs": [0]}, (0,)),
        ({"channelIDs": [2]}, None),  # invalid: only [] or [0]
    ],
)
def test_imex_channel_ids(tmp_path: Path, imex: dict[str, Any], expected: tuple[int, ...] | None) -> None:
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"imex": imex}))
    if expected is None:
        with pytest.raises(ConfigError, match=r"channelIDs must be \[\] or \[0\]"):
            resolve_config({}, {}, path)
    else:
        assert resolve_config({}, {}, path).imex.channel_ids == expected


# --- config_test.go: MPS's failRequestsGreaterThanOne ---------------------------------------------

def test_mps_refuses_requests_greater_than_one_unless_the_file_says_false(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("version: v1\nsharing:\n  mps:\n    resources:\n"
                    "      - name: nvidia.com/gpu\n        replicas: 2\n")
    mps = resolve_config({}, {}, path).sharing.mps
    assert mps is not None and mps.fail_requests_greater_than_one is True
    path.write_text("version: v1\nsharing:\n  mps:\n    failRequestsGreaterThanOne: false\n    resources:\n"
                    "      - name: nvidia.com/gpu\n        replicas: 2\n")
    mps = resolve_config({}, {}, path).sharing.mps
    assert mps is not None and mps.fail_requests_greater_than_one is False
    # (time-slicing keeps false unless set)
    path.write_text("sharing: {timeSlicing: {resources: [{name: gpu, replicas: 2}]}}")
    ts = resolve_config({}, {}, path).sharing.time_slicing
    assert ts is not None and ts.fail_requests_greater_than_one is False


# --- replicas_test.go: TestReplicatedDeviceRef ----------------------------------------------------
# NVIDIA classifies a reference as a GPU index, a MIG index or a UUID; kgpu has no classifier of its
# own, so the case is replayed as what the class decides: which device a sharing entry picks.

A100_MIG_GPU1 = "GPU-b08da2bc-858e-51d4-8537-d405fc57691e"
A100_MIG_0_2 = "MIG-1e4d2670-c0a4-5b30-8323-7d904e02f37a"


def shared_uuids(tmp_path: Path, resource: str, ref: str) -> set[str]:
    """The devices a time-slicing entry for ``resource`` with ``devices: [ref]`` shares on the a100-mig
    node (GPU 0 in MIG mode with 3g.40gb, 2g.20gb, 1g.10gb ×2; GPU 1 whole), under mig-strategy mixed."""
    import yaml

    path = tmp_path / "config.yaml"
    entry = {"name": resource, "replicas": 2, "devices": [ref]}
    path.write_text(yaml.safe_dump({"flags": {"migStrategy": "mixed"}, **time_slicing(entry)}))
    config = resolve_config({}, {}, path)
    (shared,) = [r for r in build_resources(open_backend(simulate="a100-mig").inventory(), config) if r.shared]
    return {g.device.uuid for g in shared.grants if g.is_replica}


@pytest.mark.parametrize(
    ("resource", "ref", "expected"),
    [
        ("gpu", "1", {A100_MIG_GPU1}),  # "0" in NVIDIA's table: gpuIndex (GPU 0 is in MIG mode here)
        ("mig-1g.10gb", "0:2", {A100_MIG_0_2}),  # "0:0" in NVIDIA's table: migIndex
        ("gpu", A100_MIG_GPU1, {A100_MIG_GPU1}),  # uuid
        ("mig-1g.10gb", A100_MIG_0_2, {A100_MIG_0_2}),  # uuid
    ],
)
def test_a_device_reference_picks_by_gpu_index_mig_index_or_uuid(
    tmp_path: Path, resource: str, ref: str, expected: set[str]
) -> None:
    assert shared_uuids(tmp_path, resource, ref) == expected


def test_an_old_style_mig_uuid_is_a_uuid_not_an_index(tmp_path: Path) -> None:
    # "MIG-GPU-662077db-…/10/0" in NVIDIA's table: uuid. This node's driver writes new-style MIG UUIDs,
    # so the reference matches no device, and the error quotes it whole as a reference.
    ref = "MIG-GPU-662077db-fa3f-0d8f-9502-21ab0ef058a2/10/0"
    with pytest.raises(ConfigError, match=r"no nvidia.com/mig-1g.10gb device 'MIG-GPU-662077db-[^']*/10/0'"):
        shared_uuids(tmp_path, "mig-1g.10gb", ref)


# --- replicas_test.go: TestMarshalReplicatedDevices -----------------------------------------------
# kgpu writes its config in NVIDIA's shape (to_dict, logged at start-up). NVIDIA's first case, an
# empty ReplicatedDevices{} that fails to marshal, cannot be built from a file: parse refuses it.

@pytest.mark.parametrize(
    ("devices", "marshalled"),
    [
        ("all", "all"),
        (2, 2),
        (["0", "0:0", GPU_UUID], ["0", "0:0", GPU_UUID]),
    ],
)
def test_replicated_devices_marshal_as_nvidia_writes_them(tmp_path: Path, devices: Any, marshalled: Any) -> None:
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(time_slicing({"name": "gpu", "replicas": 2, "devices": devices})))
    logged = resolve_config({}, {}, path).to_dict()["sharing"]["timeSlicing"]["resources"][0]["devices"]
    assert logged == marshalled
    path.write_text(yaml.safe_dump(time_slicing({"name": "gpu", "replicas": 2, "devices": logged})))
    assert resolve_config({}, {}, path).to_dict()["sharing"]["timeSlicing"]["resources"][0]["devices"] == marshalled


def test_an_empty_device_list_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_devices([])


# --- replicas_test.go: TestUnmarshalReplicatedResource / Resources, flags_test.go: TestUnmarshalFlags:
# the empty input (``) NVIDIA refuses: an empty file section is not a mapping.

@pytest.mark.parametrize("doc", [
    time_slicing(""),  # TestUnmarshalReplicatedResource: a resource that is not an object
    {"sharing": {"timeSlicing": ""}},  # TestUnmarshalReplicatedResources
    {"flags": ""},  # TestUnmarshalFlags
])
def test_an_empty_string_where_an_object_belongs_is_refused(doc: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        parse_config_document(doc, "config.yaml")


# --- flags_test.go: TestMarshalFlags --------------------------------------------------------------
# sleepInterval is written as Go writes a Duration, so what kgpu logs reads back as the same value
# (a bare 5 in the file is 5 ns to NVIDIA and to kgpu).

@pytest.mark.parametrize(
    ("written", "marshalled"),
    [
        ("0", "0s"),
        ("5", "5ns"),
        ("infinite", "infinite"),
        # beyond NVIDIA's table: longer durations take Go's h/m/s form
        ("60s", "1m0s"),
        ("1h30m", "1h30m0s"),
        ("250ms", "250ms"),
    ],
)
def test_sleep_interval_marshals_as_a_go_duration(tmp_path: Path, written: str, marshalled: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(f"flags: {{gfd: {{sleepInterval: {written}}}}}")
    config = resolve_config({}, {}, path)
    assert config.to_dict()["flags"]["gfd"]["sleepInterval"] == marshalled
    path.write_text(f"flags: {{gfd: {{sleepInterval: {marshalled}}}}}")
    assert resolve_config({}, {}, path).flags.gfd.sleep_interval == config.flags.gfd.sleep_interval
