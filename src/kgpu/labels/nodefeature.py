"""GFD's ``--use-node-feature-api``: publish the labels as an NFD ``NodeFeature`` object, for NFD to apply.

As GFD's ``nodeFeatureObject``: one object ``nvidia-features-for-<node>`` in ``--namespace``, labelled
``nfd.node.kubernetes.io/node-name: <node>``, whose ``spec.labels`` are the labels; owned by the
labeler's DaemonSet and pod (from ``--pod-name``) when they can be found, so deleting the DaemonSet
removes it. kgpu writes it by server-side apply (field manager ``kgpu``): created or updated alike.

Example::

    apply_node_feature(client, "gpu-operator", "gpu-node-1", labels, owners=pod_owners(client, ns, pod))
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.core_v1 import Pod

from kgpu.errors import KgpuError
from kgpu.kubeapi import transport_errors

log = logging.getLogger(__name__)

NODE_FEATURE = create_namespaced_resource("nfd.k8s-sigs.io", "v1alpha1", "NodeFeature", "nodefeatures")
NODE_NAME_LABEL = "nfd.node.kubernetes.io/node-name"
NAME_PREFIX = "nvidia-features-for"


class NodeFeatureError(KgpuError):
    """The NodeFeature object could not be written; the message says why and what to do."""


def node_feature_name(node: str) -> str:
    return f"{NAME_PREFIX}-{node}"


def node_feature_body(namespace: str, node: str, labels: Mapping[str, str],
                      owners: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": node_feature_name(node), "namespace": namespace,
                                "labels": {NODE_NAME_LABEL: node}}
    if owners:
        metadata["ownerReferences"] = owners
    return {
        "apiVersion": "nfd.k8s-sigs.io/v1alpha1",
        "kind": "NodeFeature",
        "metadata": metadata,
        "spec": {"features": {"flags": {}, "attributes": {}, "instances": {}}, "labels": dict(sorted(labels.items()))},
    }


def pod_owners(client: Any, namespace: str, pod_name: str) -> list[dict[str, Any]]:
    """GFD's getOwnerReferences: the pod's DaemonSet (as controller) and the pod; none when unknown."""
    if not pod_name:
        return []
    try:
        pod = client.get(Pod, pod_name, namespace=namespace)
    except (ApiError, *transport_errors()) as exc:  # type: ignore[misc]
        log.warning("cannot read the labeler's pod; the NodeFeature object gets no owner", extra={
            "pod": f"{namespace}/{pod_name}", "error": str(exc)[:300]})
        return []
    daemonset = next((o for o in pod.metadata.ownerReferences or () if o.kind == "DaemonSet"), None)
    if daemonset is None:
        return []
    return [
        {"apiVersion": daemonset.apiVersion, "kind": "DaemonSet", "name": daemonset.name, "uid": daemonset.uid,
         "controller": True},
        {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": pod.metadata.uid},
    ]


def apply_node_feature(client: Any, namespace: str, node: str, labels: Mapping[str, str],
                       owners: list[dict[str, Any]] | None = None) -> None:
    """Create or update the node's NodeFeature object with ``labels``."""
    body = node_feature_body(namespace, node, labels, owners)
    try:
        client.apply(NODE_FEATURE.from_dict(body), field_manager="kgpu", force=True)
    except ApiError as exc:
        status = exc.status
        if status.code == 404:
            raise NodeFeatureError(
                f"NodeFeature objects cannot be written in namespace {namespace!r}: {status.message}; install Node "
                "Feature Discovery (its NodeFeature CRD), or run without --use-node-feature-api") from exc
        raise NodeFeatureError(f"writing NodeFeature {namespace}/{node_feature_name(node)} failed: "
                               f"{status.code} {status.message}") from exc
    except transport_errors() as exc:
        raise NodeFeatureError(
            f"cannot reach the Kubernetes API server to write the NodeFeature object: {exc}") from exc
