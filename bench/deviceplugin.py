"""The device plugin daemon's latencies and footprint, measured as the kubelet sees them.

Starts ``kgpu device-plugin`` as a subprocess against the kubelet stand-in (real unix sockets) and
prints a table:

* Allocate latency p50/p99 for 1 GPU and for 8 GPUs (all GPUs on a smaller node) — target p99 < 1 ms;
* injected health event → ListAndWatch update (simulated node only) — target < 250 ms;
* kubelet restart (directory wiped, kubelet.sock recreated) → registered again — target < 1 s;
* the daemon's resident memory after all of the above — target < 80 MB.

Two rows without a target help read the Allocate numbers on a noisy or many-core machine: the
daemon's CPU time and context switches per Allocate (from /proc, steady whatever else runs), and
the latency of GetDevicePluginOptions, an RPC that does no work — the floor gRPC itself sets.

    .venv/bin/python bench/deviceplugin.py                    # simulated h100x8
    python3 bench/deviceplugin.py --nvml [--driver-root /usr/local/nvidia]   # the real GPUs

Exits non-zero when a target is missed.
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
from pathlib import Path
from typing import Any

from kgpu.deviceplugin.api import deviceplugin_pb2 as pb
from kgpu.gpu.simulated import inject_event
from kgpu.testing.kubelet import FakeKubelet

RESOURCE = "nvidia.com/gpu"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_and_switches(pid: int) -> tuple[float, int]:
    """(user + system CPU seconds, context switches of all its threads) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    switches = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:  # a thread that just ended
            continue
        switches += sum(int(line.split()[1]) for line in text.splitlines() if "ctxt_switches" in line)
    return cpu, switches


def _latency(call: Any, calls: int) -> tuple[float, float]:
    for _ in range(200):  # warm up the channel and the server's threads
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), _percentile(times, 0.99)


def _health_latency(kubelet: FakeKubelet, events: Path, uuid: str, rounds: int) -> list[float]:
    watch = kubelet.watch(RESOURCE)
    out = []
    for i in range(rounds):
        want = "Unhealthy" if i % 2 == 0 else "Healthy"
        start = time.perf_counter()
        if want == "Unhealthy":
            inject_event(events, uuid, "xid", 79)
        else:
            inject_event(events, uuid, "recovered")
        watch.wait_for(lambda ds, w=want: any(uuid == d.ID and d.health == w for d in ds), timeout=5)
        out.append((time.perf_counter() - start) * 1000)
    return out


def _reregister_latency(kubelet: FakeKubelet, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        count = len([r for r in kubelet.registrations if r.resource_name == RESOURCE])
        kubelet.restart()
        start = time.monotonic()
        reg = kubelet.wait_for_registration(RESOURCE, count=count + 1, timeout=10)
        out.append((reg.at - start) * 1000)
        time.sleep(0.2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--nvml", action="store_true", help="use the real GPUs through NVML")
    parser.add_argument("--driver-root", default=None, help="with --nvml: where the driver lives")
    parser.add_argument("--simulate", default="h100x8", help="simulated node (default h100x8)")
    parser.add_argument("--calls", type=int, default=2000, help="Allocate calls per size")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(dir="/tmp", prefix="kgpu-bench-dp-"))
    events = root / "events.jsonl"
    kubelet = FakeKubelet(root / "dp").start()
    backend_args = ["--simulate", args.simulate, "--simulate-events", str(events)]
    if args.nvml:
        backend_args = ["--backend", "nvml"]
    if args.nvml and args.driver_root:
        backend_args += ["--driver-root", args.driver_root]
    command = [
        sys.executable, "-m", "kgpu", *backend_args, "device-plugin",
        "--kubelet-dir", str(kubelet.directory), "--state-file", str(root / "state.json"),
    ]
    # As deployed: info level, one JSON log line per Allocate, written to a file as a container's log would be.
    env = {**os.environ, "KGPU_LOG_LEVEL": "info"}
    daemon_log = open(root / "plugin.log", "wb")  # noqa: SIM115 - closed after the daemon exits
    proc = subprocess.Popen(command, env=env, stdout=daemon_log, stderr=subprocess.STDOUT)
    rows: list[tuple[str, str, str, bool]] = []
    try:
        kubelet.wait_for_registration(RESOURCE, timeout=30)
        devices = kubelet.watch(RESOURCE).wait_for(lambda ds: len(ds) > 0)
        ids = [d.ID for d in devices]
        client = kubelet.client(RESOURCE)
        cpu_before, switches_before = _cpu_and_switches(proc.pid)
        for size in sorted({1, min(8, len(ids))}):
            p50, p99 = _latency(lambda n=size: client.allocate([ids[:n]]), args.calls)
            rows.append((f"Allocate, {size} GPU(s), p50 / p99", f"{p50:.3f} / {p99:.3f} ms", "p99 < 1 ms", p99 < 1.0))
        cpu_after, switches_after = _cpu_and_switches(proc.pid)
        allocations = 2 * (args.calls + 200) if len(ids) > 1 else args.calls + 200
        cpu_us = (cpu_after - cpu_before) / allocations * 1e6
        switches = (switches_after - switches_before) / allocations
        rows.append(("daemon CPU / context switches per Allocate", f"{cpu_us:.0f} us / {switches:.1f}", "-", True))
        p50, p99 = _latency(lambda: client.stub.GetDevicePluginOptions(pb.Empty(), timeout=5), args.calls)
        rows.append(("GetDevicePluginOptions (gRPC floor), p50 / p99", f"{p50:.3f} / {p99:.3f} ms", "-", True))
        if args.nvml:
            rows.append(("health event → ListAndWatch", "n/a (no event injection on NVML)", "< 250 ms", True))
        else:
            health = _health_latency(kubelet, events, ids[0].split("::")[0], 10)
            worst = max(health)
            rows.append(
                (
                    "health event → ListAndWatch, median / max",
                    f"{statistics.median(health):.1f} / {worst:.1f} ms",
                    "< 250 ms",
                    worst < 250,
                )
            )
        restarts = _reregister_latency(kubelet, 5)
        rows.append(
            (
                "kubelet restart → registered, median / max",
                f"{statistics.median(restarts):.1f} / {max(restarts):.1f} ms",
                "< 1 s",
                max(restarts) < 1000,
            )
        )
        rss = _rss_mb(proc.pid)
        rows.append(("daemon RSS", f"{rss:.1f} MB", "< 80 MB", rss < 80))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        kubelet.stop()
        daemon_log.close()
        if proc.returncode != 0:
            print((root / "plugin.log").read_text()[-3000:], file=sys.stderr)
        shutil.rmtree(root, ignore_errors=True)

    node = "NVML" if args.nvml else f"simulated {args.simulate}"
    print(f"\nkgpu device-plugin on {node}, {len(ids)} device(s), {args.calls} Allocate calls per size\n")
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    print(f"{'measure':{width}}  {'result':{value_width}}  {'target':12}  ok")
    for name, value, target, ok in rows:
        print(f"{name:{width}}  {value:{value_width}}  {target:12}  {'yes' if ok else 'NO'}")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
