"""``kgpu config-manager``: NVIDIA's config-manager — the node label picks one of several named configs.

An admin keeps several device-plugin configs in one ConfigMap (``default``, ``a100-ts4``, ``mps-h100``, …),
mounted in the daemons' pods at ``--config-file-srcdir``; labelling a node
``nvidia.com/device-plugin.config=a100-ts4`` makes that node's device plugin and labeler use it. This
sidecar follows the label (a list, then a watch of the one Node) and makes ``--config-file-dst`` — the
file the daemons read and reload when it changes — point at the chosen config, with NVIDIA's rules:

* the label's value names a file in the source directory (an unknown name is an error, and the
  previous config stays in force);
* without a label, ``--default-config``; without that, each ``--fallback-strategies`` entry in order:
  ``named`` (a config called ``default``), ``single`` (the only config there is), ``empty`` (no
  config: ``/dev/null``, i.e. every default).

The destination is a symlink to ``<srcdir>/<name>``, swapped atomically (a new link renamed over the
old one: a reader sees the old config or the new one, never none). Because the ConfigMap's own
files are symlinks the kubelet swaps on an edit, editing the chosen config also reaches the daemons
without this sidecar doing anything — but only when the kubelet next syncs the pod: once a minute plus
up to half a minute of jitter (its ``syncFrequency``), so labels and allocatable would follow an edit
60–90 s late. kgpu's addition ``--config-map NAMESPACE/NAME`` removes that wait: the configs are read
from the API server (a get, then a watch of that one ConfigMap) and the chosen one is written to the
destination as a file, replaced atomically (a temporary file renamed over it), within a second of the
edit. ``--config-file-srcdir`` (the same ConfigMap mounted) is then only what ``--oneshot`` uses when
the API server cannot be reached, so a node's GPUs are served even then. With ``--config-map``, an
empty ``--node-label`` means that no label is followed: the default config is used on every node
(kgpu's chart runs it so when ``configManager.enabled`` is false, so that a label left by NVIDIA's
config-manager cannot pick a config that does not exist).

Like NVIDIA's, it can send a signal to a process after a change (``--send-signal``, ``--signal``,
``--process-to-signal``); kgpu's daemons reload the file themselves, so kgpu's chart turns that off.

Example::

    name = choose_config("a100-ts4", ["default", "a100-ts4"], default="", fallbacks=[])   # 'a100-ts4'
    point_at(Path("/config/config.yaml"), Path("/available-configs/a100-ts4"))
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import ConfigMap, Node

from kgpu.config.flags import CONFIG_MANAGER
from kgpu.config.resolve import resolve_settings
from kgpu.daemon import Daemon, parse_listen
from kgpu.errors import ConfigError
from kgpu.kubeapi import kube_client, transport_errors

log = logging.getLogger("kgpu.config-manager")

DEFAULT_NODE_LABEL = "nvidia.com/device-plugin.config"
NAMED_FALLBACK = "default"
FALLBACK_STRATEGIES = ("named", "single", "empty")
EMPTY_CONFIG = Path("/dev/null")
RELIST_BACKOFF_MAX = 30.0
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
CONFIG_LIMIT = 1024 * 1024
"""Bytes of one config (a ConfigMap holds at most 1 MiB in all)."""


@dataclass(frozen=True, slots=True)
class ManagerSettings:
    """NVIDIA's config-manager flags (``cmd/config-manager/main.go``), resolved."""

    node_name: str
    config_file_srcdir: Path
    config_file_dst: Path
    node_label: str = DEFAULT_NODE_LABEL
    default_config: str = ""
    fallback_strategies: tuple[str, ...] = ()
    oneshot: bool = False
    send_signal: bool = True
    signal: int = int(signal.SIGHUP)
    process_to_signal: str = "nvidia-device-plugin"
    kubeconfig: Path | None = None
    config_map: tuple[str, str] | None = None
    """kgpu's ``--config-map``: (namespace, name) of the ConfigMap read through the API server."""

    def check(self) -> ManagerSettings:
        """NVIDIA's validateFlags, plus the fallback names (NVIDIA finds a bad one only when it is reached).
        With ``--config-map``, the source directory is optional and an empty node label means none."""
        required = [("node-name", self.node_name), ("config-file-dst", str(self.config_file_dst))]
        if self.config_map is None:
            required += [("node-label", self.node_label), ("config-file-srcdir", str(self.config_file_srcdir))]
        for flag, value in required:
            if not value or value == ".":
                raise ConfigError(f"invalid <{flag}>: must not be empty string (--{flag})")
        bad = [f for f in self.fallback_strategies if f not in FALLBACK_STRATEGIES]
        if bad:
            raise ConfigError(f"--fallback-strategies: unknown fallback strategy {bad[0]!r}; allowed: "
                              f"{', '.join(FALLBACK_STRATEGIES)}")
        return self


