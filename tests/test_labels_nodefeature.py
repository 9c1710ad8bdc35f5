"""GFD's --use-node-feature-api: the labels as NFD's NodeFeature object nvidia-features-for-<node>."""

from __future__ import annotations

from typing import Any

import pytest
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.core_v1 import Pod

from kgpu.labels.nodefeature import NODE_FEATURE, apply_node_feature, node_feature_body, pod_owners


class FakeClient:
    def __init__(self) -> None:
        self.applied: list[tuple[dict[str, Any], str, bool]] = []

    def apply(self, obj: Any, field_manager: str, force: bool) -> None:
        self.applied.append((obj.to_dict(), field_manager, force))

    def get(self, res: type, name: str, namespace: str) -> Pod:
        assert (res, name, namespace) == (Pod, "gfd-abcde", "gpu-operator")
        owner = OwnerReference(apiVersion="apps/v1", kind="DaemonSet", name="gpu-feature-discovery", uid="ds-uid")
        return Pod(metadata=ObjectMeta(name="gfd-abcde", uid="pod-uid", ownerReferences=[owner]))


def test_the_object_is_named_labelled_and_shaped_as_gfd_writes_it() -> None:
    body = node_feature_body("gpu-operator", "gpu-node-1", {"nvidia.com/gpu.count": "8", "a": "b"})
    assert body["apiVersion"] == "nfd.k8s-sigs.io/v1alpha1" and body["kind"] == "NodeFeature"
    assert body["metadata"] == {"name": "nvidia-features-for-gpu-node-1", "namespace": "gpu-operator",
                                "labels": {"nfd.node.kubernetes.io/node-name": "gpu-node-1"}}
    assert body["spec"]["labels"] == {"a": "b", "nvidia.com/gpu.count": "8"}


def test_it_is_applied_owned_by_the_labelers_daemonset_and_pod() -> None:
    client = FakeClient()
    owners = pod_owners(client, "gpu-operator", "gfd-abcde")
    assert owners == [
        {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "gpu-feature-discovery", "uid": "ds-uid",
         "controller": True},
        {"apiVersion": "v1", "kind": "Pod", "name": "gfd-abcde", "uid": "pod-uid"},
    ]
    apply_node_feature(client, "gpu-operator", "gpu-node-1", {"nvidia.com/gpu.present": "true"}, owners)
    ((body, manager, force),) = client.applied
    assert (manager, force) == ("kgpu", True)
    assert body["metadata"]["ownerReferences"][0]["name"] == "gpu-feature-discovery"
    assert body["spec"]["labels"] == {"nvidia.com/gpu.present": "true"}
    assert pod_owners(client, "gpu-operator", "") == []  # no --pod-name: no owner, as GFD


def test_the_resource_is_nfds() -> None:
    assert (NODE_FEATURE._api_info.resource.group, NODE_FEATURE._api_info.resource.version,  # type: ignore[attr-defined]
            NODE_FEATURE._api_info.plural) == ("nfd.k8s-sigs.io", "v1alpha1", "nodefeatures")  # type: ignore[attr-defined]


def test_the_labeler_needs_the_nodes_name_for_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "GFD_USE_NODE_FEATURE_API": "true"}
    proc = subprocess.run([sys.executable, "-m", "kgpu", "--simulate", "t4", "labeler", "--oneshot",
                           "--root", str(tmp_path)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert "kgpu: error: --use-node-feature-api needs the node's name: --node-name or NODE_NAME" in proc.stderr
