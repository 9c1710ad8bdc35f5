"""The device plugin's guard rails, measured side by side with NVIDIA's plugin in the same run.

Both plugins are started in turn against the kubelet stand-in (:mod:`kgpu.testing.kubelet`, real gRPC
over unix sockets), on the same GPUs, and measured as the kubelet sees them:

* registration: from process start to the kubelet's RegisterRequest — target ≤ 2 s;
* Allocate of one GPU, p50 / p99 over ``--calls`` calls — target: kgpu's p99 ≤ 3× NVIDIA's;
* re-registration after a kubelet restart (directory wiped, kubelet.sock recreated), median / max
  of 5 — target ≤ 250 ms;
* resident memory after all that — target ≤ 80 MB; and the same for the exporter after scrapes, attributing
  the GPUs to pods through a PodResources socket (so its gRPC client works, as on a node).

kgpu's daemons are started as the chart starts them: their own entry points (``python -m kgpu.deviceplugin``,
``python -m kgpu.exporter``, i.e. ``kgpu-device-plugin`` and ``kgpu-exporter``), which load no part of kgpu's
command line, with the chart's arguments and the chart's default config file (bench/chart.py). Their Python
must be byte-compiled as in the image (scripts/device/setup.sh does it): compiling pynvml's 330 KB source at
every start leaves ~13 MB more resident.

NVIDIA's plugin keeps its sockets in ``/var/lib/kubelet/device-plugins`` whatever its flags, so the
stand-in serves there: run this on a machine without a kubelet (the GPU machine), as root.

    python3 bench/guardrails.py --nvidia-plugin .bench-bin/nvidia-device-plugin --driver-root /usr/local/nvidia
    .venv/bin/python bench/guardrails.py --simulate h100x8     # kgpu alone, on a simulated node

Prints a table; exits non-zero when a guard rail is broken.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from chart import chart_command  # bench/chart.py: the daemons' command lines as the chart starts them
from exporter import fake_kubelet  # bench/exporter.py: a PodResources socket attributing each GPU to a pod

from kgpu.gpu import open_backend
from kgpu.testing.kubelet import FakeKubelet

RESOURCE = "nvidia.com/gpu"
DEVICE_PLUGINS = Path("/var/lib/kubelet/device-plugins")


@dataclass
class Measured:
    name: str
    register_ms: float = float("nan")
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    reregister_ms: list[float] = field(default_factory=list)
    rss_mb: float = float("nan")
    peak_mb: float = float("nan")
    stop_ms: float = float("nan")
    error: str = ""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now (VmRSS), or its peak so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(proc: subprocess.Popen[bytes]) -> float:
    """SIGTERM; milliseconds until the process is gone (killed after 10 s)."""
    if proc.poll() is not None:
        return float("nan")
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return (time.monotonic() - start) * 1000


def measure_plugin(name: str, command: list[str], env: dict[str, str], directory: Path, calls: int,
                   log: Path) -> Measured:
    result = Measured(name)
    directory.mkdir(parents=True, exist_ok=True)
    for leftover in directory.iterdir():
        if leftover.is_socket():
            leftover.unlink()
    kubelet = FakeKubelet(directory).start()
    with open(log, "wb") as out:
        started = time.monotonic()
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        reg = kubelet.wait_for_registration(RESOURCE, timeout=60)
        result.register_ms = (reg.at - started) * 1000
        devices = kubelet.watch(RESOURCE).wait_for(lambda ds: len(ds) > 0, timeout=30)
        client = kubelet.client(RESOURCE)
        first = [devices[0].ID]
        for _ in range(200):  # warm the channel and the server's threads
            client.allocate([first])
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            client.allocate([first])
            times.append((time.perf_counter() - t) * 1000)
        result.p50_ms, result.p99_ms = statistics.median(times), percentile(times, 0.99)
        for _ in range(5):
            count = len([r for r in kubelet.registrations if r.resource_name == RESOURCE])
            kubelet.restart()
            restarted = time.monotonic()
            again = kubelet.wait_for_registration(RESOURCE, count=count + 1, timeout=30)
            result.reregister_ms.append((again.at - restarted) * 1000)
            kubelet.watch(RESOURCE).wait_for(lambda ds: len(ds) > 0, timeout=30)
            time.sleep(0.3)
        result.rss_mb, result.peak_mb = rss_mb(proc.pid), rss_mb(proc.pid, "VmHWM")
    except (AssertionError, OSError) as exc:
        result.error = str(exc).splitlines()[0][:200]
    finally:
        result.stop_ms = stop(proc)
        kubelet.stop()
    return result


def measure_exporter(command: list[str], port: int, env: dict[str, str], scrapes: int,
                     pod_resources: Path) -> tuple[float, float]:
    """``command`` serves on 127.0.0.1:``port``; resident memory after ``scrapes`` scrapes, and its peak."""
    proc = subprocess.Popen([*command, "--kubelet-pod-resources", str(pod_resources), "--device-plugin-state",
                             "none"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    return float("nan"), float("nan")
                time.sleep(0.1)
        for _ in range(scrapes):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        time.sleep(2)
        return rss_mb(proc.pid), rss_mb(proc.pid, "VmHWM")
    finally:
        stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--nvidia-plugin", type=Path, help="NVIDIA's nvidia-device-plugin binary (v0.20)")
    parser.add_argument("--driver-root", default=None, help="where the driver lives (e.g. /usr/local/nvidia)")
    parser.add_argument("--simulate", default=None, help="measure kgpu alone on a simulated node")
    parser.add_argument("--calls", type=int, default=2000, help="Allocate calls per plugin")
    parser.add_argument("--kubelet-dir", type=Path, default=None,
                        help=f"default {DEVICE_PLUGINS} (NVIDIA's plugin needs it), or a temporary one with --simulate")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a time limit: unwind and stop the plugins

    work = Path(tempfile.mkdtemp(prefix="kgpu-guardrails-"))
    directory = args.kubelet_dir or (work / "dp" if args.simulate else DEVICE_PLUGINS)
    env = dict(os.environ)
    if args.driver_root:
        lib = Path(args.driver_root) / "lib64"
        env["LD_LIBRARY_PATH"] = f"{lib}:{env['LD_LIBRARY_PATH']}" if env.get("LD_LIBRARY_PATH") else str(lib)
    # kgpu's global options reach the daemons' entry points through their environment, as in a pod.
    env |= {"KGPU_SIMULATE": args.simulate} if args.simulate else {"KGPU_BACKEND": "nvml"}
    driver = ["--driver-root", args.driver_root] if args.driver_root and not args.simulate else []
    backend = (open_backend("simulated", simulate=args.simulate) if args.simulate else
               open_backend("nvml", driver_root=Path(args.driver_root) if args.driver_root else None))
    uuids = [g.uuid for g in backend.inventory().gpus]
    backend.close()
    runs: list[Measured] = []
    try:
        if args.nvidia_plugin is not None:
            nvidia = [str(args.nvidia_plugin), "--kubelet-socket", str(directory / "kubelet.sock")]
            runs.append(measure_plugin("NVIDIA v0.20", nvidia, env, directory, args.calls, work / "nvidia.log"))
        # The chart's arguments and config file (bench/chart.py), on the bench's kubelet and addresses.
        kgpu = [*chart_command("devicePlugin", work, {":8083": "127.0.0.1:0"}), *driver,
                "--kubelet-dir", str(directory), "--state-file", str(work / "state.json")]
        runs.append(measure_plugin("kgpu", kgpu, env, directory, args.calls, work / "kgpu.log"))
        port = 19400
        exporter = [*chart_command("exporter", work, {":9400": f"127.0.0.1:{port}"}), *driver]
        with fake_kubelet(uuids) as pod_resources:
            exporter_rss, exporter_peak = measure_exporter(exporter, port, env, 50, pod_resources)
    finally:
        for run in runs:
            if run.error:
                log = work / ("nvidia.log" if run.name.startswith("NVIDIA") else "kgpu.log")
                print(f"{run.name} failed: {run.error}\n--- its log (tail) ---", file=sys.stderr)
                print(log.read_text(errors="replace")[-3000:], file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)

    nvidia_run = next((r for r in runs if r.name.startswith("NVIDIA")), None)
    ours = runs[-1]
    where = f"simulated {args.simulate}" if args.simulate else "NVML"
    print(f"\ndevice plugins on {where}, {args.calls} Allocate calls of 1 GPU each\n")
    print(f"{'measure':34} " + " ".join(f"{r.name:>22}" for r in runs))

    def row(label: str, values: list[str]) -> None:
        print(f"{label:34} " + " ".join(f"{v:>22}" for v in values))

    row("registration after start", [f"{r.register_ms:.0f} ms" for r in runs])
    row("Allocate p50 / p99", [f"{r.p50_ms:.3f} / {r.p99_ms:.3f} ms" for r in runs])
    row("re-registration median / max", [
        f"{statistics.median(r.reregister_ms):.0f} / {max(r.reregister_ms):.0f} ms" if r.reregister_ms else "n/a"
        for r in runs])
    row("resident memory (peak)", [f"{r.rss_mb:.1f} MB ({r.peak_mb:.1f})" for r in runs])
    row("SIGTERM to exit", [f"{r.stop_ms:.0f} ms" for r in runs])
    print(f"{'kgpu exporter resident memory (peak)':34} {f'{exporter_rss:.1f} MB ({exporter_peak:.1f})':>22}")

    reregister = max(ours.reregister_ms) if ours.reregister_ms else float("nan")
    checks = [
        (f"kgpu registers {ours.register_ms:.0f} ms after start (≤ 2000 ms)", ours.register_ms <= 2000),
        (f"kgpu re-registers {reregister:.0f} ms (max of 5) after a kubelet restart (≤ 250 ms)", reregister <= 250),
        (f"kgpu device plugin resident memory {ours.rss_mb:.1f} MB (≤ 80 MB)", ours.rss_mb <= 80),
        (f"kgpu exporter resident memory {exporter_rss:.1f} MB (≤ 80 MB)", exporter_rss <= 80),
        (f"kgpu stops {ours.stop_ms:.0f} ms after SIGTERM (≤ 2000 ms)", ours.stop_ms <= 2000),
    ]
    if nvidia_run is not None:
        limit = 3 * nvidia_run.p99_ms
        checks.insert(1, (f"kgpu Allocate p99 {ours.p99_ms:.3f} ms (≤ 3× NVIDIA's {nvidia_run.p99_ms:.3f} = "
                          f"{limit:.3f} ms)", ours.p99_ms <= limit))
    print()
    for label, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    return 0 if all(ok for _, ok in checks) and not any(r.error for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
