"""The one way kgpu's components reach the Kubernetes API server: a lightkube client, and what its calls raise.

Example::

    client = kube_client()                       # in-cluster, then $KUBECONFIG, then ~/.kube/config
    try:
        client.get(Node, "node-1")
    except (ApiError, *transport_errors()) as exc:
        ...
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml
from lightkube import Client, KubeConfig
from lightkube.core.exceptions import ConfigError as LightkubeConfigError

from kgpu.errors import KgpuError

FIELD_MANAGER = "kgpu"


class KubeConfigError(KgpuError):
    """No usable Kubernetes configuration; the message says where kgpu looked."""


def kube_client(kubeconfig: Path | None = None, field_manager: str = FIELD_MANAGER) -> Any:
    """A lightkube client from ``kubeconfig``, else as lightkube finds one: the in-cluster service
    account, then ``$KUBECONFIG``, then ``~/.kube/config``."""
    try:
        config = KubeConfig.from_file(kubeconfig) if kubeconfig is not None else KubeConfig.from_env()
        return Client(config=config, field_manager=field_manager, trust_env=False)
    except (LightkubeConfigError, OSError, ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError) as exc:
        where = str(kubeconfig) if kubeconfig else "the in-cluster service account, $KUBECONFIG or ~/.kube/config"
        raise KubeConfigError(f"no usable Kubernetes configuration from {where}: {exc}") from exc


def transport_errors() -> tuple[type[BaseException], ...]:
    """What a request can raise besides lightkube's ApiError: the HTTP library's errors (lightkube moved
    from httpx to httpx2) and OSError."""
    found: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(module).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)
