#!/usr/bin/env bash
# On the real H100: `kgpu cdi generate` against the driver under /usr/local/nvidia (lib64, bin).
# Proves: the spec names every GPU nvidia-smi sees (by index and UUID), every host path in it exists,
# `kgpu cdi validate` accepts it, and lists driver-looking files on disk that the spec leaves out.
# Read-only: nothing on the GPU or the host is changed; output goes to $OUT.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/device/setup.sh
DRIVER_ROOT="${DRIVER_ROOT:-/usr/local/nvidia}"
export PATH="$DRIVER_ROOT/bin:$PATH"
PY="${PYTHON:-python3}"
kgpu() { "$PY" -m kgpu --driver-root "$DRIVER_ROOT" "$@"; }

echo "== nvidia-smi (reference) =="
nvidia-smi --query-gpu=index,uuid,pci.bus_id,driver_version --format=csv
echo
echo "== kgpu cdi generate --driver-root $DRIVER_ROOT --device-name-strategy both =="
kgpu cdi generate --device-name-strategy both --output "$OUT/nvidia.yaml"
cat "$OUT/nvidia.yaml"
kgpu cdi generate --device-name-strategy both --format json > "$OUT/nvidia.json"
echo
echo "== kgpu cdi validate =="
kgpu cdi validate "$OUT/nvidia.yaml"
echo
echo "== checks =="
nvidia-smi --query-gpu=index,uuid --format=csv,noheader > "$OUT/nvidia-smi-gpus.csv"
"$PY" - "$OUT/nvidia.json" "$OUT/nvidia-smi-gpus.csv" "$DRIVER_ROOT" <<'PYEOF'
import json, os, sys
from pathlib import Path

spec = json.load(open(sys.argv[1]))
smi = [line.split(", ") for line in open(sys.argv[2]).read().splitlines() if line.strip()]
driver_root = sys.argv[3]
failed = False

names = {d["name"] for d in spec["devices"]}
for index, uuid in smi:
    ok = index in names and uuid in names
    failed |= not ok
    print(f"{'PASS' if ok else 'FAIL'} GPU {index} {uuid}: spec devices '{index}' and '{uuid}'")
ok = "all" in names
failed |= not ok
print(f"{'PASS' if ok else 'FAIL'} device 'all' present; cdiVersion {spec['cdiVersion']}, kind {spec['kind']}")

paths = []
for edits in [spec["containerEdits"]] + [d["containerEdits"] for d in spec["devices"]]:
    paths += [n.get("hostPath") or n["path"] for n in edits.get("deviceNodes", [])]
    paths += [m["hostPath"] for m in edits.get("mounts", [])]
paths = sorted(set(paths))
missing = [p for p in paths if not os.path.lexists(p)]
failed |= bool(missing)
print(f"{'PASS' if not missing else 'FAIL'} {len(paths)} host paths in the spec, {len(missing)} missing {missing}")
edits = spec["containerEdits"]
nodes = [n.get("hostPath") or n["path"] for d in spec["devices"] for n in d["containerEdits"].get("deviceNodes", [])]
ok = bool(nodes) and all(p.startswith("/dev/") for p in nodes)
failed |= not ok
print(f"{'PASS' if ok else 'FAIL'} no /dev under {driver_root}: device nodes from the node's /dev ({sorted(set(nodes))})")
libcuda = [e for e in edits.get("env", []) if e.startswith("NVIDIA_CTK_LIBCUDA_DIR=")]
ok = libcuda == ["NVIDIA_CTK_LIBCUDA_DIR=/lib64"]
failed |= not ok
print(f"{'PASS' if ok else 'FAIL'} {libcuda} (libcuda's directory in the container, as nvidia-ctk sets it)")
options = {tuple(m["options"]) for m in edits.get("mounts", []) if "/lib64/" in m["hostPath"]}
ok = options == {("ro", "nosuid", "nodev", "rbind", "rprivate")}
failed |= not ok
print(f"{'PASS' if ok else 'FAIL'} library mounts use nvidia-ctk's options {sorted(options)}")
mounts = {m["hostPath"] for m in spec["containerEdits"].get("mounts", [])}
for must in ("bin/nvidia-smi", "lib64/libcuda.so.1", "lib64/libnvidia-ml.so.1"):
    p = os.path.join(driver_root, must)
    hit = p in mounts or any(os.path.realpath(m) == os.path.realpath(p) for m in mounts)
    failed |= not hit
    print(f"{'PASS' if hit else 'FAIL'} {p} is carried by the spec")

from kgpu.cdi import CdiOptions, generate_spec
from kgpu.gpu import open_backend
backend = open_backend("nvml", driver_root=Path(driver_root))
try:
    result = generate_spec(backend.inventory(), CdiOptions(driver_root=driver_root, strategies=("index",)))
finally:
    backend.close()
print(f"driver version from files: {result.driver_version}")
for note in result.notes:
    print(f"note: {note}")
print(f"driver-looking files on disk left out of the spec ({len(result.left_out)}):")
for p in result.left_out:
    print(f"  {p}")
sys.exit(1 if failed else 0)
PYEOF
echo "cdi.sh: all checks passed"
