#!/usr/bin/env bash
# Issue 8 (fractional GPUs) on the real GPU, through kgpu's own code path:
#   1. kgpu mps-layout checks two slices of GPU 0 (20 GiB / 50 % SMs and 10 GiB / 25 % SMs);
#   2. kgpu mps-daemon starts nvidia-cuda-mps-control -d for GPU 0 (CUDA_VISIBLE_DEVICES=<uuid>,
#      its own pipe/log directories) and waits until it answers;
#   3. kgpu device-plugin serves the slices to the kubelet stand-in; they turn Healthy once the daemon
#      runs, and Allocate over the plugin's unix socket gives each slice's container environment;
#   4. one client per slice, with exactly that environment, at the same time: SMs seen, an allocation
#      within its memory limit (ok) and one beyond it (out of memory), matmuls while both are connected;
#      the control daemon lists both clients;
#   5. SIGTERM: kgpu quits the daemon; nothing of it is left; the compute mode is what it was;
#   6. bench/sharing.py: aggregate throughput of 4 clients, time-slicing vs MPS slices (goal b/a >= 1.5).
# Never changes GPU settings (no --exclusive-process). Exit status 1 on any failure.
set -u
cd "$(dirname "$0")/../.."
source scripts/device/setup.sh
source scripts/device/mps_clients.sh
WORK="$(mktemp -d /tmp/kgpu-mps-XXXX)"
ROOT="$WORK/mps"
fail=0
daemon_pid=""

cleanup() {
  if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid"; wait "$daemon_pid" 2>/dev/null
  fi
  cp -r "$ROOT"/GPU-*/log "$OUT/mps-logs" 2>/dev/null
}
trap cleanup EXIT

gpu_before

cat > "$WORK/config.yaml" <<YAML
version: v1
flags:
  mpsRoot: $ROOT
sharing:
  mps:
    slices:
    - {name: nvidia.com/gpu-20gb, memory: 20Gi, computePercent: 50, count: 1, devices: [0]}
    - {name: nvidia.com/gpu-10gb, memory: 10Gi, computePercent: 25, count: 1, devices: [0]}
YAML
cp "$WORK/config.yaml" "$OUT/config.yaml"

echo "== 1. kgpu mps-layout =="
kgpu --driver-root "$DRIVER_ROOT" mps-layout --config-file "$WORK/config.yaml" || fail=1

echo "== 2. kgpu mps-daemon =="
kgpu --driver-root "$DRIVER_ROOT" --log-level info mps-daemon --config-file "$WORK/config.yaml" --interval 1 \
  > "$OUT/mps-daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 120); do [ -e "$ROOT/.ready" ] && break; kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.5; done
if [ -e "$ROOT/.ready" ]; then
  UUID="$(ls "$ROOT" | grep '^GPU-' | head -1)"
  echo "daemon for $UUID running: pid $(cat "$ROOT/$UUID/pipe/nvidia-cuda-mps-control.pid")"
  cat "$ROOT/$UUID/status.json"
  ps -o pid,args -p "$(cat "$ROOT/$UUID/pipe/nvidia-cuda-mps-control.pid")"
else
  echo "FAIL: kgpu mps-daemon did not get the MPS daemon running:"; tail -20 "$OUT/mps-daemon.log"; exit 1
fi
ctl() { echo "$1" | CUDA_MPS_PIPE_DIRECTORY="$ROOT/$UUID/pipe" timeout 10 nvidia-cuda-mps-control; }
echo "default limits set by kgpu: threads $(ctl get_default_active_thread_percentage)"

echo "== 3. kgpu device-plugin: ListAndWatch and Allocate over the plugin socket =="
python3 scripts/device/mps_helper.py allocate --config-file "$WORK/config.yaml" --driver-root "$DRIVER_ROOT" \
  --out "$OUT" --resource nvidia.com/gpu-20gb --resource nvidia.com/gpu-10gb \
  || { echo "FAIL: allocation through the device plugin"; tail -20 "$OUT/device-plugin.log"; exit 1; }

echo "== 4. one client per slice, at the same time =="
two_clients_at_once "$ROOT/$UUID/pipe" gpu-20gb 15 25 gpu-10gb 7.5 12.5

echo "== 5. SIGTERM: kgpu stops the daemon =="
DPID="$(cat "$ROOT/$UUID/pipe/nvidia-cuda-mps-control.pid")"
kill -TERM "$daemon_pid"; wait "$daemon_pid"; rc=$?
daemon_pid=""
echo "kgpu mps-daemon exited with $rc"; [ "$rc" = 0 ] || fail=1
# `-d` double-forks, so the exited daemon can linger as a zombie of this VM's init: that is gone, not running.
dstate="$(awk '{print $3}' "/proc/$DPID/stat" 2>/dev/null || echo gone)"
echo "control daemon $DPID after SIGTERM: state ${dstate}"
if [ "$dstate" != gone ] && [ "$dstate" != Z ]; then echo "FAIL: MPS control daemon $DPID still running"; fail=1; kill "$DPID"; fi
[ -e "$ROOT/.ready" ] && { echo "FAIL: .ready left behind"; fail=1; }
# A clean stop removes the GPU's status file (the device plugin then reads "no MPS daemon status"); one left
# behind must at least not say running.
if [ -e "$ROOT/$UUID/status.json" ]; then
  state="$(grep -o '"state": "[a-z]*"' "$ROOT/$UUID/status.json")"
  echo "status.json after SIGTERM: $state"
  case "$state" in *running*) echo "FAIL: status.json still says running"; fail=1;; esac
else
  echo "status.json removed on the clean stop"
fi
grep -E '"msg": "(MPS daemon running|MPS daemon stopped|all MPS daemons running)"' "$OUT/mps-daemon.log" | cut -c1-200
compute_mode_unchanged

echo "== 6. bench/sharing.py: 4 clients, time-slicing vs kgpu MPS slices of 25 % =="
python3 bench/sharing.py --seconds 8 --driver-root "$DRIVER_ROOT" | tee "$OUT/bench-sharing.txt"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "FAIL: bench/sharing.py (b/a below 1.5, or it could not run)"; fail=1; }

[ "$fail" = 0 ] && echo "MPS: PASS" || echo "MPS: FAIL"
exit "$fail"
