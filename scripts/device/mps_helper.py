"""Helpers for scripts/device/mps.sh (the real-GPU MPS run). Subcommands:

allocate  Start ``kgpu device-plugin`` against the kubelet stand-in, wait until the MPS slices are
          Healthy (i.e. kgpu mps-daemon's daemon answers), Allocate one of each slice resource over
          the plugin's unix socket, write each container's environment to ``<out>/<short-name>.env``.
client    Run as a container would with that environment: report the SMs it sees, allocate within
          and beyond its memory limit, meet its peer at a barrier, then run matmuls for a while.
check     Judge the clients' reports against the slice limits; print a table; exit 1 on a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def allocate(args: argparse.Namespace) -> int:
    from kgpu.testing.kubelet import FakeKubelet

    out = Path(args.out)
    kubelet_dir = Path(tempfile.mkdtemp(dir="/tmp", prefix="kgpu-mps-kubelet-"))
    resources = args.resource
    with FakeKubelet(kubelet_dir) as kubelet:
        cmd = [sys.executable, "-m", "kgpu", *(["--driver-root", args.driver_root] if args.driver_root else []),
               "device-plugin", "--config-file", args.config_file, "--kubelet-dir", str(kubelet_dir),
               "--state-file", str(out / "device-plugin-state.json")]
        print("$", " ".join(cmd), flush=True)
        with open(out / "device-plugin.log", "w") as log:
            plugin = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            for name in resources:
                reg = kubelet.wait_for_registration(name, timeout=60)
                print(f"registered: {reg.resource_name} at {reg.endpoint} ({reg.version})", flush=True)
            for name in resources:
                devices = kubelet.watch(name).wait_for(
                    lambda ds: bool(ds) and all(d.health == "Healthy" for d in ds), timeout=60
                )
                print(f"ListAndWatch {name}: " + ", ".join(f"{d.ID} {d.health}" for d in devices), flush=True)
                response = kubelet.client(name).allocate([[devices[0].ID]])
                c = response.container_responses[0]
                envs = dict(c.envs)
                short = name.rsplit("/", 1)[-1]
                (out / f"{short}.env").write_text("".join(f"{k}={v}\n" for k, v in sorted(envs.items())))
                (out / f"{short}.allocate.json").write_text(json.dumps({
                    "resource": name, "device_id": devices[0].ID, "envs": envs,
                    "mounts": [{"container_path": m.container_path, "host_path": m.host_path,
                                "read_only": m.read_only} for m in c.mounts],
                }, indent=2))
                print(f"Allocate {name} [{devices[0].ID}]:", flush=True)
                for k, v in sorted(envs.items()):
                    print(f"    {k}={v}")
                for m in c.mounts:
                    print(f"    mount {m.host_path} -> {m.container_path} ({'ro' if m.read_only else 'rw'})")
        finally:
            plugin.terminate()
            try:
                plugin.wait(15)
            except subprocess.TimeoutExpired:
                plugin.kill()
    shutil.rmtree(kubelet_dir, ignore_errors=True)
    return 0


def client(args: argparse.Namespace) -> int:
    report: dict[str, object] = {"name": args.name, "pid": os.getpid(),
                                 "env": {k: v for k, v in os.environ.items() if k.startswith("CUDA_MPS_")}}
    out = Path(args.report)
    try:
        import torch

        props = torch.cuda.get_device_properties(0)
        report["device"] = props.name
        report["sms_seen"] = props.multi_processor_count
        report["memory_seen_mib"] = props.total_memory // 2**20
        gib = 2**30

        def try_alloc(size_gib: float) -> str:
            try:
                x = torch.empty(int(size_gib * gib), dtype=torch.uint8, device="cuda")
                x.fill_(1)
                torch.cuda.synchronize()
                del x
                return "ok"
            except torch.cuda.OutOfMemoryError:
                return "out of memory"
            except RuntimeError as exc:
                return "out of memory" if "out of memory" in str(exc).lower() else f"error: {exc}"
            finally:
                torch.cuda.empty_cache()

        report["within_gib"], report["within"] = args.within, try_alloc(args.within)
        report["beyond_gib"], report["beyond"] = args.beyond, try_alloc(args.beyond)
        # Meet the other slice's client: both hold a CUDA context on the GPU at the same time.
        barrier = Path(args.barrier)
        (barrier / f"{args.name}.ready").write_text(str(os.getpid()))
        deadline = time.time() + 90
        while len(list(barrier.glob("*.ready"))) < args.peers and time.time() < deadline:
            time.sleep(0.05)
        report["met_peers"] = len(list(barrier.glob("*.ready"))) >= args.peers
        a = torch.randn(2048, 2048, device="cuda", dtype=torch.bfloat16)
        torch.cuda.synchronize()
        start = time.time()
        iters = 0
        while time.time() - start < args.hold:
            for _ in range(20):
                a @ a
            torch.cuda.synchronize()
            iters += 20
        report["busy_from"], report["busy_until"], report["matmuls"] = start, time.time(), iters
    except Exception as exc:  # report everything; the check step judges
        report["error"] = f"{type(exc).__name__}: {exc}"
    out.write_text(json.dumps(report, indent=2))
    return 0


def check(args: argparse.Namespace) -> int:
    out = Path(args.out)
    total_sms = args.total_sms
    failures = []
    rows = []
    reports = []
    for name in args.names:
        alloc = json.loads((out / f"{name}.allocate.json").read_text())
        rep = json.loads((out / f"client-{name}.json").read_text())
        reports.append(rep)
        envs = alloc["envs"]
        limit = envs.get("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", "?")
        pct = int(envs.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "0"))
        expected = total_sms * pct / 100
        seen = rep.get("sms_seen")
        ok_sms = isinstance(seen, int) and abs(seen - expected) <= 2 and seen < total_sms
        ok_within = rep.get("within") == "ok"
        ok_beyond = rep.get("beyond") == "out of memory"
        if "error" in rep:
            failures.append(f"{name}: client failed: {rep['error']}")
        if not ok_sms:
            failures.append(f"{name}: sees {seen} SMs, expected ~{expected:.0f} ({pct} % of {total_sms})")
        if not ok_within:
            failures.append(f"{name}: {rep.get('within_gib')} GiB within the limit {limit}: {rep.get('within')}")
        if not ok_beyond:
            failures.append(f"{name}: {rep.get('beyond_gib')} GiB beyond the limit {limit}: {rep.get('beyond')}")
        rows.append((name, limit, f"{pct} %", f"{seen} (~{expected:.0f})",
                     f"{rep.get('within_gib')} GiB: {rep.get('within')}",
                     f"{rep.get('beyond_gib')} GiB: {rep.get('beyond')}", rep.get("matmuls", "?")))
    overlap = 0.0
    if all("busy_from" in r for r in reports):
        overlap = min(float(str(r["busy_until"])) for r in reports) - max(float(str(r["busy_from"])) for r in reports)
    if overlap <= 0 or not all(r.get("met_peers") for r in reports):
        failures.append(f"clients did not run at the same time (overlap {overlap:.2f} s)")
    header = ("slice", "mem limit", "threads", "SMs seen (expected)", "within limit", "beyond limit", "matmuls")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=False)))
    print(f"both clients busy on the GPU at the same time for {overlap:.2f} s")
    summary = {"rows": [dict(zip(header, r, strict=False)) for r in rows], "overlap_s": overlap,
               "failures": failures}
    (out / "mps-summary.json").write_text(json.dumps(summary, indent=2, default=str))
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("allocate")
    a.add_argument("--config-file", required=True)
    a.add_argument("--driver-root")
    a.add_argument("--out", required=True)
    a.add_argument("--resource", action="append", required=True)
    c = sub.add_parser("client")
    c.add_argument("--name", required=True)
    c.add_argument("--within", type=float, required=True)
    c.add_argument("--beyond", type=float, required=True)
    c.add_argument("--barrier", required=True)
    c.add_argument("--peers", type=int, default=2)
    c.add_argument("--hold", type=float, default=4.0)
    c.add_argument("--report", required=True)
    k = sub.add_parser("check")
    k.add_argument("--out", required=True)
    k.add_argument("--total-sms", type=int, required=True)
    k.add_argument("names", nargs="+")
    args = parser.parse_args()
    return {"allocate": allocate, "client": client, "check": check}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
