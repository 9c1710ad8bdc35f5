"""The one table of flags: every setting NVIDIA's binaries take, under NVIDIA's names, plus kgpu's.

Each :class:`Flag` row is the only declaration of that flag in kgpu: the command line's options
(:mod:`kgpu.cli.flagopts`) and the resolver (:func:`kgpu.config.resolve_config`) are generated from
it. A row carries NVIDIA's flag name and aliases, the environment variables *in NVIDIA's order*
for each program that takes it (the first variable that is set wins, as urfave/cli does), the
type, the default, the help text and, where the setting can also be written in the config file,
its key there.

Programs are NVIDIA's binaries; kgpu's commands take their flags:

=========================  ===============================================
``nvidia-device-plugin``   ``kgpu device-plugin``
``gpu-feature-discovery``  ``kgpu labeler`` (``kgpu labels`` takes a subset)
``config-manager``         ``kgpu config-manager``
``dcgm-exporter``          ``kgpu exporter`` (kgpu's own flags, dcgm-exporter's metrics)
=========================  ===============================================

The device plugin and the exporter also run from entry points of their own (``kgpu-device-plugin``,
``kgpu-exporter``: :mod:`kgpu.daemon.entry`), whose command lines are generated from this table too.

Values are parsed as urfave/cli v2 parses them: booleans by Go's ``strconv.ParseBool`` (``1 t T TRUE
true True 0 f F FALSE false False``; a variable set to the empty string means false), lists split
on commas, durations in Go's syntax.

Example::

    flag = flag_named("mig-strategy")
    flag.env_for("gpu-feature-discovery")      # ('GFD_MIG_STRATEGY', 'MIG_STRATEGY')
    parse_value(flag, "mixed", "flag")   # 'mixed'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from kgpu.config.duration import parse_duration
from kgpu.config.limits import shown
from kgpu.config.values import (
    ALLOCATION_POLICIES,
    DEFAULT_CDI_ANNOTATION_PREFIX,
    DEFAULT_CONTAINER_DRIVER_ROOT,
    DEFAULT_DEVICE_PLUGIN_STATE_FILE,
    DEFAULT_KUBELET_SOCKET,
    DEFAULT_MACHINE_TYPE_FILE,
    DEFAULT_MPS_ROOT,
    DEFAULT_NVIDIA_CTK_PATH,
    DEFAULT_POD_RESOURCES_SOCKET,
    DEFAULT_SLEEP_INTERVAL,
    DEVICE_DISCOVERY_STRATEGIES,
    DEVICE_ID_STRATEGIES,
    DEVICE_LIST_STRATEGIES,
    MIG_STRATEGIES,
)
from kgpu.errors import ConfigError

Program = Literal["nvidia-device-plugin", "gpu-feature-discovery", "config-manager", "dcgm-exporter"]
DEVICE_PLUGIN: Final = "nvidia-device-plugin"
GFD: Final = "gpu-feature-discovery"
CONFIG_MANAGER: Final = "config-manager"
DCGM_EXPORTER: Final = "dcgm-exporter"
PROGRAMS: tuple[Program, ...] = (DEVICE_PLUGIN, GFD, CONFIG_MANAGER, DCGM_EXPORTER)

Kind = Literal["string", "bool", "strings", "ints", "duration", "int", "float"]

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
BOOL_FORMS = "true or false (also 1, 0, t, f, TRUE, FALSE, True, False)"
BOOL_METAVAR = "[=BOOL]"
"""A boolean is given bare (``--pass-device-specs``) or with a value (``--pass-device-specs=false``)."""


@dataclass(frozen=True, slots=True)
class Flag:
    """One setting that can come from a flag, an environment variable or the config file."""

    name: str
    """NVIDIA's flag name, without dashes (``mig-strategy``)."""
    kind: Kind
    help: str
    env: Mapping[Program, tuple[str, ...]]
    """For each program that takes the flag, its environment variables in NVIDIA's order."""
    default: object = None
    """The value when nothing sets it; ``None`` for no value."""
    key: str = ""
    """Its key in the config file (``flags.migStrategy``); empty for command-line-only settings."""
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    metavar: str = "VALUE"
    origin: Literal["nvidia", "kgpu"] = "nvidia"
    differs: str = ""
    """Where kgpu's default or meaning deliberately differs from NVIDIA's, and why."""
    help_for: Mapping[Program, str] = field(default_factory=dict)
    """The help for a program in which the flag means something else (config-manager's --oneshot)."""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    @property
    def programs(self) -> tuple[Program, ...]:
        return tuple(self.env)

    def env_for(self, program: Program) -> tuple[str, ...]:
        return self.env.get(program, ())


