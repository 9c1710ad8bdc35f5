"""GFD's labelling rules, one story each: the edges the golden files do not show."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kgpu.errors import ConfigError
from kgpu.gpu import Inventory, open_backend
from kgpu.labels import HostFacts, LabelSettings, MigStrategy, ReplicatedResource, SharingStrategy, node_labels
from kgpu.labels.config import resolve_settings
from kgpu.labels.gfd import make_valid, sanitise, valid_label_value
from kgpu.labels.host import read_host_facts

HOST = HostFacts(machine_type="DGXH100", pci_classes={})


def inventory(node: str) -> Inventory:
    return open_backend(simulate=node).inventory()


def test_a_node_without_gpus_gets_only_the_timestamp() -> None:
    # GFD's NewDeviceLabeler is empty without devices: no machine type either
    empty = dataclasses.replace(inventory("t4"), gpus=())
    assert node_labels(empty, LabelSettings(), HOST, timestamp=1700000000) == {
        "nvidia.com/gfd.timestamp": "1700000000",
    }


def test_a_two_part_driver_version_has_an_empty_revision() -> None:
    inv = dataclasses.replace(inventory("t4"), driver_version="575.51")
    labels = node_labels(inv, LabelSettings(), HOST)
    assert labels["nvidia.com/cuda.driver-version.revision"] == ""
    assert labels["nvidia.com/cuda.driver.rev"] == ""
    assert labels["nvidia.com/cuda.driver-version.full"] == "575.51"


@pytest.mark.parametrize(
    ("classes", "mode"),
    [  # GFD's TestGPUModeLabeler, on the two GPUs of the "mixed" node
        (("0x030000", "0x030000"), "graphics"),
        (("0x030200", "0x030200"), "compute"),
        (("0x068000", "0x068000"), "unknown"),  # a switch
        (("0x030000", "0x030200"), "unknown"),  # GPUs of different classes
        ((None, None), "unknown"),  # classes that cannot be read
    ],
)
def test_the_gpus_pci_classes_decide_the_mode(classes: tuple[str | None, str | None], mode: str) -> None:
    inv = inventory("mixed")
    pci = {bus: cls for bus, cls in zip(("0000:3b:00.0", "0000:af:00.0"), classes, strict=True) if cls}
    assert node_labels(inv, LabelSettings(), HostFacts(pci_classes=pci))["nvidia.com/gpu.mode"] == mode


def test_host_facts_are_read_under_the_root(tmp_path: Path) -> None:
    (tmp_path / "sys/class/dmi/id").mkdir(parents=True)
    (tmp_path / "sys/class/dmi/id/product_name").write_text("  ProLiant DL380 Gen10 \n")
    (tmp_path / "sys/bus/pci/devices/0000:3b:00.0").mkdir(parents=True)
    (tmp_path / "sys/bus/pci/devices/0000:3b:00.0/class").write_text("0x030200\n")
    facts = read_host_facts(tmp_path, ["00000000:3B:00.0", "00000000:AF:00.0"])
    assert facts.machine_type == "ProLiant DL380 Gen10"
    assert facts.pci_class("00000000:3B:00.0") == "0x030200"
    assert facts.pci_class("00000000:AF:00.0") is None
    assert facts.machine_type_problem is None
    missing = read_host_facts(tmp_path / "nothing", [])
    assert missing.machine_type == "unknown"
    dmi = tmp_path / "nothing/sys/class/dmi/id/product_name"
    assert missing.machine_type_problem == f"{dmi}: No such file or directory"


def test_heterogeneous_nodes_label_the_first_whole_gpus_product_and_count_only_it() -> None:
    inv = inventory("mixed")
    labels = node_labels(inv, LabelSettings(), HOST)
    assert (labels["nvidia.com/gpu.product"], labels["nvidia.com/gpu.count"]) == ("Tesla-T4", "1")
    swapped = dataclasses.replace(inv, gpus=(dataclasses.replace(inv.gpus[0], mig_enabled=True, mig_capable=True),
                                             inv.gpus[1]))
    # A MIG-enabled T4 no longer wins: GFD lets whole GPUs override MIG-enabled ones.
    assert node_labels(swapped, LabelSettings(), HOST)["nvidia.com/gpu.product"] == "NVIDIA-A30"


def test_all_gpus_in_mig_mode_under_strategy_none_have_no_replicas() -> None:
    inv = open_backend(simulate=str(Path(__file__).parent / "golden/labels/nodes/a100-single.yaml")).inventory()
    shared = LabelSettings(sharing=SharingStrategy.TIME_SLICING, resources=(ReplicatedResource("nvidia.com/gpu", 4),))
    labels = node_labels(inv, shared, HOST)
    assert labels["nvidia.com/gpu.replicas"] == "0"
    assert labels["nvidia.com/gpu.sharing-strategy"] == "none"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert "nvidia.com/mig.strategy" not in labels


def test_single_strategy_refuses_a_mig_gpu_without_mig_devices() -> None:
    inv = inventory("a100-mig")
    gpu0 = dataclasses.replace(inv.gpus[0], mig_devices=())
    gpu1 = dataclasses.replace(inv.gpus[1], mig_enabled=True, mig_devices=inv.gpus[0].mig_devices[:1])
    labels = node_labels(dataclasses.replace(inv, gpus=(gpu0, gpu1)), LabelSettings(MigStrategy.SINGLE), HOST)
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB-MIG-INVALID"
    assert (labels["nvidia.com/gpu.count"], labels["nvidia.com/gpu.memory"]) == ("0", "0")


def test_plus_in_a_mig_profile_becomes_a_dot_in_resource_names() -> None:
    inv = inventory("a100-mig")
    me = dataclasses.replace(inv.gpus[0].mig_devices[2], profile="1g.10gb+me")
    gpu0 = dataclasses.replace(inv.gpus[0], mig_devices=(me,))
    labels = node_labels(dataclasses.replace(inv, gpus=(gpu0, inv.gpus[1])), LabelSettings(MigStrategy.MIXED), HOST)
    assert labels["nvidia.com/mig-1g.10gb.me.product"] == "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb.me"
    assert labels["nvidia.com/mig-1g.10gb.me.count"] == "1"


def test_product_names_are_sanitised_as_gfd_does() -> None:
    assert sanitise("NVIDIA H100 80GB HBM3") == "NVIDIA-H100-80GB-HBM3"
    assert sanitise("NVIDIA RTX A6000 (Ada)") == "NVIDIA-RTX-A6000-Ada"
    assert sanitise("Tesla  P100-PCIE-16GB") == "Tesla-P100-PCIE-16GB"


@pytest.mark.parametrize(
    ("value", "fixed"),
    [
        ("Standard-PC-(Q35-+-ICH9,-2009)", "Standard-PC-Q35-ICH9-2009"),
        ("DGXH100", "DGXH100"),
        ("", ""),
        ("x" * 70, "x" * 63),
        ("-leading-and-trailing-", "leading-and-trailing"),
    ],
)
def test_label_values_are_made_valid_for_kubernetes(value: str, fixed: str) -> None:
    assert make_valid("nvidia.com/gpu.machine", value) == fixed
    assert valid_label_value(fixed)


def test_every_label_of_every_node_is_valid_in_kubernetes() -> None:
    for node in ("p100", "t4", "a30", "a100-mig", "h100x8", "mixed"):
        for strategy in MigStrategy:
            for key, value in node_labels(inventory(node), LabelSettings(strategy), HOST, 1).items():
                prefix, _, name = key.partition("/")
                assert len(name) <= 63 and valid_label_value(value), (node, key, value)
                assert prefix in ("nvidia.com", "feature.node.kubernetes.io")


def settings(tmp_path: Path, text: str, **flags: str) -> LabelSettings:
    cfg = tmp_path / "plugin.yaml"
    cfg.write_text(text)
    return resolve_settings(cfg, flags.get("mig_strategy"), {})


def test_mps_replicas_share_nvidia_com_gpu(tmp_path: Path) -> None:
    s = settings(tmp_path, "version: v1\nsharing:\n  mps:\n    resources:\n    - {name: nvidia.com/gpu, replicas: 2}\n")
    assert s.active_sharing_strategy is SharingStrategy.MPS
    assert s.replicated("nvidia.com/gpu") == ReplicatedResource("nvidia.com/gpu", 2)


def test_renamed_replicas_are_not_shared_products(tmp_path: Path) -> None:
    by_default = settings(tmp_path, "version: v1\nsharing:\n  timeSlicing:\n    renameByDefault: true\n"
                                    "    resources:\n    - {name: nvidia.com/gpu, replicas: 4}\n")
    explicit = settings(tmp_path, "version: v1\nsharing:\n  timeSlicing:\n    resources:\n"
                                  "    - {name: nvidia.com/gpu, replicas: 4, rename: nvidia.com/gpu-ts}\n")
    plain = settings(tmp_path, "version: v1\nsharing:\n  timeSlicing:\n    resources:\n"
                               "    - {name: nvidia.com/gpu, replicas: 4}\n")
    assert by_default.replicated("nvidia.com/gpu") == ReplicatedResource("nvidia.com/gpu", 4, renamed=True)
    assert explicit.replicated("nvidia.com/gpu") == ReplicatedResource("nvidia.com/gpu", 4, renamed=True)
    assert plain.replicated("nvidia.com/gpu") == ReplicatedResource("nvidia.com/gpu", 4, renamed=False)
    t4 = inventory("t4")
    assert node_labels(t4, explicit, HOST)["nvidia.com/gpu.product"] == "Tesla-T4"
    assert node_labels(t4, plain, HOST)["nvidia.com/gpu.product"] == "Tesla-T4-SHARED"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: v1\nflags:\n  migStrategy: double\n", "flags.migStrategy"),
        ("version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - {name: nvidia.com/gpu, replicas: 0}\n",
         "sharing.timeSlicing.resources[0].replicas"),
        ("version: v1\nsharing:\n  timeSlicing:\n    renameByDefault: yes please\n"
         "    resources:\n    - {name: nvidia.com/gpu, replicas: 2}\n", "sharing.timeSlicing.renameByDefault"),
    ],
)
def test_bad_config_files_name_the_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, text)
    assert str(info.value).startswith(f"config file {tmp_path / 'plugin.yaml'}: {message}")


def test_flag_beats_environment_beats_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "plugin.yaml"
    cfg.write_text("version: v1\nflags:\n  migStrategy: mixed\n")
    assert resolve_settings(cfg, None, {}).mig_strategy is MigStrategy.MIXED
    assert resolve_settings(cfg, None, {"MIG_STRATEGY": "single"}).mig_strategy is MigStrategy.SINGLE
    assert resolve_settings(cfg, None, {"GFD_MIG_STRATEGY": "single"}).mig_strategy is MigStrategy.SINGLE
    assert resolve_settings(cfg, "none", {"MIG_STRATEGY": "single"}).mig_strategy is MigStrategy.NONE
    assert resolve_settings(None, None, {"CONFIG_FILE": str(cfg)}).mig_strategy is MigStrategy.MIXED
    assert resolve_settings(None, None, {"GFD_CONFIG_FILE": str(cfg)}).mig_strategy is MigStrategy.MIXED
    with pytest.raises(ConfigError, match="environment variable GFD_MIG_STRATEGY: 'all' is not one of"):
        resolve_settings(None, None, {"GFD_MIG_STRATEGY": "all"})
    with pytest.raises(ConfigError, match=r"missing.yaml"):
        resolve_settings(tmp_path / "missing.yaml", None, {})


def test_a_parsed_document_gives_the_same_settings_as_its_file(tmp_path: Path) -> None:
    text = "version: v1\nflags:\n  migStrategy: mixed\nsharing:\n  timeSlicing:\n    renameByDefault: true\n" \
           "    resources:\n    - {name: nvidia.com/gpu, replicas: 4}\n"
    import yaml

    from kgpu.labels.config import settings_from_document

    assert settings_from_document(yaml.safe_load(text), "ConfigMap kgpu-config") == settings(tmp_path, text)
    with pytest.raises(ConfigError, match=r"^ConfigMap kgpu-config: flags.migStrategy"):
        settings_from_document({"version": "v1", "flags": {"migStrategy": "all"}}, "ConfigMap kgpu-config")
