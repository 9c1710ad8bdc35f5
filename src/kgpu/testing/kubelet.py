"""A stand-in for the kubelet's side of the device plugin protocol: for tests, demos and benchmarks.

Public: projects that build on kgpu (or test any device plugin, NVIDIA's included) can use it.

:class:`FakeKubelet` serves the v1beta1 ``Registration`` service on ``<dir>/kubelet.sock``, checks
requests the way the kubelet does (version, resource name, endpoint socket), records them, and, like
the kubelet, then connects to the plugin's endpoint and follows its ``ListAndWatch`` stream so that
:meth:`FakeKubelet.capacity` shows what the node would advertise. :meth:`FakeKubelet.restart` does
what a kubelet restart does to the directory: stop, wipe every file, serve a new ``kubelet.sock``.

:class:`PluginClient` calls a plugin's socket exactly as the kubelet does.

Example::

    kubelet = FakeKubelet(Path(tempfile.mkdtemp(dir="/tmp"))).start()
    # ... start `kgpu device-plugin --kubelet-dir <dir>` ...
    reg = kubelet.wait_for_registration("nvidia.com/gpu")
    with PluginClient(kubelet.directory / reg.endpoint) as plugin:
        response = plugin.allocate([[first_device_id]])
"""

from __future__ import annotations

import argparse
import queue
import re
import sys
import threading
import time
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from kgpu.deviceplugin.api import HEALTHY, KUBELET_SOCKET, VERSION
from kgpu.deviceplugin.api import deviceplugin_pb2 as pb
from kgpu.deviceplugin.api import deviceplugin_pb2_grpc as pb_grpc