def _dp(*env: str) -> dict[Program, tuple[str, ...]]:
    return {DEVICE_PLUGIN: env}


def _gfd(*env: str) -> dict[Program, tuple[str, ...]]:
    return {GFD: env}


def _cm(*env: str) -> dict[Program, tuple[str, ...]]:
    return {CONFIG_MANAGER: env}


def _ex(*env: str) -> dict[Program, tuple[str, ...]]:
    return {DCGM_EXPORTER: env}


FLAGS: tuple[Flag, ...] = (
    # ---- nvidia-device-plugin (cmd/nvidia-device-plugin/main.go), and GFD where it shares them ----
    Flag("mig-strategy", "string",
         "How GPUs in MIG mode are exposed: none (whole GPUs only), single (MIG devices as nvidia.com/gpu) "
         "or mixed (nvidia.com/mig-<profile>).",
         {DEVICE_PLUGIN: ("MIG_STRATEGY",), GFD: ("GFD_MIG_STRATEGY", "MIG_STRATEGY")},
         "none", "flags.migStrategy", choices=MIG_STRATEGIES, metavar="STRATEGY"),
    Flag("fail-on-init-error", "bool",
         "Exit when NVML or the GPUs cannot be initialised; false logs why and carries on without GPUs "
         "(the device plugin idles, the labeler labels none), for DaemonSets that also land on nodes without GPUs.",
         {DEVICE_PLUGIN: ("FAIL_ON_INIT_ERROR",), GFD: ("GFD_FAIL_ON_INIT_ERROR", "FAIL_ON_INIT_ERROR")},
         True, "flags.failOnInitError"),
    Flag("driver-root", "string",
         "Where the NVIDIA driver is installed on the host: / or e.g. /run/nvidia/driver, /usr/local/nvidia. "
         "Paths given to the kubelet and the container runtime are under it.",
         _dp("NVIDIA_DRIVER_ROOT"), "/", "flags.nvidiaDriverRoot", aliases=("nvidia-driver-root",), metavar="DIR"),
    Flag("dev-root", "string",
         "Root of the /dev/nvidia* device nodes on the host. Default: the driver root when it holds "
         "dev/nvidiactl, else /.",
         _dp("NVIDIA_DEV_ROOT"), None, "flags.nvidiaDevRoot", aliases=("nvidia-dev-root",), metavar="DIR",
         differs="NVIDIA always defaults to the driver root; a driver root such as /usr/local/nvidia has no "
                 "dev/, so kgpu uses / there"),
    Flag("pass-device-specs", "bool",
         "Return the /dev/nvidia* device nodes as DeviceSpecs in Allocate, so they are in the container's "
         "device cgroup.",
         _dp("PASS_DEVICE_SPECS"), False, "flags.plugin.passDeviceSpecs"),
    Flag("device-list-strategy", "strings",
         "How allocated devices reach the container runtime (comma-separated or repeated): envvar, "
         "volume-mounts, cdi-annotations, cdi-cri, or kgpu's driver-mounts (no container toolkit needed).",
         _dp("DEVICE_LIST_STRATEGY"), ("envvar",), "flags.plugin.deviceListStrategy",
         choices=DEVICE_LIST_STRATEGIES, metavar="LIST"),
    Flag("device-id-strategy", "string",
         "How devices are named to the runtime: uuid (GPU-…, MIG-…) or index (0, 0:1).",
         _dp("DEVICE_ID_STRATEGY"), "uuid", "flags.plugin.deviceIDStrategy",
         choices=DEVICE_ID_STRATEGIES, metavar="STRATEGY"),
    Flag("gdrcopy-enabled", "bool", "Start containers with NVIDIA_GDRCOPY=enabled (GDRCopy support).",
         _dp("GDRCOPY_ENABLED"), False, "flags.gdrcopyEnabled"),
    Flag("gds-enabled", "bool", "Start containers with NVIDIA_GDS=enabled (GPUDirect Storage).",
         _dp("GDS_ENABLED"), False, "flags.gdsEnabled"),
    Flag("mofed-enabled", "bool", "Start containers with NVIDIA_MOFED=enabled (MOFED support).",
         _dp("MOFED_ENABLED"), False, "flags.mofedEnabled"),
    Flag("cdi-annotation-prefix", "string", "Prefix of CDI annotation keys (cdi-annotations strategy).",
         _dp("CDI_ANNOTATION_PREFIX"), DEFAULT_CDI_ANNOTATION_PREFIX, "flags.plugin.cdiAnnotationPrefix",
         metavar="PREFIX"),
    Flag("nvidia-cdi-hook-path", "string",
         "The hook NVIDIA's plugin names in the CDI spec it writes. kgpu's writes none (cdi-* strategies use the "
         "node's nvidia.com/gpu spec: kgpu cdi generate), so with a cdi-* strategy another value is refused.",
         _dp("NVIDIA_CDI_HOOK_PATH", "NVIDIA_CTK_PATH"), DEFAULT_NVIDIA_CTK_PATH, "flags.plugin.nvidiaCTKPath",
         aliases=("nvidia-ctk-path",), metavar="PATH"),
    Flag("driver-root-ctr-path", "string",
         "Where the driver root is mounted in this process's container; used when it exists, else the "
         "driver root itself is read.",
         {DEVICE_PLUGIN: ("DRIVER_ROOT_CTR_PATH", "CONTAINER_DRIVER_ROOT"),
          GFD: ("DRIVER_ROOT_CTR_PATH", "CONTAINER_DRIVER_ROOT")},
         DEFAULT_CONTAINER_DRIVER_ROOT, "flags.plugin.containerDriverRoot", aliases=("container-driver-root",),
         metavar="DIR"),
    Flag("mps-root", "string", "Host directory for the MPS daemons' pipes, logs and status files.",
         _dp("MPS_ROOT"), DEFAULT_MPS_ROOT, "flags.mpsRoot", metavar="DIR",
         differs="NVIDIA has no default (its chart passes /run/nvidia/mps); kgpu's MPS daemons use /run/kgpu/mps"),
    Flag("shared-devices-allocation-policy", "string",
         "How shared replicas and MIG devices are picked: distributed (least-used GPUs first), packed (fill "
         "the busiest GPU first) or kgpu's spread (as many distinct GPUs as possible).",
         _dp("SHARED_DEVICES_ALLOCATION_POLICY"), "distributed", "flags.plugin.sharedDevicesAllocationPolicy",
         choices=ALLOCATION_POLICIES, metavar="POLICY"),
    Flag("device-discovery-strategy", "string",
         "How GPUs are discovered: auto or nvml (kgpu reads NVML; tegra and vfio are refused).",
         {DEVICE_PLUGIN: ("DEVICE_DISCOVERY_STRATEGY",), GFD: ("DEVICE_DISCOVERY_STRATEGY",)},
         "auto", "flags.deviceDiscoveryStrategy", choices=DEVICE_DISCOVERY_STRATEGIES, metavar="STRATEGY"),
    Flag("imex-channel-ids", "ints",
         "IMEX channels to inject into containers (only [] or [0] are valid), comma-separated or repeated.",
         _dp("IMEX_CHANNEL_IDS"), (), "imex.channelIDs", metavar="IDS"),
    Flag("imex-required", "bool", "The IMEX channels are required: inject them even when they are not found.",
         _dp("IMEX_REQUIRED"), False, "imex.required"),
    Flag("kubelet-socket", "string",
         "The kubelet's registration socket; the plugin's own sockets go in the same directory.",
         _dp("KUBELET_SOCKET"), DEFAULT_KUBELET_SOCKET, "", metavar="PATH"),
    Flag("config-file", "string",
         "NVIDIA v1 config file (YAML or JSON); flags and environment variables override it.",
         {DEVICE_PLUGIN: ("CONFIG_FILE",), GFD: ("GFD_CONFIG_FILE", "CONFIG_FILE")}, None, "", metavar="FILE"),
    Flag("cdi-feature-flags", "strings",
         "Feature flags for the CDI spec NVIDIA's plugin writes; refused with a cdi-* strategy (kgpu's writes none).",
         _dp("CDI_FEATURE_FLAGS"), (), "", metavar="LIST"),
    Flag("cdi-disable-hooks", "strings",
         "Hooks to leave out of the CDI spec NVIDIA's plugin writes; refused with a cdi-* strategy (kgpu cdi "
         "generate --disable-hook does it for the node's spec).",
         _dp("CDI_DISABLE_HOOKS"), (), "", metavar="LIST"),
    # ---- gpu-feature-discovery (cmd/gpu-feature-discovery/main.go, internal/flags) ----
    Flag("oneshot", "bool", "Label once and exit (non-zero on failure).",
         {GFD: ("GFD_ONESHOT",), CONFIG_MANAGER: ("ONESHOT",)}, False, "flags.gfd.oneshot",
         help_for={CONFIG_MANAGER: "Choose the config once and exit (an init container before the daemons)."}),
    Flag("no-timestamp", "bool", "Leave out the nvidia.com/gfd.timestamp label.",
         _gfd("GFD_NO_TIMESTAMP"), False, "flags.gfd.noTimestamp"),
    Flag("sleep-interval", "duration",
         "Time between labelling runs, e.g. 60s or 1m30s; infinite labels once and then waits.",
         _gfd("GFD_SLEEP_INTERVAL"), DEFAULT_SLEEP_INTERVAL, "flags.gfd.sleepInterval", metavar="DURATION"),
    Flag("output-file", "string", "The NFD local feature file the labels are written to (atomically).",
         _gfd("GFD_OUTPUT_FILE"), "/etc/kubernetes/node-feature-discovery/features.d/kgpu", "flags.gfd.outputFile",
         aliases=("output", "o"), metavar="FILE",
         differs="GFD writes features.d/gfd; kgpu's file is features.d/kgpu, so both can run side by side"),
    Flag("machine-type-file", "string", "File holding the machine type for nvidia.com/gpu.machine (DMI).",
         _gfd("GFD_MACHINE_TYPE_FILE"), DEFAULT_MACHINE_TYPE_FILE, "flags.gfd.machineTypeFile", metavar="FILE"),
    Flag("use-node-feature-api", "bool",
         "Publish the labels as an NFD NodeFeature object (nvidia-features-for-<node>) instead of a file.",
         _gfd("GFD_USE_NODE_FEATURE_API", "USE_NODE_FEATURE_API"), False, "flags.useNodeFeatureAPI",
         differs="GFD defaults to true, which needs NFD's NodeFeature CRD; kgpu defaults to the feature file"),
    Flag("kubeconfig", "string", "Kubeconfig file for talking to the API server (default: in-cluster).",
         {GFD: ("KUBECONFIG",), CONFIG_MANAGER: ("KUBECONFIG",)}, None, "", metavar="FILE"),
    Flag("kube-api-qps", "float", "Queries per second to the API server.", _gfd("KUBE_API_QPS"), 5.0, "",
         metavar="QPS"),
    Flag("kube-api-burst", "int", "Burst of queries to the API server.", _gfd("KUBE_API_BURST"), 10, "",
         metavar="BURST"),
    Flag("namespace", "string", "Namespace of the NodeFeature object.", _gfd("NAMESPACE"), "default", "",
         metavar="NAME"),
    Flag("node-name", "string", "The name of this node.",
         {GFD: ("NODE_NAME",), CONFIG_MANAGER: ("NODE_NAME",)}, None, "", metavar="NAME"),
    Flag("pod-name", "string", "This pod's name, to make it the NodeFeature object's owner.",
         _gfd("POD_NAME"), None, "", metavar="NAME"),
    # ---- config-manager (cmd/config-manager/main.go) ----
    Flag("node-label", "string", "The node label whose value names the config to use.",
         _cm("NODE_LABEL"), "nvidia.com/device-plugin.config", "", metavar="LABEL"),
    Flag("config-file-srcdir", "string", "Directory holding the named configs (a mounted ConfigMap).",
         _cm("CONFIG_FILE_SRCDIR"), None, "", metavar="DIR"),
    Flag("config-file-dst", "string", "The config file the daemons read, made to point at the chosen config.",
         _cm("CONFIG_FILE_DST"), None, "", metavar="FILE"),
    Flag("default-config", "string", "The config to use when the node has no label.",
         _cm("DEFAULT_CONFIG"), None, "", metavar="NAME"),
    Flag("fallback-strategies", "strings",
         "Without a label or default: named (a config called 'default'), single (the only config), "
         "empty (no config), tried in order (comma-separated or repeated).",
         _cm("FALLBACK_STRATEGIES"), (), "", choices=("named", "single", "empty"), metavar="LIST"),
    Flag("send-signal", "bool", "Send a signal to --process-to-signal after the config changes.",
         _cm("SEND_SIGNAL"), True, ""),
    Flag("signal", "int", "The signal number to send (1 is SIGHUP).", _cm("SIGNAL"), 1, "", metavar="NUMBER"),
    Flag("process-to-signal", "string", "The process (its argv[0]) to signal.",
         _cm("PROCESS_TO_SIGNAL"), "nvidia-device-plugin", "", metavar="NAME"),
    Flag("config-map", "string",
         "Read the configs from this ConfigMap through the API server (NAMESPACE/NAME, or NAME in the pod's "
         "namespace) and write the chosen one to --config-file-dst: an edit reaches the daemons within a "
         "second, not at the kubelet's next sync of the mounted copy (60-90 s). --config-file-srcdir is then "
         "what --oneshot falls back to when the API server cannot be read, and an empty --node-label means "
         "that no label is followed.",
         _cm("KGPU_CONFIG_MAP"), None, "", metavar="CONFIGMAP", origin="kgpu"),
    # ---- kgpu's own settings of the device plugin (kgpu device-plugin, kgpu-device-plugin) ----
    Flag("kubelet-dir", "string",
         "The kubelet's device-plugins directory (holds kubelet.sock and our sockets). Default: the directory "
         "of --kubelet-socket.",
         _dp("KGPU_KUBELET_DIR"), None, "", metavar="DIR", origin="kgpu"),
    Flag("health-recovery-window", "string",
         "An unhealthy GPU becomes healthy again once it answers probes and no fatal event came for this "
         "long (e.g. 5m, 90s, 1h; 0 disables recovery).",
         _dp("KGPU_HEALTH_RECOVERY_WINDOW"), "5m", "", metavar="DURATION", origin="kgpu"),
    Flag("state-file", "string",
         "JSON snapshot of advertised devices, health and allocation counts (read by the exporter).",
         _dp("KGPU_DP_STATE_FILE"), DEFAULT_DEVICE_PLUGIN_STATE_FILE, "", metavar="FILE", origin="kgpu"),
    Flag("healthz", "string",
         "Serve GET /healthz on HOST:PORT (e.g. :8083): 200 while every watcher works, 503 with why.",
         _dp("KGPU_HEALTHZ"), None, "", metavar="ADDR", origin="kgpu"),
    # ---- kgpu exporter (kgpu-exporter), in place of dcgm-exporter ----
    Flag("listen", "string", "Address to serve /metrics and /healthz on: HOST:PORT, :PORT or [::]:PORT.",
         _ex("KGPU_EXPORTER_LISTEN"), "0.0.0.0:9400", "", metavar="ADDR", origin="kgpu"),
    Flag("collect", "string",
         "Counters to publish, in dcgm-exporter's CSV format ('FIELD, gauge|counter|label, help'). Default: "
         "kgpu's built-in list (see --print-default-counters).",
         _ex("KGPU_EXPORTER_COLLECT"), None, "", metavar="FILE", origin="kgpu"),
    Flag("kubelet-pod-resources", "string",
         "The kubelet's PodResources socket, for pod/namespace/container labels; 'none' turns pod "
         "attribution off.",
         _ex("KGPU_KUBELET_POD_RESOURCES"), DEFAULT_POD_RESOURCES_SOCKET, "", metavar="SOCKET", origin="kgpu"),
    Flag("device-plugin-state", "string",
         "The device plugin's state file (health and allocations per advertised device) for the "
         "kgpu_device_plugin_* series; 'none' turns them off.",
         _ex("KGPU_DEVICE_PLUGIN_STATE"), DEFAULT_DEVICE_PLUGIN_STATE_FILE, "", metavar="FILE", origin="kgpu"),
    Flag("hostname-label", "string",
         "Name of the host label: Hostname (dcgm-exporter before 2026), hostname (dcgm-exporter since), or none.",
         _ex(), "Hostname", "", metavar="NAME", origin="kgpu"),
    Flag("hostname", "string", "Value of the host label. Default: $NODE_NAME, else this machine's host name.",
         _ex(), None, "", metavar="NAME", origin="kgpu"),
    Flag("kubernetes-virtual-gpus", "bool",
         "One series per container sharing a GPU, with a vgpu=<replica> label, as dcgm-exporter's flag of that "
         "name; without it, the last container the kubelet lists wins.",
         _ex(), False, "", origin="kgpu"),
    Flag("nvidia-resource-names", "string",
         "Extra extended-resource names (comma-separated) whose devices are GPUs, e.g. nvidia.com/gpu.shared. "
         "nvidia.com/gpu and nvidia.com/mig-* are always included.",
         _ex(), "", "", metavar="NAMES", origin="kgpu"),
    Flag("read-timeout", "float",
         "Seconds a scrape waits for one GPU; a GPU slower than this is left out of that scrape and counted in "
         "kgpu_gpu_read_errors_total (at least 0.01).",
         _ex(), 2.0, "", metavar="SECONDS", origin="kgpu"),
    Flag("once", "bool", "Print one scrape to stdout and exit instead of serving.", _ex(), False, "",
         origin="kgpu"),
    Flag("print-default-counters", "bool", "Print the built-in counters CSV and exit.", _ex(), False, "",
         origin="kgpu"),
)

