#!/usr/bin/env bash
# Issue 6 (labels) on the real GPU: `kgpu labels` from NVML next to nvidia-smi and the host's sysfs,
# a time-sliced config, and the labeler daemon (oneshot, then SIGTERM). Reads only; changes no GPU setting.
set -u
cd "$(dirname "$0")/../.."
source scripts/device/setup.sh
fail=0

echo "== nvidia-smi =="
nvidia-smi --query-gpu=name,memory.total,compute_cap,driver_version,pci.bus_id --format=csv | tee "$OUT/labels-smi.csv"
nvidia-smi | head -n 12 | tee "$OUT/labels-smi-head.txt"

echo "== host facts (DMI product name, PCI class per GPU) =="
{ cat /sys/class/dmi/id/product_name 2>/dev/null || echo unknown; } | tee "$OUT/labels-product-name.txt"
for bus in $(nvidia-smi --query-gpu=pci.bus_id --format=csv,noheader); do
  sysfs=$(echo "$bus" | tr 'A-F' 'a-f' | sed -E 's/^0000([0-9a-f]{4}:)/\1/')
  echo "$bus -> /sys/bus/pci/devices/$sysfs/class = $(cat "/sys/bus/pci/devices/$sysfs/class" 2>&1)"
done | tee "$OUT/labels-pci-class.txt"

echo "== kgpu labels (NVML) =="
kgpu labels | tee "$OUT/labels.txt" || fail=1
kgpu labels --json > "$OUT/labels.json" || fail=1

echo "== kgpu labels, time-slicing 4 replicas =="
cat > "$OUT/ts-config.yaml" <<'EOF'
version: v1
sharing:
  timeSlicing:
    resources:
    - name: nvidia.com/gpu
      replicas: 4
EOF
kgpu labels --no-timestamp --config-file "$OUT/ts-config.yaml" | grep -E 'gpu\.(product|replicas|sharing-strategy|count)=' \
  | tee "$OUT/labels-ts.txt" || fail=1
echo "== kgpu labels, mig-strategy mixed (MIG off here: whole-GPU labels plus mig.strategy) =="
kgpu labels --no-timestamp --mig-strategy mixed | grep -E 'mig\.|gpu\.product=' | tee "$OUT/labels-mixed.txt" || fail=1

echo "== compare with nvidia-smi and sysfs (details in labels-compare.txt) =="
python3 - "$OUT" > "$OUT/labels-compare.txt" <<'PY' || fail=1
import csv, json, pathlib, re, sys, time
out = pathlib.Path(sys.argv[1])
rows = list(csv.DictReader(open(out / "labels-smi.csv"), skipinitialspace=True))
labels = json.load(open(out / "labels.json"))
head = (out / "labels-smi-head.txt").read_text()
cuda = re.search(r"CUDA Version:\s*([0-9.]+)", head).group(1)
smi = rows[0]
driver = smi["driver_version"]
d = driver.split(".")
cc = smi["compute_cap"].split(".")
product_name = (out / "labels-product-name.txt").read_text().strip()
classes = (out / "labels-pci-class.txt").read_text().split("\n")[0].rsplit("= ", 1)[-1].strip()
mode = {"0x030200": "compute", "0x030000": "graphics"}.get(classes, "unknown")
machine = product_name.replace(" ", "-")
if not re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", machine) or len(machine) > 63:
    machine = "-".join(re.sub(r"[^A-Za-z0-9\-_. ]", "", product_name).split())[:63].strip("-_.")
major, minor = int(cc[0]), int(cc[1])
family = {6: "pascal", 7: "volta" if minor < 5 else "turing", 8: "ampere" if minor < 9 else "ada-lovelace",
          9: "hopper", 10: "blackwell", 12: "blackwell"}.get(major, "undefined")
