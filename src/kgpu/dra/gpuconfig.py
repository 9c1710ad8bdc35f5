"""Opaque device configuration in NVIDIA's format: ``GpuConfig`` and ``MigDeviceConfig`` of
``resource.nvidia.com/v1beta1``, decoded strictly as NVIDIA's driver decodes a claim's parameters.

The shape (``api/nvidia.com/resource/v1beta1`` of kubernetes-sigs/dra-driver-nvidia-gpu)::

    apiVersion: resource.nvidia.com/v1beta1
    kind: GpuConfig                       # or MigDeviceConfig (no timeSlicingConfig)
    sharing:
      strategy: MPS                       # or TimeSlicing
      mpsConfig:
        defaultActiveThreadPercentage: 25
        defaultPinnedDeviceMemoryLimit: 30Gi
        defaultPerDevicePinnedMemoryLimit: {"0": 20Gi}    # by device index in the claim, or UUID
      # timeSlicingConfig: {interval: Default}            # Default, Short, Medium, Long

Unknown fields, a strategy other than MPS/TimeSlicing, a config for the other strategy, an interval or
percentage out of range: :class:`ConfigError` with the field and what is allowed (NVIDIA's messages).

Example::

    config = decode({"apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig",
                     "sharing": {"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": 50}}})
    config.sharing.mps.active_thread_percentage    # 50
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kgpu.config.quantity import parse_quantity_bytes
from kgpu.errors import ConfigError

API_VERSION = "resource.nvidia.com/v1beta1"
GPU_CONFIG = "GpuConfig"
MIG_CONFIG = "MigDeviceConfig"
KINDS = (GPU_CONFIG, MIG_CONFIG)
MPS = "MPS"
TIME_SLICING = "TimeSlicing"
INTERVALS = {"Default": 0, "Short": 1, "Medium": 2, "Long": 3}
"""Time-slice names → the value ``nvidia-smi compute-policy --set-timeslice`` takes."""
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class MpsSettings:
    active_thread_percentage: int | None = None
    pinned_memory_limit_bytes: int | None = None
    per_device_pinned_memory_limit_bytes: Mapping[str, int] = field(default_factory=dict)
    """Device index in the claim (``"0"``) or UUID → limit; overrides the default for that device."""
    multi_user: bool | None = None

    def memory_limit_mib(self, position: int, uuid: str) -> int | None:
        """The pinned memory limit for the claim's ``position``-th device (NVIDIA's Normalize), in whole MiB."""
        limits = self.per_device_pinned_memory_limit_bytes
        value = limits.get(uuid, limits.get(str(position), self.pinned_memory_limit_bytes))
        return None if value is None else value // MIB


@dataclass(frozen=True, slots=True)
class Sharing:
    strategy: str
    mps: MpsSettings | None = None
    interval: str | None = None
    """TimeSlicing: Default, Short, Medium or Long; None when not given."""


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    kind: str
    sharing: Sharing | None = None

    @property
    def uses_mps(self) -> bool:
        return self.sharing is not None and self.sharing.strategy == MPS


def _fields(obj: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(obj, Mapping):
        raise ConfigError(f"{where}: expected an object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise ConfigError(
            f"strict decoding error: unknown field \"{where}.{unknown[0]}\" (allowed: {', '.join(allowed)})"
            if where else f"strict decoding error: unknown field \"{unknown[0]}\" (allowed: {', '.join(allowed)})"
        )
    return dict(obj)


def _limit(value: Any, where: str) -> int:
    try:
        amount = parse_quantity_bytes(value if isinstance(value, int) else str(value))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if amount // MIB <= 0:
        raise ConfigError(f"{where}={value}: invalid limit: value set too low (at least 1Mi)")
    return amount


def _mps(obj: Any, where: str) -> MpsSettings:
    f = _fields(obj, where, ("defaultActiveThreadPercentage", "defaultPinnedDeviceMemoryLimit",
                             "defaultPerDevicePinnedMemoryLimit", "multiUser"))
    pct = f.get("defaultActiveThreadPercentage")
    if pct is not None:
        if isinstance(pct, bool) or not isinstance(pct, int):
            raise ConfigError(f"{where}.defaultActiveThreadPercentage={pct!r}: an integer from 0 to 100")
        if pct < 0:
            raise ConfigError(f"{where}.defaultActiveThreadPercentage={pct}: active thread percentage must not be "
                              "negative")
        if pct > 100:
            raise ConfigError(f"{where}.defaultActiveThreadPercentage={pct}: active thread percentage must not be "
                              "greater than 100")
    memory = f.get("defaultPinnedDeviceMemoryLimit")
    per_device_raw = f.get("defaultPerDevicePinnedMemoryLimit") or {}
    if not isinstance(per_device_raw, Mapping):
        raise ConfigError(f"{where}.defaultPerDevicePinnedMemoryLimit: a map of device index or UUID to a limit")
    per_device = {str(k): _limit(v, f"{where}.defaultPerDevicePinnedMemoryLimit[{k}]")
                  for k, v in per_device_raw.items()}
    multi_user = f.get("multiUser")
    if multi_user is not None and not isinstance(multi_user, bool):
        raise ConfigError(f"{where}.multiUser={multi_user!r}: true or false")
    return MpsSettings(
        active_thread_percentage=pct,
        pinned_memory_limit_bytes=None if memory is None else _limit(memory, f"{where}.defaultPinnedDeviceMemoryLimit"),
        per_device_pinned_memory_limit_bytes=per_device,
        multi_user=multi_user,
    )


def _sharing(obj: Any, kind: str) -> Sharing:
    allowed = ("strategy", "mpsConfig") if kind == MIG_CONFIG else ("strategy", "timeSlicingConfig", "mpsConfig")
    f = _fields(obj, "sharing", allowed)
    strategy = f.get("strategy")
    if strategy not in (TIME_SLICING, MPS):
        raise ConfigError(
            f"sharing.strategy={strategy!r}: unknown GPU sharing strategy: {strategy}, supported GPU sharing "
            f"strategies: {TIME_SLICING}, {MPS}"
        )
    if strategy == TIME_SLICING:
        if f.get("mpsConfig") is not None:
            raise ConfigError(f"sharing.mpsConfig: cannot use MpsConfig with the '{TIME_SLICING}' strategy")
        interval = None
        ts = f.get("timeSlicingConfig")
        if ts is not None:
            interval = _fields(ts, "sharing.timeSlicingConfig", ("interval",)).get("interval")
            if interval is not None and interval not in INTERVALS:
                raise ConfigError(
                    f"sharing.timeSlicingConfig.interval={interval!r}: unknown time-slice interval: {interval}, "
                    f"supported time-slice intervals: {', '.join(INTERVALS)}"
                )
        return Sharing(TIME_SLICING, interval=interval)
    if f.get("timeSlicingConfig") is not None:
        raise ConfigError(f"sharing.timeSlicingConfig: cannot use TimeSlicingConfig with the '{MPS}' strategy")
    mps = f.get("mpsConfig")
    return Sharing(MPS, mps=_mps(mps, "sharing.mpsConfig") if mps is not None else MpsSettings())


def decode(parameters: Any) -> DeviceConfig:
    """One opaque configuration's ``parameters``, strictly decoded; ConfigError says what is wrong."""
    f = _fields(parameters, "", ("apiVersion", "kind", "sharing"))
    if f.get("apiVersion") != API_VERSION:
        raise ConfigError(f"apiVersion={f.get('apiVersion')!r}: kgpu reads {API_VERSION} configurations")
    kind = f.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"kind={kind!r}: allowed {', '.join(KINDS)}")
    sharing = f.get("sharing")
    return DeviceConfig(kind=str(kind), sharing=None if sharing is None else _sharing(sharing, str(kind)))