GLOBAL_FLAGS = ("driver-root", "driver-root-ctr-path", "dev-root")
"""Settings every kgpu command takes (``kgpu --driver-root DIR <command>``), with the plugin's variables."""

_BY_NAME: dict[str, Flag] = {n: f for f in FLAGS for n in f.names}


def flag_named(name: str) -> Flag:
    """The row for a flag name or alias; KeyError for a name no program takes."""
    return _BY_NAME[name]


def flags_of(program: Program, only: Sequence[str] = ()) -> tuple[Flag, ...]:
    """The rows ``program`` takes, in table order; ``only`` picks some of them by name."""
    rows = tuple(f for f in FLAGS if program in f.env)
    if only:
        missing = [n for n in only if n not in {f.name for f in rows}]
        if missing:
            raise KeyError(f"{program} has no flag {missing[0]!r}")
        rows = tuple(f for f in rows if f.name in only)
    return rows


def option_names(flag: Flag) -> list[str]:
    """The row's names as options on a command line: ``--mig-strategy``, ``-o``."""
    return [f"-{n}" if len(n) == 1 else f"--{n}" for n in flag.names]


def describe(flag: Flag, program: Program, default: object = None) -> str:
    """The row's help on ``program``'s command line: what it does, its variables, file key and default."""
    parts = [flag.help_for.get(program, flag.help)]
    env = flag.env_for(program) or next(iter(flag.env.values()))
    if env:
        parts.append(f"Env: {', '.join(env)}.")
    if flag.key and program in (DEVICE_PLUGIN, GFD):  # the config-manager and the exporter read no config file
        parts.append(f"File: {flag.key}.")
    default = flag.default if default is None else default
    if default not in (None, (), ""):
        if isinstance(default, bool):
            shown = str(default).lower()
        elif isinstance(default, tuple):
            shown = ",".join(str(d) for d in default)
        elif flag.kind == "duration" and isinstance(default, float):
            shown = f"{default:g}s"
        else:
            shown = str(default)
        parts.append(f"Default: {shown}.")
    return " ".join(parts)


