#!/usr/bin/env bash
# Issue 18 item 3 on the real GPU: kgpu's node components as the chart's toolkit-free install runs them
# (driverRoot=/usr/local/nvidia, deviceListStrategy=driver-mounts): in a container that has the driver only
# as a read-only mount at /driver-root and the environment the chart sets (NVIDIA_DRIVER_ROOT = host path,
# CONTAINER_DRIVER_ROOT = /driver-root), no LD_LIBRARY_PATH, nothing at /usr/local/nvidia (the image has no
# driver), and the host's device nodes (what privileged gives). Each component must load NVML from there.
#   bash scripts/device/toolkit_free.sh        (after source scripts/device/setup.sh; carries nothing else)
set -u
cd "$(dirname "$0")/../.."
source scripts/device/setup.sh
DRIVER="${KGPU_DRIVER_ROOT:-/usr/local/nvidia}"
fail=0
pass() { echo "PASS $*"; }
bad() { echo "FAIL $*"; fail=1; }

expected=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | wc -l)
echo "nvidia-smi: $expected GPUs; driver root $DRIVER"

# Each component runs in one "container" (container.sh): the driver root only at /driver-root, read-only.
source scripts/device/container.sh
trap container_cleanup EXIT

echo "== device plugin, exporter (root) and labeler (UID 65532): kgpu gpus =="
for user in 0 65532; do
  if in_container "$user" kgpu gpus --json > "$OUT/gpus-$user.json" 2> "$OUT/gpus-$user.err"; then
    n=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$OUT/gpus-$user.json")
    [ "$n" = "$expected" ] && pass "uid $user: NVML from /driver-root sees $n GPUs" \
      || bad "uid $user: $n GPUs, nvidia-smi shows $expected"
  else
    bad "uid $user: kgpu gpus failed: $(tail -n 3 "$OUT/gpus-$user.err")"
  fi
done

echo "== labeler (UID 65532): kgpu labels =="
if in_container 65532 kgpu labels --no-timestamp > "$OUT/labels.txt" 2> "$OUT/labels.err"; then
  count=$(sed -n 's/^nvidia.com\/gpu.count=//p' "$OUT/labels.txt")
  [ "$count" = "$expected" ] && pass "labels: nvidia.com/gpu.count=$count" || bad "labels: gpu.count=$count"
else
  bad "kgpu labels failed: $(tail -n 3 "$OUT/labels.err")"
fi

echo "== exporter (root): one scrape =="
in_container 0 kgpu exporter --listen 127.0.0.1:19400 > "$OUT/exporter.log" 2>&1 &
exporter=$!
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:19400/metrics > "$OUT/metrics.txt" 2>/dev/null && break; sleep 0.2; done
kill -TERM "$exporter" 2>/dev/null; wait "$exporter" 2>/dev/null
util=$(grep -c '^DCGM_FI_DEV_GPU_UTIL{' "$OUT/metrics.txt" 2>/dev/null || true)
[ "${util:-0}" = "$expected" ] && pass "exporter: DCGM_FI_DEV_GPU_UTIL for $util GPUs" \
  || bad "exporter: ${util:-0} DCGM_FI_DEV_GPU_UTIL series (log: $(tail -n 3 "$OUT/exporter.log"))"

echo "== driver-mounts: what the device plugin hands a GPU pod =="
python3 - <<'PY' || fail=1
from pathlib import Path
from kgpu.host.driverfiles import discover_driver_files
files = discover_driver_files(Path("/usr/local/nvidia"))
names = {p.name for p in files.libraries} | {l.path.name for l in files.library_links}
need = {"libnvidia-ml.so.1", "libcuda.so.1"}
print(("PASS" if need <= names else "FAIL") + f" driver root has {sorted(need & names)} of {sorted(need)}; "
      f"{len(files.libraries)} libraries, {len(files.binaries)} tools mounted into GPU pods")
raise SystemExit(0 if need <= names else 1)
PY
exit $fail
