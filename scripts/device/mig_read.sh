#!/usr/bin/env bash
# Issue 14 on the real GPU, READ-ONLY: the H200's MIG facts beside kgpu's profile table (kgpu/mig/profiles.py).
# Nothing here changes the GPU: no nvmlDeviceSetMigMode, no instance created or destroyed. It reads the MIG mode,
# then asks NVML for each GPU instance profile's info and possible placements (NVML may refuse those while MIG
# is disabled: that is reported, not worked around), and prints `nvidia-smi mig -lgip/-lgipp` when it answers.
#   bash scripts/device/mig_read.sh        # needs nvidia-ml-py (present on the GPU machine); carries nothing else
set -u
cd "$(dirname "$0")/../.."
source scripts/device/setup.sh
fail=0
echo "== nvidia-smi =="
nvidia-smi --query-gpu=index,name,pci.device_id,memory.total,mig.mode.current,mig.mode.pending --format=csv
nvidia-smi mig -lgip 2>&1 | head -40 || true
nvidia-smi mig -lgipp 2>&1 | head -40 || true
echo "== NVML, read-only, against kgpu's table =="
python3 - <<'PY' || fail=1
import pynvml as n
from kgpu.gpu.nvml import NvmlBackend
from kgpu.mig.profiles import profile_table

backend = NvmlBackend.open()
inventory = backend.inventory()
bad = 0
for gpu in inventory.gpus:
    h = n.nvmlDeviceGetHandleByIndex(gpu.index)
    mode = n.nvmlDeviceGetMigMode(h)
    print(f"GPU {gpu.index} {gpu.name} device 0x{gpu.pci_device_id:08X} mig_capable={gpu.mig_capable} "
          f"mig mode current/pending={mode[0]}/{mode[1]}")
    table = profile_table(gpu)
    if table is None:
        print(f"FAIL GPU {gpu.index}: kgpu has no MIG profile table for device 0x{gpu.pci_device_id:08X}")
        bad += 1
        continue
    print(f"PASS GPU {gpu.index}: kgpu uses the {table.model} table")
    for p in table.profiles:
        try:
            info = n.nvmlDeviceGetGpuInstanceProfileInfo(h, p.nvml_index)
        except n.NVMLError as exc:
            print(f"SKIP {p.name}: NVML profile info not readable ({exc}); MIG mode {mode[0]}")
            continue
        got = (int(info.id), int(info.instanceCount), int(info.multiprocessorCount), int(info.memorySizeMB),
               int(info.sliceCount))
        want = (p.profile_id, p.max_count, p.multiprocessors, p.memory_mib, p.compute_slices)
        verdict = "PASS" if got[:2] == want[:2] and got[4] == want[4] else "FAIL"
        bad += verdict == "FAIL"
        print(f"{verdict} {p.name}: NVML id/instances/SMs/MiB/slices={got} kgpu={want}"
              + ("" if got[2:4] == want[2:4] else "  (SMs/MiB differ: kgpu's simulated sizes should take NVML's)"))
        try:
            placements = (n.c_nvmlGpuInstancePlacement_t * 8)()
            import ctypes
            count = ctypes.c_uint(0)
            n.nvmlDeviceGetGpuInstancePossiblePlacements(h, info.id, placements, ctypes.byref(count))
            starts = tuple(int(pl.start) for pl in placements[: count.value])
            sizes = {int(pl.size) for pl in placements[: count.value]}
            ok = starts == p.starts and sizes == {p.size}
            bad += not ok
            print(f"{'PASS' if ok else 'FAIL'} {p.name} placements: NVML starts={starts} sizes={sorted(sizes)} "
                  f"kgpu starts={p.starts} size={p.size}")
        except n.NVMLError as exc:
            print(f"SKIP {p.name} placements: not readable ({exc})")
backend.close()
raise SystemExit(1 if bad else 0)
PY
echo "mig_read: $([ $fail = 0 ] && echo PASS || echo FAIL)"
exit $fail
