"""The MPS control daemons behind the driver's shares: one per GPU that has MPS clients, started on demand.

The first claim prepared as an MPS client of a GPU starts that GPU's ``nvidia-cuda-mps-control -d``
(kgpu's :class:`~kgpu.sharing.daemon.GpuDaemon`: ``CUDA_VISIBLE_DEVICES=<uuid>``, its own pipe and log
directories under the MPS root, the same layout ``kgpu mps-daemon`` uses); the last claim unprepared
stops it. The daemon runs in its own session, so it outlives a restart of the plugin: a restarted
plugin adopts the daemons its checkpoint's claims still use, with their clients connected, instead of
restarting them. While claims use a daemon, :meth:`MpsDaemons.check` restarts it (with backoff) if it
dies, and writes its ``status.json`` as ``kgpu mps-daemon`` does.

Clients set their own limits through their environment (the claim's share), so the daemons get no
default limits.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kgpu.errors import KgpuError
from kgpu.sharing.daemon import DaemonError, DaemonSpec, GpuDaemon, driver_env
from kgpu.sharing.paths import MpsPaths
from kgpu.sharing.status import DaemonState, write_status

log = logging.getLogger(__name__)


class MpsError(KgpuError):
    """A GPU's MPS daemon could not be started; the message says why."""


@dataclass(slots=True)
class MpsDaemons:
    paths: MpsPaths
    binary: Callable[[], Path]
    """Finds nvidia-cuda-mps-control (asked only when a daemon must start: a node without shares needs none)."""
    library_dir: Path | None = None
    """The driver's libraries, for the daemon's LD_LIBRARY_PATH."""
    start_timeout: float = 10.0
    _daemons: dict[str, GpuDaemon] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _daemon(self, uuid: str) -> GpuDaemon:
        daemon = self._daemons.get(uuid)
        if daemon is None:
            binary = self.binary()
            spec = DaemonSpec(uuid=uuid, index=-1, binary=binary, pipe_dir=self.paths.pipe_dir(uuid),
                              log_dir=self.paths.log_dir(uuid), extra_env=driver_env(binary, self.library_dir))
            daemon = self._daemons[uuid] = GpuDaemon(spec, start_timeout=self.start_timeout)
        return daemon

    def ensure(self, uuid: str) -> None:
        """``uuid``'s daemon answers when this returns (adopted or started); MpsError otherwise."""
        with self._lock:
            try:
                daemon = self._daemon(uuid)
            except DaemonError as exc:
                raise MpsError(f"cannot run an MPS daemon for {uuid}: {exc}") from None
            if daemon.state is DaemonState.RUNNING:
                daemon.check()  # confirms that it still answers, or marks it down
                if daemon.state is DaemonState.RUNNING:
                    return
            elif daemon.adopt():
                self._write(daemon)
                return
            self.paths.shm_dir.mkdir(parents=True, exist_ok=True)
            daemon.next_attempt = 0.0  # a claim is waiting: no backoff for this attempt
            if daemon.state is not DaemonState.DOWN:
                daemon.state = DaemonState.STARTING
            daemon.check()
            self._write(daemon)
            if daemon.state is not DaemonState.RUNNING:
                raise MpsError(f"the MPS daemon of {uuid} is not running: {daemon.detail}")

    def adopt(self, uuid: str) -> bool:
        """At start-up, for a GPU the checkpoint says has clients: take over its running daemon, or start it."""
        try:
            self.ensure(uuid)
        except MpsError as exc:
            log.error("MPS daemon of prepared claims is not running", extra={"gpu": uuid, "reason": str(exc)})
            return False
        return True

    def release(self, uuid: str) -> None:
        """No claim uses ``uuid``'s daemon any more: quit it."""
        with self._lock:
            daemon = self._daemons.pop(uuid, None)
            if daemon is None:
                try:
                    daemon = self._daemon(uuid)
                except DaemonError:
                    return  # no binary: nothing of ours can be running
                self._daemons.pop(uuid, None)
                if not daemon.adopt():
                    return
            try:
                daemon.stop()
            except DaemonError as exc:
                raise MpsError(f"cannot stop the MPS daemon of {uuid}: {exc}") from None
            finally:
                self._write(daemon)

    def check(self) -> None:
        """One supervision pass over the daemons in use: restart those that died (with backoff)."""
        with self._lock:
            for daemon in self._daemons.values():
                daemon.check()
                self._write(daemon)

    def running(self) -> dict[str, str]:
        with self._lock:
            return {uuid: str(d.state) for uuid, d in self._daemons.items()}

    def _write(self, daemon: GpuDaemon) -> None:
        try:
            write_status(self.paths, daemon.status())
        except OSError as exc:
            log.warning("cannot write MPS status", extra={"gpu": daemon.spec.uuid, "error": str(exc)})
