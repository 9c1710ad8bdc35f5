#!/usr/bin/env bash
# Issue 15 (fractional GPUs on demand) on the real GPU, through kgpu's own code path:
#   1. kgpu mps-daemon starts the MPS control daemon of GPU 0, shared dynamically (sharing.mps.dynamic);
#   2. kgpu device-plugin serves GPU 0 as 4 nvidia.com/gpu shares to the kubelet stand-in, publishes the GPU
#      on the Node of kgpu's API server stand-in, and kgpu's extender (the filter and bind kgpu-scheduler calls)
#      places two pods asking HAMi's nvidia.com/gpumem / nvidia.com/gpucores: 30 GiB / 25 % and 60 GiB / 50 %;
#      the kubelet stand-in asks the plugin GetPreferredAllocation and Allocate for each, as the kubelet does;
#   3. one client per share, with exactly its Allocate environment, at the same time: SMs seen (expected
#      25 % and 50 % of the GPU's), an allocation within its memory limit (ok) and one beyond it (out of
#      memory), matmuls while both are connected; the control daemon lists both clients;
#   4. SIGTERM: kgpu quits the daemon; the compute mode is what it was.
# Never changes GPU settings. Exit status 1 on any failure. Carry: the repository (scripts/device/setup.sh).
set -u
cd "$(dirname "$0")/../.."
source scripts/device/setup.sh
source scripts/device/mps_clients.sh
WORK="$(mktemp -d /tmp/kgpu-dyn-XXXX)"
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
    dynamic:
      devices: [0]
      shares: 4
YAML
cp "$WORK/config.yaml" "$OUT/config.yaml"

echo "== 1. kgpu mps-daemon (GPU 0 shared dynamically: no default client limits) =="
kgpu --driver-root "$DRIVER_ROOT" --log-level info mps-daemon --config-file "$WORK/config.yaml" --interval 1 \
  > "$OUT/mps-daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 1 120); do [ -e "$ROOT/.ready" ] && break; kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.5; done
if [ -e "$ROOT/.ready" ]; then
  UUID="$(ls "$ROOT" | grep '^GPU-' | head -1)"
  echo "daemon for $UUID running: pid $(cat "$ROOT/$UUID/pipe/nvidia-cuda-mps-control.pid")"
else
  echo "FAIL: kgpu mps-daemon did not get the MPS daemon running:"; tail -20 "$OUT/mps-daemon.log"; exit 1
fi

echo "== 2. the extender places two pods; the device plugin allocates them (kubelet and API stand-ins) =="
python3 scripts/device/dynamic_helper.py allocate --config-file "$WORK/config.yaml" --driver-root "$DRIVER_ROOT" \
  --out "$OUT" --share share-30g:30720:25 --share share-60g:61440:50 \
  || { echo "FAIL: placement or allocation"; tail -20 "$OUT/device-plugin.log"; exit 1; }
for name in share-30g share-60g; do
  grep -q "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT" "$OUT/$name.env" || { echo "FAIL: $name has no MPS memory limit"; fail=1; }
done

echo "== 3. one client per share, at the same time =="
two_clients_at_once "$ROOT/$UUID/pipe" share-30g 25 35 share-60g 55 65

echo "== 4. SIGTERM: kgpu stops the daemon =="
kill -TERM "$daemon_pid"; wait "$daemon_pid"; rc=$?
daemon_pid=""
echo "kgpu mps-daemon exited with $rc"; [ "$rc" = 0 ] || fail=1
compute_mode_unchanged

[ "$fail" = 0 ] && echo "DYNAMIC SHARES: PASS" || echo "DYNAMIC SHARES: FAIL"
exit "$fail"
