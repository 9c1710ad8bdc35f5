"""Flags > environment > config file > defaults, merged into one validated :class:`PluginConfig`.

The rules are NVIDIA's ``NewConfig``: the config file is read first, then every flag that was
set on the command line or by an environment variable overrides it (``c.IsSet``), and the
defaults fill the rest; ``nvidiaDevRoot`` falls back to the driver root and MPS's
``failRequestsGreaterThanOne`` defaults to true. Then the cross-setting checks of NVIDIA's
``validateFlags`` and kgpu's bounds.

Example::

    config = resolve_config({"mig-strategy": "mixed"}, os.environ, Path("/etc/kgpu/config.yaml"))
    config.flags.mig_strategy               # 'mixed' (the flag wins over the file)
    config.sharing.strategy                 # 'time-slicing' when the file asks for replicas
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kgpu.config.driverroot import resolve_driver_root
from kgpu.config.file import ConfigFileSpec, field_name, file_value, load_config_file
from kgpu.config.flags import (
    DEVICE_PLUGIN,
    FLAGS,
    GLOBAL_FLAGS,
    Flag,
    Program,
    flag_named,
    lookup,
)
from kgpu.config.limits import shown
from kgpu.config.values import (
    DEFAULT_GPU_RESOURCE,
    DEFAULT_NVIDIA_CTK_PATH,
    SUPPORTED_DISCOVERY_STRATEGIES,
    Flags,
    GfdFlags,
    Health,
    Imex,
    PluginConfig,
    PluginFlags,
    ResourcePattern,
    Resources,
    Sharing,
)
from kgpu.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Setting:
    """One resolved setting and where it came from (``flag --mig-strategy``, ``config file …``, ``default``)."""

    value: object
    source: str


def _program_for(flag: Flag, program: Program) -> Program | None:
    if program in flag.env:
        return program
    if flag.name in GLOBAL_FLAGS:
        return next(iter(flag.env))
    return None


def resolve_settings(
    program: Program,
    given: Mapping[str, object],
    environ: Mapping[str, str],
    spec: ConfigFileSpec | None = None,
    where: str = "config file",
) -> dict[str, Setting]:
    """Every flag ``program`` takes (and every file key), by flag name: flag > env > file > default."""
    out: dict[str, Setting] = {}
    for flag in FLAGS:
        env_program = _program_for(flag, program)
        if env_program is None and not flag.key:
            continue
        found = lookup(flag, env_program, given, environ) if env_program is not None else None
        if found is not None:
            out[flag.name] = Setting(found[0], found[1])
            continue
        from_file = file_value(spec, flag.key) if spec is not None and flag.key else None
        if from_file is not None:
            value = tuple(from_file) if isinstance(from_file, list) else from_file
            out[flag.name] = Setting(value, f"{where}: {flag.key}")
        elif flag.default is not None:
            out[flag.name] = Setting(flag.default, "default")
    return out


def config_file_path(program: Program, given: Mapping[str, object], environ: Mapping[str, str],
                     config_file: Path | str | None = None) -> str | None:
    """The config file to read: ``config_file``, else ``--config-file``, else the program's variables."""
    if config_file is not None and str(config_file):
        return str(config_file)
    found = lookup(flag_named("config-file"), program, given, environ)
    return str(found[0]) if found is not None and str(found[0]) else None


def resolve_config(
    given: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | str | None = None,
    *,
    program: Program = DEVICE_PLUGIN,
    host_root: Path = Path("/"),
) -> PluginConfig:
    """Merge flags > environment > config file > defaults into one validated :class:`PluginConfig`.

    ``given`` is keyed by NVIDIA's flag names (``mig-strategy``; ``mig_strategy`` also works); a
    value of ``None`` means "not given on the command line". ``config_file`` wins over the
    ``config-file`` flag and its variables. Raises :class:`ConfigError` with the file, key, value
    and allowed values for anything invalid.
    """
    given = given or {}
    environ = environ or {}
    path = config_file_path(program, given, environ, config_file)
    spec = load_config_file(Path(path)) if path else ConfigFileSpec()
    where = f"config file {path}" if path else "configuration"
    settings = resolve_settings(program, given, environ, spec, f"config file {path}")
    return build_config(spec, settings, where, path, host_root)


def _grouped(settings: Mapping[str, Setting]) -> dict[tuple[str, ...], dict[str, Any]]:
    """Values by the dataclass they belong to (``("flags", "plugin")``) and their field name there."""
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for name, setting in settings.items():
        flag = flag_named(name)
        if not flag.key:
            continue
        model: Any = ConfigFileSpec
        parts: list[str] = []
        for alias in flag.key.split("."):
            field = field_name(model, alias)
            parts.append(field)
            annotation = model.model_fields[field].annotation
            model = next((a for a in getattr(annotation, "__args__", ()) if isinstance(a, type)), None)
        value = setting.value
        groups.setdefault(tuple(parts[:-1]), {})[parts[-1]] = tuple(value) if isinstance(value, list) else value
    return groups


