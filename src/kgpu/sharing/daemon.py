"""MPS control daemons, one per shared GPU, started and kept alive by ``kgpu mps-daemon``.

Each GPU gets its own ``nvidia-cuda-mps-control -d`` with ``CUDA_VISIBLE_DEVICES=<uuid>`` and its
own pipe and log directories (:class:`~kgpu.sharing.paths.MpsPaths`), so a crash on one GPU
never touches the slices of another, and every client sees its GPU as device 0.

The :class:`Supervisor` owns the waiting, retrying and shutting down (the reaction to each
check is :meth:`GpuDaemon.check`):

* start: create the directories, quit a daemon left over from an earlier run, run ``-d``,
  wait until the control pipe answers, then set the default client limits to the largest
  slice of the GPU (``set_default_device_pinned_mem_limit 0 <N>M``,
  ``set_default_active_thread_percentage <P>``) so a client that drops its environment gets
  no more than the biggest slice;
* watch: the daemon's PID (``nvidia-cuda-mps-control.pid`` in its pipe directory) must be
  alive and ``get_server_list`` must answer within a timeout; otherwise it is down, its
  status file says so (slices go Unhealthy) and it is restarted with the runtime's
  :class:`~kgpu.daemon.Backoff` (at once, then 1 s, 2 s, 4 s … 30 s; reset after a minute of running);
* stop (SIGTERM): ``quit`` through the control pipe, wait a second for the process to go, signal
  it if it does not.

Every control command runs with a timeout: a daemon that died can leave its named pipes
behind, and a client writing into them would otherwise wait forever.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from kgpu.daemon import Backoff, Watcher
from kgpu.errors import KgpuError
from kgpu.host.driverroot import find_binary
from kgpu.sharing.layout import SharedGPU
from kgpu.sharing.paths import MpsPaths
from kgpu.sharing.status import DaemonState, DaemonStatus, write_json_atomic, write_status

log = logging.getLogger(__name__)

CONTROL_BINARY = "nvidia-cuda-mps-control"
SERVER_BINARY = "nvidia-cuda-mps-server"


class DaemonError(KgpuError):
    """An MPS control command failed; the message says which and why."""


@dataclass(frozen=True, slots=True)
class DaemonSpec:
    """Everything needed to run one GPU's control daemon."""

    uuid: str
    index: int
    binary: Path
    pipe_dir: Path
    log_dir: Path
    default_memory_mib: int | None = None
    default_compute_percent: int | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def pid_file(self) -> Path:
        return self.pipe_dir / "nvidia-cuda-mps-control.pid"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["CUDA_VISIBLE_DEVICES"] = self.uuid
        env["CUDA_MPS_PIPE_DIRECTORY"] = str(self.pipe_dir)
        env["CUDA_MPS_LOG_DIRECTORY"] = str(self.log_dir)
        # Clients set their own limits; the daemon's environment must not carry a client's.
        env.pop("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", None)
        env.pop("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", None)
        return env


def driver_env(binary: Path, library_dir: Path | None) -> dict[str, str]:
    """PATH so the control daemon finds ``nvidia-cuda-mps-server`` next to it; the driver's libraries."""
    env = {"PATH": f"{binary.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"}
    if library_dir is not None:
        current = os.environ.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = f"{library_dir}{os.pathsep}{current}" if current else str(library_dir)
    return env


def spec_for(gpu: SharedGPU, paths: MpsPaths, binary: Path, extra_env: Mapping[str, str],
             default_limits: bool = True) -> DaemonSpec:
    return DaemonSpec(
        uuid=gpu.uuid,
        index=gpu.index,
        binary=binary,
        pipe_dir=paths.pipe_dir(gpu.uuid),
        log_dir=paths.log_dir(gpu.uuid),
        default_memory_mib=gpu.default_memory_mib if default_limits else None,
        default_compute_percent=gpu.default_compute_percent if default_limits else None,
        extra_env=dict(extra_env),
    )


