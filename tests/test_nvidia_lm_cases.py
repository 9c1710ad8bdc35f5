"""NVIDIA's label test cases where the configuration decides labels (internal/lm/*_test.go, v0.20),
replayed against kgpu's labels, case for case.

NVIDIA's tests run its labelers over mock devices, built here as kgpu inventory (tests/nvidia_mocks.py);
the config is a config file, read as GFD reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import Pod
from nvidia_mocks import full_gpu, mig, mig_enabled_gpu, node

from kgpu.config.labels import LabelSettings, settings_from_plugin_config
from kgpu.errors import ConfigError
from kgpu.gpu.model import GPU, Inventory
from kgpu.labels import HostFacts, node_labels
from kgpu.labels.config import label_config, node_settings
from kgpu.labels.gfd import sanitise
from kgpu.labels.nodefeature import pod_owners

Labels = dict[str, str]


def settings(tmp_path: Path, doc: dict[str, Any]) -> LabelSettings:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    return settings_from_plugin_config(label_config({}, {}, path))


NOT_RESOURCE_LABELS = {"nvidia.com/gpu.machine", "nvidia.com/gpu.mode", "nvidia.com/gpu.present"}


def resource_labels(inventory: Inventory, s: LabelSettings) -> Labels:
    """What NVIDIA's resource labelers (and the mig.strategy labeler) give: ``nvidia.com/gpu.*``,
    ``nvidia.com/mig-*`` and ``nvidia.com/mig.strategy``."""
    labels = node_labels(inventory, s, HostFacts(machine_type="mock"))
    return {k: v for k, v in labels.items()
            if (k.startswith(("nvidia.com/gpu.", "nvidia.com/mig-")) or k == "nvidia.com/mig.strategy")
            and k not in NOT_RESOURCE_LABELS}


def gpu_labels(count: int, replicas: int, strategy: str, product: str, memory: int = 300,
               arch: bool = True) -> Labels:
    labels = {"nvidia.com/gpu.count": str(count), "nvidia.com/gpu.replicas": str(replicas),
              "nvidia.com/gpu.sharing-strategy": strategy, "nvidia.com/gpu.memory": str(memory),
              "nvidia.com/gpu.product": product}
    if arch:
        labels |= {"nvidia.com/gpu.family": "ampere", "nvidia.com/gpu.compute.major": "8",
                   "nvidia.com/gpu.compute.minor": "0"}
    return labels


def mig_labels(resource: str, count: int, replicas: int, strategy: str, product: str, memory: int,
               gi: int = 1, ci: int = 2, **attributes: int) -> Labels:
    values = {"count": count, "replicas": replicas, "sharing-strategy": strategy, "memory": memory,
              "product": product, "multiprocessors": attributes.get("multiprocessors", 0), "slices.gi": gi,
              "slices.ci": ci}
    for engine in ("copy", "decoder", "encoder", "jpeg", "ofa"):
        values[f"engines.{engine}"] = attributes.get(f"engines_{engine}", 0)
    return {f"{resource}.{k}": str(v) for k, v in values.items()}


def ts(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"sharing": {"timeSlicing": {"resources": list(resources)}}}


def mps(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"sharing": {"mps": {"resources": list(resources)}}}


GPU_X2 = {"name": "nvidia.com/gpu", "replicas": 2}
GPU_X2_RENAMED = {"name": "nvidia.com/gpu", "rename": "nvidia.com/gpu.shared", "replicas": 2}
NOT_GPU_X2 = {"name": "nvidia.com/not-gpu", "replicas": 2}


# --- resource_test.go: TestGPUResourceLabeler -----------------------------------------------------

@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        pytest.param({}, gpu_labels(1, 1, "none", "MOCKMODEL"), id="no sharing"),
        # kgpu's daemon refuses a sharing entry naming a resource no node can advertise (a typo; see
        # kgpu.config.names and test_a_typo_in_a_sharing_name_is_refused_on_the_node below); the
        # labels computed from such a config are NVIDIA's.
        pytest.param(ts(NOT_GPU_X2), gpu_labels(1, 1, "none", "MOCKMODEL"),
                     id="time-slicing ignores non-matching resource"),
        pytest.param(ts(GPU_X2), gpu_labels(1, 2, "time-slicing", "MOCKMODEL-SHARED"),
                     id="time-slicing appends suffix and doubles count"),
        pytest.param(ts(GPU_X2_RENAMED), gpu_labels(1, 2, "time-slicing", "MOCKMODEL"),
                     id="time-slicing renamed does not append suffix and doubles count"),
        pytest.param(mps(GPU_X2), gpu_labels(1, 2, "mps", "MOCKMODEL-SHARED"),
                     id="mps appends suffix and doubles count"),
        pytest.param(mps(GPU_X2_RENAMED), gpu_labels(1, 2, "mps", "MOCKMODEL"),
                     id="mps renamed does not append suffix and doubles count"),
    ],
)
def test_gpu_resource_labeler(tmp_path: Path, doc: dict[str, Any], expected: Labels) -> None:
    assert resource_labels(node(full_gpu()), settings(tmp_path, doc)) == expected


def test_gpu_resource_labeler_zero_count_returns_empty(tmp_path: Path) -> None:
    assert resource_labels(node(), settings(tmp_path, ts(GPU_X2))) == {}


def test_mps_of_a_resource_other_than_whole_gpus_is_refused(tmp_path: Path) -> None:
    # "mps ignores non-matching resource": NVIDIA reads the file and labels no sharing. kgpu refuses an
    # MPS entry that names no whole-GPU resource at start-up (kgpu.config.resolve.check_combination:
    # MPS shares whole GPUs only), so the mistake is said instead of silently sharing nothing.
    with pytest.raises(ConfigError, match=r"sharing\.mps\.resources\[0\]\.name: 'nvidia.com/not-gpu': MPS shares"):
        settings(tmp_path, mps(NOT_GPU_X2))


def test_a_typo_in_a_sharing_name_is_refused_on_the_node(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(ts(NOT_GPU_X2)))
    with pytest.raises(ConfigError, match=r"sharing\.timeSlicing\.resources\[0\]\.name: 'nvidia.com/not-gpu'"):
        node_settings(label_config({}, {}, path), node(full_gpu()))


# --- resource_test.go: TestMigResourceLabeler -----------------------------------------------------
# NVIDIA labels one MIG device (1g.300gb on MOCKMODEL) as ``resourceName``: nvidia.com/gpu is the
# single strategy's name for it, nvidia.com/mig-1g.1gb a mixed strategy's (the table's own name: the
# labeler is handed it, whatever the profile). Here the node decides the name, so the mixed cases
# use the device's own, nvidia.com/mig-1g.300gb, in the table's place.

MIG_300 = "nvidia.com/mig-1g.300gb"


@pytest.mark.parametrize(
    ("strategy", "doc", "expected"),
    [
        pytest.param("single", {}, mig_labels("nvidia.com/gpu", 1, 1, "none", "MOCKMODEL-MIG-1g.300gb", 300),
                     id="no sharing"),
        pytest.param("single", ts(GPU_X2),
                     mig_labels("nvidia.com/gpu", 1, 2, "time-slicing", "MOCKMODEL-MIG-1g.300gb-SHARED", 300),
                     id="shared appends suffix and doubles count"),
        pytest.param("single", ts(GPU_X2_RENAMED),
                     mig_labels("nvidia.com/gpu", 1, 2, "time-slicing", "MOCKMODEL-MIG-1g.300gb", 300),
                     id="renamed does not append suffix and doubles count"),
        pytest.param("mixed", ts(GPU_X2_RENAMED, {"name": MIG_300, "replicas": 2}),
                     mig_labels(MIG_300, 1, 2, "time-slicing", "MOCKMODEL-MIG-1g.300gb-SHARED", 300),
                     id="mig mixed appends shared"),
        pytest.param("mixed", ts({"name": MIG_300, "rename": f"{MIG_300}.shared", "replicas": 2}),
                     mig_labels(MIG_300, 1, 2, "time-slicing", "MOCKMODEL-MIG-1g.300gb", 300),
                     id="mig mixed rename does not append"),
    ],
)
def test_mig_resource_labeler(tmp_path: Path, strategy: str, doc: dict[str, Any], expected: Labels) -> None:
    s = settings(tmp_path, {"flags": {"migStrategy": strategy}, **doc})
    resource = "nvidia.com/gpu" if strategy == "single" else MIG_300
    labels = resource_labels(node(mig_enabled_gpu(0, mig(1, 2, 300))), s)
    assert {k: v for k, v in labels.items() if k.startswith(f"{resource}.")} == expected


def test_mig_resource_labeler_zero_count_returns_empty(tmp_path: Path) -> None:
    s = settings(tmp_path, {"flags": {"migStrategy": "mixed"}})
    assert not any(k.startswith("nvidia.com/mig-") for k in resource_labels(node(mig_enabled_gpu(0)), s))


# --- resource_test.go: TestSanitise ---------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a space separated string", "a-space-separated-string"),
        ("some(thing)else", "somethingelse"),
        ("some ( thing )else", "some-thing-else"),
        ("NVIDIA-TITAN-X-(Pascal)", "NVIDIA-TITAN-X-Pascal"),
        (" input  with multiple   spaces   ", "input-with-multiple-spaces"),
        ("some [ / thing / ]else", "some-thing-else"),
        ("some / thing /else", "some-thing-else"),
        ("some-thing.else_new", "some-thing.else_new"),
    ],
)
def test_sanitise(text: str, expected: str) -> None:
    assert sanitise(text) == expected


# --- mig-strategy_test.go: TestMigStrategyNoneLabels ----------------------------------------------

@pytest.mark.parametrize(
    ("gpus", "doc", "expected"),
    [
        pytest.param((), {}, {}, id="no devices returns empty labels"),
        pytest.param((full_gpu(),), {}, gpu_labels(1, 1, "none", "MOCKMODEL"),
                     id="single non-mig device returns non-mig (none) labels"),
        pytest.param((full_gpu(),), ts(GPU_X2), gpu_labels(1, 2, "time-slicing", "MOCKMODEL-SHARED"),
                     id="sharing is applied to single device"),
        pytest.param((full_gpu(), full_gpu()), ts(GPU_X2), gpu_labels(2, 2, "time-slicing", "MOCKMODEL-SHARED"),
                     id="sharing is applied to multiple devices"),
        pytest.param((mig_enabled_gpu(),), ts(GPU_X2), gpu_labels(1, 0, "none", "MOCKMODEL", arch=False),
                     id="sharing is not applied to single MIG device; replicas is zero"),
        pytest.param((mig_enabled_gpu(), mig_enabled_gpu()), ts(GPU_X2),
                     gpu_labels(2, 0, "none", "MOCKMODEL", arch=False),
                     id="sharing is not applied to multiple MIG device; replicas is zero"),
        pytest.param((mig_enabled_gpu(), full_gpu()), ts(GPU_X2), gpu_labels(2, 2, "time-slicing", "MOCKMODEL-SHARED"),
                     id="sharing is applied to MIG device and non-MIG device"),
    ],
)
def test_mig_strategy_none_labels(tmp_path: Path, gpus: tuple[GPU, ...], doc: dict[str, Any],
                                  expected: Labels) -> None:
    s = settings(tmp_path, {"flags": {"migStrategy": "none"}, **doc})
    assert resource_labels(node(*gpus), s) == expected


# --- mig-strategy_test.go: TestMigStrategySingleLabels --------------------------------------------

SINGLE = {"nvidia.com/mig.strategy": "single"}
ATTRS = {"multiprocessors": 12, "engines_copy": 13, "engines_decoder": 14, "engines_encoder": 15,
         "engines_jpeg": 16, "engines_ofa": 17}
INVALID = {"nvidia.com/gpu.count": "0", "nvidia.com/gpu.replicas": "0", "nvidia.com/gpu.sharing-strategy": "",
           "nvidia.com/gpu.memory": "0", "nvidia.com/gpu.product": "MOCKMODEL-MIG-INVALID"}
ARCH = {"nvidia.com/gpu.family": "ampere", "nvidia.com/gpu.compute.major": "8", "nvidia.com/gpu.compute.minor": "0"}


@pytest.mark.parametrize(
    ("gpus", "expected"),
    [
        pytest.param((), {}, id="no devices returns empty labels"),
        pytest.param((full_gpu(),), gpu_labels(1, 1, "none", "MOCKMODEL") | SINGLE,
                     id="single non-mig device returns non-mig (none) labels"),
        pytest.param((full_gpu(), full_gpu()), gpu_labels(2, 1, "none", "MOCKMODEL") | SINGLE,
                     id="multiple non-mig device returns non-mig (none) labels"),
        pytest.param((mig_enabled_gpu(0, mig(1, 2, 100)),),
                     mig_labels("nvidia.com/gpu", 1, 1, "none", "MOCKMODEL-MIG-1g.100gb", 100) | SINGLE,
                     id="single mig-enabled device returns mig labels"),
        pytest.param((mig_enabled_gpu(0, mig(1, 2, 100, **ATTRS)), mig_enabled_gpu(1, mig(1, 2, 100, **ATTRS))),
                     mig_labels("nvidia.com/gpu", 2, 1, "none", "MOCKMODEL-MIG-1g.100gb", 100, **ATTRS) | SINGLE,
                     id="multiple mig-enabled devices returns mig labels"),
        pytest.param((mig_enabled_gpu(),), INVALID | SINGLE, id="empty mig devices returns MIG invalid label"),
        pytest.param((mig_enabled_gpu(0, mig(1, 2, 100), mig(3, 4, 100)),), INVALID | SINGLE,
                     id="mixed mig config returns MIG invalid label"),
        pytest.param((mig_enabled_gpu(0, mig(1, 2, 100)), full_gpu()), INVALID | ARCH | SINGLE,
                     id="mixed mig enabled and disabled returns invalid config"),
        pytest.param((mig_enabled_gpu(0, mig(1, 2, 100)), full_gpu(), mig_enabled_gpu()), INVALID | ARCH | SINGLE,
                     id="enabled, disabled, and empty returns invalid config"),
    ],
)
def test_mig_strategy_single_labels(tmp_path: Path, gpus: tuple[GPU, ...], expected: Labels) -> None:
    s = settings(tmp_path, {"flags": {"migStrategy": "single"}})
    assert resource_labels(node(*gpus), s) == expected


# --- nvml_test.go: TestSharingLabeler -------------------------------------------------------------

@pytest.mark.parametrize(
    ("doc", "gpus", "capable"),
    [
        pytest.param({}, (full_gpu(),), "false", id="nil config"),  # (and "empty config": the same file)
        pytest.param(ts({"name": "nvidia.com/gpu", "replicas": 2}), (full_gpu(),), "false",
                     id="config with timeslicing replicas"),
        pytest.param(mps(GPU_X2), (full_gpu(),), "true", id="config with mps replicas no-mig-devices"),
        # NVIDIA fails the whole labelling (errMPSSharingNotSupported) and writes no labels; kgpu labels
        # mps.capable=false with a warning, so the node keeps its other labels (kgpu.labels.gfd.mps_capable).
        pytest.param(mps(GPU_X2), (mig_enabled_gpu(0, mig(1, 2, 100)),), "false",
                     id="config with mps replicas mig-devices"),
    ],
)
def test_sharing_labeler(tmp_path: Path, doc: dict[str, Any], gpus: tuple[GPU, ...], capable: str) -> None:
    s = settings(tmp_path, {"flags": {"migStrategy": "single"}, **doc} if gpus[0].mig_enabled else doc)
    assert node_labels(node(*gpus), s, HostFacts())["nvidia.com/mps.capable"] == capable



def test_sharing_labeler_config_with_no_mps_replicas_cannot_be_written_in_a_file(tmp_path: Path) -> None:
    # "config with no mps replicas" (Replicas: 1, mps.capable false) is built in Go; NVIDIA's file parser
    # refuses it ("number of replicas must be >= 2"), and so does kgpu's.
    with pytest.raises(ConfigError, match=r"sharing\.mps\.resources\[0\]\.replicas: 1 is below the minimum of 2"):
        settings(tmp_path, mps({"name": "nvidia.com/gpu", "replicas": 1}))


# --- nvml_test.go: TestMigCapabilityLabeler -------------------------------------------------------

@pytest.mark.parametrize(
    ("gpus", "capable"),
    [
        pytest.param((), None, id="no devices returns empty labels"),
        pytest.param((full_gpu(),), "false", id="single non-mig capable device returns mig.capable as false"),
        pytest.param((full_gpu(), full_gpu()), "false",
                     id="multiple non-mig capable devices returns mig.capable as false"),
        pytest.param((mig_enabled_gpu(),), "true", id="single mig capable device returns mig.capable as true"),
        pytest.param((full_gpu(), mig_enabled_gpu()), "true",
                     id="one mig capable device among multiple returns mig.capable as true"),
    ],
)
def test_mig_capability_labeler(gpus: tuple[GPU, ...], capable: str | None) -> None:
    assert node_labels(node(*gpus), LabelSettings(), HostFacts()).get("nvidia.com/mig.capable") == capable


# --- output_test.go: TestGetOwnerRefs -------------------------------------------------------------
# NVIDIA's getOwnerReferences errors for a pod it cannot read, and its caller logs that and goes on
# without owners; kgpu's pod_owners does both in one (warns, returns none).

class Pods:
    """The API server's pods, as NVIDIA's fake clientset holds them."""

    def __init__(self, *pods: Pod) -> None:
        self.pods = {(p.metadata.namespace, p.metadata.name): p for p in pods if p.metadata is not None}

    def get(self, res: type, name: str, namespace: str) -> Pod:
        found = self.pods.get((namespace, name))
        if found is None:
            raise ApiError.__new__(ApiError)  # 404: pods "<name>" not found
        return found


def pod(name: str, namespace: str, uid: str, *owners: OwnerReference) -> Pod:
    return Pod(metadata=ObjectMeta(name=name, namespace=namespace, uid=uid, ownerReferences=list(owners) or None))


GFD_POD = pod("gfd-pod", "gpu-operator", "pod-uid-123",
              OwnerReference(apiVersion="apps/v1", kind="DaemonSet", name="nvidia-gfd", uid="ds-uid-456"))


@pytest.mark.parametrize(
    ("pod_name", "namespace", "pods", "expected"),
    [
        pytest.param("", "default", (), [], id="empty pod name returns nil"),
        pytest.param("gfd-pod", "gpu-operator", (GFD_POD,), [
            {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "nvidia-gfd", "uid": "ds-uid-456",
             "controller": True},
            {"apiVersion": "v1", "kind": "Pod", "name": "gfd-pod", "uid": "pod-uid-123"},
        ], id="pod owned by DaemonSet returns two owner refs"),
        pytest.param("standalone-pod", "default", (pod("standalone-pod", "default", "pod-uid-789"),), [],
                     id="pod not owned by anything returns nil"),
        pytest.param("rs-pod", "default", (pod("rs-pod", "default", "pod-uid-abc", OwnerReference(
            apiVersion="apps/v1", kind="ReplicaSet", name="my-replicaset", uid="rs-uid-def")),), [],
                     id="pod owned by ReplicaSet returns nil"),
        pytest.param("nonexistent-pod", "default", (), [], id="pod not found returns error"),
    ],
)
def test_get_owner_refs(pod_name: str, namespace: str, pods: tuple[Pod, ...], expected: list[dict[str, Any]]) -> None:
    assert pod_owners(Pods(*pods), namespace, pod_name) == expected
