"""The gRPC side of the device plugin: one v1beta1 DevicePlugin service per advertised resource.

:class:`ResourcePlugin` implements the ``DevicePlugin`` service for one resource over the node's
decisions (:class:`DevicePluginLogic`, e.g. :class:`~kgpu.deviceplugin.resources.NodeResources`) and
the health tracker; :class:`PluginEndpoint` serves it on a unix socket in the kubelet's
device-plugins directory; :func:`register` announces it to the kubelet. What keeps endpoints
registered across kubelet restarts is :mod:`kgpu.deviceplugin.plugin`.

Nothing here blocks on NVML or the API server: Allocate and GetPreferredAllocation answer from the
decisions built at start-up and the tracker's in-memory health.

Example::

    plugin = ResourcePlugin(resource, logic, tracker)
    endpoint = PluginEndpoint(plugin, kubelet_dir / resource.socket_name)
    endpoint.start()
    register(kubelet_dir / KUBELET_SOCKET, resource)
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc

from kgpu.container import AllocationError, ContainerAllocation
from kgpu.deviceplugin.api import HEALTHY, UNHEALTHY, VERSION
from kgpu.deviceplugin.api import deviceplugin_pb2 as pb
from kgpu.deviceplugin.api import deviceplugin_pb2_grpc as pb_grpc
from kgpu.deviceplugin.devices import AdvertisedDevice, AdvertisedResource
from kgpu.deviceplugin.health import HealthChange, HealthTracker

log = logging.getLogger("kgpu.deviceplugin")

OPTIONS = pb.DevicePluginOptions(pre_start_required=False, get_preferred_allocation_available=True)
_STREAM_POLL_SECONDS = 1.0
"""How often an idle ListAndWatch stream checks that its client is still there."""


@dataclass(frozen=True, slots=True)
class DeviceState:
    """One advertised device with its current health, as ListAndWatch reports it."""

    device: AdvertisedDevice
    healthy: bool
    reason: str = ""


class DevicePluginLogic(Protocol):
    """Everything the gRPC service asks of the node's decisions. Implementations never block on I/O."""

    def resources(self) -> tuple[AdvertisedResource, ...]: ...

    def allocate(self, resource_name: str, device_ids: Sequence[str]) -> ContainerAllocation:
        """Plan one container's allocation; raises AllocationError for a request that must fail."""
        ...

    def preferred_allocation(
        self, resource_name: str, available: Sequence[str], must_include: Sequence[str], size: int
    ) -> list[str]:
        """Pick ``size`` IDs from ``available``, always including ``must_include``."""
        ...


AllocationListener = Callable[[str, Sequence[str]], None]
"""Called with (resource name, device IDs) after each successful container allocation."""


class ResourcePlugin:
    """The v1beta1 DevicePlugin service for one advertised resource (method names are the RPC names)."""

    def __init__(
        self,
        resource: AdvertisedResource,
        logic: DevicePluginLogic,
        tracker: HealthTracker,
        on_allocate: AllocationListener | None = None,
    ) -> None:
        self.resource = resource
        self.logic = logic
        self.tracker = tracker
        self.on_allocate = on_allocate
        self._by_id = {d.id: d for d in resource.devices}
        self._uuids = {u for d in resource.devices for u in d.health_uuids}
        self._closed = threading.Event()
        self._streams: set[threading.Event] = set()
        self._streams_lock = threading.Lock()
        tracker.subscribe(self._on_health_change)

    # -- state -------------------------------------------------------------------------------

    def states(self) -> list[DeviceState]:
        out = []
        for d in self.resource.devices:
            healthy, reason = self.tracker.device_health(d.health_uuids)
            out.append(DeviceState(d, healthy, reason))
        return out

    def list_response(self) -> pb.ListAndWatchResponse:
        return pb.ListAndWatchResponse(devices=[_api_device(s) for s in self.states()])

    def _on_health_change(self, change: HealthChange) -> None:
        if change.uuid not in self._uuids:
            return
        self._wake_streams()

    def _wake_streams(self) -> None:
        with self._streams_lock:
            for wake in self._streams:
                wake.set()

    def close(self) -> None:
        """End every ListAndWatch stream and stop listening to health changes."""
        self._closed.set()
        self.tracker.unsubscribe(self._on_health_change)
        self._wake_streams()

    # -- RPCs --------------------------------------------------------------------------------

    def GetDevicePluginOptions(self, request: pb.Empty, context: Any) -> pb.DevicePluginOptions:
        return OPTIONS

    def ListAndWatch(self, request: pb.Empty, context: Any) -> Iterator[pb.ListAndWatchResponse]:
        """A full list at once, then a full list whenever the health of one of our devices changes."""
        wake = threading.Event()
        with self._streams_lock:
            self._streams.add(wake)
        context.add_callback(wake.set)
        try:
            last = self.list_response()
            yield last
            while not self._closed.is_set() and context.is_active():
                if not wake.wait(_STREAM_POLL_SECONDS):
                    continue
                wake.clear()
                current = self.list_response()
                if current != last and not self._closed.is_set():
                    last = current
                    yield current
        finally:
            with self._streams_lock:
                self._streams.discard(wake)

    def GetPreferredAllocation(
        self, request: pb.PreferredAllocationRequest, context: Any
    ) -> pb.PreferredAllocationResponse:
        response = pb.PreferredAllocationResponse()
        for req in request.container_requests:
            available = list(req.available_deviceIDs)
            must = list(req.must_include_deviceIDs)
            unknown = [i for i in (*available, *must) if i not in self._by_id]
            if unknown:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"preferred allocation for {self.resource.name}: unknown device ID(s) {', '.join(unknown)}",
                )
            try:
                chosen = self.logic.preferred_allocation(self.resource.name, available, must, req.allocation_size)
            except AllocationError as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"preferred allocation for {self.resource.name}: {exc}")
            response.container_responses.add(deviceIDs=chosen)
        return response

    def Allocate(self, request: pb.AllocateRequest, context: Any) -> pb.AllocateResponse:
        plans: list[tuple[list[str], ContainerAllocation]] = []
        for req in request.container_requests:
            ids = list(req.devices_ids)
            code, problem = self._refusal(ids)
            if problem:
                log.warning(
                    "allocation refused",
                    extra={"event": "allocate", "resource": self.resource.name, "devices": ids, "error": problem},
                )
                context.abort(code, problem)
            try:
                plan = self.logic.allocate(self.resource.name, ids)
            except AllocationError as exc:
                log.warning(
                    "allocation refused",
                    extra={"event": "allocate", "resource": self.resource.name, "devices": ids, "error": str(exc)},
                )
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except Exception as exc:  # a bug must still reach the kubelet (and the admin) as a clear error
                log.exception(
                    "allocation failed", extra={"event": "allocate", "resource": self.resource.name, "devices": ids}
                )
                context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"kgpu device plugin could not plan {self.resource.name} {', '.join(ids)}: {exc!r}",
                )
            plans.append((ids, plan))
        response = pb.AllocateResponse()
        containers = response.container_responses
        for ids, plan in plans:
            containers.append(_api_allocation(plan))
            log.info("allocated", extra={"event": "allocate", "resource": self.resource.name, "devices": ids})
            if self.on_allocate is not None:
                self.on_allocate(self.resource.name, ids)
        return response

    def _refusal(self, ids: list[str]) -> tuple[Any, str]:
        if not ids:
            return grpc.StatusCode.INVALID_ARGUMENT, f"allocation request for {self.resource.name} names no devices"
        unknown = [i for i in ids if i not in self._by_id]
        if unknown:
            return grpc.StatusCode.INVALID_ARGUMENT, (
                f"invalid allocation request for {self.resource.name}: unknown device(s) {', '.join(unknown)}"
            )
        if self.tracker.all_healthy:
            return grpc.StatusCode.OK, ""
        sick = []
        for i in ids:
            healthy, reason = self.tracker.device_health(self._by_id[i].health_uuids)
            if not healthy:
                sick.append(f"{i} ({reason})")
        if sick:
            return grpc.StatusCode.FAILED_PRECONDITION, (
                f"allocation request for {self.resource.name} names unhealthy device(s): {'; '.join(sick)}"
            )
        return grpc.StatusCode.OK, ""

    def PreStartContainer(
        self, request: pb.PreStartContainerRequest, context: Any
    ) -> pb.PreStartContainerResponse:
        return pb.PreStartContainerResponse()