class ControlClient:
    """Runs ``nvidia-cuda-mps-control`` for one daemon: start it, send it commands. Every call is bounded."""

    def __init__(self, spec: DaemonSpec, timeout: float = 5.0) -> None:
        self.spec = spec
        self.timeout = timeout

    def start(self) -> None:
        """``nvidia-cuda-mps-control -d``: forks the daemon into the background and returns.

        Output goes to a file, not a pipe: the forked daemon may keep inherited descriptors open,
        and reading a pipe to its end would then wait for the daemon to exit.
        """
        out_path = self.spec.log_dir / "kgpu-start.log"
        with open(out_path, "w") as out:
            try:
                launcher = subprocess.Popen(
                    [str(self.spec.binary), "-d"], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                    env=self.spec.env(), start_new_session=True,
                )
            except OSError as exc:
                raise DaemonError(f"cannot run {self.spec.binary}: {exc.strerror}") from None
            try:
                code = launcher.wait(self.timeout)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()
                raise DaemonError(f"{self.spec.binary} -d did not return within {self.timeout:g} s") from None
        if code != 0:
            lines = out_path.read_text(errors="replace").strip().splitlines()
            raise DaemonError(f"{self.spec.binary} -d failed: {lines[-1] if lines else f'exit status {code}'}")

    def send(self, command: str) -> str:
        """``echo <command> | nvidia-cuda-mps-control``; the daemon's answer."""
        return self._run([], command + "\n", repr(command))

    def pid(self) -> int | None:
        try:
            return int(self.spec.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _run(self, args: list[str], stdin: str, what: str) -> str:
        try:
            done = subprocess.run(
                [str(self.spec.binary), *args],
                input=stdin,
                capture_output=True,
                text=True,
                env=self.spec.env(),
                timeout=self.timeout,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise DaemonError(f"{what} got no answer within {self.timeout:g} s") from None
        except OSError as exc:
            raise DaemonError(f"cannot run {self.spec.binary}: {exc.strerror}") from None
        if done.returncode != 0:
            output = (done.stderr or done.stdout).strip().splitlines()
            why = output[-1] if output else f"exit status {done.returncode}"
            raise DaemonError(f"{what} failed: {why}")
        return done.stdout


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (our own exited child not yet reaped) is not alive.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


class GpuDaemon:
    """One GPU's control daemon and what the supervisor knows about it."""

    def __init__(
        self,
        spec: DaemonSpec,
        *,
        client: ControlClient | None = None,
        start_timeout: float = 10.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 30.0,
        stable_after: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.client = client or ControlClient(spec)
        self.start_timeout = start_timeout
        # The clock is looked up at each call: tests move a daemon's clock after creating it.
        self.backoff = Backoff(initial=backoff_base, cap=backoff_cap, reset_after=stable_after,
                               clock=lambda: self.clock())
        self.clock = clock
        self.state = DaemonState.STARTING
        self.detail = "not started yet"
        self.pid: int | None = None
        self.restarts = 0
        self.next_attempt = 0.0
        self.running_since = 0.0

    def status(self) -> DaemonStatus:
        return DaemonStatus(
            uuid=self.spec.uuid, state=self.state, updated=time.time(), pid=self.pid,
            restarts=self.restarts, detail=self.detail,
        )

    def check(self) -> None:
        """One supervision step: start when due, or confirm the running daemon still answers."""
        now = self.clock()
        if self.state is DaemonState.RUNNING:
            problem = self._problem()
            if problem is None:
                self.backoff.succeeded()
                return
            self.state, self.detail = DaemonState.DOWN, problem
            self.restarts += 1
            self.backoff.failed()
            # The first restart is at once (the next check); later ones back off.
            self.next_attempt = now + self.backoff.delay(self.backoff.failures - 1)
            log.error("MPS daemon down", extra={"gpu": self.spec.uuid, "reason": problem, "restarts": self.restarts})
            # Restart on the next check at the earliest, so "down" is published for at least one interval.
            return
        if self.state in (DaemonState.STARTING, DaemonState.DOWN) and now >= self.next_attempt:
            self._start(now)

    def adopt(self) -> bool:
        """Take over a daemon that already runs for this GPU (started before this process restarted) as is,
        with its clients and limits; False when none answers. ``check`` would quit it and start afresh."""
        pid = self.client.pid()
        if pid is None or not pid_alive(pid):
            return False
        try:
            self.client.send("get_server_list")
        except DaemonError:
            return False
        self.pid, self.state, self.running_since = pid, DaemonState.RUNNING, self.clock()
        self.detail = f"running (pid {pid}, adopted)"
        log.info("MPS daemon adopted", extra={"gpu": self.spec.uuid, "pid": pid, "pipe_dir": str(self.spec.pipe_dir)})
        return True

    def _problem(self) -> str | None:
        pid = self.client.pid() or self.pid
        if pid is not None and not pid_alive(pid):
            return f"control daemon (pid {pid}) exited"
        try:
            self.client.send("get_server_list")
        except DaemonError as exc:
            return f"control daemon does not answer: {exc}"
        return None

    def _start(self, now: float) -> None:
        spec = self.spec
        try:
            spec.pipe_dir.mkdir(parents=True, exist_ok=True)
            spec.log_dir.mkdir(parents=True, exist_ok=True)
            self._quit_leftover()
            self.client.start()
            self._wait_until_answering()
            if spec.default_memory_mib is not None:
                self.client.send(f"set_default_device_pinned_mem_limit 0 {spec.default_memory_mib}M")
            if spec.default_compute_percent is not None:
                self.client.send(f"set_default_active_thread_percentage {spec.default_compute_percent}")
        except (DaemonError, OSError) as exc:
            delay = self.backoff.failed()
            self.next_attempt = now + delay
            self.state = DaemonState.DOWN
            self.detail = f"start failed: {exc}; retrying in {delay:g} s"
            log.error("MPS daemon start failed", extra={"gpu": spec.uuid, "reason": str(exc), "retry_in_s": delay})
            return
        self.pid = self.client.pid()
        self.state = DaemonState.RUNNING
        self.running_since = self.clock()
        self.detail = f"running (pid {self.pid})" if self.pid else "running"
        log.info(
            "MPS daemon running",
            extra={"gpu": spec.uuid, "index": spec.index, "pid": self.pid, "pipe_dir": str(spec.pipe_dir),
                   "default_memory_mib": spec.default_memory_mib,
                   "default_compute_percent": spec.default_compute_percent},
        )

    def _quit_leftover(self) -> None:
        """A daemon from an earlier run would keep the old limits: ask it to quit, then make sure it went."""
        pid = self.client.pid()
        if pid is None or not pid_alive(pid):
            self.spec.pid_file.unlink(missing_ok=True)
            return
        log.info("quitting MPS daemon left from an earlier run", extra={"gpu": self.spec.uuid, "pid": pid})
        self._quit(pid)

    def _wait_until_answering(self) -> None:
        # Real time, not self.clock: this waits for a process, whatever clock schedules the restarts.
        deadline = time.monotonic() + self.start_timeout
        last: DaemonError | None = None
        while time.monotonic() < deadline:
            try:
                self.client.send("get_server_list")
                return
            except DaemonError as exc:
                last = exc
                time.sleep(0.05)
        raise DaemonError(f"daemon did not answer within {self.start_timeout:g} s after start ({last})")

    def stop(self, timeout: float = 1.0) -> None:
        pid = self.client.pid() or self.pid
        if pid is not None and pid_alive(pid):
            self._quit(pid, timeout)
        elif pid is None and self.state is DaemonState.RUNNING:
            try:
                self.client.send("quit")
            except DaemonError as exc:
                log.warning("MPS quit failed", extra={"gpu": self.spec.uuid, "reason": str(exc)})
        self.state, self.detail, self.pid = DaemonState.STOPPED, "stopped by kgpu mps-daemon", None
        log.info("MPS daemon stopped", extra={"gpu": self.spec.uuid})

    def _quit(self, pid: int, timeout: float = 1.0) -> None:
        """``quit`` through the control pipe; signals if the daemon does not go by itself."""
        try:
            self.client.send("quit")
        except DaemonError as exc:
            log.warning("MPS quit failed; signalling the daemon", extra={"gpu": self.spec.uuid, "reason": str(exc)})
            timeout = 0.5  # it did not take the command: no point waiting for it to act on it
        if _wait_gone(pid, timeout):
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            if _wait_gone(pid, 0.5):
                return
        raise DaemonError(f"MPS control daemon pid {pid} did not exit")


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


class Supervisor:
    """Keeps every GPU's daemon running until ``stop`` is set, then stops them all."""

    def __init__(
        self,
        daemons: Sequence[GpuDaemon],
        paths: MpsPaths,
        *,
        interval: float = 2.0,
        layout_json: Mapping[str, object] | None = None,
        on_check: Callable[[], None] | None = None,
    ) -> None:
        self.daemons = tuple(daemons)
        self.paths = paths
        self.interval = interval
        self.layout_json = layout_json
        self.on_check = on_check
        self._ready = False
        self._lock = threading.Lock()
        """Held by a check and by :meth:`replace`: a reload never changes the daemons under a check."""

    def check_all(self) -> None:
        with self._lock:
            self._check_all()

    def replace(self, daemons: Sequence[GpuDaemon], layout_json: Mapping[str, object] | None) -> None:
        """Supervise ``daemons`` from now on (a reloaded layout): daemons no longer in it are stopped;
        a daemon whose spec did not change keeps running."""
        with self._lock:
            old = list(self.daemons)
            new = []
            for daemon in daemons:
                same = next((d for d in old if d.spec == daemon.spec), None)  # specs hold dicts: compared, not hashed
                if same is not None:
                    old.remove(same)
                new.append(same or daemon)
            stopped = []
            for gone in old:
                try:
                    gone.stop()
                except DaemonError as exc:
                    log.error("MPS daemon did not stop", extra={"gpu": gone.spec.uuid, "reason": str(exc)})
                    write_status(self.paths, gone.status())  # the evidence stays
                else:
                    stopped.append(gone.spec.uuid)
            self._remove_files(stopped, layout=False)  # a GPU no longer shared keeps nothing on the node
            self.daemons = tuple(new)
            self.layout_json = layout_json
            if layout_json is not None:
                write_json_atomic(self.paths.layout_file, layout_json)
            else:
                self.paths.layout_file.unlink(missing_ok=True)
            self._ready = False
            self.paths.ready_file.unlink(missing_ok=True)

    def _check_all(self) -> None:
        for daemon in self.daemons:
            daemon.check()
            write_status(self.paths, daemon.status())
        ready = all(d.state is DaemonState.RUNNING for d in self.daemons)
        if ready and not self._ready:
            self.paths.ready_file.touch()
            log.info("all MPS daemons running", extra={"gpus": len(self.daemons)})
        elif not ready and self._ready:
            self.paths.ready_file.unlink(missing_ok=True)
        self._ready = ready
        if self.on_check is not None:
            self.on_check()
        _reap_orphans()

    def prepare(self) -> None:
        """The MPS root, the shared /dev/shm directory and layout.json, before the first check."""
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.paths.shm_dir.mkdir(parents=True, exist_ok=True)
        self.paths.ready_file.unlink(missing_ok=True)
        if self.layout_json is not None:
            write_json_atomic(self.paths.layout_file, self.layout_json)

    def run(self, stop: threading.Event) -> None:
        """Check every ``interval`` seconds until ``stop`` is set, then stop every daemon (in this thread)."""
        self.prepare()
        try:
            Watcher("mps-daemons", self.check_all, interval=self.interval).run(stop)
        finally:
            self.stop_all()

    def stop_all(self) -> None:
        """Tell every GPU's daemon to quit, all at once, then remove what they left. One after the other, a
        node's eight daemons (each a client run to send ``quit``, then a wait for the daemon to go) did not
        fit in the runtime's grace after SIGTERM, which then ended the process with files left behind."""
        self.paths.ready_file.unlink(missing_ok=True)
        with ThreadPoolExecutor(max_workers=max(len(self.daemons), 1), thread_name_prefix="mps-stop") as pool:
            errors = [error for error in pool.map(self._stop, self.daemons) if error]
        if errors:
            raise DaemonError("; ".join(errors))
        self.remove_files()

    def _stop(self, daemon: GpuDaemon) -> str | None:
        """Stop one daemon and record its state; what went wrong, if anything."""
        try:
            daemon.stop()
        except DaemonError as exc:
            return f"GPU {daemon.spec.index} ({daemon.spec.uuid}): {exc}"
        finally:
            write_status(self.paths, daemon.status())
        return None

    def remove_files(self) -> None:
        """After a clean stop (SIGTERM: a rollout, ``helm uninstall``) nothing of ours is left on the node: the
        layout, each GPU's status and whatever the control daemons left in their pipe and log directories.
        The directories stay: GPU pods have them bind-mounted, and a restarted daemon must be reachable
        through the same ones. shm/ is left alone: MPS clients in other pods keep their files there."""
        self._remove_files([d.spec.uuid for d in self.daemons], layout=True)

    def _remove_files(self, uuids: Sequence[str], layout: bool) -> None:
        paths = [self.paths.layout_file] if layout else []
        for uuid in uuids:
            paths.append(self.paths.status_file(uuid))
            for directory in (self.paths.pipe_dir(uuid), self.paths.log_dir(uuid)):
                if directory.is_dir():
                    paths.extend(p for p in directory.iterdir() if not p.is_dir())
        for path in paths:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("cannot remove an MPS file", extra={"path": str(path), "error": str(exc)})


def _reap_orphans() -> None:
    """As a container's PID 1, daemons that exit are our children: reap them so they do not linger as zombies.

    Runs between control commands (never during one), so it cannot steal a subprocess' exit status.
    """
    if os.getpid() != 1:
        return
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def find_control_binary(driver_roots: Sequence[Path], override: Path | None = None) -> Path:
    """``nvidia-cuda-mps-control`` under the first driver root that has it (or ``override``, or PATH)."""
    if override is not None:
        if not override.is_file() or not os.access(override, os.X_OK):
            raise DaemonError(f"--control-binary {override}: not an executable file")
        return override
    for root in driver_roots:
        found = find_binary(root, CONTROL_BINARY)
        if found is not None:
            return found
    on_path = shutil.which(CONTROL_BINARY)
    if on_path:
        return Path(on_path)
    looked = ", ".join(str(r) for r in driver_roots)
    raise DaemonError(
        f"{CONTROL_BINARY} not found under the driver root(s) {looked} (bin, usr/bin) nor on PATH; "
        "pass --driver-root where the NVIDIA driver is installed (e.g. /run/nvidia/driver, /usr/local/nvidia)"
    )


def set_compute_mode(nvidia_smi: Path, uuid: str, mode: str, timeout: float = 30.0) -> None:
    """``nvidia-smi -i <uuid> -c <mode>`` (EXCLUSIVE_PROCESS, DEFAULT, PROHIBITED). Opt-in only."""
    try:
        done = subprocess.run([str(nvidia_smi), "-i", uuid, "-c", mode], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DaemonError(f"{nvidia_smi} -i {uuid} -c {mode}: {exc}") from None
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        raise DaemonError(f"{nvidia_smi} -i {uuid} -c {mode} failed: {why[-1] if why else done.returncode}")
