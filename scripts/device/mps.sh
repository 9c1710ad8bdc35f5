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
DRIVER_ROOT="${KGPU_DRIVER_ROOT:-/usr/local/nvidia}"
export PATH="$DRIVER_ROOT/bin:$PATH"
export LD_LIBRARY_PATH="$DRIVER_ROOT/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
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

echo "== the GPU before (nvidia-smi) =="
nvidia-smi --query-gpu=index,uuid,name,memory.total,compute_mode --format=csv | tee "$OUT/smi-before.csv"
MODE_BEFORE="$(nvidia-smi -i 0 --query-gpu=compute_mode --format=csv,noheader)"
TOTAL_SMS="$(CUDA_MPS_PIPE_DIRECTORY=/nonexistent python3 -c 'import torch; print(torch.cuda.get_device_properties(0).multi_processor_count)')"
echo "SMs of GPU 0 (torch, no MPS): $TOTAL_SMS"

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
mkdir -p "$WORK/barrier"
run_client() {  # name within-GiB beyond-GiB
  env $(cat "$OUT/$1.env") python3 scripts/device/mps_helper.py client --name "$1" --within "$2" --beyond "$3" \
    --barrier "$WORK/barrier" --hold 6 --report "$OUT/client-$1.json" > "$OUT/client-$1.log" 2>&1
}
run_client gpu-20gb 15 25 & c1=$!
run_client gpu-10gb 7.5 12.5 & c2=$!
for _ in $(seq 1 240); do [ "$(ls "$WORK/barrier" | wc -l)" -ge 2 ] && break; sleep 0.25; done
sleep 1
SERVER="$(ctl get_server_list | head -1)"
echo "MPS server pid: $SERVER; its clients: $(ctl "get_client_list $SERVER" | tr '\n' ' ')"
CLIENTS="$(ctl "get_client_list $SERVER" | grep -c '[0-9]')"
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv | tee "$OUT/smi-apps.csv"
wait $c1; wait $c2
[ "$CLIENTS" -ge 2 ] || { echo "FAIL: the MPS server had $CLIENTS client(s) while both ran, expected 2"; fail=1; }
python3 scripts/device/mps_helper.py check --out "$OUT" --total-sms "$TOTAL_SMS" gpu-20gb gpu-10gb || fail=1

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
grep -o '"state": "[a-z]*"' "$ROOT/$UUID/status.json"
grep -E '"msg": "(MPS daemon running|MPS daemon stopped|all MPS daemons running)"' "$OUT/mps-daemon.log" | cut -c1-200
MODE_AFTER="$(nvidia-smi -i 0 --query-gpu=compute_mode --format=csv,noheader)"
echo "compute mode before: $MODE_BEFORE, after: $MODE_AFTER"
[ "$MODE_BEFORE" = "$MODE_AFTER" ] || { echo "FAIL: compute mode changed"; fail=1; }

echo "== 6. bench/sharing.py: 4 clients, time-slicing vs kgpu MPS slices of 25 % =="
python3 bench/sharing.py --seconds 8 --driver-root "$DRIVER_ROOT" | tee "$OUT/bench-sharing.txt"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "FAIL: bench/sharing.py (b/a below 1.5, or it could not run)"; fail=1; }

[ "$fail" = 0 ] && echo "MPS: PASS" || echo "MPS: FAIL"
exit "$fail"
