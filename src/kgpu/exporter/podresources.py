"""The kubelet's PodResources API v1 as a source of container → device assignments.

One ``List`` call per scrape, as dcgm-exporter makes, over a channel kept open between scrapes.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import grpc

from kgpu.exporter.attribution import ContainerDevices
from kgpu.podresources.api import podresources_pb2 as pb
from kgpu.podresources.api import podresources_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

LIST_TIMEOUT_SECONDS = 2.0


class PodResourcesError(Exception):
    """``List`` failed; the message says how."""


def container_devices(response: Any) -> list[ContainerDevices]:
    """Flatten a ``ListPodResourcesResponse`` into one value per (container, resource)."""
    out = []
    for pod in response.pod_resources:
        for container in pod.containers:
            for devices in container.devices:
                out.append(ContainerDevices(
                    namespace=pod.namespace, pod=pod.name, container=container.name,
                    resource_name=devices.resource_name, device_ids=tuple(devices.device_ids),
                ))
    return out


class PodResourcesClient:
    """Lists the kubelet's device assignments through its unix socket."""

    def __init__(self, socket_path: Path, timeout: float = LIST_TIMEOUT_SECONDS) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.description = f"kubelet PodResources socket {socket_path}"
        self._channel: Any = None
        self._stub: Any = None

    def available(self) -> bool:
        try:
            return stat.S_ISSOCK(os.stat(self.socket_path).st_mode)
        except OSError:
            return False

    def list(self) -> list[ContainerDevices]:
        if self._stub is None:
            self._channel = grpc.insecure_channel(f"unix://{self.socket_path}")
            self._stub = pb_grpc.PodResourcesListerStub(self._channel)
        try:
            response = self._stub.List(pb.ListPodResourcesRequest(), timeout=self.timeout)
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "ERROR"
            details = exc.details() if hasattr(exc, "details") else str(exc)
            raise PodResourcesError(f"{code}: {details}") from exc
        return container_devices(response)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = self._stub = None
