#!/usr/bin/env bash
# Issue 12's guard rails on the real GPU, side by side with NVIDIA's k8s-device-plugin v0.20 in the same run:
# Allocate p99 (kgpu ≤ 3× NVIDIA's), registration ≤ 2 s after start, re-registration ≤ 250 ms after a kubelet
# restart, resident memory ≤ 80 MB for the device plugin and the exporter, SIGTERM to exit. Both plugins are
# driven by the kubelet stand-in in /var/lib/kubelet/device-plugins (where NVIDIA's plugin puts its sockets),
# one after the other. kgpu's daemons start as the chart starts them: their own entry points, with the chart's
# arguments and default config file (bench/chart.py). Then
# bench/rss.py shows where the daemons' memory lies on NVML (phases, mappings, and what the command line,
# missing byte-code and MALLOC_ARENA_MAX=2 change). Needs NVIDIA's binary carried in .bench-bin/ (build:
# scripts/build_nvidia_plugin.sh). Read-only for the GPUs. Prints tables and PASS/FAIL lines; exit status 1
# when a guard rail is broken.
#   carry: .whl .bench-bin        run: bash scripts/device/guardrails.sh
set -u
cd "$(dirname "$0")/../.."
source scripts/device/setup.sh
DRIVER_ROOT="${KGPU_DRIVER_ROOT:-/usr/local/nvidia}"
NVIDIA_PLUGIN="${NVIDIA_PLUGIN:-.bench-bin/nvidia-device-plugin}"
echo "== environment =="
python3 --version
nproc
echo "PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-} (byte-code compiled by setup.sh: $(ls /tmp/site/__pycache__ 2>/dev/null | wc -l) files in /tmp/site/__pycache__)"
nvidia-smi --query-gpu=index,uuid,name,driver_version --format=csv,noheader || true
if [ ! -x "$NVIDIA_PLUGIN" ]; then
  echo "FAIL  NVIDIA's plugin not found at $NVIDIA_PLUGIN (carry .bench-bin/)"; exit 1
fi
LD_LIBRARY_PATH="$DRIVER_ROOT/lib64" "$NVIDIA_PLUGIN" --version || true
if [ -S /var/lib/kubelet/device-plugins/kubelet.sock ] && pgrep -x kubelet >/dev/null; then
  echo "FAIL  a real kubelet runs here; this bench needs its device-plugins directory"; exit 1
fi
echo
echo "== bench/guardrails.py (twice: the second run shows the spread) =="
fail=0
for run in 1 2; do
  timeout -k 5 240 python3 bench/guardrails.py --nvidia-plugin "$NVIDIA_PLUGIN" --driver-root "$DRIVER_ROOT" \
    2>"$OUT/guardrails-$run.err" | tee "$OUT/guardrails-$run.txt"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { fail=1; tail -40 "$OUT/guardrails-$run.err"; }
done
rm -f /var/lib/kubelet/device-plugins/*.sock
echo
echo "== bench/rss.py on NVML: where the daemons' memory lies, and variants =="
timeout -k 5 240 python3 bench/rss.py --backend nvml --driver-root "$DRIVER_ROOT" --settle 5 \
  2>"$OUT/rss.err" | tee "$OUT/rss.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || { fail=1; tail -40 "$OUT/rss.err"; }
[ "$fail" -eq 0 ] && echo "guardrails: all PASS" || echo "guardrails: some FAIL (see above)"
exit "$fail"
