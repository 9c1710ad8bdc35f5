"""One driver root on the real GPU (run by scripts/device/driver_root.sh).

    python3 scripts/device/driver_root_check.py --driver-root /usr/local/nvidia

1. ``kgpu --driver-root DIR device-plugin --device-list-strategy driver-mounts`` (nothing else: no
   --nvidia-driver-root, LD_LIBRARY_PATH unset) registers with the kubelet stand-in, and Allocate hands
   the container the GPU's device nodes, the driver's libraries and binaries from DIR, LD_LIBRARY_PATH
   and PATH; every host path exists.
2. Those mounts alone are enough: nvidia-smi -L and libcuda's cuInit/cuDeviceGetName work from a
   directory laid out as the container sees them (the loader finds libcuda.so.1 there).
3. A driver root without driver files (an empty directory) refuses to start: non-zero exit, one line
   on stderr naming the directory and --driver-root, nothing registered. And with no --driver-root
   at all (NVML found in a well-known place), driver-mounts finds no driver under / and refuses with
   one line that says which --driver-root to pass (the issue's original case, which served broken pods).
4. The same with --fail-on-init-error=false idles: still running, nothing registered, the state file
   says why; SIGTERM ends it with 0.

Prints PASS/FAIL lines with the evidence; exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kgpu.testing.kubelet import FakeKubelet, PluginClient

RESOURCE = "nvidia.com/gpu"
failures: list[str] = []


def check(what: str, ok: bool, detail: str = "") -> None:
    print(f"  {'PASS' if ok else 'FAIL'} {what}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        failures.append(what)


def smi(*args: str) -> str:
    return subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, check=True).stdout.strip()


def errors(stderr: str) -> list[str]:
    """kgpu's error lines (its JSON log lines on stderr are not errors)."""
    return [line for line in stderr.splitlines() if line.startswith("kgpu: error:")]


