#!/usr/bin/env bash
# Issue 6 (metrics) on the real GPU: one scrape of `kgpu exporter` next to nvidia-smi taken at the same
# moment, the daemon over HTTP with a clean SIGTERM, and bench/exporter.py on NVML. Never changes GPU settings.
set -u
cd "$(dirname "$0")/../.."
source scripts/device/setup.sh
fail=0
QUERY=memory.used,memory.total,temperature.gpu,power.draw,clocks.sm,clocks.mem,utilization.gpu

echo "== one scrape and nvidia-smi, started together =="
kgpu exporter --once --kubelet-pod-resources none --hostname device-box > "$OUT/scrape.txt" 2> "$OUT/scrape.log" &
kpid=$!
nvidia-smi --query-gpu=index,uuid,$QUERY --format=csv,nounits > "$OUT/smi.csv" &
spid=$!
wait $kpid || { echo "kgpu exporter --once failed:"; cat "$OUT/scrape.log"; fail=1; }
wait $spid || fail=1
# A second scrape right after: clocks and power move when nvidia-smi itself wakes the GPU, so a value
# nvidia-smi saw counts as matching when it lies within the slack of, or between, the two scrapes.
kgpu exporter --once --kubelet-pod-resources none --hostname device-box > "$OUT/scrape2.txt" 2>> "$OUT/scrape.log" || fail=1
nvidia-smi --query-gpu=index,memory.reserved,memory.free,pcie.link.gen.current --format=csv || true
cat "$OUT/smi.csv"
grep -E '^# (HELP|TYPE) DCGM_FI_DEV_(TOTAL_ENERGY|FB_USED|GPU_TEMP)|^DCGM_FI_DEV_(GPU_TEMP|FB_USED|POWER_USAGE|TOTAL_ENERGY_CONSUMPTION|XID_ERRORS)\{' "$OUT/scrape.txt"
grep -E '^kgpu_' "$OUT/scrape.txt"
# NVLink bandwidth (a rate between scrapes: 0 on the first) and the vGPU license, read from NVML as DCGM does.
grep -E '^(# TYPE )?DCGM_FI_DEV_(NVLINK_BANDWIDTH_TOTAL|VGPU_LICENSE_STATUS)' "$OUT/scrape.txt" \
  || echo "(no NVLink counters on this GPU: no DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL series, as with DCGM)"

echo "== compare (kgpu vs nvidia-smi) =="
python3 - "$OUT" <<'PY' || fail=1
import csv, re, sys, pathlib
from prometheus_client.parser import text_string_to_metric_families
out = pathlib.Path(sys.argv[1])
text = (out / "scrape.txt").read_text()
bad = 0
# Exact-name checks on the raw text: dcgm-exporter's counters carry no _total suffix.
for name, kind in [("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter"), ("DCGM_FI_DEV_GPU_TEMP", "gauge"),
                   ("DCGM_FI_DEV_FB_USED", "gauge"), ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter")]:
    ok = f"# TYPE {name} {kind}\n" in text and re.search(rf"^{name}\{{", text, re.M) is not None
    bad += not ok
    print(f"exposition {name:40} {kind:8} {'OK' if ok else 'MISSING'}")
if re.search(r"^DCGM_FI_\w+_total", text, re.M):
    bad += 1
    print("exposition: a DCGM_FI_* series carries a _total suffix: MISMATCH")
def parse(t):
    found = {}
    for fam in text_string_to_metric_families(t):
        for s in fam.samples:
            if s.name.startswith("DCGM_FI_") and "GPU_I_ID" not in s.labels:
                found[(s.name.removesuffix("_total"), s.labels["UUID"])] = (s.value, s.labels)
    return found
values = parse(text)
after = parse((out / "scrape2.txt").read_text())
rows = list(csv.DictReader(open(out / "smi.csv"), skipinitialspace=True))
# (nvidia-smi column, DCGM field, allowed difference): temperatures, power, clocks and utilization drift.
checks = [("memory.used", "DCGM_FI_DEV_FB_USED", 64), ("memory.total", "DCGM_FI_DEV_FB_TOTAL", 0),
          ("temperature.gpu", "DCGM_FI_DEV_GPU_TEMP", 3), ("power.draw", "DCGM_FI_DEV_POWER_USAGE", 25),
          ("clocks.current.sm", "DCGM_FI_DEV_SM_CLOCK", 150), ("clocks.sm", "DCGM_FI_DEV_SM_CLOCK", 150),
          ("clocks.current.memory", "DCGM_FI_DEV_MEM_CLOCK", 50), ("clocks.mem", "DCGM_FI_DEV_MEM_CLOCK", 50),
          ("utilization.gpu", "DCGM_FI_DEV_GPU_UTIL", 10)]
for raw in rows:
    row = {k.split(" [")[0].strip(): v.strip() for k, v in raw.items()}  # headers keep units: "memory.used [MiB]"
    uuid = row["uuid"]
    for column, field, slack in checks:
        if column not in row:
            continue
        theirs = row[column].split()[0] if row[column] else ""
        mine = values.get((field, uuid))
        if mine is None:
            bad += 1
            print(f"GPU {row['index']} {field:32} kgpu=MISSING nvidia-smi={theirs}")
            continue
        later = after.get((field, uuid), mine)[0]
        low, high = min(mine[0], later), max(mine[0], later)
        try:
            ok = low - slack <= float(theirs) <= high + slack
        except ValueError:
            ok = False
        bad += not ok
        seen = f"{mine[0]:g}" if low == high else f"{mine[0]:g}/{later:g}"
        print(f"GPU {row['index']} {field:32} kgpu={seen:<14} nvidia-smi={theirs:<10} (±{slack}) {'OK' if ok else 'MISMATCH'}")
    labels = list(values[("DCGM_FI_DEV_GPU_TEMP", uuid)][1])
    want = ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"]
    ok = labels == want
    bad += not ok
    print(f"GPU {row['index']} label order {labels} {'OK' if ok else 'MISMATCH'}")
sys.exit(1 if bad else 0)
PY

echo "== daemon: /metrics, /healthz, SIGTERM =="
kgpu exporter --listen 127.0.0.1:19400 --kubelet-pod-resources /nonexistent/kubelet.sock 2> "$OUT/daemon.log" &
dpid=$!
for _ in $(seq 1 50); do
  python3 -c 'import urllib.request; urllib.request.urlopen("http://127.0.0.1:19400/healthz", timeout=1)' 2>/dev/null && break
  sleep 0.2
done
python3 - <<'PY' || fail=1
import time, urllib.request
for path in ("/healthz", "/metrics"):
    start = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:19400{path}", timeout=10) as r:
        body = r.read().decode()
    print(f"GET {path}: {r.status} {len(body)} bytes in {(time.perf_counter() - start) * 1000:.1f} ms")
assert "DCGM_FI_DEV_GPU_TEMP{" in body
PY
kill -TERM $dpid
wait $dpid; rc=$?
echo "daemon exit after SIGTERM: $rc"; [ $rc -eq 0 ] || fail=1
cat "$OUT/daemon.log"

echo "== bench (NVML) =="
python3 bench/exporter.py --backend nvml --scrapes 150 | tee "$OUT/bench.txt" || fail=1
exit $fail
