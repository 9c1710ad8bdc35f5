"""The daemons' resident memory, step by step and by where it lies (targets: device plugin and exporter ≤ 80 MB).

Starts the device plugin (against the kubelet stand-in) and the exporter (with a fake kubelet PodResources
socket, so its gRPC client works as on a node) as the chart starts them — their own entry points,
``python -m kgpu.deviceplugin`` and ``python -m kgpu.exporter`` — and prints for each, read from /proc: the
bare interpreter for reference, once serving (registered / first scrape), after many Allocates or scrapes,
steady some seconds later (with the peak and threads), and where the steady memory lies (/proc/PID/smaps:
NVML, gRPC's core, pydantic's core, the interpreter, other libraries, Python's objects and malloc's heaps).

Variants show what parts cost: started through kgpu's command line (``kgpu device-plugin``: Typer, click and
Typer's pydantic adapters), without byte-code (every module compiled from source at start, as when the
.pyc files are missing), glibc limited to 2 malloc arenas (``MALLOC_ARENA_MAX=2``), and the exporter
without pod attribution.

    .venv/bin/python bench/rss.py                      # simulated h100x8 (its fixture loads pydantic)
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

from chart import chart_args  # bench/chart.py: the daemons' arguments as the chart starts them

from kgpu.testing.kubelet import FakeKubelet

TARGETS = {"device-plugin": 80.0, "exporter": 80.0}


@dataclass
class Run:
    daemon: str
    variant: str
    rows: list[tuple[str, float]] = field(default_factory=list)
    notes: str = ""
    where: dict[str, float] = field(default_factory=dict)

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


WHERE = (
    ("NVML (libnvidia-ml)", ("libnvidia-ml",)),
    ("gRPC core (cygrpc)", ("cygrpc",)),
    ("pydantic core", ("pydantic_core",)),
    ("the interpreter", ("libpython", "/bin/python")),
)


def where(pid: int) -> dict[str, float]:
    """Resident MB by mapping: the big shared objects by name, other files, and anonymous memory (Python's
    objects, malloc's heaps and arenas, thread stacks)."""
    out: dict[str, float] = {}
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if fields and not fields[0].endswith(":"):  # a mapping's header: address perms offset dev inode [path]
            path = fields[5] if len(fields) > 5 else ""
            group = next((g for g, marks in WHERE if any(m in path for m in marks)), None)
            name = group or ("other files" if path.startswith("/") else "anonymous (objects, heaps, stacks)")
        elif fields and fields[0] == "Rss:":
            out[name] = out.get(name, 0.0) + int(fields[1]) / 1024
    return out


def _finish(run: Run, pid: int, settle: float) -> None:
    time.sleep(settle)
    st = status(pid)
    run.rows.append((f"steady, {settle:g} s later", mb(st["VmRSS"])))
    run.notes = (f"peak {mb(st['VmHWM']):.1f} MB, anonymous {mb(st['RssAnon']):.1f} MB, "
                 f"file-backed {mb(st['RssFile']):.1f} MB, {st['Threads']} threads")
    run.where = where(pid)


def device_plugin(start: list[str], env: dict[str, str], variant: str, settle: float, calls: int) -> Run:
    """``start``: the plugin's command line up to its flags (its entry point, or ``kgpu device-plugin``)."""
    run = Run("device-plugin", variant)
    root = Path(tempfile.mkdtemp(dir="/tmp", prefix="kgpu-bench-rss-"))
    kubelet = FakeKubelet(root / "dp").start()
    proc = subprocess.Popen(
        [*start, "--kubelet-dir", str(kubelet.directory), "--state-file", str(root / "state.json")],
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


def exporter(start: list[str], env: dict[str, str], variant: str, settle: float, scrapes: int,
             socket: Path | None) -> Run:
    """``start``: the exporter's command line, serving on 127.0.0.1:0 (the port is read from its log)."""
    run = Run("exporter", variant)
    pods = ["--kubelet-pod-resources", str(socket) if socket is not None else "none"]
    proc = subprocess.Popen(
        [*start, *pods, "--device-plugin-state", "none"],
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
    print(f"  ({run.notes}; target ≤ {TARGETS[run.daemon]:g} MB)")
    print("  where the steady memory lies:")
    for name, value in sorted(run.where.items(), key=lambda kv: -kv[1]):
        print(f"    {name:44} {value:6.1f}")


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

    # kgpu's global options reach the daemons' entry points through their environment, as in a pod.
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    env |= {"KGPU_SIMULATE": args.simulate} if args.backend == "simulated" else {"KGPU_BACKEND": "nvml"}
    driver = ["--driver-root", args.driver_root] if args.backend == "nvml" and args.driver_root else []
    # The chart's arguments and config file (bench/chart.py), on the bench's kubelet and addresses.
    workdir = Path(tempfile.mkdtemp(prefix="kgpu-bench-rss-chart-"))
    plugin_args = chart_args("devicePlugin", workdir, {":8083": "127.0.0.1:0"})
    metrics_args = chart_args("exporter", workdir, {":9400": "127.0.0.1:0"})
    plugin = [sys.executable, "-m", "kgpu.deviceplugin", *driver, *plugin_args]
    metrics = [sys.executable, "-m", "kgpu.exporter", *driver, *metrics_args]
    from kgpu.gpu import open_backend

    backend = open_backend("simulated", simulate=args.simulate) if args.backend == "simulated" else open_backend(
        "nvml", driver_root=Path(args.driver_root) if args.driver_root else None)
    uuids = [g.uuid for g in backend.inventory().gpus]
    backend.close()
    node = f"{'NVML' if args.backend == 'nvml' else 'simulated ' + args.simulate}, {len(uuids)} GPU(s)"

    bare = bare_interpreter_mb()
    ok = True
    with pod_resources(uuids) as socket:
        runs = [device_plugin(plugin, env, "as deployed (its entry point)", args.settle, 2000),
                exporter(metrics, env, "as deployed (its entry point)", args.settle, 50, socket)]
        for run in runs:
            print_run(run, bare, node)
            ok = ok and run.steady <= TARGETS[run.daemon]
        if not args.no_variants:
            short = min(args.settle, 3.0)
            cli = [sys.executable, "-m", "kgpu", *driver]
            # No byte-code: Python looks for .pyc files only under an empty prefix and writes none.
            source = {**env, "PYTHONPYCACHEPREFIX": tempfile.mkdtemp(prefix="kgpu-no-pyc-"),
                      "PYTHONDONTWRITEBYTECODE": "1"}
            arenas = {**env, "MALLOC_ARENA_MAX": "2"}
            variants = [
                device_plugin([*cli, "device-plugin", *plugin_args], env, "kgpu device-plugin (the command line)",
                              short, 500),
                exporter([*cli, "exporter", *metrics_args], env, "kgpu exporter (the command line)", short, 20,
                         socket),
                device_plugin(plugin, source, "without byte-code (compiled at start)", short, 500),
                exporter(metrics, source, "without byte-code (compiled at start)", short, 20, socket),
                device_plugin(plugin, arenas, "MALLOC_ARENA_MAX=2", short, 500),
                exporter(metrics, arenas, "MALLOC_ARENA_MAX=2", short, 20, socket),
                exporter(metrics, env, "without pod attribution", short, 20, None),
            ]
            print(f"\nsteady resident memory of variants ({short:g} s after warm-up), MB")
            for run in [*runs, *variants]:
                print(f"  {run.daemon:14} {run.variant:40} {run.steady:6.1f}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