def plugin_command(driver_root: str, kubelet_dir: Path, state_file: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kgpu", "--backend", "nvml", "--driver-root", driver_root, "device-plugin",
            "--device-list-strategy", "driver-mounts", "--kubelet-dir", str(kubelet_dir),
            "--state-file", str(state_file), *extra]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--driver-root", default="/usr/local/nvidia")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "NVIDIA_DRIVER_ROOT",
                                                             "CONTAINER_DRIVER_ROOT", "DRIVER_ROOT_CTR_PATH")}
    out = Path(os.environ.get("OUT", "/tmp/kgpu-out"))
    uuids = [u.strip() for u in smi("--query-gpu=uuid", "--format=csv,noheader").splitlines() if u.strip()]
    print(f"== 1. kgpu --driver-root {args.driver_root} device-plugin --device-list-strategy driver-mounts ==")
    root = Path(tempfile.mkdtemp(dir="/tmp", prefix="kgpu-driver-root-"))
    kubelet = FakeKubelet(root / "device-plugins").start()
    state_file = root / "state.json"
    log_path = out / "driver-root-plugin.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(plugin_command(args.driver_root, kubelet.directory, state_file), stdout=log,
                                stderr=subprocess.STDOUT, env=env)
    alloc = None
    try:
        reg = kubelet.wait_for_registration(RESOURCE, timeout=90)
        check("registered", reg.resource_name == RESOURCE, f"endpoint {reg.endpoint}")
        devices = kubelet.watch(RESOURCE).wait_for(lambda ds: len(ds) > 0, timeout=30)
        check("ListAndWatch lists nvidia-smi's GPUs", sorted(d.ID for d in devices) == sorted(uuids),
              ", ".join(d.ID for d in devices))
        with PluginClient(kubelet.directory / reg.endpoint) as plugin:
            alloc = plugin.allocate([[uuids[0]]]).container_responses[0]
    except Exception as exc:  # print the evidence and fail, whatever went wrong
        check("the plugin serves", False, f"{type(exc).__name__}: {exc}; log {log_path}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        check("SIGTERM ends it with 0", code == 0, f"exit {code}")
        kubelet.stop()
    if alloc is None:
        print(log_path.read_text()[-2000:])
        return 1
    envs = dict(alloc.envs)
    mounts = [(m.host_path, m.container_path, m.read_only) for m in alloc.mounts]
    devs = [(d.host_path, d.container_path) for d in alloc.devices]
    print("   envs:", envs)
    for m in mounts:
        print(f"   mount {m[0]} -> {m[1]} ro={m[2]}")
    for d in devs:
        print(f"   device {d[0]} -> {d[1]}")
    (out / "driver-root-allocate.json").write_text(json.dumps({"envs": envs, "mounts": mounts, "devices": devs},
                                                              indent=2))
    names = {Path(m[1]).name for m in mounts}
    check("libcuda.so.1, libnvidia-ml.so.1 and nvidia-smi are mounted",
          {"libcuda.so.1", "libnvidia-ml.so.1", "nvidia-smi"} <= names, f"{len(mounts)} mounts")
    check(f"every mount comes from {args.driver_root}",
          all(m[0].startswith(args.driver_root.rstrip("/") + "/") for m in mounts))
    missing = [p for p, *_ in mounts if not Path(p).exists()] + [p for p, _ in devs if not Path(p).exists()]
    check("every host path exists", not missing, str(missing))
    check("LD_LIBRARY_PATH and PATH point at the mounts", envs.get("LD_LIBRARY_PATH") == "/usr/local/nvidia/lib64"
          and envs.get("PATH", "").startswith("/usr/local/nvidia/bin:"))
    check("NVIDIA_VISIBLE_DEVICES is void (no toolkit hook exposes every GPU)",
          envs.get("NVIDIA_VISIBLE_DEVICES") == "void")

    print("== 2. the mounts alone run nvidia-smi and CUDA ==")
    with tempfile.TemporaryDirectory(dir="/tmp") as farm:
        for host, container, _ in mounts:
            dest = Path(farm + container)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(host)
        lib = farm + "/usr/local/nvidia/lib64"
        run_env = {"PATH": farm + "/usr/local/nvidia/bin:/usr/bin:/bin", "LD_LIBRARY_PATH": lib}
        host_list = smi("-L")
        ours = subprocess.run([farm + "/usr/local/nvidia/bin/nvidia-smi", "-L"], capture_output=True, text=True,
                              env=run_env)
        check("mounted nvidia-smi -L lists the same GPUs", ours.returncode == 0 and ours.stdout.strip() == host_list,
              (ours.stdout.strip().splitlines() or [ours.stderr.strip()[:200]])[0])
        probe = ("import ctypes\ncuda = ctypes.CDLL('libcuda.so.1')\nassert cuda.cuInit(0) == 0\n"
                 "dev = ctypes.c_int(); assert cuda.cuDeviceGet(ctypes.byref(dev), 0) == 0\n"
                 "name = ctypes.create_string_buffer(128); cuda.cuDeviceGetName(name, 128, dev)\n"
                 "print(name.value.decode())\n")
        run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                             env={**run_env, "LD_DEBUG": "libs", "LD_DEBUG_OUTPUT": farm + "/ld"})
        found = ""
        for f in Path(farm).glob("ld.*"):
            for line in f.read_text(errors="replace").splitlines():
                if "trying file=" in line and line.strip().endswith("libcuda.so.1"):
                    found = line.split("trying file=")[-1]
        check("libcuda.so.1 loads from the mounted lib64 and cuInit works", run.returncode == 0
              and found.startswith(lib), f"{run.stdout.strip()} {run.stderr.strip()[-200:]} (loaded {found})")

    print("== 3. a driver root without driver files refuses to start ==")
    empty = root / "no-driver"
    empty.mkdir()
    kubelet = FakeKubelet(root / "dp-empty").start()
    try:
        started = time.monotonic()
        failing = subprocess.run(plugin_command(str(empty), kubelet.directory, root / "s2.json"), env=env,
                                 capture_output=True, text=True, timeout=90)
        lines = errors(failing.stderr)
        print("   error:", lines)
        took = time.monotonic() - started
        check("non-zero exit, one error line, no traceback", failing.returncode != 0 and len(lines) == 1
              and "Traceback" not in failing.stderr, f"exit {failing.returncode} after {took:.1f}s")
        check("the line names the directory and --driver-root",
              bool(lines) and str(empty) in lines[0] and "--driver-root" in lines[0])
        check("nothing registered", kubelet.registrations == [])

        print("== 3b. without --driver-root (NVML found by search), driver-mounts finds no driver under / ==")
        no_root = [a for a in plugin_command("/", kubelet.directory, root / "s4.json") if a not in ("--driver-root",)]
        no_root.remove("/")
        failing = subprocess.run(no_root, env=env, capture_output=True, text=True, timeout=90)
        lines = errors(failing.stderr)
        print("   error:", lines)
        if Path("/usr/lib/x86_64-linux-gnu/libcuda.so.1").exists() or Path("/usr/lib64/libcuda.so.1").exists():
            print("   (this host has the driver under / as well: driver-mounts is right to start; skipped)")
        else:
            check("non-zero exit, one error line naming driver-mounts and the driver root to pass",
                  failing.returncode != 0 and len(lines) == 1 and "Traceback" not in failing.stderr
                  and "driver-mounts" in lines[0]
                  and f"--driver-root {args.driver_root}" in lines[0], f"exit {failing.returncode}")
            check("nothing registered", kubelet.registrations == [])

        print("== 4. ... or, with --fail-on-init-error=false, idles and says why ==")
        state = root / "s3.json"
        idle = subprocess.Popen(plugin_command(str(empty), kubelet.directory, state, "--fail-on-init-error=false"),
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 90
        while not (state.exists() and "idle" in state.read_text()) and idle.poll() is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        running = idle.poll() is None
        # read before SIGTERM: a clean stop removes the state file with the sockets
        reason = json.loads(state.read_text()).get("idle", "") if state.exists() else ""
        idle.send_signal(signal.SIGTERM)
        idle.communicate(timeout=30)
        check("still running, nothing registered", running and kubelet.registrations == [])
        # the empty root fails at its first need, NVML (before driver-mounts looks for files): either names the root
        check("the state file says why", str(empty) in reason and "--driver-root" in reason, reason[:200])
        check("SIGTERM ends it with 0", idle.returncode == 0, f"exit {idle.returncode}")
    finally:
        kubelet.stop()
    print(f"== {'PASS' if not failures else 'FAIL: ' + ', '.join(failures)} ==")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
