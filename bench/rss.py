"""The daemons' resident memory, step by step (targets: device plugin < 80 MB, exporter < 80 MB).

Starts ``kgpu device-plugin`` (against the kubelet stand-in) and ``kgpu exporter`` (with a fake kubelet
PodResources socket, so gRPC is loaded as on a node) and prints for each, read from /proc: the bare
interpreter for reference, once serving (registered / first scrape), after many Allocates or scrapes,
and steady some seconds later (with the peak, threads, anonymous vs file-backed memory). Variants
show what parts cost: glibc limited to 2 malloc arenas (``MALLOC_ARENA_MAX=2``) and the exporter
without pod attribution (no gRPC).

    .venv/bin/python bench/rss.py                      # simulated h100x8 (imports pydantic for fixtures)
    python3 bench/rss.py --backend nvml [--driver-root /usr/local/nvidia]

Exits non-zero when a daemon's steady state misses its target.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kgpu.testing.kubelet import FakeKubelet

TARGETS = {"device-plugin": 80.0, "exporter": 80.0}


@dataclass
class Run:
    daemon: str
    variant: str
    rows: list[tuple[str, float]] = field(default_factory=list)
    notes: str = ""

    @property
    def steady(self) -> float:
        return self.rows[-1][1] if self.rows else float("nan")


def status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)}


def mb(value: str) -> float:
    return int(value.split()[0]) / 1024


def bare_interpreter_mb() -> float:
    code = "print(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) / 1024


class LogReader:
    """Reads the daemon's JSON log lines in the background; keeps the messages and the last lines."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.messages: list[str] = []
        self.tail: list[str] = []
        self._proc = proc
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self.tail = [*self.tail[-30:], line.rstrip()]
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.messages.append(str(record.get("msg", "")))

    def wait_for(self, prefix: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in self.messages:
                if msg.startswith(prefix):
                    return msg
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"no log line starting {prefix!r}; last lines:\n" + "\n".join(self.tail))


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _finish(run: Run, pid: int, settle: float) -> None:
    time.sleep(settle)
    st = status(pid)
    run.rows.append((f"steady, {settle:g} s later", mb(st["VmRSS"])))
    run.notes = (f"peak {mb(st['VmHWM']):.1f} MB, anonymous {mb(st['RssAnon']):.1f} MB, "
                 f"file-backed {mb(st['RssFile']):.1f} MB, {st['Threads']} threads")


def device_plugin(global_args: list[str], env: dict[str, str], variant: str, settle: float, calls: int) -> Run:
    run = Run("device-plugin", variant)
    root = Path(tempfile.mkdtemp(dir="/tmp", prefix="kgpu-bench-rss-"))
    kubelet = FakeKubelet(root / "dp").start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kgpu", *global_args, "device-plugin", "--kubelet-dir", str(kubelet.directory),
         "--state-file", str(root / "state.json")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )
    LogReader(proc)  # keeps its stderr pipe drained
    try:
        kubelet.wait_for_registration("nvidia.com/gpu", timeout=60)
        ids = [d.ID for d in kubelet.watch("nvidia.com/gpu").wait_for(lambda ds: len(ds) > 0, timeout=30)]
        run.rows.append(("registered with the kubelet", mb(status(proc.pid)["VmRSS"])))
        client = kubelet.client("nvidia.com/gpu")
        client.allocate([ids[:1]])
        run.rows.append(("after the first Allocate", mb(status(proc.pid)["VmRSS"])))
        for i in range(calls):
            client.allocate([ids[: 1 + i % min(8, len(ids))]])
        run.rows.append((f"after {calls} more Allocates", mb(status(proc.pid)["VmRSS"])))
        _finish(run, proc.pid, settle)
    finally:
        _stop(proc)
        kubelet.stop()
        shutil.rmtree(root, ignore_errors=True)
    return run


