#!/usr/bin/env bash
# The main job on a simulated node (no GPU needed). `make demo` runs this with .venv/bin on PATH.
set -euo pipefail
node="${KGPU_DEMO_NODE:-h100x8}"

echo "== kgpu gpus (simulated $node) =="
kgpu --simulate "$node" gpus
