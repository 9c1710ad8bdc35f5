#!/usr/bin/env bash
# Run several device scripts in one lease and bring every log back as one tarball ($OUT/logs.tgz),
# since the device tool returns at most 8 files.
#   bash scripts/device/run_all.sh inventory doctor validate ...   (default: every script)
# Per-script time limit: KGPU_DEVICE_SCRIPT_TIMEOUT seconds (default 240).
set -u
cd "$(dirname "$0")/../.."
final_out="${OUT:-/tmp/kgpu-out}"
mkdir -p "$final_out"
runs="$(mktemp -d /tmp/kgpu-runs-XXXX)"
limit="${KGPU_DEVICE_SCRIPT_TIMEOUT:-240}"
if [ $# -eq 0 ]; then
  set -- $(ls scripts/device/*.sh | xargs -n1 basename | sed 's/\.sh$//' | grep -v -E '^(setup|run_all|container|mps_clients)$')
fi
summary=()
for name in "$@"; do
  mkdir -p "$runs/$name"
  start=$(date +%s)
  OUT="$runs/$name" timeout -k 10 "$limit" bash "scripts/device/$name.sh" > "$runs/$name/console.log" 2>&1 < /dev/null
  rc=$?
  summary+=("$(printf '%-12s rc=%-4s %4ss' "$name" "$rc" "$(( $(date +%s) - start ))")")
  echo "################ $name (rc=$rc) — last lines ################"
  tail -n "${KGPU_DEVICE_TAIL:-25}" "$runs/$name/console.log"
done
tar -czf "$final_out/logs.tgz" -C "$runs" .
echo "################ summary ################"
printf '%s\n' "${summary[@]}" | tee "$final_out/summary.txt"
