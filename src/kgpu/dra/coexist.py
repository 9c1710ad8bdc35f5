"""One GPU, one owner: the DRA driver refuses to publish GPUs a classic device plugin also serves.

Two drivers handing out the same GPU is how two pods end up on one GPU that each thinks it owns. At
start the driver looks for classic device plugins of ``nvidia.com/*`` resources on this node:

* kgpu's device plugin says which GPUs it serves in its state file (``/run/kgpu/device-plugin/state.json``,
  rewritten at least every 30 s while it runs): a fresh file names them exactly;
* any other plugin is seen by its socket in the kubelet's ``device-plugins`` directory (NVIDIA's and
  kgpu's are named ``nvidia-<resource>.sock``) that still accepts connections; which GPUs it serves is
  unknown.

The driver starts only when none of its GPUs is a classic plugin's, and, when a plugin whose GPUs are
unknown runs, only if the admin said which GPUs are the driver's (``--gpus``).

Example::

    found = find_classic_plugins(Path("/var/lib/kubelet/device-plugins"), Path("/run/kgpu/device-plugin/state.json"))
    conflict(found, ours={"GPU-…"}, told=False)     # None, or the one-line reason to refuse
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

STATE_FRESH_SECONDS = 90.0
"""kgpu's device plugin rewrites its state file at least every 30 s; three missed beats mean it is gone."""


@dataclass(frozen=True, slots=True)
class ClassicPlugin:
    source: str
    """The socket or state file it was seen by."""
    resources: tuple[str, ...]
    gpus: frozenset[str] | None
    """GPU UUIDs it serves; None when it does not say."""


def _state_file_plugin(path: Path, now: float) -> ClassicPlugin | None:
    try:
        state = json.loads(path.read_text())
        stamp = datetime.strptime(str(state["updated"]), "%Y-%m-%dT%H:%M:%S.%fZ")
        updated = stamp.replace(tzinfo=UTC).timestamp()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if now - updated > STATE_FRESH_SECONDS:
        return None
    resources = [r for r in state.get("resources") or [] if r.get("registered") or r.get("devices")]
    if not resources:
        return None
    gpus = frozenset(str(d.get("gpu_uuid")) for r in resources for d in r.get("devices") or [] if d.get("gpu_uuid"))
    return ClassicPlugin(str(path), tuple(str(r.get("name")) for r in resources), gpus)


def _socket_alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def find_classic_plugins(device_plugins_dir: Path, kgpu_state_file: Path | None,
                         now: float | None = None) -> list[ClassicPlugin]:
    """The classic device plugins of ``nvidia.com/*`` resources running on this node, as far as can be seen."""
    now = time.time() if now is None else now
    found: list[ClassicPlugin] = []
    kgpu = _state_file_plugin(kgpu_state_file, now) if kgpu_state_file is not None else None
    kgpu_sockets: set[str] = set()
    if kgpu is not None:
        found.append(kgpu)
        try:
            state = json.loads(Path(kgpu.source).read_text())
            kgpu_sockets = {str(r.get("socket")) for r in state.get("resources") or []}
        except (OSError, ValueError):
            pass
    try:
        sockets = sorted(device_plugins_dir.glob("nvidia-*.sock"))
    except OSError:
        sockets = []
    for sock in sockets:
        if sock.name in kgpu_sockets or not sock.is_socket() or not _socket_alive(sock):
            continue
        resource = "nvidia.com/" + sock.name.removeprefix("nvidia-").removesuffix(".sock")
        found.append(ClassicPlugin(str(sock), (resource,), None))
    return found


def conflict(plugins: Iterable[ClassicPlugin], ours: Iterable[str], told: bool) -> str | None:
    """Why the driver must not start beside ``plugins`` with the GPUs ``ours``; None when it may."""
    mine = set(ours)
    for p in plugins:
        if p.gpus is None:
            if not told:
                return (
                    f"a classic device plugin serves {', '.join(p.resources)} on this node ({p.source}) and does not "
                    "say which GPUs; two drivers must not hand out one GPU. Stop it, or name this driver's GPUs "
                    "with --gpus (indices or UUIDs) after taking them out of that plugin's config"
                )
            continue
        both = sorted(mine & p.gpus)
        if both:
            return (
                f"kgpu's device plugin serves {', '.join(p.resources)} from GPU(s) {', '.join(both)} ({p.source}); "
                "two drivers must not hand out one GPU. Give this driver other GPUs with --gpus, or stop the "
                "device plugin"
            )
    return None
