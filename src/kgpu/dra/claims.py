"""A ResourceClaim's allocation, as the driver reads it at prepare time. Pure: a claim object in, values out.

The kubelet names a claim (namespace, name, UID); the driver reads it from the API and prepares the
devices of ``status.allocation.devices.results`` that belong to this driver and this node's pool, with
the opaque configuration that applies to each result. Configurations follow NVIDIA's precedence: the
DeviceClass's come before the claim's, and the last one that names the result's request (or names no
request) wins; a configuration of another driver is skipped.

Example::

    claim = parse_claim(api_object)          # the ResourceClaim as JSON (resource.k8s.io/v1)
    mine = claim.results_for("gpu.nvidia.com", pool="node-1")
    config_for(claim, mine[0], "gpu.nvidia.com", device_type="gpu")   # DeviceConfig or None
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kgpu.config.quantity import parse_quantity_bytes
from kgpu.dra.gpuconfig import GPU_CONFIG, MIG_CONFIG, DeviceConfig, decode
from kgpu.errors import KgpuError

FROM_CLASS = "FromClass"
FROM_CLAIM = "FromClaim"


class ClaimError(KgpuError):
    """A claim that cannot be prepared as it stands; the message names the claim and the field."""


@dataclass(frozen=True, slots=True)
class AllocatedDevice:
    """One ``status.allocation.devices.results`` entry."""

    request: str
    driver: str
    pool: str
    device: str
    share_id: str | None = None
    consumed_bytes: Mapping[str, int] = field(default_factory=dict)
    """``consumedCapacity`` (capacity name → bytes or count), for a device several claims share."""
    admin_access: bool = False

    @property
    def base_request(self) -> str:
        """``gpu`` for a result of the sub-request ``gpu/h100`` of a prioritized list."""
        return self.request.split("/", 1)[0]


@dataclass(frozen=True, slots=True)
class OpaqueConfig:
    source: str
    requests: tuple[str, ...]
    driver: str
    parameters: Any


@dataclass(frozen=True, slots=True)
class Claim:
    namespace: str
    name: str
    uid: str
    results: tuple[AllocatedDevice, ...] = ()
    configs: tuple[OpaqueConfig, ...] = ()
    allocated: bool = False

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name} ({self.uid})"

    def results_for(self, driver: str, pool: str) -> list[AllocatedDevice]:
        return [r for r in self.results if r.driver == driver and r.pool == pool]


def _str(obj: Mapping[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise ClaimError(f"{where}.{key}: missing")
    return value


def parse_claim(obj: Mapping[str, Any]) -> Claim:
    """The parts of a ResourceClaim (as the API serves it) that prepare needs."""
    meta = obj.get("metadata") or {}
    namespace, name, uid = meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", "")
    where = f"ResourceClaim {namespace}/{name}"
    allocation = (obj.get("status") or {}).get("allocation")
    if not allocation:
        return Claim(namespace, name, uid)
    devices = allocation.get("devices") or {}
    results = []
    for i, r in enumerate(devices.get("results") or []):
        at = f"{where} status.allocation.devices.results[{i}]"
        consumed: dict[str, int] = {}
        for key, value in (r.get("consumedCapacity") or {}).items():
            try:
                consumed[str(key)] = parse_quantity_bytes(value)
            except ValueError as exc:
                raise ClaimError(f"{at}.consumedCapacity.{key}: {exc}") from None
        results.append(AllocatedDevice(
            request=_str(r, "request", at), driver=_str(r, "driver", at), pool=_str(r, "pool", at),
            device=_str(r, "device", at), share_id=r.get("shareID") or None, consumed_bytes=consumed,
            admin_access=bool(r.get("adminAccess")),
        ))
    configs = []
    for c in devices.get("config") or []:
        opaque = c.get("opaque")
        if not opaque:
            continue  # a kind of configuration this driver does not know: not ours to judge
        configs.append(OpaqueConfig(
            source=str(c.get("source", "")), requests=tuple(c.get("requests") or ()),
            driver=str(opaque.get("driver", "")), parameters=opaque.get("parameters"),
        ))
    return Claim(namespace, name, uid, tuple(results), tuple(configs), allocated=True)


def config_for(claim: Claim, result: AllocatedDevice, driver: str, device_type: str) -> DeviceConfig | None:
    """The opaque configuration of ``driver`` that applies to ``result`` (a ``gpu`` or ``mig`` device), decoded;
    None when none applies. ClaimError for a configuration that does not decode or does not fit the device."""
    ordered = [c for c in claim.configs if c.driver == driver and c.source == FROM_CLASS]
    ordered += [c for c in claim.configs if c.driver == driver and c.source == FROM_CLAIM]
    unknown = [c.source for c in claim.configs if c.driver == driver and c.source not in (FROM_CLASS, FROM_CLAIM)]
    if unknown:
        raise ClaimError(f"{claim.ref}: invalid config source {unknown[0]!r}")
    wanted = GPU_CONFIG if device_type == "gpu" else MIG_CONFIG
    for c in reversed(ordered):
        named = result.request in c.requests or result.base_request in c.requests
        if c.requests and not named:
            continue
        config = _decode(claim, c)
        if named and config.kind != wanted:
            raise ClaimError(
                f"{claim.ref}: cannot apply {config.kind} to device {result.device!r} of type {device_type!r} "
                f"(request: {result.request})"
            )
        if config.kind == wanted:
            return config
    return None


def _decode(claim: Claim, config: OpaqueConfig) -> DeviceConfig:
    try:
        return decode(config.parameters)
    except KgpuError as exc:
        raise ClaimError(f"{claim.ref}: error decoding config parameters: {exc}") from None