def build_config(spec: ConfigFileSpec, settings: Mapping[str, Setting], where: str = "configuration",
                 path: str | None = None, host_root: Path = Path("/")) -> PluginConfig:
    """The :class:`PluginConfig` from a validated file and resolved settings; cross-checks included."""
    groups = _grouped(settings)
    flags = Flags(
        plugin=PluginFlags(**groups.get(("flags", "plugin"), {}), **_cli_only(settings)),
        gfd=GfdFlags(**groups.get(("flags", "gfd"), {})),
        **groups.get(("flags",), {}),
    )
    imex = Imex(**groups.get(("imex",), {}))
    resources = Resources()
    if spec.resources is not None:
        resources = Resources(
            gpus=tuple(ResourcePattern(r.pattern, r.name) for r in spec.resources.gpus),
            mig=tuple(ResourcePattern(r.pattern, r.name) for r in spec.resources.mig),
        )
    sharing = Sharing()
    if spec.sharing is not None:
        ts, mps = spec.sharing.time_slicing, spec.sharing.mps
        sharing = Sharing(
            time_slicing=ts.to_value() if ts is not None else None,
            mps=mps.to_value(where) if mps is not None else None,
        )
    health = None
    if spec.health is not None:
        h = spec.health
        health = Health(
            disabled=h.disabled,
            event_types=tuple(h.event_types),
            ignored_xids=tuple(h.ignored_xids),
            critical_xids=h.critical_xids,
        )
    host = settings.get("driver-root")
    container = settings.get("driver-root-ctr-path")
    try:
        driver_root = resolve_driver_root(
            str(host.value) if host else "/",
            str(container.value) if container else "",
            host_given=host is not None and host.source != "default",
            container_given=container is not None and container.source != "default",
            host_root=host_root,
        )
    except ConfigError as exc:  # named by where the value came from (a file key, a variable, a flag)
        about = container if str(exc).startswith("driver-root-ctr-path") else host
        origin = about.source if about is not None and about.source != "default" else ""
        raise ConfigError(f"{origin}: {exc}" if origin and origin not in str(exc) else str(exc)) from None
    config = PluginConfig(
        flags=flags, resources=resources, sharing=sharing, imex=imex, health=health, driver_root=driver_root,
        config_file=path,
    )
    check_combination(config, settings, where)
    return config


def _cli_only(settings: Mapping[str, Setting]) -> dict[str, Any]:
    """``flags.plugin`` settings NVIDIA takes on the command line only."""
    out: dict[str, Any] = {}
    for name, field in (("kubelet-socket", "kubelet_socket"), ("cdi-feature-flags", "cdi_feature_flags"),
                        ("cdi-disable-hooks", "cdi_disable_hooks")):
        if name in settings:
            out[field] = settings[name].value
    return out


def _source(settings: Mapping[str, Setting], name: str, where: str) -> str:
    setting = settings.get(name)
    return setting.source if setting is not None and setting.source != "default" else where


def check_combination(config: PluginConfig, settings: Mapping[str, Setting] | None = None,
                      where: str = "configuration") -> None:
    """Cross-setting rules NVIDIA enforces at start-up (``validateFlags``), and kgpu's refusals."""
    settings = settings or {}
    ts, mps = config.sharing.time_slicing, config.sharing.mps
    if ts is not None and ts.resources and mps is not None and mps.enabled:
        raise ConfigError(f"{where}: set either sharing.timeSlicing or sharing.mps, not both")
    discovery = config.flags.device_discovery_strategy
    if discovery not in SUPPORTED_DISCOVERY_STRATEGIES:
        raise ConfigError(
            f"{_source(settings, 'device-discovery-strategy', where)}: device discovery strategy {discovery!r} "
            "is refused: kgpu discovers GPUs through NVML (use auto or nvml); Jetson (tegra) and vfio "
            "passthrough are not supported"
        )
    plugin = config.flags.plugin
    if plugin.any_cdi:
        # NVIDIA's plugin writes its own CDI spec with these; kgpu's names the devices of the node's
        # nvidia.com/gpu spec, written by kgpu cdi generate (or nvidia-ctk cdi generate), where they belong.
        # (Without a CDI strategy NVIDIA's plugin writes no spec either, and ignores them as kgpu does.)
        for name, value, fix in (
            ("nvidia-cdi-hook-path", plugin.nvidia_ctk_path if plugin.nvidia_ctk_path != DEFAULT_NVIDIA_CTK_PATH
             else "", "kgpu cdi generate --nvidia-cdi-hook-path PATH"),
            ("cdi-feature-flags", ",".join(plugin.cdi_feature_flags), "nvidia-ctk cdi generate --feature-flag"),
            ("cdi-disable-hooks", ",".join(plugin.cdi_disable_hooks), "kgpu cdi generate --disable-hook NAME"),
        ):
            if value:
                raise ConfigError(
                    f"{_source(settings, name, where)}: {shown(value)} is refused: kgpu's device plugin writes no "
                    f"CDI spec; its {'/'.join(s for s in plugin.device_list_strategy if s.startswith('cdi-'))} "
                    f"strategy names the devices of the node's nvidia.com/gpu spec, so set it where that spec is "
                    f"written ({fix})"
                )
    if config.imex.channel_ids not in ((), (0,)):
        raise ConfigError(
            f"{_source(settings, 'imex-channel-ids', where)}: invalid IMEX channel IDs "
            f"{shown(list(config.imex.channel_ids))}: channelIDs must be [] or [0]"
        )
    if mps is not None:
        whole = [DEFAULT_GPU_RESOURCE, *dict.fromkeys(r.name for r in config.resources.gpus)]
        for i, r in enumerate(mps.resources):
            if r.source not in whole:
                raise ConfigError(
                    f"{where}: sharing.mps.resources[{i}].name: {r.source!r}: MPS shares whole GPUs only, so the "
                    f"name must be {' or '.join(whole)} (use 'rename' to advertise it under another name)"
                )
    if config.sharing.strategy == "mps":
        if config.flags.mig_strategy == "mixed":
            raise ConfigError(f"{where}: sharing.mps cannot be combined with migStrategy mixed; use none or single")
        if not config.flags.mps_root:
            raise ConfigError(f"{where}: sharing.mps needs flags.mpsRoot (or --mps-root / MPS_ROOT)")
