"""Helpers for scripts/device/dra_shares.sh (the DRA driver's memory shares on the real GPU). Subcommands:

prepare    Run kgpu's DRA driver in this process on NVML (no kubelet, no API server on the GPU box: the
           kubelet's side is kgpu.testing.dra over the driver's real unix sockets, the claims are what the
           scheduler would have written), and ask NodePrepareResources for two memory shares of GPU 0.
           The driver starts GPU 0's MPS control daemon and writes one CDI spec per claim; each claim's
           container environment and mounts, read back from its CDI spec, go to <out>/<name>.env and
           <out>/<name>.allocate.json (the shape mps_helper.py check reads). The driver then stops; the
           daemon runs on for the clients.
unprepare  Start the driver again on the same files (it adopts the running daemon from its checkpoint),
           NodeUnprepareResources both claims, and check that the CDI specs, the checkpoint entries and
           the daemon are gone.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid as uuidlib
from pathlib import Path
from typing import Any

DRIVER = "gpu.nvidia.com"
NODE = "h200-box"
GIB = 1024


def _claim(name: str, device: str, memory_gib: int, percent: int) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "default", "uid": str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, name))},
        "status": {"allocation": {"devices": {
            "results": [{"request": "gpu", "driver": DRIVER, "pool": NODE, "device": device,
                         "consumedCapacity": {"memory": f"{memory_gib}Gi"}, "shareID": str(uuidlib.uuid4())}],
            "config": [{"source": "FromClaim", "requests": ["gpu"], "opaque": {"driver": DRIVER, "parameters": {
                "apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig",
                "sharing": {"strategy": "MPS", "mpsConfig": {"defaultActiveThreadPercentage": percent}}}}}],
        }}},
    }


def _run(args: argparse.Namespace, claims: Any, calls: Any) -> Any:
    """kgpu's DRA driver on this node's GPUs (NVML, or --simulate for a dry run), its kubelet the stand-in."""
    from kgpu.cdi import CdiOptions, generate_spec
    from kgpu.dra.prepare import NodeEdits
    from kgpu.gpu import open_backend
    from kgpu.host.driverroot import CUDA_SONAME, find_library
    from kgpu.sharing.daemon import find_control_binary
    from kgpu.testing.dra import DraKubelet, RunningDriver, local_driver

    work, driver_root = Path(args.work), Path(args.driver_root)
    control = Path(args.mps_control_binary) if args.mps_control_binary else None
    backend = open_backend(simulate=args.simulate) if args.simulate else open_backend("nvml", driver_root=driver_root)
    inventory = backend.inventory()
    edits = NodeEdits()
    if not args.simulate:  # the node's device nodes and driver files, as the plugin describes them to CDI
        spec = generate_spec(inventory, CdiOptions(driver_root=str(driver_root), strategies=("uuid",))).spec
        edits = NodeEdits(spec.edits, {d.name: d.edits for d in spec.devices})
    library = find_library(driver_root, CUDA_SONAME)
    driver = local_driver(work, backend, claims, None, mps_control=lambda: find_control_binary([driver_root], control),
                          library_dir=library.parent if library else None, node=NODE, node_edits=edits,
                          shm_dir="/dev/shm")  # on the host, daemon and clients share the host's /dev/shm
    with DraKubelet(work / "plugins_registry") as kubelet, RunningDriver(driver, inventory), \
            kubelet.client(DRIVER, timeout=60) as plugin:
        return calls(plugin, inventory)


def _env_and_mounts(spec: dict[str, Any]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    entries = list(spec["containerEdits"].get("env", []))
    mounts = []
    for d in spec["devices"]:
        entries += d["containerEdits"].get("env", [])
        mounts += d["containerEdits"].get("mounts", [])
    return dict(e.split("=", 1) for e in entries), mounts


def prepare(args: argparse.Namespace) -> int:
    from kgpu.testing.dra import StaticClaims

    out, work = Path(args.out), Path(args.work)
    shares = [(n, int(m), int(p)) for n, m, p in (s.split(":") for s in args.share)]
    claims = StaticClaims(*(_claim(n, "gpu-0", m, p) for n, m, p in shares))
    (work / "claims.json").write_text(json.dumps(list(claims.claims.values())))

    def calls(plugin: Any, inventory: Any) -> int:
        gpu0 = inventory.by_index(0)
        refs = [("default", c["metadata"]["uid"], c["metadata"]["name"]) for c in claims.claims.values()]
        answer = plugin.prepare(refs)
        failures = 0
        for _, uid, name in refs:
            got = answer.claims[uid]
            if got.error:
                print(f"FAIL: NodePrepareResources {name}: {got.error}")
                failures += 1
                continue
            device = got.devices[0]
            spec = json.loads((work / "cdi" / f"k8s.{DRIVER}-claim_{uid}.json").read_text())
            env, mounts = _env_and_mounts(spec)
            mps_env = {k: v for k, v in env.items() if k.startswith("CUDA_MPS_") or k == "NVIDIA_VISIBLE_DEVICES"}
            print(f"NodePrepareResources {name}: {device.device_name} share {device.share_id} "
                  f"CDI {list(device.cdi_device_ids)}")
            for k, v in sorted(mps_env.items()):
                print(f"    {k}={v}")
            for m in mounts:
                print(f"    mount {m['hostPath']} -> {m['containerPath']} ({','.join(m['options'])})")
            print(f"    + {len(spec['containerEdits'].get('mounts', []))} driver mounts, "
                  f"{len(spec['containerEdits'].get('deviceNodes', []))} device nodes spec-wide")
            if env.get("NVIDIA_VISIBLE_DEVICES") != gpu0.uuid:
                print(f"FAIL: {name}: NVIDIA_VISIBLE_DEVICES={env.get('NVIDIA_VISIBLE_DEVICES')}, GPU 0 is {gpu0.uuid}")
                failures += 1
            (out / f"{name}.env").write_text("".join(f"{k}={v}\n" for k, v in sorted(mps_env.items())))
            (out / f"{name}.allocate.json").write_text(json.dumps({"claim": name, "envs": mps_env, "mounts": mounts,
                                                                   "cdi": spec}, indent=2))
        return failures

    failures = _run(args, claims, calls)
    return 1 if failures else 0


def unprepare(args: argparse.Namespace) -> int:
    from kgpu.sharing.daemon import pid_alive
    from kgpu.testing.dra import StaticClaims

    work = Path(args.work)
    claims = StaticClaims(*json.loads((work / "claims.json").read_text()))
    pid_files = list((work / "mps").glob("*/pipe/nvidia-cuda-mps-control.pid"))
    pids = [int(p.read_text()) for p in pid_files]

    def calls(plugin: Any, inventory: Any) -> int:
        refs = [("default", c["metadata"]["uid"], c["metadata"]["name"]) for c in claims.claims.values()]
        answer = plugin.unprepare(refs)
        failures = 0
        for _, uid, name in refs:
            if answer.claims[uid].error:
                print(f"FAIL: NodeUnprepareResources {name}: {answer.claims[uid].error}")
                failures += 1
            else:
                print(f"NodeUnprepareResources {name}: ok")
        return failures

    failures = _run(args, claims, calls)
    left_specs = sorted(p.name for p in (work / "cdi").glob("*.json"))
    checkpoint = json.loads((work / "plugins" / DRIVER / "kgpu-checkpoint.json").read_text())
    alive = [p for p in pids if pid_alive(p)]
    print(f"after unprepare (by a restarted driver): CDI specs left {left_specs}, checkpoint claims "
          f"{sorted(checkpoint['claims'])}, MPS control daemon(s) {pids} still running: {alive}")
    if left_specs or checkpoint["claims"] or alive or not pids:
        print("FAIL: unprepare left something behind (or no daemon had run)")
        failures += 1
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--driver-root", default="/usr/local/nvidia")
    p.add_argument("--share", action="append", required=True, help="NAME:GIB:PERCENT")
    u = sub.add_parser("unprepare")
    u.add_argument("--work", required=True)
    u.add_argument("--driver-root", default="/usr/local/nvidia")
    for command in (p, u):  # a dry run without a GPU: a simulated node and tests/fakes/nvidia-cuda-mps-control
        command.add_argument("--simulate", help=argparse.SUPPRESS)
        command.add_argument("--mps-control-binary", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.command == "prepare":
        Path(args.work).mkdir(parents=True, exist_ok=True)
        return prepare(args)
    return unprepare(args)


if __name__ == "__main__":
    sys.exit(main())
