#!/usr/bin/env bash
# Issue 7 on the real GPU: `kgpu validate` steps 1-4 pass with a real vectorAdd JIT-compiled from PTX
# through libcuda's driver API; steps 5-6 are reported honestly (this box has no container runtime
# and no kubelet); a wrong CUDA library path fails step 4 (negative control). Also records which PTX
# targets the driver's JIT accepts (does CUDA 13's JIT still take `.target sm_50`?).
set -u
cd "$(dirname "$0")/../.."
source scripts/device/setup.sh
export PATH="$PATH:/usr/local/nvidia/bin"
fail=0

echo "== nvidia-smi =="
nvidia-smi --query-gpu=index,uuid,name,driver_version,compute_cap --format=csv | tee "$OUT/validate-smi.csv"
nvidia-smi | grep -o 'CUDA Version: [0-9.]*'

echo "== kgpu validate (text) =="
kgpu validate
echo "(exit code $?)"

echo "== kgpu validate --json =="
kgpu validate --json > "$OUT/validate.json"; echo "exit code $?" | tee "$OUT/validate.rc"
echo "== kgpu --driver-root /usr/local/nvidia validate --json (LD_LIBRARY_PATH unset) =="
env -u LD_LIBRARY_PATH kgpu --driver-root /usr/local/nvidia validate --json > "$OUT/validate-root.json"
echo "exit code $?"
echo "== kgpu validate --in-pod --json (only the CUDA step, as inside a GPU pod) =="
kgpu validate --in-pod --json > "$OUT/validate-inpod.json"; echo "exit code $?"
echo "== kgpu validate --gpu 0 --json =="
kgpu validate --gpu 0 --json > "$OUT/validate-gpu0.json"; echo "exit code $?"
echo "== negative control: kgpu validate --cuda-library /nonexistent/libcuda.so.1 --json =="
kgpu validate --cuda-library /nonexistent/libcuda.so.1 --json > "$OUT/validate-negative.json"
echo "exit code $?" | tee "$OUT/validate-negative.rc"

echo "== PTX targets the driver JIT accepts =="
python3 - <<'PY' 2>&1 | tee "$OUT/validate-ptx.txt"
from kgpu.validate.cuda import CudaDriver, CudaCallError
from kgpu.validate.ptx import BASELINE, PtxModule, native_module
import ctypes
d = CudaDriver.load()
print(f"libcuda {d.path}, cuDriverGetVersion {d.init()}")
for dev in d.devices():
    ctx, api = d.create_context(dev.ordinal)
    print(f"GPU {dev.ordinal} {dev.name} {dev.uuid} sm_{dev.cc_major}{dev.cc_minor}, context via {api}")
    native = native_module(dev.cc_major, dev.cc_minor)
    for m in (BASELINE, PtxModule("6.0", "sm_70"), PtxModule("6.3", "sm_75"), native, PtxModule("9.0", native.target)):
        try:
            h = d.load_module(m)
            d.lib.cuModuleUnload(ctypes.c_void_p(h))
            print(f"  {m}: accepted")
        except CudaCallError as e:
            print(f"  {m}: REFUSED {e}")
    d.lib.cuCtxDestroy_v2(ctypes.c_void_p(ctx))
PY

echo "== verdict =="
python3 - "$OUT" <<'PY' || fail=1
import csv, json, pathlib, sys
out = pathlib.Path(sys.argv[1])
gpus = list(csv.DictReader(open(out / "validate-smi.csv"), skipinitialspace=True))
ok = True
def check(cond, what):
    global ok
    print(("PASS " if cond else "FAIL ") + what)
    ok = ok and cond
for name in ("validate.json", "validate-root.json"):
    res = {r["name"]: r for r in json.load(open(out / name))}
    for s in ("driver", "nvml", "device-nodes", "cuda"):
        check(res[s]["status"] == "passed", f"{name}: step {res[s]['step']} {s} passed: {res[s]['detail'][:150]}")
    cuda = res["cuda"]["detail"]
    check(cuda.count("Test PASSED") == len(gpus), f"{name}: 'Test PASSED' once per GPU ({len(gpus)})")
    check(all(g["uuid"] in cuda for g in gpus), f"{name}: every nvidia-smi UUID ran vectorAdd")
    check(all(g["uuid"] in res["nvml"]["detail"] for g in gpus), f"{name}: NVML step lists every nvidia-smi UUID")
    for s in ("runtime", "device-plugin"):
        print(f"INFO {name}: step {res[s]['step']} {s}: {res[s]['status']}: {res[s]['detail'][:160]}")
    check(res["runtime"]["status"] != "passed" or res["device-plugin"]["status"] != "passed",
          f"{name}: steps 5-6 not claimed as passed on a box without runtime/kubelet")
inpod = {r["name"]: r for r in json.load(open(out / "validate-inpod.json"))}
check(inpod["cuda"]["status"] == "passed", "--in-pod: CUDA step passed")
gpu0 = {r["name"]: r for r in json.load(open(out / "validate-gpu0.json"))}
check(gpu0["cuda"]["detail"].count("Test PASSED") == 1 and gpus[0]["uuid"] in gpu0["cuda"]["detail"],
      "--gpu 0: vectorAdd on nvidia-smi's GPU 0 only")
neg = {r["name"]: r for r in json.load(open(out / "validate-negative.json"))}
check(neg["cuda"]["status"] == "failed", f"negative control: step 4 failed: {neg['cuda']['detail'][:160]}")
check(neg["runtime"]["status"] == "not-run", "negative control: chain stopped at step 4")
check((out / "validate-negative.rc").read_text().strip() != "exit code 0", "negative control: non-zero exit")
print("VERDICT:", "PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY
exit $fail