def _api_device(state: DeviceState) -> pb.Device:
    device = pb.Device(ID=state.device.id, health=HEALTHY if state.healthy else UNHEALTHY)
    if state.device.numa_node is not None:
        device.topology.nodes.add(ID=state.device.numa_node)
    return device


def _api_allocation(plan: ContainerAllocation) -> pb.ContainerAllocateResponse:
    out = pb.ContainerAllocateResponse(envs=dict(plan.envs), annotations=dict(plan.annotations))
    for m in plan.mounts:
        out.mounts.add(container_path=m.container_path, host_path=m.host_path, read_only=m.read_only)
    for d in plan.devices:
        out.devices.add(container_path=d.container_path, host_path=d.host_path, permissions=d.permissions)
    for name in plan.cdi_devices:
        out.cdi_devices.add(name=name)
    return out


class PluginEndpoint:
    """Serves one :class:`ResourcePlugin` on a unix socket; restartable (the kubelet may delete the socket)."""

    def __init__(self, plugin: ResourcePlugin, socket_path: Path, max_workers: int = 16) -> None:
        self.plugin = plugin
        self.socket_path = socket_path
        self.max_workers = max_workers
        self._server: Any = None
        self._identity: tuple[int, int] | None = None

    @property
    def serving(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """(Re)create the socket and serve on it."""
        self.stop()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix=f"dp-{self.socket_path.stem}")
        )
        pb_grpc.add_DevicePluginServicer_to_server(self.plugin, server)
        if server.add_insecure_port(f"unix://{self.socket_path}") == 0:
            raise OSError(f"cannot listen on unix socket {self.socket_path}")
        server.start()
        st = os.stat(self.socket_path)
        self._identity = (st.st_dev, st.st_ino)
        self._server = server

    def socket_intact(self) -> bool:
        """False once the socket file we listen on was removed or replaced (a kubelet restart wipes it)."""
        try:
            st = os.stat(self.socket_path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

    def stop(self, grace: float | None = None) -> None:
        """Stop serving; removes the socket file if it is still ours."""
        server, self._server = self._server, None
        if server is None:
            return
        # Stopping cancels open ListAndWatch streams; their callbacks wake the generators, which then end.
        server.stop(grace).wait()
        if self.socket_intact():
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()
        self._identity = None


class RegistrationError(Exception):
    """The kubelet was not reachable or refused the registration."""


def register(kubelet_socket: Path, resource: AdvertisedResource, timeout: float = 5.0) -> None:
    """Register ``resource`` with the kubelet: version v1beta1, endpoint = our socket's file name."""
    request = pb.RegisterRequest(
        version=VERSION,
        endpoint=resource.socket_name,
        resource_name=resource.name,
        options=OPTIONS,
    )
    try:
        with grpc.insecure_channel(f"unix://{kubelet_socket}") as channel:
            pb_grpc.RegistrationStub(channel).Register(request, timeout=timeout, wait_for_ready=True)
    except grpc.RpcError as exc:
        raise RegistrationError(f"{exc.code().name}: {exc.details()}") from None
