"""MIG devices carry NVML's device attributes (slices, engines) that GFD turns into labels."""

from __future__ import annotations

import pytest

from kgpu.gpu import MigDevice, MigEngines, mig_profile_slices, open_backend
from kgpu.gpu.fixture import build_inventory, parse_fixture


@pytest.mark.parametrize(
    ("profile", "slices"),
    [("3g.40gb", (3, 3)), ("1c.3g.40gb", (3, 1)), ("1g.10gb+me", (1, 1)), ("7g.80gb", (7, 7)), ("bogus", (0, 0))],
)
def test_profile_names_give_gpu_and_compute_instance_slices(profile: str, slices: tuple[int, int]) -> None:
    assert mig_profile_slices(profile) == slices


def test_a_mig_device_built_without_slices_takes_them_from_its_profile() -> None:
    mig = MigDevice(
        uuid="MIG-00000000-0000-0000-0000-000000000000", index=0, profile="2c.4g.40gb", gpu_instance_id=1,
        compute_instance_id=0, memory_total_mib=40192, multiprocessor_count=28, parent_uuid="GPU-x", parent_index=0,
    )
    assert (mig.gpu_instance_slices, mig.compute_instance_slices) == (4, 2)
    assert mig.engines == MigEngines()


def test_a100_fixture_has_the_engine_counts_of_nvidias_mig_guide() -> None:
    migs = {m.profile: m for m in open_backend(simulate="a100-mig").inventory().mig_devices}
    assert migs["3g.40gb"].engines == MigEngines(copy=3, decoder=2)
    assert migs["2g.20gb"].engines == MigEngines(copy=2, decoder=1)
    assert migs["1g.10gb"].engines == MigEngines(copy=1)
    assert migs["3g.40gb"].gpu_instance_slices == 3


def test_fixture_attributes_override_the_defaults() -> None:
    text = """
driver_version: 580.95.05
cuda_driver_version: '13.0'
gpus:
- index: 0
  uuid: GPU-374202be-4ba9-56b5-bd01-03f77bd5589f
  name: NVIDIA H100 80GB HBM3
  compute_capability: '9.0'
  memory_total_mib: 81559
  pci_bus_id: '00000000:07:00.0'
  pci_device_id: 0x233010de
  multiprocessor_count: 132
  mig_capable: true
  mig_enabled: true
  mig_devices:
  - uuid: MIG-51ae983c-d1ea-5513-88c1-a818a9ff928a
    profile: 1g.10gb+me
    gpu_instance_id: 9
    memory_total_mib: 9984
    multiprocessor_count: 16
    decoders: 1
    jpeg_decoders: 1
    ofa_engines: 1
"""
    (mig,) = build_inventory(parse_fixture("test", text)).mig_devices
    assert mig.engines == MigEngines(copy=1, decoder=1, encoder=0, jpeg=1, ofa=1)
    assert (mig.gpu_instance_slices, mig.compute_instance_slices) == (1, 1)


@pytest.mark.parametrize(
    ("memory_mib", "parent_mib", "gb"),
    [
        (80896, 81920, 80),  # A100 80GB 7g.80gb: ceil(MiB/1024) would say 79
        (9728, 81920, 10),  # A100 80GB 1g.10gb
        (4864, 40960, 5),  # A100 40GB 1g.5gb
        (40192, 81920, 40),  # 3g.40gb
        (80384, 81559, 80),  # H100 80GB HBM3 7g.80gb
        (9856, 81559, 10),  # H100 1g.10gb
    ],
)
def test_profile_memory_is_named_as_go_nvlib_does(memory_mib: int, parent_mib: int, gb: int) -> None:
    from kgpu.gpu.nvml import mig_memory_gb

    assert mig_memory_gb(memory_mib, parent_mib * 1024 * 1024) == gb