def available_configs(srcdir: Path) -> list[str]:
    """The config names in ``srcdir``: its files, without the ``..data``-style entries a mounted ConfigMap has."""
    try:
        entries = sorted(srcdir.iterdir())
    except OSError as exc:
        raise ConfigError(f"error getting list of configuration files in {srcdir}: {exc.strerror or exc}") from None
    return [e.name for e in entries if not e.name.startswith("..") and not e.is_dir()]


def choose_config(label: str, files: Sequence[str], default: str = "", fallbacks: Sequence[str] = ()) -> str:
    """The config to use ("" for the empty one), by NVIDIA's rules (module docstring); ConfigError otherwise."""
    if not files:
        raise ConfigError("no configuration files available")
    if label:
        if label not in files:
            raise ConfigError(f"specified config {label} does not exist (there are: {', '.join(files)})")
        return label
    if default:
        if default not in files:
            raise ConfigError(f"specified default config {default} does not exist (there are: {', '.join(files)})")
        return default
    for fallback in fallbacks:
        if fallback == "named" and NAMED_FALLBACK in files:
            return NAMED_FALLBACK
        if fallback == "single" and len(files) == 1:
            return files[0]
        if fallback == "empty":
            return ""
        if fallback not in FALLBACK_STRATEGIES:
            raise ConfigError(f"unknown fallback strategy: {fallback}")
    raise ConfigError("no config was set, no default was provided, and all fallbacks failed")


def point_at(dst: Path, src: Path) -> bool:
    """Make ``dst`` a symlink to ``src``, atomically; False when it already resolves to the same file."""
    if dst.is_symlink() or dst.exists():
        if dst.is_dir() and not dst.is_symlink():
            raise ConfigError(f"--config-file-dst {dst} is a directory; give the path of the config file")
        if os.path.realpath(dst) == os.path.realpath(src):
            return False
    tmp = dst.with_name(f".{dst.name}.kgpu-new")
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot point {dst} at {src}: {exc.strerror or exc}") from None
    return True


def find_process(name: str, proc: Path = Path("/proc")) -> int:
    """The PID of the process whose argv[0] is ``name`` (as NVIDIA's findPidToSignal); ConfigError if none."""
    for entry in sorted(proc.iterdir(), key=lambda p: p.name):
        if not entry.name.isdigit():
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
        except OSError:
            continue
        if argv0 == name:
            return int(entry.name)
    raise ConfigError(f"no process {name!r} to signal (--process-to-signal; pods need shareProcessNamespace)")


def write_config(dst: Path, text: str) -> bool:
    """Make ``dst`` a file holding ``text``, replaced atomically; False when it already holds exactly that."""
    data = text.encode()
    if dst.is_dir() and not dst.is_symlink():
        raise ConfigError(f"--config-file-dst {dst} is a directory; give the path of the config file")
    if not dst.is_symlink():
        try:
            if dst.read_bytes() == data:
                return False
        except OSError:
            pass  # missing or unreadable: written below
    tmp = dst.with_name(f".{dst.name}.kgpu-new")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {dst}: {exc.strerror or exc}") from None
    return True


def read_srcdir(srcdir: Path) -> dict[str, str]:
    """The configs of a mounted ConfigMap, as the API server would give them (name → text)."""
    configs = {}
    for name in available_configs(srcdir):
        try:
            with open(srcdir / name, "rb") as f:
                configs[name] = f.read(CONFIG_LIMIT + 1)[:CONFIG_LIMIT].decode(errors="replace")
        except OSError as exc:
            raise ConfigError(f"cannot read {srcdir / name}: {exc.strerror or exc}") from None
    return configs


def apply_label(settings: ManagerSettings, label: str, send: Callable[[int, int], None] = os.kill,
                configs: Mapping[str, str] | None = None) -> bool:
    """Make the destination the config ``label`` chooses; signal the process after a change.

    ``configs`` (name → text, read through the API server) are written to the destination; without them
    the destination points at a file of the source directory, as NVIDIA's does. Returns whether the
    destination changed. ConfigError leaves it as it was.
    """
    if configs is not None:
        name = choose_config(label, sorted(configs), settings.default_config, settings.fallback_strategies)
        where = f"configmap {'/'.join(settings.config_map or ('', ''))} key {name}" if name else "(empty)"
        changed = write_config(settings.config_file_dst, configs[name] if name else "")
    else:
        name = choose_config(label, available_configs(settings.config_file_srcdir), settings.default_config,
                             settings.fallback_strategies)
        src = settings.config_file_srcdir / name if name else EMPTY_CONFIG
        where = str(src)
        changed = point_at(settings.config_file_dst, src)
    if not changed:
        log.info("already configured", extra={"config": name or "(empty)", "label": label})
        return False
    log.info("config selected", extra={"config": name or "(empty)", "label": label, "path": where,
                                       "dst": str(settings.config_file_dst)})
    if settings.send_signal:
        pid = find_process(settings.process_to_signal)
        send(pid, settings.signal)
        log.info("signal sent", extra={"pid": pid, "signal": settings.signal, "to": settings.process_to_signal})
    return True


