"""The gRPC faces of the driver: plugin registration, DRA v1 and the device-health stream.

Thin translations; the decisions live in :class:`kgpu.dra.state.DriverState` and :mod:`kgpu.dra.health`.

* ``pluginregistration.Registration`` on ``<plugins_registry>/<driver>-reg.sock``: ``GetInfo`` answers
  type ``DRAPlugin``, the driver name, the DRA endpoint and ``v1.DRAPlugin``; ``NotifyRegistrationStatus``
  is logged (a refusal as an error, with the kubelet's reason).
* ``k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin`` on ``<plugins>/<driver>/dra.sock``: every claim in a
  request gets an entry in the answer, with its devices or the error (the kubelet retries those).
* ``v1alpha1.DRAResourceHealth.NodeWatchResources`` on the same endpoint: the full list of devices
  with their health at once, again on every change, and every 10 s in any case.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from kgpu.dra.api import DRA_SERVICE_V1, PLUGIN_TYPE
from kgpu.dra.api import dra_pb2 as dra
from kgpu.dra.api import drahealth_pb2 as health_pb
from kgpu.dra.api import pluginregistration_pb2 as reg
from kgpu.dra.health import DeviceState
from kgpu.dra.prepare import PrepareSettings
from kgpu.dra.state import DriverState

log = logging.getLogger("kgpu.dra")

HEALTH_RESEND_SECONDS = 10.0
_WAIT_SLICE_SECONDS = 0.5


class Registration:
    """``pluginregistration.Registration``: who we are and where the DRA service listens."""

    def __init__(self, driver: str, endpoint: str, on_status: Callable[[bool, str], None] | None = None) -> None:
        self.driver = driver
        self.endpoint = endpoint
        self.on_status = on_status

    def GetInfo(self, request: reg.InfoRequest, context: Any) -> reg.PluginInfo:
        return reg.PluginInfo(type=PLUGIN_TYPE, name=self.driver, endpoint=self.endpoint,
                              supported_versions=[DRA_SERVICE_V1])

    def NotifyRegistrationStatus(
        self, request: reg.RegistrationStatus, context: Any
    ) -> reg.RegistrationStatusResponse:
        if request.plugin_registered:
            log.info("registered with the kubelet", extra={"event": "register", "driver": self.driver})
        else:
            log.error("the kubelet refused the registration",
                      extra={"event": "register", "driver": self.driver, "error": request.error})
        if self.on_status is not None:
            self.on_status(request.plugin_registered, request.error)
        return reg.RegistrationStatusResponse()


class DraPlugin:
    """``k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin``."""

    def __init__(self, state: DriverState) -> None:
        self.state = state

    @property
    def settings(self) -> PrepareSettings:
        return self.state.settings

    def NodePrepareResources(
        self, request: dra.NodePrepareResourcesRequest, context: Any
    ) -> dra.NodePrepareResourcesResponse:
        response = dra.NodePrepareResourcesResponse()
        for claim in request.claims:
            answer = response.claims[claim.uid]
            try:
                outcome = self.state.prepare(claim.namespace, claim.uid, claim.name)
            except Exception as exc:  # one claim's surprise must not cost the others their answers
                log.exception("prepare failed unexpectedly", extra={"claim": claim.uid})
                answer.error = f"kgpu: unexpected error preparing {claim.namespace}/{claim.name}: {exc}"
                continue
            if outcome.claim is None:
                answer.error = outcome.error
                continue
            for d in outcome.claim.devices:
                device = answer.devices.add(request_names=[d.request], pool_name=d.pool, device_name=d.device,
                                            cdi_device_ids=[d.cdi_id(self.settings)])
                if d.share_id:
                    device.share_id = d.share_id
        return response

    def NodeUnprepareResources(
        self, request: dra.NodeUnprepareResourcesRequest, context: Any
    ) -> dra.NodeUnprepareResourcesResponse:
        response = dra.NodeUnprepareResourcesResponse()
        for claim in request.claims:
            answer = response.claims[claim.uid]
            try:
                error = self.state.unprepare(claim.namespace, claim.uid, claim.name)
            except Exception as exc:
                log.exception("unprepare failed unexpectedly", extra={"claim": claim.uid})
                error = f"kgpu: unexpected error unpreparing {claim.namespace}/{claim.name}: {exc}"
            if error:
                answer.error = error
        return response


class HealthBroadcast:
    """The device states the health stream sends, and a version that grows on every change."""

    def __init__(self, states: Callable[[], Sequence[DeviceState]], pool: str) -> None:
        self.states = states
        self.pool = pool
        self.version = 0
        self._cond = threading.Condition()

    def changed(self, *_: object) -> None:
        with self._cond:
            self.version += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self.version != seen, timeout)
            return self.version

    def message(self) -> health_pb.NodeWatchResourcesResponse:
        now = int(time.time())
        return health_pb.NodeWatchResourcesResponse(devices=[
            health_pb.DeviceHealth(
                device=health_pb.DeviceIdentifier(pool_name=self.pool, device_name=s.name),
                health=health_pb.HEALTHY if s.healthy else health_pb.UNHEALTHY,
                last_updated_time=now,
                message=s.message[:1024],
            )
            for s in self.states()
        ])


class ResourceHealth:
    """``v1alpha1.DRAResourceHealth``."""

    def __init__(self, broadcast: HealthBroadcast, stop: threading.Event) -> None:
        self.broadcast = broadcast
        self.stop = stop

    def NodeWatchResources(
        self, request: health_pb.NodeWatchResourcesRequest, context: Any
    ) -> Iterator[health_pb.NodeWatchResourcesResponse]:
        sent_version, sent_at = -1, 0.0
        version = self.broadcast.version
        while not self.stop.is_set() and context.is_active():
            if version != sent_version or time.monotonic() - sent_at >= HEALTH_RESEND_SECONDS:
                yield self.broadcast.message()
                sent_version, sent_at = version, time.monotonic()
            version = self.broadcast.wait(sent_version, _WAIT_SLICE_SECONDS)
