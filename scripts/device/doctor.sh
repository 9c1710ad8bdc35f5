#!/usr/bin/env bash
# Issue 5 (node doctor) on the real H100: `kgpu doctor --json` with and without --driver-root, and the raw
# evidence each finding is built from (/proc/modules, /proc/driver/nvidia/version, /dev/nvidia*, the GPU's
# sysfs resource file, /proc/swaps, nvidia-smi), so every finding can be judged true or false here.
# Read-only: never changes GPU settings, never resets. No kubelet and no container runtime on this machine,
# so kubelet.* and runtime.* findings must be skip. Exit status: 0 when every cross-check holds, else 1.
set -u
cd "$(dirname "$0")/../.."
source scripts/device/setup.sh
fail=0
export PATH="$PATH:/usr/local/nvidia/bin"

run_doctor() {  # name, extra global args...
  local name=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  kgpu "$@" doctor --json > "$OUT/doctor-$name.json" 2> "$OUT/doctor-$name.err"
  echo $? > "$OUT/doctor-$name.rc"
  t1=$(date +%s.%N)
  python3 -c "print(f'{$t1-$t0:.2f}')" > "$OUT/doctor-$name.secs"
  echo "kgpu $* doctor --json: exit $(cat "$OUT/doctor-$name.rc"), $(cat "$OUT/doctor-$name.secs") s"
  kgpu "$@" doctor > "$OUT/doctor-$name.txt" 2>&1 || true
}

echo "== kgpu doctor =="
run_doctor default
run_doctor driver-root --driver-root /usr/local/nvidia
cat "$OUT/doctor-driver-root.txt"

echo
echo "== raw evidence =="
echo "-- /etc/os-release"; grep -E '^(PRETTY_NAME|ID|ID_LIKE|VERSION_ID)=' /etc/os-release
echo "-- uname -r: $(uname -r); container marker: $(ls /.dockerenv /run/.containerenv 2>/dev/null | tr '\n' ' ')"
echo "-- /proc/modules (nvidia, nouveau, nova, overlay, br_netfilter):"
grep -E '^(nvidia|nouveau|nova|overlay|br_netfilter) ' /proc/modules || echo "   (none of them; lines: $(wc -l < /proc/modules))"
echo "-- /proc/driver/nvidia/version:"; cat /proc/driver/nvidia/version 2>&1
echo "-- ls -l /dev/nvidia* /dev/char/195:* :"; ls -l /dev/nvidia* 2>&1; ls -l /dev/char/195:* 2>&1 | head -5
echo "-- /proc/devices (nvidia):"; grep -i nvidia /proc/devices
for dev in /sys/bus/pci/devices/*; do
  [ "$(cat "$dev/vendor")" = "0x10de" ] || continue
  echo "-- $dev: class $(cat "$dev/class") device $(cat "$dev/device") numa_node $(cat "$dev/numa_node" 2>/dev/null)"
  echo "   driver: $(basename "$(readlink "$dev/driver" 2>/dev/null)" 2>/dev/null)"
  head -6 "$dev/resource" | nl -v0 -w1 -s': BAR'
done
echo "-- /proc/swaps:"; cat /proc/swaps
echo "-- swap in /etc/fstab:"; grep -vE '^\s*#' /etc/fstab 2>/dev/null | awk '$3 == "swap"' || true
echo "-- sysctls: ip_forward=$(cat /proc/sys/net/ipv4/ip_forward) bridge-nf-call-iptables=$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>&1)"
echo "-- hypervisor CPU flag: $(grep -m1 -c -w hypervisor /proc/cpuinfo); DMI: $(cat /sys/class/dmi/id/sys_vendor 2>&1) / $(cat /sys/class/dmi/id/product_name 2>&1)"
echo "-- EFI: $([ -d /sys/firmware/efi ] && echo booted with EFI || echo no /sys/firmware/efi)"
echo "-- systemd PID 1: $([ -d /run/systemd/system ] && echo yes || echo no)"
echo "-- CUDA toolkits:"; ls -d /usr/local/cuda* 2>&1; cat /usr/local/cuda*/version.json 2>/dev/null | grep -A2 '"cuda"' | head -4
echo "-- df -h /:"; df -h / | tail -1
echo "-- nvidia-smi:"; nvidia-smi 2>&1 | head -20
nvidia-smi --query-gpu=index,pci.bus_id,driver_version --format=csv,noheader > "$OUT/smi.csv" 2>&1
cat "$OUT/smi.csv"

echo
echo "== kgpu node prepare (dry run: prints the plan, writes nothing) =="
before=$(find /etc -newer "$OUT/doctor-default.rc" -type f 2>/dev/null | wc -l)
kgpu --driver-root /usr/local/nvidia node prepare > "$OUT/prepare.txt" 2>&1 || { echo "node prepare failed"; fail=1; }
head -c 6000 "$OUT/prepare.txt"
after=$(find /etc -newer "$OUT/doctor-default.rc" -type f 2>/dev/null | wc -l)
[ "$before" = "$after" ] && echo "ok       dry run wrote nothing under /etc" || { echo "MISMATCH dry run changed /etc"; fail=1; }

echo
echo "== cross-checks: findings against the raw evidence =="
python3 - "$OUT" <<'PY' || fail=1
import json, os, pathlib, sys
out = pathlib.Path(sys.argv[1])
ids = None
bad = 0

