#!/usr/bin/env bash
# The main job on a simulated node (no GPU needed). `make demo` runs this with .venv/bin on PATH.
set -euo pipefail
node="${KGPU_DEMO_NODE:-h100x8}"

echo "== kgpu gpus (simulated $node) =="
kgpu --simulate "$node" gpus

echo "== kgpu exporter --once (simulated $node): a few dcgm-exporter series =="
kgpu --simulate "$node" exporter --once --kubelet-pod-resources none 2>/dev/null \
  | awk '/^(# TYPE )?DCGM_FI_DEV_(GPU_TEMP|FB_USED)/ && n++ < 4'

echo
echo "== kgpu labels (simulated $node): gpu-feature-discovery's names =="
kgpu --simulate "$node" labels --no-timestamp 2>/dev/null | grep -E '^nvidia.com/(gpu\.(product|count|memory|family)|cuda\.driver-version\.full)='

echo
echo "== kgpu device-plugin (simulated $node) against a kubelet stand-in =="
(
  dp_dir="$(mktemp -d /tmp/kgpu-demo-XXXXXX)"
  dp_pid=""
  cleanup_dp() {
    if [ -n "$dp_pid" ] && kill -0 "$dp_pid" 2>/dev/null; then kill -TERM "$dp_pid"; wait "$dp_pid" || true; fi
    rm -rf "$dp_dir"
  }
  trap cleanup_dp EXIT
  python -m kgpu.testing.kubelet --kubelet-dir "$dp_dir/device-plugins" --allocate 2 &
  harness_pid=$!
  KGPU_LOG_LEVEL=warning kgpu --simulate "$node" device-plugin \
    --kubelet-dir "$dp_dir/device-plugins" --state-file "$dp_dir/state.json" &
  dp_pid=$!
  wait "$harness_pid"
  kill -TERM "$dp_pid"; wait "$dp_pid"; dp_pid=""
  echo "device plugin stopped cleanly (SIGTERM); sockets left: $(ls "$dp_dir/device-plugins" | wc -l)"
)

echo
echo "== kgpu doctor (simulated h100x8, node files from tests/fixtures/nodes/ubuntu-h100) =="
doctor_summary() {
  python -c 'import json, sys
for f in json.load(sys.stdin):
    print("%-5s %-31s %s" % (f["status"], f["id"], f["title"]))
    if f["status"] in ("fail", "warn") and len(sys.argv) > 1:
        print("      fix: " + f["fix"].replace("\n", "\n           "))' "$@"
}
kgpu --simulate h100x8 doctor --root tests/fixtures/nodes/ubuntu-h100 --json | doctor_summary
echo "-- the same node without the nouveau blacklist and with swap back in /etc/fstab --"
(
  broken="$(mktemp -d /tmp/kgpu-demo-XXXXXX)"
  trap 'rm -rf "$broken"' EXIT
  cp -a tests/fixtures/nodes/ubuntu-h100/. "$broken"
  rm "$broken/usr/lib/modprobe.d/nvidia-graphics-drivers.conf"
  sed -i 's|^#/swap.img|/swap.img|' "$broken/etc/fstab"
  kgpu --simulate h100x8 doctor --root "$broken" --only driver.nouveau,k8s.swap --json | doctor_summary fixes || true
  echo "-- kgpu node prepare --apply on it, then the doctor again --"
  kgpu node prepare --root "$broken" --apply | grep -E '^\[|^wrote'
  kgpu --simulate h100x8 doctor --root "$broken" --only driver.nouveau,k8s.swap --json | doctor_summary
)

echo "== kgpu validate (simulated h100x8, node files from tests/fixtures/validate/h100x8-node) =="
kgpu --simulate h100x8 validate --root tests/fixtures/validate/h100x8-node
echo "-- the same node with /dev/nvidia3 missing: the chain stops at step 3 and says how to fix it --"
(
  broken="$(mktemp -d /tmp/kgpu-demo-XXXXXX)"
  trap 'rm -rf "$broken"' EXIT
  cp -r tests/fixtures/validate/h100x8-node/. "$broken"
  rm "$broken/dev/nvidia3"
  kgpu --simulate h100x8 validate --root "$broken" | grep -E '^\[3/7\]|fix:|^validation' || true
)

echo
echo "== kgpu runtime configure --dry-run (containerd, on a scratch root) =="
demo_root="$(mktemp -d)"
mkdir -p "$demo_root/etc/containerd"
printf 'version = 2\n\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n' \
  > "$demo_root/etc/containerd/config.toml"
kgpu runtime configure --runtime containerd --root "$demo_root" --dry-run 2>/dev/null
rm -rf "$demo_root"

echo "== MPS slices: two sizes on one H100, and a layout that does not fit =="
(
  cfg="$(mktemp -d /tmp/kgpu-demo-XXXXXX)"
  trap 'rm -rf "$cfg"' EXIT
  printf 'version: v1\nsharing:\n  mps:\n    slices:\n    - {name: nvidia.com/gpu-20gb, memory: 20Gi, computePercent: 25, count: 2, devices: [0]}\n    - {name: nvidia.com/gpu-10gb, memory: 10Gi, computePercent: 15, count: %s, devices: [0]}\n' 3 > "$cfg/fits.yaml"
  printf 'version: v1\nsharing:\n  mps:\n    slices:\n    - {name: nvidia.com/gpu-20gb, memory: 20Gi, computePercent: 25, count: 2, devices: [0]}\n    - {name: nvidia.com/gpu-10gb, memory: 10Gi, computePercent: 15, count: %s, devices: [0]}\n' 4 > "$cfg/too-big.yaml"
  kgpu --simulate h100x8 mps-layout --config-file "$cfg/fits.yaml"
  kgpu --simulate h100x8 mps-layout --config-file "$cfg/too-big.yaml" || true
)
echo "== kgpu lint: seed 002's nvidia.com/gpu: 0.5 =="
kgpu lint tests/fixtures/lint/fractional-deployment.yaml || true

echo
echo "== kgpu cdi generate (simulated h100x8, driver files from tests/fixtures/nodes/ubuntu-h100) =="
cdi_out="$(mktemp)"
kgpu --simulate h100x8 cdi generate --root tests/fixtures/nodes/ubuntu-h100 > "$cdi_out" 2>/dev/null
awk '/^(cdiVersion|kind)|^  name:|hostPath: .*(libcuda|nvidia-smi)/ && n++ < 12' "$cdi_out"
echo "... $(grep -c '^- containerEdits' "$cdi_out") devices (index and UUID names, plus all); every host path checked"
rm -f "$cdi_out"
