"""Scrape latency and memory of `kgpu exporter` (targets: < 5 ms per scrape for 8 GPUs, RSS < 60 MB).

For each backend (the simulated 8×H100 node, and NVML when a driver is present) it measures
  - the collector in-process: snapshot + exposition, median and p99 over many scrapes;
  - the real daemon over HTTP: `kgpu exporter` in its own process, GET /metrics, median and p99;
  - that daemon's resident memory (VmRSS) and peak (VmHWM) after the scrapes.
Both attribute every GPU to a pod through a fake kubelet PodResources server on a unix socket, so
the numbers include one PodResources List per scrape and the gRPC client's memory, as deployed.

    .venv/bin/python bench/exporter.py                 # simulated h100x8, plus NVML if it loads
    .venv/bin/python bench/exporter.py --backend nvml  # only the real GPUs
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TARGET_MS = 5.0
TARGET_RSS_MB = 60.0


@dataclass
class Row:
    backend: str
    gpus: int
    series: int
    inproc_median: float
    inproc_p99: float
    http_median: float
    http_p99: float
    rss_mb: float
    hwm_mb: float


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


@contextmanager
def fake_kubelet(gpu_uuids: list[str]) -> Iterator[Path]:
    """A PodResources server on a unix socket where pod bench-<i> holds GPU i."""
    import grpc

    from kgpu.podresources.api import podresources_pb2 as pb
    from kgpu.podresources.api import podresources_pb2_grpc as pb_grpc

    answer = pb.ListPodResourcesResponse(pod_resources=[
        pb.PodResources(name=f"bench-{i}", namespace="bench", containers=[pb.ContainerResources(
            name="main", devices=[pb.ContainerDevices(resource_name="nvidia.com/gpu", device_ids=[uuid])])])
        for i, uuid in enumerate(gpu_uuids)
    ])

    class Kubelet(pb_grpc.PodResourcesListerServicer):  # type: ignore[misc]
        def List(self, request: Any, context: Any) -> Any:
            return answer

    with tempfile.TemporaryDirectory() as tmp:
        socket = Path(tmp) / "kubelet.sock"
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_PodResourcesListerServicer_to_server(Kubelet(), server)
        server.add_insecure_port(f"unix://{socket}")
        server.start()
        try:
            yield socket
        finally:
            server.stop(grace=None).wait()


def open_bench_backend(global_args: list[str]) -> Any:
    from kgpu.gpu import open_backend

    return open_backend(simulate=global_args[1]) if global_args else open_backend("nvml")


def in_process(global_args: list[str], scrapes: int, socket: Path) -> tuple[int, int, list[float]]:
    from kgpu.exporter import ExporterOptions, GPUCollector, load_counters
    from kgpu.exporter.podresources import PodResourcesClient

    backend = open_bench_backend(global_args)
    pods = PodResourcesClient(socket)
    collector = GPUCollector(backend, ExporterOptions(load_counters(None), hostname="bench"), pod_devices=pods)
    try:
        text = collector.render()
        times = []
        for _ in range(scrapes):
            start = time.perf_counter()
            collector.render()
            times.append((time.perf_counter() - start) * 1000)
    finally:
        collector.close()
        pods.close()
        backend.close()
    if 'pod="bench-0"' not in text:
        raise RuntimeError("the fake kubelet's pods did not show up as pod labels")
    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    return len(backend.inventory().gpus), series, times


def daemon(global_args: list[str], scrapes: int, socket: Path) -> tuple[list[float], float, float]:
    cmd = [sys.executable, "-m", "kgpu", *global_args, "exporter", "--listen", "127.0.0.1:0",
           "--kubelet-pod-resources", str(socket)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                raise RuntimeError(f"kgpu exporter exited: {' '.join(cmd)}")
            try:
                msg = json.loads(line).get("msg", "")
            except json.JSONDecodeError:
                continue
            if msg.startswith("serving GPU metrics on http://"):
                port = int(msg.rsplit(":", 1)[1].split("/")[0])
        if port is None:
            raise RuntimeError("kgpu exporter did not start listening within 60 s")
        url = f"http://127.0.0.1:{port}/metrics"
        times = []
        for _ in range(scrapes):
            start = time.perf_counter()
            with urllib.request.urlopen(url, timeout=10) as response:
                response.read()
            times.append((time.perf_counter() - start) * 1000)
        status_text = Path(f"/proc/{proc.pid}/status").read_text()
        status = dict(line.split(":", 1) for line in status_text.splitlines() if ":" in line)
        rss = int(status["VmRSS"].split()[0]) / 1024
        hwm = int(status["VmHWM"].split()[0]) / 1024
        return times, rss, hwm
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(name: str, global_args: list[str], scrapes: int) -> Row:
    backend = open_bench_backend(global_args)
    uuids = [g.uuid for g in backend.inventory().gpus]
    backend.close()
    with fake_kubelet(uuids) as socket:
        gpus, series, inproc = in_process(global_args, scrapes, socket)
        http, rss, hwm = daemon(global_args, scrapes, socket)
    return Row(name, gpus, series, statistics.median(inproc), p99(inproc), statistics.median(http), p99(http),
               rss, hwm)


def nvml_available() -> bool:
    try:
        from kgpu.gpu import open_backend

        open_backend("nvml").close()
        return True
    except Exception as exc:
        print(f"(NVML not available here: {str(exc).splitlines()[0][:120]})")
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("all", "simulated", "nvml"), default="all")
    parser.add_argument("--scrapes", type=int, default=300)
    args = parser.parse_args()
    rows = []
    if args.backend in ("all", "simulated"):
        rows.append(measure("simulated h100x8", ["--simulate", "h100x8"], args.scrapes))
    if args.backend == "nvml" or (args.backend == "all" and nvml_available()):
        rows.append(measure("nvml", [], max(50, args.scrapes // 3)))
    print(f"{'backend':<18} {'GPUs':>4} {'series':>6} {'in-proc med ms':>14} {'p99 ms':>7} "
          f"{'HTTP med ms':>11} {'p99 ms':>7} {'RSS MB':>7} {'peak MB':>7}")
    for r in rows:
        print(f"{r.backend:<18} {r.gpus:>4} {r.series:>6} {r.inproc_median:>14.2f} {r.inproc_p99:>7.2f} "
              f"{r.http_median:>11.2f} {r.http_p99:>7.2f} {r.rss_mb:>7.1f} {r.hwm_mb:>7.1f}")
    print(f"targets: < {TARGET_MS:g} ms per scrape for 8 simulated GPUs, RSS < {TARGET_RSS_MB:g} MB "
          "(dcgm-exporter: 405-512 MiB on 8-GPU nodes)")
    sim = [r for r in rows if r.backend.startswith("simulated")]
    ok = all(r.inproc_median < TARGET_MS and r.http_median < TARGET_MS and r.rss_mb < TARGET_RSS_MB for r in sim)
    ok = ok and all(r.rss_mb < TARGET_RSS_MB for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
