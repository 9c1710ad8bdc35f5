"""Label the Node object directly: server-side apply with field manager ``kgpu``.

Each apply sends the complete set of labels kgpu owns. Server-side apply then keeps exactly
that set under the ``kgpu`` manager: a label kgpu applied before and leaves out now is removed,
labels set by anyone else are untouched. ``force`` takes over labels another manager set
(for example a hand-made ``kubectl label … nvidia.com/gpu.present=true``).

The Node must exist: apply would otherwise create one, so the node is read first (RBAC: ``get``
and ``patch`` on nodes, nothing more).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kgpu.errors import KgpuError

log = logging.getLogger(__name__)

FIELD_MANAGER = "kgpu"


class NodeLabelError(KgpuError):
    """The API server refused or could not be reached."""


def apply_body(node: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """The apply configuration sent for ``node``: only metadata.name and the owned labels."""
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": dict(sorted(labels.items()))}}


def kube_client(kubeconfig: Path | None = None) -> Any:
    """A lightkube client from ``kubeconfig``, else as lightkube finds one: the in-cluster service
    account, then ``$KUBECONFIG``, then ``~/.kube/config``."""
    import yaml
    from lightkube import Client, KubeConfig
    from lightkube.core.exceptions import ConfigError as LightkubeConfigError

    try:
        config = KubeConfig.from_file(kubeconfig) if kubeconfig is not None else KubeConfig.from_env()
        return Client(config=config, field_manager=FIELD_MANAGER, trust_env=False)
    except (LightkubeConfigError, OSError, ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError) as exc:
        where = str(kubeconfig) if kubeconfig else "the in-cluster service account, $KUBECONFIG or ~/.kube/config"
        raise NodeLabelError(f"no usable Kubernetes configuration from {where}: {exc}") from exc


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP library's base errors (lightkube moved from httpx to httpx2) and OSError."""
    import importlib

    found: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(module).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def apply_node_labels(client: Any, node: str, labels: Mapping[str, str]) -> dict[str, str]:
    """Apply ``labels`` as kgpu's complete set on ``node``; returns the node's labels afterwards."""
    from lightkube import ApiError
    from lightkube.resources.core_v1 import Node

    try:
        client.get(Node, node)
        result = client.apply(
            Node.from_dict(apply_body(node, labels)), field_manager=FIELD_MANAGER, force=True
        )
    except ApiError as exc:
        status = exc.status
        if status.code == 404:
            raise NodeLabelError(f"node {node!r} not found in the cluster; pass the node's name to --node") from exc
        if status.code == 403:
            raise NodeLabelError(
                f"not allowed to label node {node!r}: {status.message}; the labeler's ClusterRole needs "
                f"get and patch on nodes (deploy/manifests/labeler.yaml)"
            ) from exc
        raise NodeLabelError(f"labelling node {node!r} failed: {status.code} {status.message}") from exc
    except _transport_errors() as exc:
        raise NodeLabelError(f"cannot reach the Kubernetes API server to label node {node!r}: {exc}") from exc
    return dict(result.metadata.labels or {})