def check(ok, what):
    global bad
    print(("ok      " if ok else "MISMATCH") + " " + what)
    bad += 0 if ok else 1

smi = [l.split(", ") for l in (out / "smi.csv").read_text().splitlines() if l.count(",") == 2]
gpus_sysfs = [d for d in pathlib.Path("/sys/bus/pci/devices").iterdir()
              if (d / "vendor").read_text().strip() == "0x10de" and (d / "class").read_text()[:6] in ("0x0300", "0x0302")]
for name in ("default", "driver-root"):
    try:
        findings = {f["id"]: f for f in json.loads((out / f"doctor-{name}.json").read_text())}
    except ValueError as exc:
        check(False, f"[{name}] doctor --json is not JSON: {exc}; stderr: {(out / f'doctor-{name}.err').read_text()[:500]}")
        continue
    rc = int((out / f"doctor-{name}.rc").read_text())
    st = {i: f["status"] for i, f in findings.items()}
    print(f"[{name}] exit {rc}: " + ", ".join(f"{s} {sum(1 for v in st.values() if v == s)}" for s in ("pass", "warn", "fail", "skip")))
    check(len(findings) == 28, f"[{name}] 28 checks reported ({len(findings)})")
    check(not any("crashed" in f["title"] for f in findings.values()), f"[{name}] no check crashed")
    check(rc == (1 if "fail" in st.values() else 0), f"[{name}] exit code {rc} matches the findings")
    if name == "driver-root":  # this machine runs CUDA: FAIL would mean it cannot run GPU pods now
        fails = [i for i, s in st.items() if s == "fail"]
        check(rc == 0, f"[{name}] a machine that runs CUDA passes: exit {rc}, FAIL: {fails or 'none'}")
    check(st["gpu.pci-present"] == ("pass" if gpus_sysfs else "fail"), f"[{name}] gpu.pci-present={st['gpu.pci-present']} (sysfs: {len(gpus_sysfs)} NVIDIA GPU function(s))")
    for dev in gpus_sysfs:
        # BAR1 (the framebuffer window) is the largest memory BAR, whatever slot a hypervisor put it in
        # (Firecracker makes every BAR 64-bit, so it sits at resource index 2 there).
        sizes = []
        for raw in (dev / "resource").read_text().splitlines()[:6]:
            start, end, flags = (int(x, 16) for x in raw.split())
            if flags & 0x200 and end:
                sizes.append(end - start + 1)
        gib = max(sizes, default=0) // 2**30
        check(f"BAR1 {gib} GiB" in findings["gpu.bar-mapped"]["evidence"] or st["gpu.bar-mapped"] != "pass",
              f"[{name}] gpu.bar-mapped={st['gpu.bar-mapped']}, sysfs BAR1 of {dev.name} = {gib} GiB")
    loaded = os.path.exists("/proc/driver/nvidia/version")
    check(st["driver.loaded"] == ("pass" if loaded else "fail"), f"[{name}] driver.loaded={st['driver.loaded']} (/proc/driver/nvidia/version exists: {loaded})")
    nodes_ok = os.path.exists("/dev/nvidiactl") and os.path.exists("/dev/nvidia-uvm") and all(
        os.path.exists(f"/dev/nvidia{i}") for i in range(len(smi)))
    want_nodes = "skip" if not gpus_sysfs and not smi else "pass" if nodes_ok else "fail"
    check(st["driver.device-nodes"] == want_nodes,
          f"[{name}] driver.device-nodes={st['driver.device-nodes']} (nodes present: {nodes_ok})")
    secs = float((out / f"doctor-{name}.secs").read_text())
    check(secs < 2.0, f"[{name}] whole run took {secs:.2f} s (< 2 s)")
    if smi:
        drv = smi[0][2].strip()
        nvml_ok = st["driver.nvml"] == "pass" and drv in findings["driver.nvml"]["evidence"]
        check(nvml_ok, f"[{name}] driver.nvml={st['driver.nvml']} and names nvidia-smi's driver {drv}: {findings['driver.nvml']['evidence'][:200]}")
    swaps = len(pathlib.Path("/proc/swaps").read_text().strip().splitlines()) - 1
    check(st["k8s.swap"] != "pass" if swaps > 0 else st["k8s.swap"] in ("pass", "fail"),
          f"[{name}] k8s.swap={st['k8s.swap']} ({swaps} active swap area(s); fail with none means fstab)")
    fwd = pathlib.Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    in_container = os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")
    want = ("skip",) if in_container else ("fail",) if fwd != "1" else ("pass", "fail")
    check(st["k8s.sysctl"] in want, f"[{name}] k8s.sysctl={st['k8s.sysctl']} (ip_forward={fwd}, "
          f"in a container: {in_container})")
    bins = [b for b in ("containerd", "dockerd", "crio") for d in ("/usr/bin", "/usr/local/bin", "/usr/sbin")
            if os.path.isfile(f"{d}/{b}")]
    expect_skip = ["kubelet.device-plugins", "kubelet.cgroup-driver", "k8s.version-compat", "runtime.dockershim"]
    if not bins:
        expect_skip += ["runtime.containerd", "runtime.docker", "runtime.crio", "runtime.toolkit"]
    for i in expect_skip:
        check(st[i] == "skip", f"[{name}] {i}={st[i]} (no kubelet; runtimes installed: {bins or 'none'})")
sys.exit(1 if bad else 0)
PY
exit $fail
