#!/usr/bin/env bash
# Issue 8 (labels of MPS slices) on the real GPU: `kgpu labels` with a heterogeneous slices config, next
# to `kgpu mps-layout` for the same config (the device plugin's layout) and nvidia-smi. Pure reads: no MPS
# daemon is started, no GPU setting is changed.
# Proves: on NVML's real inventory the labels say sharing-strategy=mps, gpu.replicas = the slices of GPU 0
# (as the layout counts them), a product without -SHARED, mps.capable=true, and per-slice count/memory.
set -u
cd "$(dirname "$0")/../.."
source scripts/device/setup.sh
DRIVER_ROOT="${KGPU_DRIVER_ROOT:-/usr/local/nvidia}"
export PATH="$DRIVER_ROOT/bin:$PATH"
export LD_LIBRARY_PATH="$DRIVER_ROOT/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fail=0

echo "== nvidia-smi =="
nvidia-smi --query-gpu=index,name,memory.total --format=csv | tee "$OUT/mpslabels-smi.csv"

cat > "$OUT/mpslabels-config.yaml" <<'EOF'
version: v1
sharing:
  mps:
    slices:
    - {name: nvidia.com/gpu-20gb, memory: 20Gi, computePercent: 30, count: 2}
    - {name: nvidia.com/gpu-10gb, memory: 10Gi, computePercent: 12, count: 3, devices: [0]}
EOF

echo "== kgpu mps-layout (what the device plugin would advertise) =="
kgpu --driver-root "$DRIVER_ROOT" mps-layout --config-file "$OUT/mpslabels-config.yaml" || fail=1
kgpu --driver-root "$DRIVER_ROOT" mps-layout --config-file "$OUT/mpslabels-config.yaml" -o json \
  > "$OUT/mpslabels-layout.json" || fail=1

echo "== kgpu labels with the slices config =="
kgpu --driver-root "$DRIVER_ROOT" labels --no-timestamp --json --config-file "$OUT/mpslabels-config.yaml" \
  > "$OUT/mpslabels-labels.json" || fail=1
grep -E 'gpu\.(product|replicas|sharing-strategy|count)|gpu-[0-9]+gb|mps\.capable' "$OUT/mpslabels-labels.json"

echo "== compare =="
python3 - "$OUT" <<'PY' || fail=1
import csv, json, pathlib, re, sys
out = pathlib.Path(sys.argv[1])
labels = json.load(open(out / "mpslabels-labels.json"))
layout = json.load(open(out / "mpslabels-layout.json"))
smi = list(csv.DictReader(open(out / "mpslabels-smi.csv"), skipinitialspace=True))
first = min(layout["gpus"], key=lambda g: g["index"])
slices = [s for g in layout["gpus"] for s in g["slices"]]
expect = {
    "nvidia.com/gpu.sharing-strategy": "mps",
    "nvidia.com/gpu.replicas": str(len(first["slices"])),
    "nvidia.com/gpu.product": "-".join(re.sub(r"[^A-Za-z0-9\-_. ]", "", smi[0]["name"]).split()),
    "nvidia.com/mps.capable": "true",
    "nvidia.com/gpu-20gb.count": str(sum(s["resource"] == "nvidia.com/gpu-20gb" for s in slices)),
    "nvidia.com/gpu-20gb.memory": "20480",
    "nvidia.com/gpu-10gb.count": str(sum(s["resource"] == "nvidia.com/gpu-10gb" for s in slices)),
    "nvidia.com/gpu-10gb.memory": "10240",
}
bad = 0
for key, want in expect.items():
    got = labels.get(key)
    ok = got == want
    bad += not ok
    print(f"{'OK  ' if ok else 'FAIL'} {key}: kgpu={got} expected={want}")
print(f"layout: {len(layout['gpus'])} shared GPU(s), GPU {first['index']} has {len(first['slices'])} slices")
sys.exit(1 if bad else 0)
PY
echo "mpslabels: $([ $fail -eq 0 ] && echo PASS || echo FAIL)"
exit $fail
