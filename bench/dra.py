"""The DRA driver's latencies as the kubelet and the scheduler see them, on a simulated node.

The driver runs in this process (kgpu.testing.dra: the kubelet's side over its real unix sockets, claims
and slices kept in memory instead of an API server, nvidia-cuda-mps-control the tests' stand-in) and
the table shows:

* start → registered with the kubelet;
* NodePrepareResources + NodeUnprepareResources of a whole GPU, and of a memory share whose GPU's MPS
  daemon already runs (p50/p99; each prepare writes the checkpoint twice and a CDI spec, fsync'd);
* the first share of a GPU (its MPS daemon started).

The MPS rows are dominated by the stand-in nvidia-cuda-mps-control, a Python script started for every
control command (prepare asks the daemon whether it answers): the real binary answers in milliseconds.
* a fatal XID → the GPU out of the published slice, and → the kubelet's health stream.

    .venv/bin/python bench/dra.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

from kgpu.dra.api import drahealth_pb2
from kgpu.gpu import open_backend
from kgpu.testing.dra import DraKubelet, RecordingPublisher, RunningDriver, StaticClaims, local_driver

REPO = Path(__file__).resolve().parents[1]
FAKE_MPS = REPO / "tests" / "fakes" / "nvidia-cuda-mps-control"
DRIVER, NODE = "gpu.nvidia.com", "node-1"


def claim(device: str, memory: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"request": "gpu", "driver": DRIVER, "pool": NODE, "device": device}
    if memory:
        result |= {"consumedCapacity": {"memory": memory}, "shareID": str(uuidlib.uuid4())}
    name = f"c-{uuidlib.uuid4().hex[:8]}"
    return {"metadata": {"namespace": "bench", "name": name, "uid": str(uuidlib.uuid4())},
            "status": {"allocation": {"devices": {"results": [result]}}}}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def cycle(plugin: Any, claims: StaticClaims, obj: dict[str, Any]) -> float:
    claims.add(obj)
    ref = [(obj["metadata"]["namespace"], obj["metadata"]["uid"], obj["metadata"]["name"])]
    start = time.perf_counter()
    answer = plugin.prepare(ref)
    assert answer.claims[ref[0][1]].error == "", answer
    assert plugin.unprepare(ref).claims[ref[0][1]].error == ""
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kgpu-bench-dra-", dir="/tmp"))
    events = root / "events.jsonl"
    events.touch()
    rows: list[tuple[str, str]] = []
    try:
        backend = open_backend(simulate="h100x8", simulate_events=events)
        inventory = backend.inventory()
        claims, publisher = StaticClaims(), RecordingPublisher(node=NODE)
        driver = local_driver(root, backend, claims, publisher, mps_control=lambda: FAKE_MPS, driver=DRIVER, node=NODE,
                              recovery_window=3600)
        with DraKubelet(root / "plugins_registry", poll=0.01) as kubelet:
            start = time.monotonic()
            with RunningDriver(driver, inventory):
                reg = kubelet.wait_for_registration(DRIVER)
                rows.append(("start → registered with the kubelet", ms(reg.at - start)))
                publisher.wait_for(lambda d: len(d) == 8)
                with kubelet.client(DRIVER) as plugin:
                    whole = [cycle(plugin, claims, claim("gpu-1")) for _ in range(args.rounds)]
                    # keep one share of gpu-2 prepared: its daemon runs for the timed shares after it
                    keep = claims.add(claim("gpu-2", "10Gi"))
                    ref = [("bench", keep["metadata"]["uid"], keep["metadata"]["name"])]
                    t0 = time.perf_counter()
                    assert plugin.prepare(ref).claims[ref[0][1]].error == ""
                    first_share = time.perf_counter() - t0
                    shares = [cycle(plugin, claims, claim("gpu-2", "20Gi")) for _ in range(args.rounds)]
                    assert plugin.unprepare(ref).claims[ref[0][1]].error == ""
                    for label, samples in (("prepare + unprepare, whole GPU", whole),
                                           ("prepare + unprepare, 20Gi MPS share", shares)):
                        q = statistics.quantiles(samples, n=100)
                        rows.append((f"{label} p50 / p99", f"{ms(q[49])} / {ms(q[98])}"))
                    rows.append(("first share of a GPU (its MPS daemon started)", ms(first_share)))
                    watch = plugin.watch_health()
                    watch.wait_for(lambda u: len(u) == 8)
                    t0 = time.monotonic()
                    with events.open("a") as f:
                        f.write(json.dumps({"uuid": inventory.gpus[5].uuid, "kind": "xid", "xid": 79}) + "\n")
                    watch.wait_for(lambda u: u["gpu-5"][0] == drahealth_pb2.UNHEALTHY)
                    rows.append(("XID 79 → UNHEALTHY on the kubelet's health stream", ms(time.monotonic() - t0)))
                    publisher.wait_for(lambda d: "gpu-5" not in d)
                    rows.append(("XID 79 → the GPU out of the published slice", ms(time.monotonic() - t0)))
                    watch.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    width = max(len(r[0]) for r in rows)
    print(f"{'kgpu dra-plugin (simulated h100x8, ' + str(args.rounds) + ' rounds)':<{width}}  value")
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
