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
without this sidecar doing anything. Like NVIDIA's, it can send a signal to a process after a change
(``--send-signal``, ``--signal``, ``--process-to-signal``); kgpu's daemons reload the file themselves,
so kgpu's chart turns that off.

Example::

    name = choose_config("a100-ts4", ["default", "a100-ts4"], default="", fallbacks=[])   # 'a100-ts4'
    point_at(Path("/config/config.yaml"), Path("/available-configs/a100-ts4"))
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Node

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

    def check(self) -> ManagerSettings:
        """NVIDIA's validateFlags, plus the fallback names (NVIDIA finds a bad one only when it is reached)."""
        for flag, value in (("node-name", self.node_name), ("node-label", self.node_label),
                            ("config-file-srcdir", str(self.config_file_srcdir)),
                            ("config-file-dst", str(self.config_file_dst))):
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


def apply_label(settings: ManagerSettings, label: str, send: Callable[[int, int], None] = os.kill) -> bool:
    """Point the destination at the config ``label`` chooses; signal the process after a change.

    Returns whether the destination changed. ConfigError leaves it as it was.
    """
    name = choose_config(label, available_configs(settings.config_file_srcdir), settings.default_config,
                         settings.fallback_strategies)
    src = settings.config_file_srcdir / name if name else EMPTY_CONFIG
    if not point_at(settings.config_file_dst, src):
        log.info("already configured", extra={"config": name or "(empty)", "label": label})
        return False
    log.info("config selected", extra={"config": name or "(empty)", "label": label, "path": str(src),
                                       "dst": str(settings.config_file_dst)})
    if settings.send_signal:
        pid = find_process(settings.process_to_signal)
        send(pid, settings.signal)
        log.info("signal sent", extra={"pid": pid, "signal": settings.signal, "to": settings.process_to_signal})
    return True


@dataclass
class LabelValue:
    """The node label's latest value, handed from the watching thread to the manager's step."""

    _value: str | None = None
    _seen: bool = False
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def set(self, value: str) -> None:
        with self._changed:
            self._value, self._seen = value, True
            self._changed.notify_all()

    def take(self, timeout: float) -> str | None:
        """The value if a new one arrived (waiting up to ``timeout`` s), else None."""
        with self._changed:
            if not self._seen:
                self._changed.wait(timeout)
            if not self._seen:
                return None
            self._seen = False
            return self._value


def node_label(node: Any, label: str) -> str:
    labels = (getattr(getattr(node, "metadata", None), "labels", None) or {})
    return str(labels.get(label, ""))


def follow_label(client: Any, settings: ManagerSettings, value: LabelValue, stop: threading.Event) -> None:
    """Get the Node, then watch it from its resourceVersion, until ``stop``; any error starts over."""
    backoff, last_cause = 0.5, ""
    while not stop.is_set():
        try:
            node = client.get(Node, settings.node_name)
            value.set(node_label(node, settings.node_label))
            backoff, last_cause = 0.5, ""
            version = node.metadata.resourceVersion if node.metadata is not None else None
            for event, obj in client.watch(Node, fields={"metadata.name": settings.node_name},
                                           resource_version=version):
                if stop.is_set():
                    return
                value.set("" if event == "DELETED" else node_label(obj, settings.node_label))
        except (ApiError, *transport_errors()) as exc:  # type: ignore[misc]
            cause = f"{type(exc).__name__}: {getattr(getattr(exc, 'status', None), 'message', None) or exc}"
            if cause != last_cause:
                log.warning("watching the node failed; reading it again", extra={
                    "node": settings.node_name, "error": cause[:300], "retry_s": backoff})
                last_cause = cause
            stop.wait(backoff)
            backoff = min(backoff * 2, RELIST_BACKOFF_MAX)


class ConfigManager:
    """The manager's step (a supervised watcher's tick): apply the label's latest value, if it changed.

    A refused choice (an unknown config name) raises, so the watcher reports it once per cause and the
    health endpoint shows it; the destination keeps the previous config, and the choice is tried again
    at each step (the ConfigMap may gain that config), until it succeeds or the label changes.
    """

    def __init__(self, settings: ManagerSettings, value: LabelValue) -> None:
        self.settings = settings
        self.value = value
        self.wanted: str | None = None
        self.applied: str | None = None

    def tick(self) -> None:
        label = self.value.take(timeout=1.0)
        if label is not None and label != self.wanted:
            log.info("label change detected", extra={"label": f"{self.settings.node_label}={label}"})
            self.wanted = label
        if self.wanted is None or self.wanted == self.applied:
            return
        apply_label(self.settings, self.wanted)
        self.applied = self.wanted


def resolve_manager_settings(given: Mapping[str, object], environ: Mapping[str, str]) -> ManagerSettings:
    """NVIDIA's config-manager flags from the command line and environment (the one table's rows)."""
    values = {name: s.value for name, s in resolve_settings(CONFIG_MANAGER, given, environ).items()}

    def text(name: str) -> str:
        return str(values.get(name) or "")

    fallbacks = values.get("fallback-strategies") or ()
    return ManagerSettings(
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


def run(settings: ManagerSettings, healthz: str | None = None, client: Any = None) -> None:
    """Choose once (``oneshot``) or follow the node label until SIGTERM, on kgpu's daemon runtime."""
    client = client if client is not None else kube_client(settings.kubeconfig)
    with Daemon("config-manager") as daemon:
        if settings.oneshot:
            apply_label(settings, node_label(client.get(Node, settings.node_name), settings.node_label))
            return
        value = LabelValue()
        daemon.watch("config", ConfigManager(settings, value).tick, interval=0)
        if healthz:
            daemon.serve_http(parse_listen(healthz, "--healthz"))
        threading.Thread(target=follow_label, args=(client, settings, value, daemon.stop), name="node-label",
                         daemon=True).start()
        log.info("following the node label", extra={"node": settings.node_name, "label": settings.node_label,
                                                   "srcdir": str(settings.config_file_srcdir),
                                                   "dst": str(settings.config_file_dst)})
        daemon.serve()
