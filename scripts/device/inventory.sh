#!/usr/bin/env bash
# Issue 3 on the real GPU: kgpu's NVML inventory next to nvidia-smi, with and without --driver-root.
set -u
cd "$(dirname "$0")/../.."
source scripts/device/setup.sh
fail=0
echo "== environment =="
python3 --version
python3 -m pip list 2>/dev/null | grep -i -E '^(grpcio|protobuf|nvidia-ml-py|pydantic|typer|rich|PyYAML|prometheus|tomlkit|httpx) ' || true
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
ls -l /usr/local/nvidia/lib64/ | grep -E 'libnvidia-ml|libcuda\.' || true
ldconfig -p | grep -E 'libnvidia-ml|libcuda\.so' || echo "(ld.so.cache has no NVIDIA libraries)"

echo "== nvidia-smi =="
nvidia-smi --query-gpu=index,uuid,name,pci.bus_id,memory.total,driver_version,compute_cap --format=csv | tee "$OUT/smi.csv"
nvidia-smi | grep -o 'CUDA Version: [0-9.]*' | tee "$OUT/smi-cuda.txt"

echo "== kgpu gpus (loader path) =="
kgpu gpus --json > "$OUT/gpus-loader.json" || fail=1
kgpu gpus
echo "== kgpu gpus --driver-root /usr/local/nvidia, LD_LIBRARY_PATH unset =="
env -u LD_LIBRARY_PATH kgpu --driver-root /usr/local/nvidia gpus --json > "$OUT/gpus-root.json" || fail=1

echo "== compare =="
python3 - "$OUT" <<'PY' || fail=1
import csv, json, sys, pathlib
out = pathlib.Path(sys.argv[1])
rows = list(csv.DictReader(open(out / "smi.csv"), skipinitialspace=True))
cuda = open(out / "smi-cuda.txt").read().split(":")[1].strip()
bad = 0
for name in ("gpus-loader.json", "gpus-root.json"):
    gpus = json.load(open(out / name))
    assert len(gpus) == len(rows), (name, len(gpus), len(rows))
    for g, r in zip(gpus, rows):
        pairs = [
            ("index", str(g["index"]), r["index"]),
            ("uuid", g["uuid"], r["uuid"]),
            ("name", g["name"], r["name"]),
            ("pci.bus_id", g["pci_bus_id"], r["pci.bus_id"]),
            ("memory.total", f'{g["memory_total_mib"]} MiB', r["memory.total [MiB]"]),
            ("driver_version", g["driver_version"], r["driver_version"]),
            ("compute_cap", g["compute_capability"], r["compute_cap"]),
            ("CUDA Version", g["cuda_driver_version"], cuda),
        ]
        for field, mine, theirs in pairs:
            ok = mine == theirs
            bad += not ok
            print(f"{name:16} {field:15} kgpu={mine!r:45} nvidia-smi={theirs!r:45} {'OK' if ok else 'MISMATCH'}")
sys.exit(1 if bad else 0)
PY
echo "== SM count: kgpu vs torch (cudaDeviceProp.multiProcessorCount) =="
python3 - "$OUT/gpus-loader.json" <<'PY' || fail=1
import json, sys
import torch
gpus = json.load(open(sys.argv[1]))
bad = 0
for i, g in enumerate(gpus):
    theirs = torch.cuda.get_device_properties(i).multi_processor_count
    ok = g["multiprocessor_count"] == theirs
    bad += not ok
    print(f"GPU {i}: kgpu={g['multiprocessor_count']} torch={theirs} {'OK' if ok else 'MISMATCH'}")
sys.exit(1 if bad else 0)
PY
echo "== readings =="
kgpu gpus --readings --json | python3 -c 'import json,sys; [print(g["uuid"], g["readings"]) for g in json.load(sys.stdin)]'
nvidia-smi --query-gpu=memory.used,memory.reserved,temperature.gpu,power.draw,clocks.sm,clocks.mem,utilization.gpu --format=csv
echo "== health watch (3 s, expect no events and a clean exit) =="
timeout -s TERM 3 kgpu gpus --watch-health; echo "watch exit: $?"
exit $fail