@dataclass
class Inputs:
    """The node label's and the ConfigMap's latest values, handed from the watching threads to the manager's
    step. ``configs`` stays None without ``--config-map`` (the source directory is read instead)."""

    label: str | None = None
    configs: dict[str, str] | None = None
    _new: bool = False
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def set_label(self, value: str) -> None:
        with self._changed:
            self.label, self._new = value, True
            self._changed.notify_all()

    def set_configs(self, configs: dict[str, str]) -> None:
        with self._changed:
            self.configs, self._new = configs, True
            self._changed.notify_all()

    def take(self, timeout: float) -> tuple[str | None, dict[str, str] | None] | None:
        """(label, configs) if either changed (waiting up to ``timeout`` s), else None."""
        with self._changed:
            if not self._new:
                self._changed.wait(timeout)
            if not self._new:
                return None
            self._new = False
            return self.label, self.configs


def node_label(node: Any, label: str) -> str:
    labels = (getattr(getattr(node, "metadata", None), "labels", None) or {})
    return str(labels.get(label, ""))


def configmap_data(configmap: Any) -> dict[str, str]:
    """A ConfigMap's configs (its data; binaryData is no config)."""
    return {str(k): str(v) for k, v in (getattr(configmap, "data", None) or {}).items()}


def follow(client: Any, kind: type, name: str, namespace: str | None, deliver: Callable[[Any], None],
           stop: threading.Event) -> None:
    """Get one object, then watch it from its resourceVersion, until ``stop``; any error starts over.
    ``deliver`` gets the object, or None once it is deleted."""
    what = f"{kind.__name__.lower()} {namespace + '/' if namespace else ''}{name}"
    backoff, last_cause = 0.5, ""
    scope = {"namespace": namespace} if namespace else {}
    while not stop.is_set():
        try:
            obj = client.get(kind, name, **scope)
            deliver(obj)
            backoff, last_cause = 0.5, ""
            version = obj.metadata.resourceVersion if obj.metadata is not None else None
            for event, obj in client.watch(kind, fields={"metadata.name": name}, resource_version=version, **scope):
                if stop.is_set():
                    return
                deliver(None if event == "DELETED" else obj)
        except (ApiError, *transport_errors()) as exc:  # type: ignore[misc]
            cause = f"{type(exc).__name__}: {getattr(getattr(exc, 'status', None), 'message', None) or exc}"
            if cause != last_cause:
                log.warning(f"watching the {kind.__name__.lower()} failed; reading it again", extra={
                    "object": what, "error": cause[:300], "retry_s": backoff})
                last_cause = cause
            stop.wait(backoff)
            backoff = min(backoff * 2, RELIST_BACKOFF_MAX)


def follow_label(client: Any, settings: ManagerSettings, inputs: Inputs, stop: threading.Event) -> None:
    """The node label's value into ``inputs`` (empty once the Node is deleted)."""
    follow(client, Node, settings.node_name, None,
           lambda node: inputs.set_label("" if node is None else node_label(node, settings.node_label)), stop)


def follow_configmap(client: Any, settings: ManagerSettings, inputs: Inputs, stop: threading.Event) -> None:
    """The ConfigMap's configs into ``inputs`` (none once it is deleted: the current config then stays)."""
    assert settings.config_map is not None
    namespace, name = settings.config_map
    follow(client, ConfigMap, name, namespace,
           lambda cm: inputs.set_configs({} if cm is None else configmap_data(cm)), stop)


def digest(configs: Mapping[str, str] | None) -> str:
    if configs is None:
        return ""
    return hashlib.sha256(repr(sorted(configs.items())).encode()).hexdigest()


class ConfigManager:
    """The manager's step (a supervised watcher's tick): apply the label's and the ConfigMap's latest
    values, if they changed.

    A refused choice (an unknown config name) raises, so the watcher reports it once per cause and the
    health endpoint shows it; the destination keeps the previous config, and the choice is tried again
    at each step (the ConfigMap may gain that config), until it succeeds or the label changes.
    """

    def __init__(self, settings: ManagerSettings, inputs: Inputs) -> None:
        self.settings = settings
        self.inputs = inputs
        self.wanted: str | None = None
        self.configs: dict[str, str] | None = None
        self.applied: tuple[str, str] | None = None

    def tick(self) -> None:
        got = self.inputs.take(timeout=1.0)
        if got is not None:
            label, self.configs = got
            if label is not None and label != self.wanted:
                log.info("label change detected", extra={"label": f"{self.settings.node_label}={label}"})
                self.wanted = label
        if self.wanted is None or (self.settings.config_map is not None and self.configs is None):
            return  # not read yet
        state = (self.wanted, digest(self.configs))
        if state == self.applied:
            return
        apply_label(self.settings, self.wanted, configs=self.configs)
        self.applied = state