@contextmanager
def pod_resources(uuids: list[str]) -> Iterator[Path]:
    """A fake kubelet PodResources socket where pod bench-<i> holds GPU i (bench/exporter.py's)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from exporter import fake_kubelet  # bench/exporter.py

    with fake_kubelet(uuids) as socket:
        yield socket


def exporter(global_args: list[str], env: dict[str, str], variant: str, settle: float, scrapes: int,
             socket: Path | None) -> Run:
    run = Run("exporter", variant)
    pods = ["--kubelet-pod-resources", str(socket) if socket is not None else "none"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "kgpu", *global_args, "exporter", "--listen", "127.0.0.1:0", *pods,
         "--device-plugin-state", "none"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )
    logs = LogReader(proc)
    try:
        msg = logs.wait_for("serving GPU metrics on http://")
        url = f"http://127.0.0.1:{int(msg.rsplit(':', 1)[1].split('/')[0])}/metrics"
        run.rows.append(("serving", mb(status(proc.pid)["VmRSS"])))
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
        run.rows.append(("after the first scrape (gRPC client loaded)", mb(status(proc.pid)["VmRSS"])))
        for _ in range(scrapes):
            with urllib.request.urlopen(url, timeout=10) as response:
                response.read()
        run.rows.append((f"after {scrapes} more scrapes", mb(status(proc.pid)["VmRSS"])))
        _finish(run, proc.pid, settle)
    finally:
        _stop(proc)
    return run


def print_run(run: Run, bare: float, node: str) -> None:
    print(f"\nkgpu {run.daemon} on {node}: resident memory (VmRSS), MB")
    print(f"  {'step':46} {'MB':>6} {'+MB':>6}")
    print(f"  {'bare interpreter (python -c pass)':46} {bare:6.1f}")
    previous = bare
    for name, value in run.rows:
        print(f"  {name:46} {value:6.1f} {value - previous:+6.1f}")
        previous = value
    print(f"  ({run.notes}; target < {TARGETS[run.daemon]:g} MB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backend", choices=("simulated", "nvml"), default="simulated")
    parser.add_argument("--simulate", default="h100x8", help="simulated node (default h100x8)")
    parser.add_argument("--driver-root", default=None, help="with --backend nvml: where the driver lives")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds before the steady reading")
    parser.add_argument("--no-variants", action="store_true", help="only the daemons as deployed")
    args = parser.parse_args()
    # Stopped by a time limit: unwind, so that the daemons started here are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    global_args = ["--simulate", args.simulate] if args.backend == "simulated" else ["--backend", "nvml"]
    if args.backend == "nvml" and args.driver_root:
        global_args += ["--driver-root", args.driver_root]
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    from kgpu.gpu import open_backend

    backend = open_backend("simulated", simulate=args.simulate) if args.backend == "simulated" else open_backend(
        "nvml", driver_root=Path(args.driver_root) if args.driver_root else None)
    uuids = [g.uuid for g in backend.inventory().gpus]
    backend.close()
    node = f"{'NVML' if args.backend == 'nvml' else 'simulated ' + args.simulate}, {len(uuids)} GPU(s)"

    bare = bare_interpreter_mb()
    ok = True
    with pod_resources(uuids) as socket:
        runs = [device_plugin(global_args, env, "as deployed", args.settle, 2000),
                exporter(global_args, env, "as deployed", args.settle, 50, socket)]
        for run in runs:
            print_run(run, bare, node)
            ok = ok and run.steady < TARGETS[run.daemon]
        if not args.no_variants:
            short = min(args.settle, 3.0)
            variants = [
                device_plugin(global_args, {**env, "MALLOC_ARENA_MAX": "2"}, "MALLOC_ARENA_MAX=2", short, 500),
                exporter(global_args, {**env, "MALLOC_ARENA_MAX": "2"}, "MALLOC_ARENA_MAX=2", short, 20, socket),
                exporter(global_args, env, "no pod attribution (no gRPC loaded)", short, 20, None),
            ]
            print(f"\nsteady resident memory of variants ({short:g} s after warm-up), MB")
            for run in [*runs, *variants]:
                print(f"  {run.daemon:14} {run.variant:40} {run.steady:6.1f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
