#!/usr/bin/env bash
# Issues 4 and 6 targets on the real GPU: where the daemons' memory goes and how fast Allocate is, on NVML.
#   1. bench/rss.py --backend nvml: resident memory of `kgpu device-plugin` and `kgpu exporter` step by step
#      (bare interpreter, serving, first Allocate / first scrape, steady 10 s later) and variants
#      (MALLOC_ARENA_MAX=2, exporter without gRPC);
#   2. bench/deviceplugin.py --nvml: Allocate p50/p99, daemon CPU and context switches per Allocate,
#      the gRPC floor, re-registration, RSS (targets: p99 < 1 ms, RSS < 80 MB);
#   3. bench/exporter.py --backend nvml: scrape latency and RSS (target RSS < 60 MB);
#   4. diagnostics for the Allocate latency (no targets): the same bench pinned to 2 CPUs, and with
#      gRPC's event-engine listener/endpoints turned off (fewer thread hops per RPC).
# Never changes GPU settings. Exits non-zero when a target is missed. About 2-3 minutes.
set -u
cd "$(dirname "$0")/../.."
source scripts/device/setup.sh
fail=0

echo "== machine =="
echo "cpus: $(nproc)  python: $(python3 -c 'import sys; print(sys.version.split()[0])')"
python3 - <<'PY'
from importlib import metadata
for name in ("grpcio", "protobuf", "typer", "rich", "click", "pydantic", "nvidia-ml-py", "prometheus-client"):
    try:
        print(f"  {name:18} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"  {name:18} (not installed)")
PY
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader || true

echo
echo "== 1. resident memory, step by step (bench/rss.py --backend nvml) =="
timeout -k 5 90 python3 bench/rss.py --backend nvml 2>&1 | grep -v -i goaway | tee "$OUT/rss.txt"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || { echo "rss: a daemon misses its memory target (rc=$rc)"; fail=1; }

echo
echo "== 2. device plugin (bench/deviceplugin.py --nvml) =="
timeout -k 5 45 python3 bench/deviceplugin.py --nvml 2>&1 | grep -v -i goaway | tee "$OUT/deviceplugin.txt"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || { echo "deviceplugin: a target is missed (rc=$rc)"; fail=1; }

echo
echo "== 3. exporter (bench/exporter.py --backend nvml) =="
timeout -k 5 45 python3 bench/exporter.py --backend nvml 2>&1 | grep -v -i goaway | tee "$OUT/exporter.txt"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || { echo "exporter: a target is missed (rc=$rc)"; fail=1; }

echo
echo "== 4. diagnostics: Allocate latency under other conditions (informational, no target) =="
echo "-- pinned to CPUs 0,1 (thread hand-offs stay on two cores instead of waking idle ones) --"
timeout -k 5 25 taskset -c 0,1 python3 bench/deviceplugin.py --nvml --calls 1000 2>&1 \
  | grep -E "Allocate|floor|CPU" | tee "$OUT/diag-pinned.txt"
echo "-- GRPC_EXPERIMENTS without the event-engine listener and endpoints (daemon and bench client) --"
GRPC_EXPERIMENTS=-event_engine_listener,-event_engine_for_all_other_endpoints,-event_engine_client \
  timeout -k 5 25 python3 bench/deviceplugin.py --nvml --calls 1000 2>&1 \
  | grep -E "Allocate|floor|CPU" | tee "$OUT/diag-grpc-experiments.txt"

echo
[ "$fail" -eq 0 ] && echo "perf: all targets met" || echo "perf: some targets missed (see above)"
exit "$fail"
