#!/usr/bin/env bash
# The main job on a simulated node (no GPU needed). `make demo` runs this with .venv/bin on PATH.
set -euo pipefail
node="${KGPU_DEMO_NODE:-h100x8}"

echo "== kgpu gpus (simulated $node) =="
kgpu --simulate "$node" gpus

echo "== kgpu exporter --once (simulated $node): a few dcgm-exporter series =="
kgpu --simulate "$node" exporter --once --kubelet-pod-resources none 2>/dev/null \
  | awk '/^(# TYPE )?DCGM_FI_DEV_(GPU_TEMP|FB_USED)/ && n++ < 4'
