"""Device-plugin decisions on the real GPU, next to nvidia-smi (run by scripts/device/dp-logic.sh).

Proves, with the NVML backend on the device machine:
1. the advertised device IDs are the GPUs' real UUIDs (nvidia-smi), with the sysfs NUMA node;
2. Allocate under every device list strategy names the right GPU (UUID / index / CDI);
3. passDeviceSpecs and driver-mounts name device nodes and driver files that exist on this host;
4. the driver-mounts set alone is enough: nvidia-smi and libcuda (cuInit, cuDeviceGetName) work
   from a directory laid out exactly as the container would see the mounts, with no other
   driver search path;
5. time-slicing replicas, failRequestsGreaterThanOne and preferred allocation behave.

Exits non-zero on the first mismatch; prints short labelled evidence.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from kgpu.config.resolve import resolve_config
from kgpu.container import AllocationError
from kgpu.deviceplugin.daemon import node_resources as build_logic
from kgpu.gpu.backend import open_backend
from kgpu.gpu.model import sysfs_bus_id

OUT = Path(os.environ.get("OUT", "/tmp/kgpu-out"))
DRIVER_ROOT = os.environ.get("KGPU_DRIVER_ROOT", "/usr/local/nvidia")
failures: list[str] = []


def check(label: str, ok: bool, detail: str = "") -> None:
    print(f"  [{'OK' if ok else 'FAIL'}] {label}{': ' + detail if detail else ''}")
    if not ok:
        failures.append(label)


def nvidia_smi() -> str:
    return shutil.which("nvidia-smi") or f"{DRIVER_ROOT}/bin/nvidia-smi"


def smi(*query: str) -> list[dict[str, str]]:
    fields = ",".join(query)
    text = subprocess.run(
        [nvidia_smi(), f"--query-gpu={fields}", "--format=csv,noheader"], capture_output=True, text=True, check=True
    ).stdout
    return [dict(zip(query, (v.strip() for v in line.split(",")), strict=True)) for line in text.strip().splitlines()]


def main() -> int:
    backend = open_backend("nvml", driver_root=Path(DRIVER_ROOT) if Path(DRIVER_ROOT).is_dir() else None)
    inventory = backend.inventory()
    backend.close()
    rows = smi("index", "uuid", "pci.bus_id", "mig.mode.current")
    print("== nvidia-smi ==")
    for r in rows:
        print("  ", r)

    print("== advertised (defaults: envvar, uuid) ==")
    logic = build_logic(inventory, resolve_config({}, {}))
    for w in logic.warnings:
        print("   warning:", w)
    resources = {r.name: r for r in logic.resources()}
    for r in resources.values():
        print(f"   {r.name} socket={r.socket_name} devices={[d.id for d in r.devices]}")
    gpu = resources.get("nvidia.com/gpu")
    whole_rows = [r for r in rows if r["mig.mode.current"] in ("Disabled", "[N/A]", "N/A")]
    check("nvidia.com/gpu lists nvidia-smi's UUIDs", gpu is not None and [d.id for d in gpu.devices]
          == [r["uuid"] for r in whole_rows], str([r["uuid"] for r in whole_rows]))
    if gpu is None or not gpu.devices:
        return 1
    for d, g in zip(gpu.devices, inventory.gpus, strict=False):
        sysfs = Path("/sys/bus/pci/devices") / sysfs_bus_id(g.pci_bus_id) / "numa_node"
        raw = sysfs.read_text().strip() if sysfs.exists() else "(missing)"
        # -1 means no NUMA affinity: no topology, as in NVIDIA's plugin; no sysfs: the inventory's value.
        expected = g.numa_node
        if raw.lstrip("-").isdigit():
            expected = int(raw) if int(raw) >= 0 else None
        check(f"NUMA of {d.id} from {sysfs}", d.numa_node == expected, f"sysfs={raw} advertised={d.numa_node}")
    first = gpu.devices[0].id
    g0 = inventory.gpus[0]

    print("== Allocate per strategy ==")
    alloc = logic.allocate("nvidia.com/gpu", [first])
    print("   envvar:", dict(alloc.envs))
    check("envvar NVIDIA_VISIBLE_DEVICES = UUID", dict(alloc.envs) == {"NVIDIA_VISIBLE_DEVICES": first})

    by_index = build_logic(inventory, resolve_config({"device-id-strategy": "index"}, {}))
    alloc = by_index.allocate("nvidia.com/gpu", [first])
    check("index strategy NVIDIA_VISIBLE_DEVICES = nvidia-smi index", alloc.envs["NVIDIA_VISIBLE_DEVICES"]
          == rows[0]["index"], alloc.envs["NVIDIA_VISIBLE_DEVICES"])

    alloc = build_logic(inventory, resolve_config({"device-list-strategy": "volume-mounts"}, {})).allocate(
        "nvidia.com/gpu", [first])
    print("   volume-mounts:", dict(alloc.envs), [(m.host_path, m.container_path) for m in alloc.mounts])
    check("volume-mounts /dev/null -> /var/run/nvidia-container-devices/<uuid>",
          [(m.host_path, m.container_path) for m in alloc.mounts]
          == [("/dev/null", f"/var/run/nvidia-container-devices/{first}")])

    alloc = build_logic(inventory, resolve_config({"device-list-strategy": "cdi-annotations,cdi-cri"}, {})).allocate(
        "nvidia.com/gpu", [first])
    print("   cdi:", dict(alloc.annotations), alloc.cdi_devices)
    check("CDI names nvidia.com/gpu=<uuid>", alloc.cdi_devices == (f"nvidia.com/gpu={first}",)
          and list(alloc.annotations.values()) == [f"nvidia.com/gpu={first}"])

    print("== passDeviceSpecs (device nodes on this host) ==")
    alloc = build_logic(inventory, resolve_config({"pass-device-specs": True}, {})).allocate("nvidia.com/gpu", [first])
    for d in alloc.devices:
        print(f"   {d.host_path} -> {d.container_path} ({d.permissions}) exists={Path(d.host_path).exists()}")
    check("every DeviceSpec host path exists", all(Path(d.host_path).exists() for d in alloc.devices))
    check(f"/dev/nvidia{g0.minor} and /dev/nvidiactl are passed",
          {f"/dev/nvidia{g0.minor}", "/dev/nvidiactl"} <= {d.container_path for d in alloc.devices})

    print(f"== driver-mounts (driver root {DRIVER_ROOT}) ==")
    dm = build_logic(inventory, resolve_config({"device-list-strategy": "driver-mounts",
                                                "nvidia-driver-root": DRIVER_ROOT}, {}))
    for w in dm.warnings:
        print("   warning:", w)
    alloc = dm.allocate("nvidia.com/gpu", [first])
    print("   envs:", dict(alloc.envs))
    for d in alloc.devices:
        print(f"   device {d.host_path} -> {d.container_path}")
    for m in alloc.mounts:
        print(f"   mount {m.host_path} -> {m.container_path} ro={m.read_only}")
    missing = [m.host_path for m in alloc.mounts if not Path(m.host_path).exists()]
    missing += [d.host_path for d in alloc.devices if not Path(d.host_path).exists()]
    check("every driver-mounts host path exists", not missing, str(missing))
    names = {Path(m.container_path).name for m in alloc.mounts}
    check("libcuda.so.1, libnvidia-ml.so.1 and nvidia-smi are mounted",
          {"libcuda.so.1", "libnvidia-ml.so.1", "nvidia-smi"} <= names)
    (OUT / "driver-mounts.json").write_text(json.dumps({
        "envs": dict(alloc.envs),
        "mounts": [{"host_path": m.host_path, "container_path": m.container_path, "read_only": m.read_only}
                   for m in alloc.mounts],
        "devices": [{"host_path": d.host_path, "container_path": d.container_path} for d in alloc.devices],
    }, indent=2))

    print("== driver-mounts are sufficient: run from the container's view of the mounts ==")
    with tempfile.TemporaryDirectory(dir="/tmp") as farm:
        for m in alloc.mounts:
            dest = Path(farm + m.container_path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(m.host_path)
        lib = farm + "/usr/local/nvidia/lib64"
        env = {"PATH": farm + alloc.envs["PATH"].split(":", 1)[0] + ":/usr/bin:/bin", "LD_LIBRARY_PATH": lib}
        if "PATH" not in alloc.envs or not alloc.mounts:
            check("driver-mounts gave mounts and PATH", False)
            return 1
        smi_l = subprocess.run([nvidia_smi(), "-L"], capture_output=True, text=True).stdout.strip()
        ours = subprocess.run(
            [farm + "/usr/local/nvidia/bin/nvidia-smi", "-L"], capture_output=True, text=True, env=env
        )
        print("   host nvidia-smi -L:     ", smi_l.splitlines()[:1])
        print("   mounted nvidia-smi -L:  ", ours.stdout.strip().splitlines()[:1], ours.stderr.strip()[:200])
        check("nvidia-smi from the mounted bin/lib64 lists the same GPUs", ours.returncode == 0
              and ours.stdout.strip() == smi_l)
        probe = (
            "import ctypes\n"
            "cuda = ctypes.CDLL('libcuda.so.1')\n"
            "assert cuda.cuInit(0) == 0\n"
            "n = ctypes.c_int(); assert cuda.cuDeviceGetCount(ctypes.byref(n)) == 0\n"
            "dev = ctypes.c_int(); cuda.cuDeviceGet(ctypes.byref(dev), 0)\n"
            "name = ctypes.create_string_buffer(128); cuda.cuDeviceGetName(name, 128, dev)\n"
            "print(n.value, name.value.decode())\n"
        )
        run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             env={**env, "LD_DEBUG": "libs", "LD_DEBUG_OUTPUT": farm + "/ld"})
        found = ""
        for f in Path(farm).glob("ld.*"):
            for line in f.read_text(errors="replace").splitlines():
                if "trying file=" in line and "libcuda.so.1" in line and line.strip().endswith("libcuda.so.1"):
                    found = line.split("trying file=")[-1]
        print("   libcuda probe:", run.stdout.strip(), run.stderr.strip()[-200:])
        print("   loader found libcuda.so.1 at:", found)
        check("libcuda.so.1 loads from the mounted lib64 and cuInit/cuDeviceGetName work",
              run.returncode == 0 and found.startswith(lib) and g0.name in run.stdout, found)

    print("== time-slicing: replicas, failRequestsGreaterThanOne, preferred allocation ==")
    cfg_file = OUT / "ts.yaml"
    cfg_file.write_text("version: v1\nsharing:\n  timeSlicing:\n    renameByDefault: true\n"
                        "    failRequestsGreaterThanOne: true\n    resources:\n    - name: nvidia.com/gpu\n"
                        "      replicas: 4\n")
    ts = build_logic(inventory, resolve_config({}, {}, cfg_file))
    shared = {r.name: r for r in ts.resources()}.get("nvidia.com/gpu.shared")
    ids = [d.id for d in shared.devices] if shared else []
    print("   nvidia.com/gpu.shared:", ids)
    check("4 replicas <uuid>::0..3 per GPU", ids[:4] == [f"{first}::{n}" for n in range(4)])
    alloc = ts.allocate("nvidia.com/gpu.shared", [ids[2]])
    check("a replica maps back to its GPU", alloc.envs["NVIDIA_VISIBLE_DEVICES"] == first)
    try:
        ts.allocate("nvidia.com/gpu.shared", ids[:2])
        check("two replicas refused", False)
    except AllocationError as exc:
        print("   refused:", exc)
        check("two replicas refused with failRequestsGreaterThanOne", True)
    picked = ts.preferred_allocation("nvidia.com/gpu.shared", ids, [], 1)
    check("preferred allocation picks one available replica", len(picked) == 1 and picked[0] in ids, str(picked))
    print("== result ==", "PASS" if not failures else f"FAIL: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
