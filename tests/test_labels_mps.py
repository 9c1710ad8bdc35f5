"""Labels of a node that offers kgpu's MPS slices: GFD's MPS labels, with replicas counted per GPU.

Each story gives a ``sharing.mps`` config on the simulated h100x8 (eight H100s), labels the node, and
checks the labels against GFD's rules (tests/golden/labels/README.md) and against what kgpu's own
device plugin advertises for the same config.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from dp_helpers import build_logic

from kgpu.config.resolve import resolve_config
from kgpu.gpu import Inventory, open_backend
from kgpu.labels import HostFacts, LabelSettings, SharingStrategy, node_labels
from kgpu.labels.config import resolve_settings
from kgpu.lint.offered import from_labels

HOST = HostFacts(machine_type="DGXH100", pci_classes={})
H100 = "NVIDIA-H100-80GB-HBM3"


def h100x8() -> Inventory:
    return open_backend(simulate="h100x8").inventory()


def mps(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text("version: v1\nsharing:\n  mps:\n" + body)
    return path


def labels_for(path: Path, inventory: Inventory | None = None) -> dict[str, str]:
    return node_labels(inventory or h100x8(), resolve_settings(path, None, {}), HOST)


def sharing(labels: dict[str, str]) -> tuple[str, str, str]:
    return (labels["nvidia.com/gpu.product"], labels["nvidia.com/gpu.replicas"],
            labels["nvidia.com/gpu.sharing-strategy"])


def test_slices_on_every_gpu_share_them_through_mps(tmp_path: Path) -> None:
    # Given every H100 split into two 20 GB slices and four 10 GB slices
    path = mps(tmp_path, "    slices:\n"
                         "    - {name: nvidia.com/gpu-20gb, memory: 20Gi, computePercent: 25, count: 2}\n"
                         "    - {name: nvidia.com/gpu-10gb, memory: 10Gi, computePercent: 12, count: 3}\n")
    # When the node is labelled
    labels = labels_for(path)
    # Then the GPUs are shared through MPS, five clients each; the product keeps its name, because the
    # slices are advertised under their own names (as renamed replicas are), and MPS is capable
    assert sharing(labels) == (H100, "5", "mps")
    assert labels["nvidia.com/mps.capable"] == "true"
    assert labels["nvidia.com/gpu.count"] == "8"
    # And each slice resource is named by its own labels, as GFD names MIG resources
    assert {k: v for k, v in labels.items() if k.startswith("nvidia.com/gpu-")} == {
        "nvidia.com/gpu-20gb.count": "16", "nvidia.com/gpu-20gb.memory": "20480",
        "nvidia.com/gpu-20gb.sharing-strategy": "mps",
        "nvidia.com/gpu-10gb.count": "24", "nvidia.com/gpu-10gb.memory": "10240",
        "nvidia.com/gpu-10gb.sharing-strategy": "mps",
    }


def test_gpus_with_different_slice_counts_are_labelled_by_the_first_shared_gpu(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given GPU 0 with six slices and GPUs 1-7 with two
    path = mps(tmp_path, "    slices:\n"
                         "    - {name: nvidia.com/gpu-20gb, memory: 20Gi, computePercent: 25, count: 2}\n"
                         "    - {name: nvidia.com/gpu-5gb, memory: 5Gi, computePercent: 10, count: 4, devices: [0]}\n")
    # When labelled
    with caplog.at_level(logging.WARNING, logger="kgpu.labels.gfd"):
        labels = labels_for(path)
    # Then GPU 0 (the lowest-index GPU of the product) decides, and kgpu warns that the counts differ
    assert sharing(labels) == (H100, "6", "mps")
    (warning,) = [r for r in caplog.records if "different numbers of MPS slices" in r.getMessage()]
    assert warning.__dict__["slices_per_gpu"] == {0: 6, 1: 2, 2: 2, 3: 2, 4: 2, 5: 2, 6: 2, 7: 2}
    assert labels["nvidia.com/gpu-5gb.count"] == "4" and labels["nvidia.com/gpu-20gb.count"] == "16"


def test_slices_on_later_gpus_only_still_make_the_node_mps_shared(tmp_path: Path) -> None:
    # Given slices on GPUs 3 and 5 only (GPUs 0-2, 4, 6, 7 stay whole)
    path = mps(tmp_path, "    slices:\n"
                         "    - {name: nvidia.com/gpu-40gb, memory: 40Gi, computePercent: 50, count: 1, devices: [5]}\n"
                         "    - {name: nvidia.com/gpu-9gb, memory: 9Gi, computePercent: 9, count: 3, devices: [3,5]}\n")
    # When labelled, then the first GPU with slices (GPU 3: three slices) sets replicas, as GFD labels
    # the config's replicas whichever GPUs its devices select
    labels = labels_for(path)
    assert sharing(labels) == (H100, "3", "mps")
    assert labels["nvidia.com/gpu-40gb.count"] == "1" and labels["nvidia.com/gpu-9gb.count"] == "6"


def test_one_slice_per_gpu_is_still_served_through_mps(tmp_path: Path) -> None:
    # Given one limited slice per GPU: a single MPS client, held to 40 GB and half the SMs
    path = mps(tmp_path, "    slices:\n    - {name: nvidia.com/gpu-40gb, memory: 40Gi, computePercent: 50}\n")
    labels = labels_for(path)
    # Then the GPU runs behind its MPS daemon: mps, one replica, MPS capable
    assert sharing(labels) == (H100, "1", "mps")
    assert labels["nvidia.com/mps.capable"] == "true"


@pytest.mark.parametrize(
    ("header", "rename", "product"),
    [
        ("", "", f"{H100}-SHARED"),  # nvidia.com/gpu itself is shared: GFD's -SHARED
        ("    renameByDefault: true\n", "", H100),  # advertised as nvidia.com/gpu.shared: no suffix
        ("", ", rename: nvidia.com/gpu-half", H100),
    ],
)
@pytest.mark.parametrize(("replicated", "sliced", "replicas"), [("[0, 1]", "[2, 3]", "2"), ("[1, 2]", "[0]", "3")])
def test_equal_replicas_next_to_slices_and_the_shared_suffix(
    tmp_path: Path, header: str, rename: str, product: str, replicated: str, sliced: str, replicas: str
) -> None:
    # Given some GPUs split into two equal replicas of nvidia.com/gpu and others into three 20 GB slices
    path = mps(tmp_path, header + "    resources:\n"
                                  f"    - {{name: nvidia.com/gpu, replicas: 2, devices: {replicated}{rename}}}\n"
                                  "    slices:\n"
                                  "    - {name: nvidia.com/gpu-20gb, memory: 20Gi, computePercent: 30, count: 3, "
                                  f"devices: {sliced}}}\n")
    labels = labels_for(path)
    # Then the lowest-index shared GPU gives the replicas, whichever way it is split, and -SHARED follows
    # GFD's rule for the nvidia.com/gpu entry: a pod asking for nvidia.com/gpu may get a shared one
    assert sharing(labels) == (product, replicas, "mps")


def test_an_nvidia_only_config_keeps_gfds_labels(tmp_path: Path) -> None:
    # Given NVIDIA's equal replicas only, on GPUs 2 and 3: GFD ignores devices, so does kgpu
    labels = labels_for(mps(tmp_path, "    resources:\n    - {name: nvidia.com/gpu, replicas: 4, devices: [2, 3]}\n"))
    assert sharing(labels) == (f"{H100}-SHARED", "4", "mps")
    assert not [k for k in labels if k.startswith("nvidia.com/gpu-")]


def test_a_device_the_node_lacks_leaves_its_entry_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = mps(tmp_path, "    slices:\n"
                         "    - {name: nvidia.com/gpu-20gb, memory: 20Gi, computePercent: 5, count: 2, devices: [9]}\n"
                         "    - {name: nvidia.com/gpu-10gb, memory: 10Gi, computePercent: 9, count: 3, devices: [1]}\n")
    with caplog.at_level(logging.WARNING, logger="kgpu.labels.gfd"):
        labels = labels_for(path)
    assert sharing(labels) == (H100, "3", "mps")
    assert "nvidia.com/gpu-20gb.count" not in labels
    assert any("selects GPUs this node does not have" in r.getMessage() for r in caplog.records)


def test_dynamic_shares_are_nvidia_gpu_replicas_shared_through_mps(tmp_path: Path) -> None:
    # Given every GPU shared dynamically by up to 6 containers (their shares carved out per pod)
    labels = labels_for(mps(tmp_path, "    dynamic: {shares: 6}\n"))
    # Then the node is labelled as NVIDIA labels MPS replicas of nvidia.com/gpu
    assert sharing(labels) == (f"{H100}-SHARED", "6", "mps")
    assert labels["nvidia.com/gpu.count"] == "8"


def test_settings_without_slices_or_replicas_share_nothing() -> None:
    assert LabelSettings(sharing=SharingStrategy.MPS).active_sharing_strategy is SharingStrategy.NONE


@pytest.mark.parametrize(
    "body",
    [
        "    slices:\n    - {name: nvidia.com/gpu-20gb, memory: 20Gi, computePercent: 25, count: 2}\n"
        "    - {name: nvidia.com/gpu-5gb, memory: 5Gi, computePercent: 10, count: 4, devices: [0, 7]}\n",
        "    slices:\n    - {name: nvidia.com/gpu-20gb, memory: 20Gi, computePercent: 25, count: 3, devices: [4, 6]}\n",
        "    resources:\n    - {name: nvidia.com/gpu, replicas: 4, devices: [1, 2]}\n"
        "    slices:\n    - {name: nvidia.com/gpu-10gb, memory: 10Gi, computePercent: 10, count: 5, devices: [3]}\n",
        "    dynamic: {shares: 6}\n",
    ],
)
def test_labels_agree_with_what_the_device_plugin_advertises(tmp_path: Path, body: str) -> None:
    # Given a slices config, when kgpu's device plugin lays it out and the labeler labels the node
    path = mps(tmp_path, body)
    inventory = h100x8()
    logic = build_logic(inventory, resolve_config({}, {}, path))
    labels = labels_for(path, inventory)
    devices = {r.name: r.devices for r in logic.resources()}
    # Then gpu.replicas is the number of devices the plugin advertises on the first GPU it shares
    shared = sorted({d.gpu_uuid for r, ds in devices.items() for d in ds if d.replica is not None},
                    key=lambda uuid: next(g.index for g in inventory.gpus if g.uuid == uuid))
    on_first = sum(1 for ds in devices.values() for d in ds if d.gpu_uuid == shared[0])
    assert labels["nvidia.com/gpu.replicas"] == str(on_first)
    # And every slice resource's count label is what the plugin advertises (the kubelet's allocatable)
    for name, ds in devices.items():
        if name != "nvidia.com/gpu":
            assert labels[f"{name}.count"] == str(len(ds))
            assert {d.mps_memory_mib for d in ds} == {int(labels[f"{name}.memory"])}


def test_kgpu_lint_reads_slice_names_from_the_labels_and_invents_no_rename(tmp_path: Path) -> None:
    # Given the labels of a node with slices (gpu.replicas > 1, no -SHARED suffix)
    path = mps(tmp_path, "    slices:\n    - {name: nvidia.com/gpu-20gb, memory: 20Gi, computePercent: 25, count: 2}\n")
    text = "".join(f"{k}={v}\n" for k, v in labels_for(path).items())
    # Then kgpu lint --labels offers the slice resource, and no nvidia.com/gpu.shared
    offered = from_labels(text, "labels")
    assert "nvidia.com/gpu-20gb" in offered
    assert "nvidia.com/gpu.shared" not in offered