def parse_bool(text: str, source: str) -> bool:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{source}: {shown(text)} is not a boolean; use {BOOL_FORMS}")


def _split(values: Sequence[str]) -> list[str]:
    return [part.strip() for v in values for part in v.split(",")]


def parse_value(flag: Flag, raw: object, source: str) -> object:
    """One flag or environment value as the setting's type; ConfigError naming ``source`` and the value.

    ``raw`` is a string, a sequence of strings (a repeated flag), or already a typed value (a bool,
    a number, a tuple) when the caller passes Python values.
    """
    if flag.kind == "bool":
        if isinstance(raw, bool):
            return raw
        return parse_bool(str(raw), source)
    if flag.kind in ("strings", "ints"):
        if isinstance(raw, str):
            items = _split([raw])
        elif isinstance(raw, (list, tuple)):
            items = _split([str(r) for r in raw])
        else:
            items = _split([str(raw)])
        if flag.kind == "ints":
            try:
                return tuple(int(i) for i in items if i != "")
            except ValueError:
                raise ConfigError(f"{source}: {shown(raw)} is not a list of integers such as 0 or 0,1") from None
        for item in items:
            if flag.choices and item not in flag.choices:
                raise ConfigError(f"{source}: {shown(item)} is not one of {', '.join(flag.choices)}")
        return tuple(dict.fromkeys(items))
    if flag.kind == "duration":
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        return parse_duration(str(raw), source, infinite=True)
    if flag.kind == "int":
        try:
            return int(str(raw))
        except ValueError:
            raise ConfigError(f"{source}: {shown(raw)} is not a whole number") from None
    if flag.kind == "float":
        try:
            return float(str(raw))
        except ValueError:
            raise ConfigError(f"{source}: {shown(raw)} is not a number") from None
    text = str(raw)
    if flag.choices and text not in flag.choices:
        raise ConfigError(f"{source}: {shown(text)} is not one of {', '.join(flag.choices)}")
    return text