def resolve_manager_settings(given: Mapping[str, object], environ: Mapping[str, str]) -> ManagerSettings:
    """NVIDIA's config-manager flags from the command line and environment (the one table's rows)."""
    values = {name: s.value for name, s in resolve_settings(CONFIG_MANAGER, given, environ).items()}

    def text(name: str) -> str:
        return str(values.get(name) or "")

    fallbacks = values.get("fallback-strategies") or ()
    return ManagerSettings(
        config_map=parse_config_map(text("config-map"), environ) if text("config-map") else None,
        node_name=text("node-name"),
        config_file_srcdir=Path(text("config-file-srcdir")),
        config_file_dst=Path(text("config-file-dst")),
        node_label=text("node-label"),
        default_config=text("default-config"),
        fallback_strategies=tuple(str(f) for f in fallbacks if f) if isinstance(fallbacks, tuple) else (),
        oneshot=values.get("oneshot") is True,
        send_signal=values.get("send-signal") is True,
        signal=int(str(values.get("signal", int(signal.SIGHUP)))),
        process_to_signal=text("process-to-signal"),
        kubeconfig=Path(text("kubeconfig")) if text("kubeconfig") else None,
    ).check()


def parse_config_map(value: str, environ: Mapping[str, str],
                     namespace_file: Path = SERVICE_ACCOUNT_NAMESPACE) -> tuple[str, str]:
    """``--config-map NAMESPACE/NAME``, or ``NAME`` in this pod's namespace ($POD_NAMESPACE, else the
    service account's)."""
    namespace, _, name = value.rpartition("/")
    if not namespace:
        namespace = environ.get("POD_NAMESPACE", "")
        if not namespace:
            try:
                namespace = namespace_file.read_text().strip()
            except OSError:
                raise ConfigError(f"--config-map {value!r}: give NAMESPACE/NAME (this pod's namespace is not "
                                  f"known: no $POD_NAMESPACE, no {namespace_file})") from None
    if not name or "/" in namespace:
        raise ConfigError(f"--config-map {value!r}: expected NAMESPACE/NAME or NAME")
    return namespace, name


def oneshot(settings: ManagerSettings, client: Any) -> None:
    """Choose once. With ``--config-map``, an API server that cannot be reached leaves the mounted copy of
    the ConfigMap (``--config-file-srcdir``), when there is one and no node label is needed."""
    if settings.config_map is None:
        apply_label(settings, node_label(client.get(Node, settings.node_name), settings.node_label))
        return
    namespace, name = settings.config_map
    try:
        configs = configmap_data(client.get(ConfigMap, name, namespace=namespace))
        label = node_label(client.get(Node, settings.node_name), settings.node_label) if settings.node_label else ""
    except (ApiError, *transport_errors()) as exc:  # type: ignore[misc]
        srcdir = settings.config_file_srcdir
        if settings.node_label or not str(srcdir) or str(srcdir) == "." or not srcdir.is_dir():
            raise
        log.warning("the API server cannot be read; using the mounted copy of the configs", extra={
            "configmap": f"{namespace}/{name}", "srcdir": str(srcdir), "error": str(exc)[:300]})
        configs, label = read_srcdir(srcdir), ""
    apply_label(settings, label, configs=configs)


def run(settings: ManagerSettings, healthz: str | None = None, client: Any = None) -> None:
    """Choose once (``oneshot``) or follow the node label (and the ConfigMap) until SIGTERM, on kgpu's daemon
    runtime."""
    client = client if client is not None else kube_client(settings.kubeconfig)
    with Daemon("config-manager") as daemon:
        if settings.oneshot:
            oneshot(settings, client)
            return
        inputs = Inputs()
        daemon.watch("config", ConfigManager(settings, inputs).tick, interval=0)
        if healthz:
            daemon.serve_http(parse_listen(healthz, "--healthz"))
        followers = []
        if settings.node_label:
            followers.append(("node-label", follow_label))
        else:
            inputs.set_label("")
        if settings.config_map is not None:
            followers.append(("configmap", follow_configmap))
        for name, target in followers:
            threading.Thread(target=target, args=(client, settings, inputs, daemon.stop), name=name,
                             daemon=True).start()
        log.info("following the node label" + (" and the configmap" if settings.config_map else ""), extra={
            "node": settings.node_name, "label": settings.node_label or "(none)",
            "configmap": "/".join(settings.config_map) if settings.config_map else "",
            "srcdir": str(settings.config_file_srcdir), "dst": str(settings.config_file_dst)})
        daemon.serve()
