"""Preparing and unpreparing claims on the node: the checkpoint, the CDI specs, the MPS daemons.

:class:`DriverState` does what the kubelet's NodePrepareResources / NodeUnprepareResources ask, one
claim at a time, so that each step can be undone and a restart finds the node as the checkpoint says:

prepare
    already ``PrepareCompleted`` → the same devices again (the CDI spec rewritten if it went missing),
    nothing prepared twice; otherwise read the claim (its UID must be the one the kubelet named), plan
    it (:func:`kgpu.dra.prepare.plan_claim`), refuse a device another prepared claim holds unless it is
    shared (consumable capacity), checkpoint ``PrepareStarted``, start the MPS daemons its clients need,
    write ``<cdi-root>/k8s.<driver>-claim_<uid>.json``, checkpoint ``PrepareCompleted``. A failure
    undoes what was done and answers the error, so the kubelet retries.
unprepare
    remove the CDI spec, quit MPS daemons no other claim uses, drop the claim from the checkpoint; a
    claim the driver does not know is already unprepared.
start
    a checkpoint from an earlier boot is unprepared whole; claims left ``PrepareStarted`` by a crash are
    rolled back; completed claims get their CDI specs back if missing and their MPS daemons adopted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kgpu.cdi.spec import render
from kgpu.dra import checkpoint as ckpt
from kgpu.dra.claims import ClaimError, parse_claim
from kgpu.dra.devices import DraDevice
from kgpu.dra.gpuconfig import INTERVALS
from kgpu.dra.mps import MpsDaemons
from kgpu.dra.prepare import NodeEdits, PreparedClaim, PrepareSettings, claim_spec, plan_claim
from kgpu.errors import KgpuError
from kgpu.fsio import write_atomic

log = logging.getLogger("kgpu.dra")


class ClaimSource(Protocol):
    """Where claims are read from: the API server (:class:`kgpu.dra.kube.ApiClaims`), or a stand-in."""

    def get(self, namespace: str, name: str) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one claim's prepare answers: its devices, or why not."""

    claim: PreparedClaim | None
    error: str = ""


