#!/usr/bin/env bash
# Issue 4 (device-plugin decisions) on the real GPU: advertised IDs, Allocate per list strategy,
# device specs and kgpu's driver-mounts next to nvidia-smi. Proves the driver-mounts set alone
# runs nvidia-smi and libcuda (cuInit) without the container toolkit. Read-only: changes no GPU setting.
set -u
cd "$(dirname "$0")/../.."
source scripts/device/setup.sh
echo "== environment =="
nvidia-smi --query-gpu=index,uuid,name,driver_version --format=csv,noheader
ldconfig -p | grep -E 'libcuda\.so\.1|libnvidia-ml\.so\.1' || echo "(ld.so.cache has no NVIDIA libraries: the driver is found only through the mounts)"
timeout 150 python3 scripts/device/dp_logic_check.py 2>&1 | tee "$OUT/dp-logic.txt"
exit "${PIPESTATUS[0]}"
