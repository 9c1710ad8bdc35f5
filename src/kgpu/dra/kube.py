"""The driver's API server I/O (lightkube): read the claims the kubelet names, publish the node's slices.

:class:`ApiClaims` reads a ResourceClaim as the API serves it (``resource.k8s.io/v1``). :class:`SlicePublisher`
server-side applies the slices :func:`kgpu.dra.slices.build_slices` builds (field manager
``kgpu-dra-plugin``, owned by the Node so they go with it) and deletes any other slice of this driver on
this node, e.g. one left by an earlier run with more devices. The pool generation continues from the
highest one found, so a restarted driver's slices are newer than its predecessor's.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from kgpu.dra.claims import ClaimError
from kgpu.errors import KgpuError

log = logging.getLogger(__name__)

FIELD_MANAGER = "kgpu-dra-plugin"


class ApiError(KgpuError):
    """The API server refused or could not be reached; the message says which request and why."""


def transport_errors() -> tuple[type[BaseException], ...]:
    """What a request can raise besides lightkube's ApiError: the HTTP library's errors and OSError."""
    found: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(module).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def kube_client(kubeconfig: Path | None = None) -> Any:
    """A lightkube client from ``kubeconfig``, else the in-cluster service account, ``$KUBECONFIG``, ~/.kube."""
    from lightkube import Client, KubeConfig
    from lightkube.core.exceptions import ConfigError as LightkubeConfigError

    try:
        config = KubeConfig.from_file(kubeconfig) if kubeconfig is not None else KubeConfig.from_env()
        return Client(config=config, field_manager=FIELD_MANAGER, trust_env=False)
    except (LightkubeConfigError, OSError, ValueError, TypeError, KeyError, AttributeError, yaml.YAMLError) as exc:
        where = str(kubeconfig) if kubeconfig else "the in-cluster service account, $KUBECONFIG or ~/.kube/config"
        raise ApiError(f"no usable Kubernetes configuration from {where}: {exc}") from exc


def _why(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    message = getattr(status, "message", None)
    return str(message or exc)


class ApiClaims:
    """Claims from the API server."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def get(self, namespace: str, name: str) -> Mapping[str, Any]:
        from lightkube import ApiError as LightkubeApiError
        from lightkube.resources.resource_v1 import ResourceClaim

        try:
            claim = self.client.get(ResourceClaim, name, namespace=namespace)
        except LightkubeApiError as exc:
            if getattr(exc.status, "code", None) == 404:
                raise ClaimError(f"ResourceClaim {namespace}/{name} does not exist") from None
            raise ApiError(f"cannot read ResourceClaim {namespace}/{name}: {_why(exc)}") from None
        except transport_errors() as exc:
            raise ApiError(f"cannot read ResourceClaim {namespace}/{name}: {exc}") from None
        data: Mapping[str, Any] = claim.to_dict()
        return data


class SlicePublisher:
    """Applies the node's slices and removes the driver's others; every failure is an ApiError."""

    def __init__(self, client: Any, node: str, driver: str) -> None:
        self.client = client
        self.node = node
        self.driver = driver
        self._owner: dict[str, str] | None = None

    def owner(self) -> dict[str, str]:
        """The Node's name and uid (ApiError when the node does not exist: a wrong --node-name)."""
        if self._owner is None:
            from lightkube import ApiError as LightkubeApiError
            from lightkube.resources.core_v1 import Node

            try:
                node = self.client.get(Node, self.node)
            except LightkubeApiError as exc:
                if getattr(exc.status, "code", None) == 404:
                    raise ApiError(f"node {self.node!r} does not exist: is --node-name (NODE_NAME) right?") from None
                raise ApiError(f"cannot read node {self.node}: {_why(exc)}") from None
            except transport_errors() as exc:
                raise ApiError(f"cannot read node {self.node}: {exc}") from None
            self._owner = {"name": self.node, "uid": str(node.metadata.uid)}
        return self._owner

    def existing(self) -> dict[str, int]:
        """This driver's slices on this node: name → pool generation."""
        from lightkube import ApiError as LightkubeApiError
        from lightkube.resources.resource_v1 import ResourceSlice

        try:
            found = self.client.list(ResourceSlice, fields={"spec.nodeName": self.node, "spec.driver": self.driver})
            return {s.metadata.name: int(s.spec.pool.generation or 0) for s in found}
        except LightkubeApiError as exc:
            raise ApiError(f"cannot list the ResourceSlices of {self.node}: {_why(exc)}") from None
        except transport_errors() as exc:
            raise ApiError(f"cannot list the ResourceSlices of {self.node}: {exc}") from None

    def apply(self, slices: Sequence[Mapping[str, Any]]) -> None:
        """Server-side apply ``slices``, then delete this driver's other slices on this node."""
        from lightkube import ApiError as LightkubeApiError
        from lightkube.resources.resource_v1 import ResourceSlice
        from lightkube.types import PatchType

        wanted = {s["metadata"]["name"] for s in slices}
        try:
            for body in slices:
                self.client.patch(ResourceSlice, body["metadata"]["name"], dict(body), patch_type=PatchType.APPLY,
                                  field_manager=FIELD_MANAGER, force=True)
            for name in set(self.existing()) - wanted:
                log.info("deleting a ResourceSlice no longer published", extra={"slice": name})
                self.client.delete(ResourceSlice, name)
        except LightkubeApiError as exc:
            raise ApiError(f"cannot publish the ResourceSlices of {self.node}: {_why(exc)}") from None
        except transport_errors() as exc:
            raise ApiError(f"cannot publish the ResourceSlices of {self.node}: {exc}") from None

    def delete_all(self) -> None:
        from lightkube import ApiError as LightkubeApiError
        from lightkube.resources.resource_v1 import ResourceSlice

        try:
            for name in self.existing():
                self.client.delete(ResourceSlice, name)
        except LightkubeApiError as exc:
            raise ApiError(f"cannot delete the ResourceSlices of {self.node}: {_why(exc)}") from None
        except transport_errors() as exc:
            raise ApiError(f"cannot delete the ResourceSlices of {self.node}: {exc}") from None
