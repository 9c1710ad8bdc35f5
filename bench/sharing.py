"""Four clients sharing one GPU: plain time-slicing versus kgpu's MPS slices of 25 % each.

Each client runs the same batch-1-inference-like loop for a fixed time: a 16-token bf16 activation
through 1024×1024 weight matrices, 100 GEMMs per CUDA graph replay (small kernels that occupy a few SMs
each, back to back, so one client alone keeps the GPU busy without filling it). Measured, in matmuls
per second:

* one client alone;
* (a) 4 clients at once without MPS: the driver time-slices their contexts;
* (b) 4 clients at once in kgpu's MPS slices: ``kgpu mps-daemon`` runs the control daemon and each
  client gets the environment the device plugin's Allocate gives a ``nvidia.com/gpu`` replica
  (``sharing.mps.resources: [{name: nvidia.com/gpu, replicas: 4}]``: 25 % of the SMs, a quarter of
  the memory each).

Prints a table and the ratio b/a (goal ≥ 1.5). Needs a CUDA GPU, torch and the NVIDIA driver's MPS
binaries (``--driver-root``, default /usr/local/nvidia). Never changes GPU settings. About a minute:

    python3 bench/sharing.py [--seconds 8] [--driver-root /usr/local/nvidia]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLIENTS = 4
GOAL = 1.5


LAYERS = 4
HIDDEN = 1024
TOKENS = 16
MATMULS_PER_GRAPH = 100


def worker(args: argparse.Namespace) -> int:
    import torch

    torch.manual_seed(0)
    layers = [torch.randn(HIDDEN, HIDDEN, device="cuda", dtype=torch.bfloat16) / 32 for _ in range(LAYERS)]
    x = torch.randn(TOKENS, HIDDEN, device="cuda", dtype=torch.bfloat16)

    def forward() -> torch.Tensor:
        h = x
        for _ in range(MATMULS_PER_GRAPH // LAYERS):
            for w in layers:
                h = h @ w
        return h

    # A CUDA graph replays the small GEMMs back to back, as an inference server's decode step does:
    # the GPU always has this client's next kernel, but each kernel occupies only a few SMs.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            forward()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        forward()
    for _ in range(20):
        graph.replay()
    torch.cuda.synchronize()
    barrier = Path(args.barrier)
    (barrier / f"{os.getpid()}.ready").touch()
    while len(list(barrier.glob("*.ready"))) < args.peers:
        time.sleep(0.005)
    start = time.perf_counter()
    count = 0
    while time.perf_counter() - start < args.seconds:
        for _ in range(10):
            graph.replay()
        torch.cuda.synchronize()
        count += 10 * MATMULS_PER_GRAPH
    elapsed = time.perf_counter() - start
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    print(json.dumps({"matmuls": count, "seconds": elapsed, "sms": sms}))
    return 0


def run_clients(envs: list[dict[str, str]], seconds: float) -> list[dict[str, float]]:
    barrier = Path(tempfile.mkdtemp(prefix="kgpu-bench-barrier-"))
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", "--barrier", str(barrier), "--peers", str(len(envs)),
             "--seconds", str(seconds)],
            env={**os.environ, **env}, stdout=subprocess.PIPE, text=True,
        )
        for env in envs
    ]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 120)
        if p.returncode != 0:
            raise SystemExit(f"a client failed (exit {p.returncode}); output: {out}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    for f in barrier.iterdir():
        f.unlink()
    barrier.rmdir()
    return results


def mps_envs(driver_root: str, work: Path) -> tuple[subprocess.Popen[bytes], list[dict[str, str]], Path]:
    """Start kgpu mps-daemon for 4 replicas of GPU 0; return it and the Allocate environment of each replica."""
    from kgpu.config.resolve import resolve_config
    from kgpu.deviceplugin.daemon import node_resources as build_logic
    from kgpu.gpu.backend import open_backend

    root = work / "mps"
    config = work / "config.yaml"
    config.write_text(
        f"version: v1\nflags:\n  mpsRoot: {root}\nsharing:\n  mps:\n    resources:\n"
        f"    - name: nvidia.com/gpu\n      replicas: {CLIENTS}\n      devices: [0]\n"
    )
    log = work / "mps-daemon.log"
    with open(log, "wb") as out:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "kgpu", "--driver-root", driver_root, "mps-daemon", "--config-file", str(config),
             "--interval", "1"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    deadline = time.time() + 60
    while not (root / ".ready").exists():
        if daemon.poll() is not None or time.time() > deadline:
            daemon.kill()
            raise SystemExit(f"kgpu mps-daemon did not start the MPS daemon; see {log}:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    backend = open_backend(driver_root=Path(driver_root))
    try:
        logic = build_logic(backend.inventory(), resolve_config({}, {}, config))
    finally:
        backend.close()
    (resource,) = [r for r in logic.resources() if r.devices and "::" in r.devices[0].id]
    envs = [dict(logic.allocate(resource.name, [d.id]).envs) for d in resource.devices[:CLIENTS]]
    return daemon, envs, log


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured time per run")
    parser.add_argument("--driver-root", default=os.environ.get("KGPU_DRIVER_ROOT", "/usr/local/nvidia"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--barrier", help=argparse.SUPPRESS)
    parser.add_argument("--peers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    try:
        import torch

        if not torch.cuda.is_available():
            raise ImportError("no CUDA device")
    except ImportError as exc:
        print(f"bench/sharing.py needs torch with a CUDA GPU: {exc}", file=sys.stderr)
        return 2
    bindir = Path(args.driver_root) / "bin"
    os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"
    # A pipe directory with no daemon: these clients never reach an MPS server that may run elsewhere.
    plain = {"CUDA_VISIBLE_DEVICES": "0", "CUDA_MPS_PIPE_DIRECTORY": "/nonexistent/kgpu-bench-no-mps"}

    alone = run_clients([plain], args.seconds)
    time_sliced = run_clients([plain] * CLIENTS, args.seconds)
    work = Path(tempfile.mkdtemp(prefix="kgpu-bench-mps-", dir="/tmp"))
    daemon, envs, _ = mps_envs(args.driver_root, work)
    try:
        mps = run_clients(envs, args.seconds)
    finally:
        daemon.terminate()
        daemon.wait(30)

    def rate(results: list[dict[str, float]]) -> float:
        return sum(r["matmuls"] / r["seconds"] for r in results)

    rows = [
        ("one client alone", 1, rate(alone), alone[0]["sms"]),
        ("(a) time-slicing, no MPS", CLIENTS, rate(time_sliced), time_sliced[0]["sms"]),
        (f"(b) kgpu MPS slices, {envs[0].get('CUDA_MPS_ACTIVE_THREAD_PERCENTAGE')} % each", CLIENTS, rate(mps),
         mps[0]["sms"]),
    ]
    print(f"{'run':34} {'clients':>7} {'matmuls/s (all)':>16} {'per client':>11} {'SMs seen':>9}")
    for name, n, r, sms in rows:
        print(f"{name:34} {n:>7} {r:>16.0f} {r / n:>11.0f} {sms:>9}")
    ratio = rate(mps) / rate(time_sliced)
    print(f"b/a = {ratio:.2f} (goal ≥ {GOAL}); MPS env of a client: "
          f"{ {k: v for k, v in envs[0].items() if k.startswith('CUDA_MPS_')} }")
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
