"""The ClusterPolicy (``clusterpolicies.kgpu.io/v1alpha1``): its spec, validated at the edge, and how it maps
onto the chart's values, from which the node DaemonSets are rendered (:mod:`kgpu.operator.components`).

Section names are NVIDIA's ClusterPolicy's where the concept is the same (``devicePlugin``, ``gfd``,
``dcgmExporter``, ``migManager``, ``validator``, ``toolkit``, ``daemonsets``, ``operator.runtimeClass``,
``hostPaths.driverInstallDir``, ``mig.strategy``); kgpu's own where NVIDIA has none (``mps`` as a
component, ``image``, ``logLevel``, ``simulate``). Everything is optional: what a spec leaves out is the
chart's default. Example::

    spec = parse_spec({"devicePlugin": {"config": {"version": "v1", "sharing": {...}}}})
    values = to_values(spec)          # the chart's values, defaults filled in
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kgpu.config.file import parse_config_document
from kgpu.config.flags import DEVICE_PLUGIN
from kgpu.config.resolve import build_config, resolve_settings
from kgpu.errors import ConfigError
from kgpu.operator.values import chart_defaults, coalesce

GROUP = "kgpu.io"
VERSION = "v1alpha1"
KIND = "ClusterPolicy"
PLURAL = "clusterpolicies"

_RESERVED_LABEL_PREFIX = "app.kubernetes.io/"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class EnvVar(_Section):
    name: str = Field(min_length=1, max_length=256)
    value: str = Field(default="", max_length=4096)


class Component(_Section):
    """What every node component takes, as NVIDIA's component specs do."""

    enabled: bool | None = Field(default=None, description="Run this component (default: the chart's).")
    args: list[str] | None = Field(default=None, max_length=64,
                                   description="Extra arguments appended to the component's command line.")
    env: list[EnvVar] | None = Field(default=None, max_length=64, description="Extra environment variables.")
    resources: dict[str, dict[str, str | int]] | None = Field(
        default=None, description="Container resources (requests, limits).")
    hostNetwork: bool | None = Field(default=None, description="Run in the host's network namespace.")


class DevicePluginSpec(Component):
    config: dict[str, Any] | None = Field(
        default=None,
        description="The device-plugin config file (NVIDIA's v1 format: version, flags, resources, sharing), "
        "used by every component. Validated by the operator; an invalid one is reported in status.",
    )


class MigManagerConfig(_Section):
    name: str = Field(default="", max_length=253, description="Unused by kgpu (NVIDIA's ConfigMap name).")
    default: str = Field(default="", max_length=63,
                         description="Layout applied to nodes without an nvidia.com/mig.config label.")


class MigManagerSpec(Component):
    config: MigManagerConfig | None = None


class RollingUpdate(_Section):
    maxUnavailable: int | str = Field(
        default=1, description="Nodes updated at once: a number or a percentage of GPU nodes, e.g. 1 or '25%'.")

    @field_validator("maxUnavailable")
    @classmethod
    def _max(cls, v: int | str) -> int | str:
        if isinstance(v, int):
            if v < 1:
                raise ValueError(f"{v} must be at least 1")
            return v
        text = v.strip()
        if text.endswith("%") and text[:-1].isdigit() and 0 < int(text[:-1]) <= 100:
            return text
        if text.isdigit() and int(text) >= 1:
            return int(text)
        raise ValueError(f"{v!r} is neither a positive integer nor a percentage such as '25%'")


class DaemonsetsSpec(_Section):
    labels: dict[str, str] | None = Field(default=None, description="Extra labels on every node component's pods.")
    annotations: dict[str, str] | None = Field(default=None, description="Extra annotations on those pods.")
    tolerations: list[dict[str, Any]] | None = Field(default=None, description="Tolerations of every node component.")
    nodeSelector: dict[str, str] | None = Field(default=None, description="Where the node components run.")
    affinity: dict[str, Any] | None = Field(default=None, description="Node affinity of the node components.")
    priorityClassName: str | None = Field(default=None, max_length=253)
    updateStrategy: Literal["RollingUpdate", "OnDelete"] | None = Field(
        default=None,
        description="RollingUpdate: the operator rolls a changed spec out node by node, within maxUnavailable, "
        "waiting for each node to validate again. OnDelete: pods change only when deleted.",
    )
    rollingUpdate: RollingUpdate | None = None

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for key in v or {}:
            if key.startswith(_RESERVED_LABEL_PREFIX):
                raise ValueError(f"label {key!r}: app.kubernetes.io/ labels select the pods and are kgpu's own")
        return v