class DriverState:
    def __init__(
        self,
        settings: PrepareSettings,
        devices: Callable[[], Mapping[str, DraDevice]],
        claims: ClaimSource,
        checkpoint_path: Path,
        cdi_root: Path,
        mps: MpsDaemons,
        node_edits: NodeEdits | None = None,
        set_timeslice: Callable[[str, int], None] | None = None,
        boot_id: Callable[[], str] = ckpt.current_boot_id,
    ) -> None:
        self.settings = settings
        self.devices = devices
        self.claims = claims
        self.checkpoint_path = checkpoint_path
        self.cdi_root = cdi_root
        self.mps = mps
        self.node_edits = node_edits or NodeEdits()
        self.set_timeslice = set_timeslice
        self.boot_id = boot_id
        self._lock = threading.Lock()
        self._checkpoint = ckpt.Checkpoint(settings.driver, settings.pool)

    # -- files -------------------------------------------------------------------------------

    def spec_path(self, uid: str) -> Path:
        """NVIDIA's transient spec name: ``k8s.<driver>-claim_<uid>``."""
        return self.cdi_root / f"k8s.{self.settings.driver}-claim_{uid}.json"

    def _write_spec(self, claim: PreparedClaim) -> None:
        spec = claim_spec(claim, self.node_edits, self.settings)
        write_atomic(self.spec_path(claim.uid), render(spec, "json"))

    def _save(self) -> None:
        ckpt.save(self.checkpoint_path, self._checkpoint)

    @property
    def prepared(self) -> dict[str, PreparedClaim]:
        with self._lock:
            return {uid: e.claim for uid, e in self._checkpoint.claims.items() if e.state == ckpt.COMPLETED}

    # -- start -------------------------------------------------------------------------------

    def start(self) -> None:
        """Load the checkpoint and make the node agree with it (see the module docstring)."""
        with self._lock:
            cp = ckpt.load(self.checkpoint_path, self.settings.driver, self.settings.pool)
            boot = self.boot_id()
            self._checkpoint = cp
            if cp.boot_id and boot and cp.boot_id != boot:
                log.warning("checkpoint is from an earlier boot: unpreparing its claims",
                            extra={"event": "checkpoint", "claims": sorted(cp.claims)})
                for uid in list(cp.claims):
                    self._undo(uid)
            cp.boot_id = boot
            for uid, entry in list(cp.claims.items()):
                if entry.state == ckpt.STARTED:
                    log.warning("rolling back a claim whose prepare did not finish",
                                extra={"event": "checkpoint", "claim": entry.claim.ref})
                    self._undo(uid)
            for entry in cp.claims.values():
                if not self.spec_path(entry.claim.uid).exists():
                    self._write_spec(entry.claim)
            for uuid in dict.fromkeys(u for e in cp.claims.values() for u in e.claim.mps_daemons):
                self.mps.adopt(uuid)
            self._save()
            log.info("checkpoint loaded", extra={"event": "checkpoint", "path": str(self.checkpoint_path),
                                                 "prepared": sorted(cp.claims)})

    # -- prepare -----------------------------------------------------------------------------

    def prepare(self, namespace: str, uid: str, name: str) -> Outcome:
        with self._lock:
            try:
                return Outcome(self._prepare(namespace, uid, name))
            except (KgpuError, OSError) as exc:
                log.warning("prepare failed", extra={"event": "prepare", "claim": f"{namespace}/{name} ({uid})",
                                                     "error": str(exc)})
                return Outcome(None, str(exc))

    def _prepare(self, namespace: str, uid: str, name: str) -> PreparedClaim:
        cp = self._checkpoint
        entry = cp.claims.get(uid)
        if entry is not None and entry.state == ckpt.COMPLETED:
            # Prepare is called again after a kubelet or plugin restart: the same answer, nothing done twice.
            if not self.spec_path(uid).exists():
                self._write_spec(entry.claim)
            for daemon in entry.claim.mps_daemons:
                self.mps.ensure(daemon)
            return entry.claim
        if entry is not None:
            self._undo(uid)
        claim = parse_claim(self.claims.get(namespace, name))
        if claim.uid != uid:
            raise ClaimError(f"ResourceClaim {namespace}/{name} has UID {claim.uid}; the kubelet asked for {uid} "
                             "(the claim was deleted and created again)")
        devices = self.devices()
        prepared = plan_claim(claim, devices, self.settings)
        self._check_overlap(prepared, devices)
        cp.claims[uid] = ckpt.Entry(ckpt.STARTED, prepared)
        self._save()
        try:
            for daemon in prepared.mps_daemons:
                self.mps.ensure(daemon)
            for d in prepared.devices:
                if d.timeslice is not None and self.set_timeslice is not None:
                    self.set_timeslice(d.uuid, INTERVALS[d.timeslice])
            self._write_spec(prepared)
        except OSError as exc:
            self._undo(uid)
            self._save()
            raise KgpuError(f"cannot write the CDI spec {self.spec_path(uid)}: {exc.strerror or exc}") from None
        except KgpuError:
            self._undo(uid)
            self._save()
            raise
        cp.claims[uid] = ckpt.Entry(ckpt.COMPLETED, prepared)
        self._save()
        log.info("claim prepared", extra={
            "event": "prepare", "claim": prepared.ref,
            "devices": [d.device for d in prepared.devices],
            "mps": [{"device": d.device, "memory_mib": d.mps.memory_mib, "compute_percent": d.mps.compute_percent}
                    for d in prepared.devices if d.mps is not None],
        })
        return prepared

    def _check_overlap(self, claim: PreparedClaim, devices: Mapping[str, DraDevice]) -> None:
        """A device that is not shared may be prepared for one claim only (NVIDIA's overlap check)."""
        for uid, entry in self._checkpoint.claims.items():
            if uid == claim.uid or entry.state != ckpt.COMPLETED:
                continue
            held = {d.device for d in entry.claim.devices}
            for d in claim.devices:
                device = devices.get(d.device)
                if d.device in held and not (device is not None and device.shareable):
                    raise ClaimError(f"ResourceClaim {claim.ref}: requested device {d.device} is already allocated "
                                     f"to different claim {entry.claim.ref}")

    # -- unprepare ---------------------------------------------------------------------------

    def unprepare(self, namespace: str, uid: str, name: str) -> str:
        """Undo ``uid``'s prepare; the error text, empty on success."""
        with self._lock:
            try:
                known = uid in self._checkpoint.claims
                self._undo(uid)
                self._save()
            except (KgpuError, OSError) as exc:
                log.warning("unprepare failed", extra={"event": "unprepare", "claim": f"{namespace}/{name} ({uid})",
                                                       "error": str(exc)})
                return str(exc)
        if known:
            log.info("claim unprepared", extra={"event": "unprepare", "claim": f"{namespace}/{name} ({uid})"})
        return ""

    def _undo(self, uid: str) -> None:
        """Remove ``uid``'s CDI spec, release its MPS daemons, forget it (the caller saves)."""
        self.spec_path(uid).unlink(missing_ok=True)
        entry = self._checkpoint.claims.get(uid)
        if entry is None:
            return
        for daemon in entry.claim.mps_daemons:
            if not self._checkpoint.users_of(daemon, besides=uid):
                self.mps.release(daemon)
        del self._checkpoint.claims[uid]
