#!/usr/bin/env bash
# Issue 4 (device plugin server) on the real GPU: `kgpu device-plugin` with the NVML backend, driven by the
# kubelet stand-in over real unix sockets, with --driver-root /usr/local/nvidia (LD_LIBRARY_PATH unset)
# and without it. Shows registration, the ListAndWatch device IDs next to nvidia-smi's UUIDs, Allocate,
# a kubelet restart and a clean SIGTERM; then bench/deviceplugin.py --nvml. Read-only: changes no GPU
# setting, never resets. Exit status 1 on any failure.
set -u
cd "$(dirname "$0")/../.."
source scripts/device/setup.sh
DRIVER_ROOT="${KGPU_DRIVER_ROOT:-/usr/local/nvidia}"
export PATH="$DRIVER_ROOT/bin:$PATH"
fail=0
echo "== environment =="
python3 --version
python3 -c 'import grpc, google.protobuf as p; print("grpcio", grpc.__version__, "protobuf", p.__version__)'
nvidia-smi --query-gpu=index,uuid,name,pci.bus_id,driver_version --format=csv | tee "$OUT/smi.csv"

timeout 80 python3 scripts/device/deviceplugin_check.py --driver-root "$DRIVER_ROOT" || fail=1
timeout 80 python3 scripts/device/deviceplugin_check.py || fail=1

echo "== bench/deviceplugin.py --nvml =="
timeout 120 python3 bench/deviceplugin.py --nvml --driver-root "$DRIVER_ROOT" 2>"$OUT/bench-stderr.log" \
  | tee "$OUT/bench.txt" || fail=1
exit $fail