# The kubelet accepts extended resource names: a DNS subdomain prefix outside kubernetes.io, '/', a name.
_RESOURCE_NAME = re.compile(
    r"^(?!(?:[^/]*\.)?kubernetes\.io/)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
    r"/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


@dataclass(frozen=True, slots=True)
class Registration:
    """One accepted RegisterRequest, as the kubelet received it."""

    version: str
    endpoint: str
    resource_name: str
    pre_start_required: bool
    get_preferred_allocation_available: bool
    at: float
    """time.monotonic() when it arrived."""


class DeviceWatch:
    """A ListAndWatch stream read in the background; every full list it sends is kept, in order.

    :meth:`wait_for` looks at the list the plugin sent last and at every list after it, never at
    older ones: after ``wait_for(all healthy)`` returns, the GPU really is healthy again, not merely
    healthy in an update that was still waiting to be read. The plugin may coalesce changes that
    come close together into one list (a GPU that went down and up again before the stream woke
    may never be reported down), so wait for the state you need, not for a count of updates.
    """

    def __init__(self, stub: Any) -> None:
        self._cond = threading.Condition()
        self._lists: list[list[pb.Device]] = []
        self._read_upto = 0
        self.error: grpc.RpcError | None = None
        self.ended = threading.Event()
        self._call = stub.ListAndWatch(pb.Empty(), wait_for_ready=True)
        self._thread = threading.Thread(target=self._read, name="kubelet-watch", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for response in self._call:
                with self._cond:
                    self._lists.append(list(response.devices))
                    self._cond.notify_all()
        except grpc.RpcError as exc:
            if exc.code() is not grpc.StatusCode.CANCELLED:
                self.error = exc
        finally:
            with self._cond:
                self.ended.set()
                self._cond.notify_all()

    @property
    def latest(self) -> list[pb.Device]:
        """The last full list the plugin sent; empty before the first."""
        with self._cond:
            return self._lists[-1] if self._lists else []

    @property
    def history(self) -> list[list[pb.Device]]:
        """Every full list received so far, oldest first."""
        with self._cond:
            return list(self._lists)

    def next(self, timeout: float = 10.0) -> list[pb.Device]:
        """The next list not yet returned by ``next``; queue.Empty when none arrives within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._read_upto >= len(self._lists):
                left = deadline - time.monotonic()
                if left <= 0 or self.ended.is_set():
                    raise queue.Empty
                self._cond.wait(left)
            self._read_upto += 1
            return self._lists[self._read_upto - 1]

    def wait_for(self, predicate: Any, timeout: float = 20.0) -> list[pb.Device]:
        """The first list, from the latest one on, for which ``predicate(devices)`` holds.

        ``timeout`` only matters when the condition never comes (AssertionError, with what was seen).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            index = max(len(self._lists) - 1, 0)
            while True:
                while index < len(self._lists):
                    devices = self._lists[index]
                    if predicate(devices):
                        return devices
                    index += 1
                left = deadline - time.monotonic()
                if left <= 0 or self.ended.is_set():
                    why = f"the stream ended ({self.error})" if self.ended.is_set() else f"within {timeout}s"
                    raise AssertionError(
                        f"no ListAndWatch update satisfied the condition {why}; last list: "
                        f"{[(d.ID, d.health) for d in self._lists[-1]] if self._lists else 'none'}"
                    )
                self._cond.wait(left)

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(timeout=5)


class PluginClient:
    """Talks to one plugin socket the way the kubelet does."""

    def __init__(self, socket_path: Path, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._channel = grpc.insecure_channel(f"unix://{socket_path}")
        self.stub = pb_grpc.DevicePluginStub(self._channel)
        self._watches: list[DeviceWatch] = []

    def __enter__(self) -> PluginClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for w in self._watches:
            w.close()
        self._channel.close()

    def options(self) -> pb.DevicePluginOptions:
        options: pb.DevicePluginOptions = self.stub.GetDevicePluginOptions(
            pb.Empty(), timeout=self.timeout, wait_for_ready=True
        )
        return options

    def watch(self) -> DeviceWatch:
        w = DeviceWatch(self.stub)
        self._watches.append(w)
        return w

    def list_devices(self, timeout: float = 10.0) -> list[pb.Device]:
        """The first ListAndWatch answer (what the kubelet learns right after registration)."""
        w = DeviceWatch(self.stub)
        try:
            return w.next(timeout)
        finally:
            w.close()

    def allocate(self, container_requests: Sequence[Sequence[str]]) -> pb.AllocateResponse:
        request = pb.AllocateRequest()
        for ids in container_requests:
            request.container_requests.add(devices_ids=list(ids))
        response: pb.AllocateResponse = self.stub.Allocate(request, timeout=self.timeout)
        return response

    def preferred_allocation(
        self, available: Sequence[str], must_include: Sequence[str], size: int
    ) -> list[str]:
        request = pb.PreferredAllocationRequest()
        request.container_requests.add(
            available_deviceIDs=list(available), must_include_deviceIDs=list(must_include), allocation_size=size
        )
        response = self.stub.GetPreferredAllocation(request, timeout=self.timeout)
        return list(response.container_responses[0].deviceIDs)

    def pre_start(self, ids: Sequence[str]) -> pb.PreStartContainerResponse:
        response: pb.PreStartContainerResponse = self.stub.PreStartContainer(
            pb.PreStartContainerRequest(devices_ids=list(ids)), timeout=self.timeout
        )
        return response


class _RegistrationService:
    def __init__(self, kubelet: FakeKubelet) -> None:
        self.kubelet = kubelet

    def Register(self, request: pb.RegisterRequest, context: Any) -> pb.Empty:
        problem = self.kubelet.check(request)
        if problem:
            self.kubelet.refused.append((request.resource_name, problem))
            context.abort(grpc.StatusCode.UNKNOWN, problem)
        self.kubelet._accept(request)
        return pb.Empty()


class FakeKubelet:
    """The kubelet's device-manager side: Registration on ``<directory>/kubelet.sock``, then ListAndWatch."""

    def __init__(self, directory: Path, follow: bool = True) -> None:
        self.directory = directory
        self.follow = follow
        self.socket = directory / KUBELET_SOCKET
        self.registrations: list[Registration] = []
        self.refused: list[tuple[str, str]] = []
        self.restarts = 0
        self._server: Any = None
        self._cond = threading.Condition()
        self._clients: dict[str, PluginClient] = {}
        self._watches: dict[str, DeviceWatch] = {}
        self._connecting: set[PluginClient] = set()
        self._connectors: list[threading.Thread] = []
        self._connected_to: dict[str, int] = {}
        """resource → the registration (1st, 2nd …) the current connection belongs to."""
        self._generation = 0
        self.options: dict[str, pb.DevicePluginOptions] = {}
        """What each plugin answered to GetDevicePluginOptions when this kubelet connected."""

    def __enter__(self) -> FakeKubelet:
        return self.start()

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeKubelet:
        self.directory.mkdir(parents=True, exist_ok=True)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="fake-kubelet"))
        pb_grpc.add_RegistrationServicer_to_server(_RegistrationService(self), server)
        if server.add_insecure_port(f"unix://{self.socket}") == 0:
            raise OSError(f"cannot listen on {self.socket}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Stop serving Registration and drop every plugin connection; files stay, as when a kubelet dies."""
        with self._cond:
            clients, self._clients, self._watches = self._clients, {}, {}
            self._connected_to = {}
            connecting, self._connecting = self._connecting, set()
            connectors, self._connectors = self._connectors, []
            self._generation += 1
        for client in (*clients.values(), *connecting):
            client.close()  # also ends a GetDevicePluginOptions still waiting for a plugin that went away
        if self._server is not None:
            self._server.stop(None).wait()
            self._server = None
        for thread in connectors:
            thread.join(timeout=10)

    def restart(self) -> None:
        """What a kubelet restart does: stop, remove every file in the directory, serve a new kubelet.sock."""
        self.stop()
        for path in self.directory.iterdir():
            if path.is_file() or path.is_socket():
                path.unlink()
        self.restarts += 1
        self.start()

    # -- registration ------------------------------------------------------------------------

    def check(self, request: pb.RegisterRequest) -> str:
        """The kubelet's checks on a RegisterRequest; an empty string means accepted."""
        if request.version != VERSION:
            return f"Unsupported version: {request.version!r}; supported versions: {VERSION}"
        if not _RESOURCE_NAME.match(request.resource_name):
            return f"invalid extended resource name {request.resource_name!r}"
        if "/" in request.endpoint or not (self.directory / request.endpoint).is_socket():
            return f"endpoint {request.endpoint!r} is not a socket in {self.directory}"
        return ""

    def _accept(self, request: pb.RegisterRequest) -> None:
        registration = Registration(
            version=request.version,
            endpoint=request.endpoint,
            resource_name=request.resource_name,
            pre_start_required=request.options.pre_start_required,
            get_preferred_allocation_available=request.options.get_preferred_allocation_available,
            at=time.monotonic(),
        )
        with self._cond:
            self.registrations.append(registration)
            generation = self._generation
            number = sum(1 for r in self.registrations if r.resource_name == request.resource_name)
            self._cond.notify_all()
        if self.follow:
            # Like the kubelet: Register returns at once; a goroutine then dials the plugin, asks for its
            # options and follows ListAndWatch.
            connector = threading.Thread(
                target=self._connect, args=(request.resource_name, request.endpoint, generation, number),
                name="fake-kubelet-connect", daemon=True,
            )
            with self._cond:  # started under the lock: stop() never sees a thread it cannot join yet
                self._connectors = [t for t in self._connectors if t.is_alive()]
                self._connectors.append(connector)
                connector.start()

    def _connect(self, resource_name: str, endpoint: str, generation: int, number: int) -> None:
        client = PluginClient(self.directory / endpoint)
        with self._cond:
            if generation != self._generation:  # stopped before we got here
                client.close()
                return
            self._connecting.add(client)
        try:
            options = client.options()
            watch = client.watch()
        except (grpc.RpcError, ValueError) as exc:  # ValueError: stop() closed the channel first
            client.close()
            with self._cond:
                self._connecting.discard(client)
                if generation == self._generation:
                    why = exc.code().name if isinstance(exc, grpc.RpcError) else str(exc)
                    self.refused.append((resource_name, f"GetDevicePluginOptions failed: {why}"))
                self._cond.notify_all()
            return
        with self._cond:
            self._connecting.discard(client)
            if generation != self._generation:  # this kubelet restarted meanwhile: drop the connection
                stale: PluginClient | None = client
            elif number < self._connected_to.get(resource_name, 0):  # a later registration connected first
                stale = client
            else:
                stale = self._clients.pop(resource_name, None)
                self._clients[resource_name] = client
                self._watches[resource_name] = watch
                self._connected_to[resource_name] = number
                self.options[resource_name] = options
            self._cond.notify_all()
        if stale is not None:
            stale.close()

    def wait_for_registration(self, resource_name: str, count: int = 1, timeout: float = 30.0) -> Registration:
        """Block until ``resource_name`` has registered ``count`` times in total; returns the latest."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                mine = [r for r in self.registrations if r.resource_name == resource_name]
                if len(mine) >= count:
                    return mine[-1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{resource_name} registered {len(mine)} time(s) within {timeout}s, expected {count}; "
                        f"refused: {self.refused}"
                    )
                self._cond.wait(left)

    # -- what the node advertises ------------------------------------------------------------

    def _connected(self, resource_name: str, timeout: float) -> tuple[PluginClient, DeviceWatch]:
        """The connection to the plugin's latest registration of ``resource_name`` (waits for it)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while resource_name not in self._watches or self._connected_to.get(resource_name, 0) < sum(
                1 for r in self.registrations if r.resource_name == resource_name
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the kubelet stand-in is not connected to {resource_name}'s plugin")
                self._cond.wait(left)
            return self._clients[resource_name], self._watches[resource_name]

    def watch(self, resource_name: str, timeout: float = 30.0) -> DeviceWatch:
        """The ListAndWatch stream this kubelet follows for ``resource_name`` (waits for the connection)."""
        return self._connected(resource_name, timeout)[1]

    def capacity(self, resource_name: str) -> tuple[int, int]:
        """(devices, healthy devices) from the latest list the plugin sent; (0, 0) before any."""
        with self._cond:
            watch = self._watches.get(resource_name)
        devices = watch.latest if watch is not None else []
        return len(devices), sum(1 for d in devices if d.health == HEALTHY)

    def client(self, resource_name: str, timeout: float = 30.0) -> PluginClient:
        """The connection this kubelet holds to ``resource_name``'s plugin (waits for it)."""
        return self._connected(resource_name, timeout)[0]


def _describe_allocation(response: pb.ContainerAllocateResponse) -> list[str]:
    lines = [f"    env {k}={v}" for k, v in sorted(response.envs.items())]
    lines += [f"    mount {m.host_path} -> {m.container_path}{' (ro)' if m.read_only else ''}" for m in response.mounts]
    lines += [f"    device {d.host_path} -> {d.container_path} ({d.permissions})" for d in response.devices]
    lines += [f"    annotation {k}={v}" for k, v in sorted(response.annotations.items())]
    lines += [f"    cdi device {c.name}" for c in response.cdi_devices]
    return lines or ["    (empty response)"]


def main(argv: Sequence[str] | None = None) -> int:
    """Act as the kubelet for one plugin: accept its registration, list its devices, allocate once."""

    parser = argparse.ArgumentParser(
        prog="python -m kgpu.testing.kubelet",
        description="A kubelet stand-in: serves Registration on DIR/kubelet.sock, waits for a device plugin to "
        "register RESOURCE, prints its devices and one allocation, then exits.",
    )
    parser.add_argument("--kubelet-dir", type=Path, required=True, metavar="DIR")
    parser.add_argument("--resource", default="nvidia.com/gpu")
    parser.add_argument("--allocate", type=int, default=1, metavar="N", help="devices to allocate (0: none)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS")
    args = parser.parse_args(argv)

    with FakeKubelet(args.kubelet_dir) as kubelet:
        print(f"kubelet stand-in serving Registration on {kubelet.socket}", flush=True)
        try:
            reg = kubelet.wait_for_registration(args.resource, timeout=args.timeout)
        except AssertionError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(
            f"registered: {reg.resource_name} (API {reg.version}, endpoint {reg.endpoint}, "
            f"preferred allocation {'yes' if reg.get_preferred_allocation_available else 'no'})"
        )
        devices = kubelet.watch(args.resource).wait_for(lambda ds: len(ds) > 0, timeout=args.timeout)
        print(f"ListAndWatch: {len(devices)} device(s)")
        for d in devices:
            numa = ",".join(str(n.ID) for n in d.topology.nodes) or "-"
            print(f"  {d.ID:45} {d.health:9} NUMA {numa}")
        if args.allocate > 0:
            client = kubelet.client(args.resource)
            healthy = [d.ID for d in devices if d.health == HEALTHY]
            chosen = client.preferred_allocation(healthy, [], args.allocate)
            print(f"GetPreferredAllocation of {args.allocate}: {', '.join(chosen)}")
            response = client.allocate([chosen])
            print(f"Allocate {', '.join(chosen)}:")
            for line in _describe_allocation(response.container_responses[0]):
                print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