class OperatorSpec(_Section):
    runtimeClass: str | None = Field(default=None, max_length=253,
                                     description="runtimeClassName of the node components ('' for the default).")


class HostPathsSpec(_Section):
    driverInstallDir: str | None = Field(
        default=None, max_length=4096,
        description="The host directory holding the NVIDIA driver ('' when the container runtime injects it).")


class ToolkitSpec(_Section):
    enabled: bool | None = Field(
        default=None,
        description="kgpu installs no container toolkit: configure the runtime with `kgpu node prepare` or use "
        "the driver-mounts device list strategy. Only false is accepted.")

    @field_validator("enabled")
    @classmethod
    def _enabled(cls, v: bool | None) -> bool | None:
        if v:
            raise ValueError("kgpu does not deploy NVIDIA's container toolkit; configure the runtime on the node "
                             "(`kgpu node prepare --apply`) or set devicePlugin.config.flags.plugin."
                             "deviceListStrategy to driver-mounts")
        return v


class MigSpec(_Section):
    strategy: Literal["none", "single", "mixed"] | None = None


class ImageSpec(_Section):
    repository: str | None = Field(default=None, max_length=512)
    tag: str | None = Field(default=None, max_length=128)
    pullPolicy: Literal["Always", "IfNotPresent", "Never"] | None = None


class SimulateSpec(_Section):
    fixture: str | None = Field(default=None, max_length=64,
                                description="Test clusters only: run the node components on a simulated GPU node.")


class ClusterPolicySpec(_Section):
    operator: OperatorSpec | None = None
    daemonsets: DaemonsetsSpec | None = None
    hostPaths: HostPathsSpec | None = None
    toolkit: ToolkitSpec | None = None
    devicePlugin: DevicePluginSpec | None = None
    gfd: Component | None = Field(default=None, description="GPU feature discovery labels (kgpu labeler).")
    dcgmExporter: Component | None = Field(default=None, description="dcgm-exporter metrics (kgpu exporter).")
    mps: Component | None = Field(default=None, description="The MPS control daemon (kgpu mps-daemon).")
    migManager: MigManagerSpec | None = None
    mig: MigSpec | None = None
    validator: Component | None = Field(default=None, description="kgpu node report: per-node stages.")
    image: ImageSpec | None = None
    logLevel: Literal["debug", "info", "warning", "error"] | None = None
    simulate: SimulateSpec | None = None


# ClusterPolicy section → the chart's values section of the same component.
COMPONENT_VALUES: dict[str, str] = {
    "devicePlugin": "devicePlugin",
    "gfd": "labeler",
    "dcgmExporter": "exporter",
    "mps": "mpsDaemon",
    "migManager": "migManager",
    "validator": "validator",
}


def parse_spec(raw: Any, source: str = "spec") -> ClusterPolicySpec:
    """The spec, or a ConfigError naming the field, the value and what is allowed."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (devicePlugin, gfd, daemonsets, ...)")
    try:
        spec = ClusterPolicySpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        value = repr(err["input"])
        value = value if len(value) <= 100 else value[:97] + "..."
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{source}.{where}: {msg} (got {value})") from exc
    if spec.devicePlugin and spec.devicePlugin.config is not None:
        check_device_plugin_config(spec.devicePlugin.config, f"{source}.devicePlugin.config")
    return spec


def check_device_plugin_config(config: dict[str, Any], source: str) -> None:
    """Validate the embedded device-plugin config with the file format's own model."""

    parse_config_document(config, source)


NODE_FILESYSTEM_ELSEWHERE = Path("/nonexistent-node-root")
"""The driver root is a fact of each node, checked by its daemons, not here: resolved as if under this root."""


