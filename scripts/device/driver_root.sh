#!/usr/bin/env bash
# Issue 11 (one driver root) on the real GPU: `kgpu --driver-root /usr/local/nvidia device-plugin
# --device-list-strategy driver-mounts` alone hands out the real driver libraries and binaries (they run
# nvidia-smi and cuInit from the container's view of the mounts), and a driver root without driver files
# refuses to start with one line (or, with --fail-on-init-error=false, idles and says why).
# Read-only: changes no GPU setting. Carry nothing beyond scripts/device/setup.sh's wheels.
set -u
cd "$(dirname "$0")/../.."
source scripts/device/setup.sh
echo "== environment =="
nvidia-smi --query-gpu=index,uuid,name,driver_version --format=csv,noheader
ldconfig -p | grep -E 'libcuda\.so\.1|libnvidia-ml\.so\.1' || echo "(ld.so.cache has no NVIDIA libraries: only --driver-root finds them)"
timeout 230 python3 scripts/device/driver_root_check.py --driver-root "${KGPU_DRIVER_ROOT:-/usr/local/nvidia}" 2>&1 \
  | tee "$OUT/driver-root.txt"
exit "${PIPESTATUS[0]}"
