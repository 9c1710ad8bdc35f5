"""Given a node and a sharing.mps config, which slices does it offer, and which layouts are refused?"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dp_helpers import node

from kgpu.config.file import parse_mps_section
from kgpu.config.quantity import format_mib, parse_memory_mib
from kgpu.config.resolve import resolve_config
from kgpu.errors import ConfigError
from kgpu.sharing import build_layout, gpu_of_device_id, layout_to_json


def layout(name: str, mps: dict[str, Any]):  # type: ignore[no-untyped-def]
    return build_layout(node(name), parse_mps_section(mps, "config.yaml"))


@pytest.mark.parametrize(
    ("text", "mib"),
    [("20Gi", 20480), ("512Mi", 512), ("10G", 9536), ("1.5Gi", 1536), (4096, 4096), ("4096", 4096), ("1Ti", 1048576)],
)
def test_memory_quantities_become_whole_mib(text: str | int, mib: int) -> None:
    assert parse_memory_mib(text) == mib


@pytest.mark.parametrize("text", ["20GB", "-1Gi", "lots", "0", "1.5", "100Ki", True])
def test_memory_quantities_that_are_not_sizes_are_refused(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_memory_mib(text)


def test_format_mib_prefers_whole_gibibytes() -> None:
    assert (format_mib(20480), format_mib(9536)) == ("20Gi", "9536Mi")


def test_equal_replicas_split_every_gpu_like_nvidia() -> None:
    # Given an 8×H100 node and NVIDIA's MPS config with 4 replicas
    result = layout("h100x8", {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]})
    # Then every GPU offers 4 slices of a quarter of its memory and 25 % of its SMs
    assert len(result.gpus) == 8 and len(result.slices) == 32
    first = result.gpus[0]
    assert [s.id for s in first.slices] == [f"{first.uuid}::{n}" for n in range(4)]
    assert {(s.memory_mib, s.compute_percent, s.resource) for s in result.slices} == {(20389, 25, "nvidia.com/gpu")}
    assert result.resource_names() == ("nvidia.com/gpu",)


def test_rename_by_default_advertises_dot_shared_and_rename_wins() -> None:
    renamed = layout("t4", {"renameByDefault": True, "resources": [{"name": "gpu", "replicas": 2}]})
    assert renamed.resource_names() == ("nvidia.com/gpu.shared",)
    explicit = layout(
        "t4", {"renameByDefault": True, "resources": [{"name": "nvidia.com/gpu", "rename": "gpu-half", "replicas": 2}]}
    )
    assert explicit.resource_names() == ("nvidia.com/gpu-half",)


def test_heterogeneous_slices_share_one_h100() -> None:
    # Given two 20 GiB/25 % slices and four 8 GiB/12 % slices on GPU 0 only
    result = layout(
        "h100x8",
        {
            "slices": [
                {"name": "nvidia.com/gpu-20gb", "memory": "20Gi", "computePercent": 25, "count": 2, "devices": [0]},
                {"name": "nvidia.com/gpu-8gb", "memory": "8Gi", "computePercent": 12, "count": 4, "devices": [0]},
            ]
        },
    )
    # Then only GPU 0 is shared, with six slices of two sizes, named <uuid>::<short-name>-<n>
    assert len(result.gpus) == 1
    gpu = result.gpus[0]
    assert gpu.index == 0 and result.shared_uuids == {gpu.uuid}
    assert [(s.id.split("::")[1], s.memory_mib, s.compute_percent) for s in gpu.slices] == [
        ("gpu-20gb-0", 20480, 25),
        ("gpu-20gb-1", 20480, 25),
        ("gpu-8gb-0", 8192, 12),
        ("gpu-8gb-1", 8192, 12),
        ("gpu-8gb-2", 8192, 12),
        ("gpu-8gb-3", 8192, 12),
    ]
    assert result.resource_names() == ("nvidia.com/gpu-20gb", "nvidia.com/gpu-8gb")
    # The daemon's default limits are the largest slice's
    assert (gpu.default_memory_mib, gpu.default_compute_percent) == (20480, 25)
    # And dcgm-exporter's "<gpu>::<n>" split still finds the GPU
    assert {gpu_of_device_id(s.id) for s in gpu.slices} == {gpu.uuid}


def test_memory_oversubscription_is_refused_with_the_arithmetic() -> None:
    with pytest.raises(ConfigError) as err:
        layout(
            "h100x8",
            {
                "slices": [
                    {"name": "gpu-20gb", "memory": "20Gi", "computePercent": 20, "count": 2, "devices": [0]},
                    {"name": "gpu-10gb", "memory": "10Gi", "computePercent": 10, "count": 5, "devices": [0]},
                ]
            },
        )
    message = str(err.value)
    assert message.startswith("config.yaml: ")
    assert "GPU 0 (NVIDIA H100 80GB HBM3, 81559 MiB): 2×20480 + 5×10240 = 92160 MiB > 81559 MiB" in message


def test_a_full_80_gib_does_not_fit_an_h100_80gb() -> None:
    # 4 × 20 GiB = 81920 MiB, but an "80GB" H100 has 81559 MiB
    with pytest.raises(ConfigError, match=r"4×20480 = 81920 MiB > 81559 MiB"):
        layout("h100x8", {"slices": [{"name": "gpu-20gb", "memory": "20Gi", "computePercent": 25, "count": 4}]})


def test_replicas_and_slices_on_one_gpu_add_up() -> None:
    with pytest.raises(ConfigError, match=r"2×40779 \+ 1×10240 = 91798 MiB > 81559 MiB"):
        layout(
            "h100x8",
            {
                "resources": [{"name": "nvidia.com/gpu", "replicas": 2, "devices": [3]}],
                "slices": [{"name": "gpu-10gb", "memory": "10Gi", "computePercent": 10, "devices": [3]}],
            },
        )


def test_compute_oversubscription_is_refused_unless_allowed() -> None:
    mps: dict[str, Any] = {
        "slices": [
            {"name": "gpu-20gb", "memory": "20Gi", "computePercent": 50, "count": 2, "devices": [0]},
            {"name": "gpu-5gb", "memory": "5Gi", "computePercent": 25, "count": 4, "devices": [0]},
        ]
    }
    with pytest.raises(ConfigError) as err:
        layout("h100x8", mps)
    assert "132 SMs): 2×50 + 4×25 = 200 % > 100 %" in str(err.value)
    assert "allowComputeOversubscription" in str(err.value)
    allowed = layout("h100x8", {**mps, "allowComputeOversubscription": True})
    assert len(allowed.slices) == 6


def test_more_than_48_clients_per_gpu_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"49 slices > 48"):
        layout(
            "h100x8",
            {"allowComputeOversubscription": True, "slices": [
                {"name": "gpu-1gb", "memory": "1Gi", "computePercent": 2, "count": 48, "devices": [0]},
                {"name": "gpu-tiny", "memory": 512, "computePercent": 1, "count": 1, "devices": [0]},
            ]},
        )


def test_mig_enabled_gpus_cannot_be_shared_through_mps() -> None:
    with pytest.raises(ConfigError, match=r"GPU 0 .* has MIG enabled"):
        layout("a100-mig", {"resources": [{"name": "nvidia.com/gpu", "replicas": 2, "devices": [0]}]})
    # The A100 next to it, without MIG, can be
    other = layout("a100-mig", {"resources": [{"name": "nvidia.com/gpu", "replicas": 2, "devices": [1]}]})
    assert len(other.slices) == 2


def test_pre_volta_gpus_are_refused_because_limits_need_volta() -> None:
    with pytest.raises(ConfigError, match=r"compute capability 6\.0.*Volta \(7\.0\) or newer"):
        layout("p100", {"resources": [{"name": "nvidia.com/gpu", "replicas": 2}]})


def test_devices_by_count_index_and_uuid() -> None:
    inv = node("h100x8")
    by_count = layout("h100x8", {"resources": [{"name": "nvidia.com/gpu", "replicas": 2, "devices": 3}]})
    assert [g.index for g in by_count.gpus] == [0, 1, 2]
    by_ref = layout(
        "h100x8", {"resources": [{"name": "nvidia.com/gpu", "replicas": 2, "devices": ["5", inv.gpus[7].uuid]}]}
    )
    assert [g.index for g in by_ref.gpus] == [5, 7]
    with pytest.raises(ConfigError, match=r"devices: '9' is not a GPU of this node"):
        layout("h100x8", {"resources": [{"name": "nvidia.com/gpu", "replicas": 2, "devices": [9]}]})
    with pytest.raises(ConfigError, match=r"devices: 9 but this node has 8 GPU"):
        layout("h100x8", {"resources": [{"name": "nvidia.com/gpu", "replicas": 2, "devices": 9}]})


@pytest.mark.parametrize(
    ("mps", "fragment"),
    [
        ({"slices": [{"name": "gpu-x", "memory": "20GB", "computePercent": 10}]},
         "sharing.mps.slices[0].memory: '20GB' is not a memory size"),
        ({"slices": [{"name": "gpu-x", "memory": "2Gi", "computePercent": 150}]},
         "sharing.mps.slices[0].computePercent: 150 is above the limit of 100"),
        ({"resources": [{"name": "nvidia.com/gpu", "replicas": 64}]},
         "sharing.mps.resources[0].replicas: 64 is above the limit of 48 (an MPS daemon serves at most 48 clients"),
        ({"resources": [{"name": "nvidia.com/gpu", "replicas": 2, "devices": ["MIG-0e5a…"]}]},
         "MPS sharing is not supported on MIG devices"),
        ({"resources": [{"name": "nvidia.com/gpu", "replicas": 2, "devices": "some"}]},
         "devices: devices is 'some', but the only string allowed is 'all'"),
        ({"slices": [{"name": "bad name!", "memory": "2Gi", "computePercent": 10}]},
         "is not an extended resource name"),
        ({"slices": [{"name": "gpu-x", "memory": "2Gi", "computePercent": 10, "colour": "red"}]},
         "unknown key sharing.mps.slices[0].colour (value 'red')"),
        ("yes", "sharing.mps: expected a mapping"),
    ],
)
def test_bad_sharing_mps_values_name_the_key_the_value_and_what_is_allowed(mps: Any, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_mps_section(mps, "config.yaml")
    assert fragment in str(err.value)
    assert str(err.value).startswith("config.yaml: ")


def test_config_file_round_trip(tmp_path: Path) -> None:
    # Given NVIDIA's config file with an MPS section next to other settings
    path = tmp_path / "config.yaml"
    path.write_text(
        "version: v1\nflags:\n  migStrategy: none\nsharing:\n  mps:\n    resources:\n"
        "    - name: nvidia.com/gpu\n      replicas: 2\n"
    )
    config = resolve_config(config_file=path).sharing.mps
    assert config is not None and config.enabled and config.source == f"config file {path}"
    assert [(r.name, r.replicas) for r in config.resources] == [("nvidia.com/gpu", 2)]
    # A file without sharing.mps shares nothing through MPS
    path.write_text("version: v1\nsharing:\n  timeSlicing:\n    resources: [{name: gpu, replicas: 2}]\n")
    assert resolve_config(config_file=path).sharing.mps is None
    path.write_text("version: v2\n")
    with pytest.raises(ConfigError, match=r"unknown version 'v2'; the only version is 'v1'"):
        resolve_config(config_file=path)


def test_layout_json_lists_every_slice_with_its_limits() -> None:
    result = layout("a30", {"resources": [{"name": "nvidia.com/gpu", "replicas": 3}]})
    doc = layout_to_json(result)
    gpus = doc["gpus"]
    assert isinstance(gpus, list) and len(gpus) == 1
    assert [(s["memory_mib"], s["compute_percent"]) for s in gpus[0]["slices"]] == [(8192, 33)] * 3
