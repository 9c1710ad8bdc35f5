"""The prepared claims, on disk: what lets a restarted plugin neither lose nor prepare twice.

One JSON file (default ``/var/lib/kubelet/plugins/<driver>/kgpu-checkpoint.json``), replaced atomically
(:func:`kgpu.fsio.write_atomic`) on every change, so a crash leaves the old state or the new one::

    {
      "version": 1,
      "driver": "gpu.nvidia.com",
      "node": "node-1",
      "bootID": "6c1e…",
      "claims": {
        "<claim uid>": {"state": "PrepareCompleted", "namespace": "default", "name": "pod-gpu",
                        "devices": [{"request": "gpu", "pool": "node-1", "device": "gpu-0",
                                     "cdiName": "<uid>-gpu-0", "uuid": "GPU-…",
                                     "mps": {"daemonUUID": "GPU-…", "memoryMiB": 30720, "computePercent": 25}}]}
      }
    }

A claim is written ``PrepareStarted`` before anything is done for it and ``PrepareCompleted`` once its
CDI spec is in place (NVIDIA's two states): a plugin that died in between rolls the claim back and
prepares it afresh when the kubelet asks again. ``bootID`` is the kernel's boot id: after a reboot no
container holds a claim any more, so a checkpoint of an earlier boot is dropped (its claims are
unprepared: CDI specs removed) rather than trusted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kgpu.dra.prepare import PreparedClaim
from kgpu.errors import ConfigError, KgpuError
from kgpu.fsio import read_text, write_atomic

VERSION = 1
STARTED = "PrepareStarted"
COMPLETED = "PrepareCompleted"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
MAX_BYTES = 16 * 1024 * 1024
"""A checkpoint larger than this is not one kgpu wrote."""


class CheckpointError(KgpuError):
    """The checkpoint exists but cannot be read; the message says where and what to do."""


@dataclass(frozen=True, slots=True)
class Entry:
    state: str
    claim: PreparedClaim


@dataclass(slots=True)
class Checkpoint:
    driver: str
    node: str
    boot_id: str = ""
    claims: dict[str, Entry] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "driver": self.driver,
            "node": self.node,
            "bootID": self.boot_id,
            "claims": {uid: {"state": e.state, **e.claim.to_json()} for uid, e in sorted(self.claims.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str) -> Checkpoint:
        if data.get("version") != VERSION:
            raise CheckpointError(f"{where}: version {data.get('version')!r}; this kgpu reads version {VERSION}")
        claims = {}
        for uid, entry in (data.get("claims") or {}).items():
            state = entry.get("state")
            if state not in (STARTED, COMPLETED):
                raise CheckpointError(f"{where}: claims.{uid}.state={state!r}: allowed {STARTED}, {COMPLETED}")
            claims[str(uid)] = Entry(state, PreparedClaim.from_json(str(uid), entry))
        return cls(str(data.get("driver", "")), str(data.get("node", "")), str(data.get("bootID", "")), claims)

    def users_of(self, daemon_uuid: str, *, besides: str = "") -> list[str]:
        """Claims (other than ``besides``) prepared as MPS clients of ``daemon_uuid``'s daemon."""
        return [uid for uid, e in self.claims.items() if uid != besides and daemon_uuid in e.claim.mps_daemons]


def current_boot_id(path: Path = BOOT_ID) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def load(path: Path, driver: str, node: str) -> Checkpoint:
    """The checkpoint at ``path``; an empty one when there is none. CheckpointError when it is unreadable."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise CheckpointError(f"{path}: larger than {MAX_BYTES} bytes; not a kgpu checkpoint")
        text = read_text(path)
    except FileNotFoundError:
        return Checkpoint(driver, node)
    except OSError as exc:
        raise CheckpointError(f"{path}: {exc.strerror}") from None
    except ConfigError as exc:  # not UTF-8, or gone between the two looks
        raise CheckpointError(str(exc)) from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        checkpoint = Checkpoint.from_json(data, str(path))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"{path} is corrupt ({exc}); the claims it held cannot be unprepared safely. Move it aside once "
            "no pod on this node uses a claim of this driver, then start the plugin again"
        ) from None
    if checkpoint.driver and checkpoint.driver != driver:
        raise CheckpointError(f"{path} belongs to driver {checkpoint.driver!r}, not {driver!r}")
    checkpoint.driver, checkpoint.node = driver, node
    return checkpoint


def save(path: Path, checkpoint: Checkpoint) -> None:
    write_atomic(path, json.dumps(checkpoint.to_json(), indent=2, sort_keys=True) + "\n", mode=0o600)