def env_value(flag: Flag, program: Program, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """The first of the flag's variables that is set (even to the empty string), as urfave/cli takes it,
    with its source for messages; None when none is set."""
    for name in flag.env_for(program):
        if name in environ:
            return environ[name], f"environment variable {name}"
    return None


def given_value(flag: Flag, given: Mapping[str, object]) -> tuple[object, str] | None:
    """The value the command line gave for ``flag`` (under its name or an alias), with its source."""
    for name in flag.names:
        for key in (name, name.replace("-", "_")):
            value = given.get(key)
            if value is not None:
                return value, f"flag --{name}"
    return None


def lookup(flag: Flag, program: Program, given: Mapping[str, object],
           environ: Mapping[str, str]) -> tuple[object, str] | None:
    """Flag, else environment (NVIDIA's precedence), parsed; None when neither sets it.

    An environment variable set to the empty string means false for a boolean (as urfave/cli),
    nothing for a list of integers, and, for a free-form string, "not set" (kgpu does not take an
    empty path or name; NVIDIA would use the empty string).
    """
    found = given_value(flag, given)
    if found is not None:
        return parse_value(flag, found[0], found[1]), found[1]
    env = env_value(flag, program, environ)
    if env is None:
        return None
    text, source = env
    if text == "":
        if flag.kind == "bool":
            return False, source
        if flag.kind == "ints" or (flag.kind == "string" and not flag.choices):
            return None
    return parse_value(flag, text, source), source


def setting(name: str, program: Program, given: Mapping[str, object], environ: Mapping[str, str]) -> object:
    """One setting of ``program`` that no config file holds: flag, else environment, else the row's default."""
    flag = flag_named(name)
    found = lookup(flag, program, given, environ)
    return flag.default if found is None else found[0]


def normalize_args(args: Sequence[str], long_names: set[str], bool_names: set[str]) -> list[str]:
    """NVIDIA's command-line forms as Click and argparse read them.

    ``-name[=v]`` → ``--name[=v]`` (Go's single dash); ``--bool`` → ``--bool=true``;
    ``--no-bool`` → ``--bool=false`` (kgpu's older spelling). Nothing after ``--`` is touched.
    """
    out: list[str] = []
    rest = False
    for arg in args:
        if rest or not arg.startswith("-") or arg == "-":
            out.append(arg)
            continue
        if arg == "--":
            rest = True
            out.append(arg)
            continue
        body = arg[2:] if arg.startswith("--") else arg[1:]
        name, sep, value = body.partition("=")
        if not arg.startswith("--") and name not in long_names:
            if len(name) == 1 and sep:
                out.extend([f"-{name}", value])  # Go's -o=FILE
            else:
                out.append(arg)  # a short option such as -o FILE
            continue
        if name in bool_names and not sep:
            out.append(f"--{name}=true")
        elif name.startswith("no-") and name[3:] in bool_names and not sep:
            out.append(f"--{name[3:]}=false")
        else:
            out.append(f"--{name}{sep}{value}")
    return out
