"""The e2e suite's check between modules (tests/e2e/leftovers.py): what a module added and did not take away is
named, one line each; what it found, or took away, is not."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "e2e"))

from leftovers import Snapshot, kgpu_key, left

CLEAN = Snapshot(
    labels={"nvidia.com/gpu.present": "true"}, annotations={}, taints=frozenset(), conditions=frozenset(),
    allocatable={}, capacity=frozenset({"nvidia.com/gpu"}),
    objects=frozenset({"namespace default", "namespace kube-system", "configmap kube-system/kube-root-ca.crt"}),
)


def test_a_node_left_as_found_has_nothing_to_say() -> None:
    assert left(CLEAN, CLEAN) == []


def test_what_the_operators_mig_test_left_is_named() -> None:
    # Given the node after a module that set a MIG layout and uninstalled with its device plugin still counted
    after = replace(CLEAN, labels=CLEAN.labels | {"nvidia.com/mig.config.state": "success"},
                    annotations={"kgpu.io/mig.config.message": "ok"},
                    allocatable={"nvidia.com/mig-1g.10gb": 56}, conditions=frozenset({"KgpuDevicePlugin"}),
                    taints=frozenset({"nvidia.com/gpu=true:NoSchedule"}))
    assert left(CLEAN, after) == [
        "node label nvidia.com/mig.config.state=success",
        "node annotation kgpu.io/mig.config.message=ok",
        "node taint nvidia.com/gpu=true:NoSchedule",
        "node condition KgpuDevicePlugin",
        "allocatable nvidia.com/mig-1g.10gb: 56 (was 0: something still advertises it)",
    ]


def test_a_changed_label_says_what_it_was() -> None:
    after = replace(CLEAN, labels={"nvidia.com/gpu.present": "false"})
    assert left(CLEAN, after) == ["node label nvidia.com/gpu.present=false (was true)"]


def test_a_left_namespace_is_one_line_but_objects_in_old_namespaces_are_each_named() -> None:
    after = replace(CLEAN, objects=CLEAN.objects | {
        "namespace kgpu-e2e", "pod kgpu-e2e/two-gpus", "configmap kgpu-e2e/kube-root-ca.crt",
        "daemonset.apps kube-system/kgpu-device-plugin", "helm-release kube-system/kgpu",
        "customresourcedefinition.apiextensions.k8s.io clusterpolicies.kgpu.io"})
    assert left(CLEAN, after) == [
        "customresourcedefinition.apiextensions.k8s.io clusterpolicies.kgpu.io",
        "daemonset.apps kube-system/kgpu-device-plugin",
        "helm-release kube-system/kgpu",
        "namespace kgpu-e2e",
    ]


def test_what_the_module_found_or_removed_is_not_its_leftover() -> None:
    # Given a node that already counted 8 GPUs and carried a file, and a module that removed a namespace
    before = replace(CLEAN, allocatable={"nvidia.com/gpu": 8}, files=frozenset({"/run/kgpu/plugin.json"}),
                     objects=CLEAN.objects | {"namespace old"})
    after = replace(CLEAN, allocatable={"nvidia.com/gpu": 8}, files=frozenset({"/run/kgpu/plugin.json"}))
    assert left(before, after) == []
    # A count the kubelet keeps for a plugin that left (capacity only) is not the module's: the run cleans it.
    assert left(CLEAN, replace(CLEAN, capacity=frozenset({"nvidia.com/gpu", "nvidia.com/mig-1g.10gb"}))) == []


def test_a_gpu_count_above_what_the_module_found_is_named() -> None:
    before = replace(CLEAN, allocatable={"nvidia.com/gpu": 8})
    after = replace(CLEAN, allocatable={"nvidia.com/gpu": 32}, files=frozenset({"/var/run/cdi/k8s.gpu.kgpu.io-x.json"}))
    assert left(before, after) == ["allocatable nvidia.com/gpu: 32 (was 8: something still advertises it)",
                                   "file /var/run/cdi/k8s.gpu.kgpu.io-x.json"]


def test_only_kgpus_keys_are_watched_on_the_node() -> None:
    assert kgpu_key("nvidia.com/gpu.product") and kgpu_key("kgpu.io/mig.config.message")
    assert kgpu_key("feature.node.kubernetes.io/pci-10de.present")
    assert not kgpu_key("kubernetes.io/hostname") and not kgpu_key("node.kubernetes.io/not-ready")


def test_a_cluster_scoped_object_named_like_a_left_namespace_is_still_named() -> None:
    after = replace(CLEAN, objects=CLEAN.objects | {"namespace kgpu", "clusterrole.rbac.authorization.k8s.io kgpu"})
    assert left(CLEAN, after) == ["clusterrole.rbac.authorization.k8s.io kgpu", "namespace kgpu"]
