"""The README's config examples do what the README says they do: each is run through the device plugin's
decisions and the labels on the simulated node the README names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from dp_helpers import EMPTY_HOST, node

from kgpu.config.labels import SharingStrategy
from kgpu.config.resolve import resolve_config
from kgpu.deviceplugin.daemon import node_resources as build_logic
from kgpu.errors import ConfigError
from kgpu.labels.config import node_settings
from kgpu.labels.gfd import node_labels
from kgpu.labels.host import HostFacts
from kgpu.sharing.layout import build_layout

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def yaml_block_after(heading: str, index: int = 0) -> str:
    """The ``index``-th yaml code block of the README section that starts with ``heading``."""
    section = README.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```yaml\n(.*?)```", section, re.S)[index]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def advertised(tmp_path: Path, text: str, fixture: str = "h100x8") -> dict[str, int]:
    logic = build_logic(node(fixture), resolve_config({}, {}, write(tmp_path, text)), EMPTY_HOST)
    return {r.name: len(r.devices) for r in logic.resources()}


def labels(tmp_path: Path, text: str, fixture: str = "h100x8") -> dict[str, str]:
    config = resolve_config({}, {}, write(tmp_path, text), program="gpu-feature-discovery")
    return node_labels(node(fixture), node_settings(config, node(fixture)), HostFacts())


def test_the_device_plugin_config_example_shares_the_renamed_h100s_in_the_plugin_and_the_labels(
        tmp_path: Path) -> None:
    text = yaml_block_after("## Device plugin config")
    # "advertises 10 nvidia.com/h100.shared (4 on each of GPUs 0 and 1, 2 on GPU 2) and the other 5 GPUs whole"
    assert advertised(tmp_path, text) == {"nvidia.com/h100": 5, "nvidia.com/h100.shared": 10}
    # "the labels say nvidia.com/gpu.replicas=4 and nvidia.com/gpu.sharing-strategy=time-slicing"
    got = labels(tmp_path, text)
    assert (got["nvidia.com/gpu.replicas"], got["nvidia.com/gpu.sharing-strategy"]) == ("4", "time-slicing")
    assert got["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"  # renamed replicas: no -SHARED


def test_sharing_a_resource_the_rename_took_away_stops_plugin_and_labels_with_the_names(tmp_path: Path) -> None:
    # The README's old example: H100s renamed, time-slicing still naming nvidia.com/gpu (it silently
    # advertised 8 unshared nvidia.com/h100 while the labels said replicas=4).
    text = yaml_block_after("## Device plugin config").replace("name: nvidia.com/h100,", "name: nvidia.com/gpu,")
    for run in (advertised, labels):
        with pytest.raises(ConfigError) as exc:
            run(tmp_path, text)
        assert ("sharing.timeSlicing.resources[0].name: 'nvidia.com/gpu' is not a resource this node advertises; "
                "it advertises nvidia.com/h100; resources.gpus renames") in str(exc.value)


def test_a_typo_in_a_shared_resource_is_refused_and_a_mig_profile_some_nodes_lack_is_not(tmp_path: Path) -> None:
    typo = "sharing: {timeSlicing: {resources: [{name: nvidia.com/gpus, replicas: 2}]}}"
    with pytest.raises(ConfigError, match=r"'nvidia.com/gpus' is not a resource this node advertises"):
        advertised(tmp_path, typo, "t4")
    # One cluster-wide config: a T4 node has no 1g.10gb MIG devices; NVIDIA skips the entry, so does kgpu.
    cluster = "sharing: {timeSlicing: {resources: [{name: nvidia.com/mig-1g.10gb, replicas: 2}]}}"
    assert advertised(tmp_path, cluster, "t4") == {"nvidia.com/gpu": 1}
    assert labels(tmp_path, cluster, "t4")["nvidia.com/gpu.replicas"] == "1"


def test_mps_replicas_of_a_renamed_gpu_share_the_renamed_resource(tmp_path: Path) -> None:
    text = ("resources: {gpus: [{pattern: 'NVIDIA H100*', name: h100}]}\n"
            "sharing: {mps: {resources: [{name: h100, replicas: 4, devices: [0]}]}}\n")
    assert advertised(tmp_path, text) == {"nvidia.com/h100": 11}  # 7 whole GPUs + 4 MPS replicas of GPU 0
    got = labels(tmp_path, text)
    assert (got["nvidia.com/gpu.replicas"], got["nvidia.com/gpu.sharing-strategy"]) == ("4", "mps")


def test_the_mps_slices_example_fits_gpu_0_and_four_10gb_slices_do_not(tmp_path: Path) -> None:
    text = yaml_block_after("## Fractional GPUs: MPS slices")
    config = resolve_config({}, {}, write(tmp_path, text))
    assert config.sharing.mps is not None
    layout = build_layout(node("h100x8"), config.sharing.mps)
    assert [(s.resource, s.gpu_index) for s in layout.slices] == [
        ("nvidia.com/gpu-20gb", 0)] * 2 + [("nvidia.com/gpu-10gb", 0)] * 3
    # "with count: 4 ... oversubscribes memory of GPU 0 (...): 2×20480 + 4×10240 = 81920 MiB > 81559 MiB"
    config = resolve_config({}, {}, write(tmp_path, text.replace("count: 3", "count: 4")))
    assert config.sharing.mps is not None
    with pytest.raises(ConfigError, match=re.escape("2×20480 + 4×10240 = 81920 MiB > 81559 MiB")):
        build_layout(node("h100x8"), config.sharing.mps)


def test_the_helm_sharing_values_advertise_each_gpu_four_times(tmp_path: Path) -> None:
    section = README.split("cat > sharing.yaml <<'YAML'\n", 1)[1].split("YAML\n", 1)[0]
    text = yaml.safe_dump(yaml.safe_load(section)["config"])
    # "each GPU advertised as 4 nvidia.com/gpu" ... "nvidia.com/gpu: 8 (32 with the sharing above)"
    assert advertised(tmp_path, "") == {"nvidia.com/gpu": 8}
    assert advertised(tmp_path, text) == {"nvidia.com/gpu": 32}
    got = labels(tmp_path, text)
    assert (got["nvidia.com/gpu.replicas"], got["nvidia.com/gpu.product"]) == ("4", "NVIDIA-H100-80GB-HBM3-SHARED")
    assert node_settings(resolve_config({}, {}, write(tmp_path, text)), node("h100x8")).sharing is \
        SharingStrategy.TIME_SLICING


@pytest.mark.parametrize("fixture", ["p100", "t4", "a30", "a100-mig", "h100x8", "mixed"])
@pytest.mark.parametrize("strategy", ["none", "single", "mixed"])
def test_the_labels_name_the_resources_the_plugin_advertises(fixture: str, strategy: str) -> None:
    from kgpu.config.names import node_resource_names
    from kgpu.deviceplugin.devices import base_devices

    config = resolve_config({"mig-strategy": strategy}, {})
    try:
        plugin = set(base_devices(node(fixture), config, mig_minors={}))
    except ConfigError:
        return  # e.g. single on a node that mixes MIG profiles: the plugin refuses the node
    whole, mig = node_resource_names(node(fixture), config)
    assert plugin == {*whole, *mig}