expect = {
    "nvidia.com/gpu.product": "-".join(re.sub(r"[^A-Za-z0-9\-_. ]", "", smi["name"]).split()),
    "nvidia.com/gpu.count": str(len(rows)),
    "nvidia.com/gpu.memory": smi["memory.total [MiB]"].split()[0],
    "nvidia.com/gpu.compute.major": cc[0],
    "nvidia.com/gpu.compute.minor": cc[1],
    "nvidia.com/gpu.family": family,
    "nvidia.com/cuda.driver-version.full": driver,
    "nvidia.com/cuda.driver-version.major": d[0],
    "nvidia.com/cuda.driver-version.minor": d[1],
    "nvidia.com/cuda.driver-version.revision": d[2] if len(d) > 2 else "",
    "nvidia.com/cuda.driver.major": d[0],
    "nvidia.com/cuda.driver.minor": d[1],
    "nvidia.com/cuda.driver.rev": d[2] if len(d) > 2 else "",
    "nvidia.com/cuda.runtime-version.full": cuda,
    "nvidia.com/cuda.runtime-version.major": cuda.split(".")[0],
    "nvidia.com/cuda.runtime-version.minor": cuda.split(".")[1],
    "nvidia.com/cuda.runtime.major": cuda.split(".")[0],
    "nvidia.com/cuda.runtime.minor": cuda.split(".")[1],
    "nvidia.com/gpu.mode": mode,
    "nvidia.com/gpu.machine": machine,
    "nvidia.com/gpu.present": "true",
    "feature.node.kubernetes.io/pci-10de.present": "true",
    "nvidia.com/gpu.replicas": "1",
    "nvidia.com/gpu.sharing-strategy": "none",
    "nvidia.com/mps.capable": "false",
}
bad = 0
for key, want in expect.items():
    got = labels.get(key)
    ok = got == want
    bad += not ok
    print(f"{key:45} kgpu={got!r:32} expected={want!r:32} {'OK' if ok else 'MISMATCH'}")
stamp = int(labels.get("nvidia.com/gfd.timestamp", "0"))
ok = abs(stamp - time.time()) < 600
bad += not ok
print(f"{'nvidia.com/gfd.timestamp':45} kgpu={stamp!r:32} (now {int(time.time())}) {'OK' if ok else 'MISMATCH'}")
print("mig.capable:", labels.get("nvidia.com/mig.capable"), "(H100 is MIG-capable: expect true)")
ts = dict(line.split("=", 1) for line in (out / "labels-ts.txt").read_text().split())
for key, want in (("nvidia.com/gpu.product", expect["nvidia.com/gpu.product"] + "-SHARED"),
                  ("nvidia.com/gpu.replicas", "4"), ("nvidia.com/gpu.sharing-strategy", "time-slicing")):
    ok = ts.get(key) == want
    bad += not ok
    print(f"time-slicing {key:32} kgpu={ts.get(key)!r:32} expected={want!r:32} {'OK' if ok else 'MISMATCH'}")
sys.exit(1 if bad else 0)
PY

echo "== kgpu labeler --oneshot (NFD feature file) =="
kgpu labeler --oneshot -o "$OUT/features.d/kgpu" || fail=1
wc -l "$OUT/features.d/kgpu" || fail=1

echo "== kgpu labeler daemon: starts, writes, stops on SIGTERM and removes its file =="
rm -rf /tmp/kgpu-labeler-test
kgpu labeler --poll 0.5 --interval 5 -o /tmp/kgpu-labeler-test/kgpu 2> "$OUT/labeler-daemon.log" &
pid=$!
for _ in $(seq 1 40); do [ -s /tmp/kgpu-labeler-test/kgpu ] && break; sleep 0.25; done
[ -s /tmp/kgpu-labeler-test/kgpu ] && echo "file written: $(wc -l < /tmp/kgpu-labeler-test/kgpu) labels" || { echo "no file"; fail=1; }
kill -TERM "$pid"; wait "$pid"; rc=$?
echo "labeler exit: $rc"; [ "$rc" = 0 ] || fail=1
[ -e /tmp/kgpu-labeler-test/kgpu ] && { echo "file still there after SIGTERM"; fail=1; } || echo "file removed on SIGTERM"
tail -n 3 "$OUT/labeler-daemon.log"

echo "== summary =="
cat "$OUT/labels-compare.txt" 2>/dev/null | grep -v ' OK$' || true
echo "compared: $(grep -c ' OK$' "$OUT/labels-compare.txt" 2>/dev/null) OK, $(grep -c MISMATCH "$OUT/labels-compare.txt" 2>/dev/null) MISMATCH"
grep -E '^(nvidia.com/gpu\.(product|memory|count|family|mode|machine)|nvidia.com/cuda\.(driver|runtime)-version\.full)=' "$OUT/labels.txt"
echo "nvidia-smi: $(sed -n 2p "$OUT/labels-smi.csv"); $(grep -o 'CUDA Version: [0-9.]*' "$OUT/labels-smi-head.txt")"
echo "== result: $([ $fail = 0 ] && echo PASS || echo FAIL) =="
exit $fail
