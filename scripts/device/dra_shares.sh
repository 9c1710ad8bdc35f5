#!/usr/bin/env bash
# Issue 17 (DRA shares with enforced limits) on the real GPU, through kgpu's own code path:
#   1. kgpu's DRA driver runs on NVML; the kubelet stand-in (kgpu.testing.dra) registers it over its real
#      unix sockets and calls NodePrepareResources for two claims the scheduler gave memory shares of GPU 0:
#      "small" 30 GiB with 25 % of the SMs and "large" 60 GiB with 50 % (NVIDIA's GpuConfig, MPS strategy).
#      The driver starts GPU 0's nvidia-cuda-mps-control -d and writes one CDI spec per claim;
#   2. one CUDA process per claim (torch), with exactly the environment of its CDI spec, at the same time:
#      SMs seen, an allocation within its share (ok) and one beyond it (out of memory), matmuls while both
#      are connected; the control daemon lists both clients;
#   3. a restarted driver (adopting the daemon from its checkpoint) unprepares both claims: the CDI specs,
#      the checkpoint entries and the daemon are gone.
# Never changes GPU settings. Prints PASS/FAIL lines with numbers; exit status 1 on any failure.
#   bash scripts/device/dra_shares.sh          (carry .whl/ as for the other device scripts: setup.sh)
set -u
cd "$(dirname "$0")/../.."
source scripts/device/setup.sh
source scripts/device/mps_clients.sh
WORK="$(mktemp -d /tmp/kgpu-dra-XXXX)"
fail=0

cleanup() {
  for pid_file in "$WORK"/mps/*/pipe/nvidia-cuda-mps-control.pid; do
    [ -f "$pid_file" ] || continue
    pid="$(cat "$pid_file")"
    if kill -0 "$pid" 2>/dev/null; then
      echo quit | CUDA_MPS_PIPE_DIRECTORY="$(dirname "$pid_file")" timeout 10 nvidia-cuda-mps-control; sleep 1
      kill "$pid" 2>/dev/null
    fi
  done
  cp -r "$WORK"/mps/GPU-*/log "$OUT/mps-logs" 2>/dev/null
  cp -r "$WORK"/cdi "$OUT/cdi-specs" 2>/dev/null
}
trap cleanup EXIT

gpu_before

echo "== 1. NodePrepareResources through kgpu's DRA driver (kubelet stand-in over its unix sockets) =="
python3 scripts/device/dra_helper.py prepare --work "$WORK" --out "$OUT" --driver-root "$DRIVER_ROOT" \
  --share small:30:25 --share large:60:50 > "$OUT/prepare.log" 2>&1
rc=$?
grep -v '^{"ts"' "$OUT/prepare.log"
[ "$rc" = 0 ] || { echo "FAIL: prepare (rc $rc):"; tail -20 "$OUT/prepare.log"; exit 1; }
UUID="$(ls "$WORK/mps" | grep '^GPU-' | head -1)"
PIPE="$WORK/mps/$UUID/pipe"
[ -f "$PIPE/nvidia-cuda-mps-control.pid" ] || { echo "FAIL: the driver started no MPS control daemon"; exit 1; }
echo "MPS control daemon for $UUID: pid $(cat "$PIPE/nvidia-cuda-mps-control.pid")"

echo "== 2. one client per claim, with its CDI spec's environment, at the same time =="
two_clients_at_once "$PIPE" small 22.5 37.5 large 45 75

echo "== 3. a restarted driver unprepares both claims =="
python3 scripts/device/dra_helper.py unprepare --work "$WORK" --driver-root "$DRIVER_ROOT" > "$OUT/unprepare.log" 2>&1 \
  || fail=1
grep -v '^{"ts"' "$OUT/unprepare.log"
grep -E '"msg": "(MPS daemon (running|adopted|stopped)|claim (un)?prepared)"' "$OUT/prepare.log" "$OUT/unprepare.log" \
  | cut -c1-220
compute_mode_unchanged

[ "$fail" = 0 ] && echo "DRA shares: PASS" || echo "DRA shares: FAIL"
exit "$fail"