def check_effective_config(values: Mapping[str, Any], spec: ClusterPolicySpec, source: str = "spec") -> None:
    """Refuse what the node daemons would refuse, or could not serve, in the config the spec makes (the chart's,
    the spec's ``devicePlugin.config`` over it, ``mig.strategy`` in it), so the nodes keep the last good one
    instead of every daemon failing to start: the cross-checks of the device plugin's own resolution (e.g.
    sharing.mps with migStrategy mixed), and MPS sharing without the MPS daemon."""
    where = f"{source}.devicePlugin.config"
    if spec.mig is not None and spec.mig.strategy is not None:
        where += f" with {source}.mig.strategy {spec.mig.strategy}"
    file = parse_config_document(values.get("config"), where)
    build_config(file, resolve_settings(DEVICE_PLUGIN, {}, {}, file, where), where,
                 host_root=NODE_FILESYSTEM_ELSEWHERE)
    if file.sharing is not None and file.sharing.mps is not None and not (values.get("mpsDaemon") or {}).get(
            "enabled"):
        raise ConfigError(f"{where}: shares GPUs through MPS (sharing.mps), but the MPS daemon is off: no MPS control "
                          f"daemon would serve those slices (set {source}.mps.enabled=true)")


def to_values(spec: ClusterPolicySpec, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The chart's values for this spec: the chart's defaults (or ``base``) with the spec's sections over them."""
    values = chart_defaults() if base is None else base
    over: dict[str, Any] = {}
    for section, target in COMPONENT_VALUES.items():
        comp: Component | None = getattr(spec, section)
        if comp is None:
            continue
        part: dict[str, Any] = {}
        if comp.enabled is not None:
            part["enabled"] = comp.enabled
        if comp.args is not None:
            part["extraArgs"] = list(comp.args)
        if comp.env is not None:
            part["env"] = [e.model_dump() for e in comp.env]
        if comp.resources is not None:
            part["resources"] = comp.resources
        if comp.hostNetwork is not None:
            part["hostNetwork"] = comp.hostNetwork
        if part:
            over[target] = part
    dp = spec.devicePlugin
    if dp is not None and dp.config is not None:
        over["config"] = dp.config
    if spec.mig is not None and spec.mig.strategy is not None:
        config = dict(over.get("config") or values.get("config") or {})
        flags = dict(config.get("flags") or {})
        flags["migStrategy"] = spec.mig.strategy
        config["flags"] = flags
        over["config"] = config
    ds = spec.daemonsets
    if ds is not None:
        for key in ("nodeSelector", "affinity", "tolerations", "priorityClassName"):
            if getattr(ds, key) is not None:
                over[key] = getattr(ds, key)
        extra = {k: getattr(ds, k) for k in ("labels", "annotations") if getattr(ds, k) is not None}
        if extra:
            over["daemonsets"] = extra
    if spec.operator is not None and spec.operator.runtimeClass is not None:
        over["runtimeClassName"] = spec.operator.runtimeClass
    if spec.hostPaths is not None and spec.hostPaths.driverInstallDir is not None:
        over["driverRoot"] = spec.hostPaths.driverInstallDir
    if spec.image is not None:
        image = {k: v for k, v in spec.image.model_dump().items() if v is not None}
        if image:
            over["image"] = image
    if spec.logLevel is not None:
        over["logLevel"] = spec.logLevel
    if spec.simulate is not None and spec.simulate.fixture is not None:
        over["simulate"] = {"fixture": spec.simulate.fixture}
    merged = coalesce(values, over)
    if ds is not None and (ds.updateStrategy is not None or ds.rollingUpdate is not None):
        # Replaced whole, not merged: OnDelete takes no rollingUpdate.
        strategy: dict[str, Any] = {"type": ds.updateStrategy or "RollingUpdate"}
        if strategy["type"] == "RollingUpdate":
            strategy["rollingUpdate"] = {"maxUnavailable": (ds.rollingUpdate or RollingUpdate()).maxUnavailable}
        merged["updateStrategy"] = strategy
    return merged


def mig_default(spec: ClusterPolicySpec) -> str:
    mm = spec.migManager
    return mm.config.default if mm is not None and mm.config is not None else ""
