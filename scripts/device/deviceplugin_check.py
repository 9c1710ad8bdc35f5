"""The device plugin on the real GPU(s), driven exactly as the kubelet drives it (used by deviceplugin.sh).

    python3 scripts/device/deviceplugin_check.py [--driver-root DIR]

Starts `kgpu --backend nvml device-plugin` against the kubelet stand-in in a temp dir and checks: it
registers (v1beta1, nvidia-gpu.sock), ListAndWatch lists every GPU nvidia-smi lists, by UUID, Healthy;
GetPreferredAllocation and Allocate return it; PreStartContainer answers; a kubelet restart is followed
by a new registration; the state file says the same; SIGTERM exits 0 and removes the socket.
Prints kgpu's answer next to nvidia-smi's; exit status 1 on any mismatch.
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

from kgpu.testing.kubelet import FakeKubelet

RESOURCE = "nvidia.com/gpu"
failures: list[str] = []


def check(what: str, ok: bool, detail: str = "") -> None:
    print(f"  [{'OK' if ok else 'FAIL'}] {what}{': ' + detail if detail else ''}", flush=True)
    if not ok:
        failures.append(what)


def smi_uuids() -> list[str]:
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"], capture_output=True, text=True, check=True
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--driver-root", default=None)
    args = parser.parse_args()
    label = f"--driver-root {args.driver_root}" if args.driver_root else "no --driver-root (auto discovery)"
    print(f"== kgpu device-plugin, NVML backend, {label} ==", flush=True)
    expected = smi_uuids()
    print(f"  nvidia-smi --query-gpu=uuid: {', '.join(expected)}")

    root = Path(tempfile.mkdtemp(dir="/tmp", prefix="kgpu-dp-dev-"))
    kubelet = FakeKubelet(root / "device-plugins").start()
    state_file = root / "state.json"
    command = [sys.executable, "-m", "kgpu", "--backend", "nvml"]
    if args.driver_root:
        command += ["--driver-root", args.driver_root]
    command += ["device-plugin", "--kubelet-dir", str(kubelet.directory), "--state-file", str(state_file)]
    env = dict(os.environ)
    if args.driver_root:
        env.pop("LD_LIBRARY_PATH", None)  # the library must be found under the driver root
    log_path = Path(os.environ.get("OUT", str(root))) / (
        "device-plugin-root.log" if args.driver_root else "device-plugin-auto.log"
    )
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        reg = kubelet.wait_for_registration(RESOURCE, timeout=60)
        check(
            "registered with the kubelet",
            (reg.version, reg.endpoint, reg.get_preferred_allocation_available) == ("v1beta1", "nvidia-gpu.sock", True),
            f"{reg.resource_name} version={reg.version} endpoint={reg.endpoint} "
            f"after {reg.at - started:.2f}s (process start to Register)",
        )
        devices = kubelet.watch(RESOURCE).wait_for(lambda ds: len(ds) > 0, timeout=10)
        for d in devices:
            numa = ",".join(str(n.ID) for n in d.topology.nodes) or "none (sysfs numa_node is -1)"
            print(f"  ListAndWatch: {d.ID}  {d.health}  NUMA {numa}")
        ids = [d.ID for d in devices]
        check("ListAndWatch IDs equal nvidia-smi's UUIDs", ids == expected, f"kgpu={ids} nvidia-smi={expected}")
        check("every device Healthy", all(d.health == "Healthy" for d in devices))
        client = kubelet.client(RESOURCE)
        options = client.options()
        check("GetDevicePluginOptions", options.get_preferred_allocation_available and not options.pre_start_required)
        chosen = client.preferred_allocation(ids, [], 1)
        check("GetPreferredAllocation of 1", len(chosen) == 1 and chosen[0] in ids, str(chosen))
        t0 = time.perf_counter()
        response = client.allocate([[expected[0]]])
        took = (time.perf_counter() - t0) * 1000
        envs = dict(response.container_responses[0].envs)
        check(
            "Allocate returns the GPU",
            envs.get("NVIDIA_VISIBLE_DEVICES") == expected[0],
            f"NVIDIA_VISIBLE_DEVICES={envs.get('NVIDIA_VISIBLE_DEVICES')} ({took:.2f} ms)",
        )
        check("PreStartContainer answers", client.pre_start([expected[0]]).ByteSize() == 0)
        time.sleep(3)  # NVML health events flow meanwhile: nothing should go unhealthy on a good GPU
        latest = kubelet.watch(RESOURCE).latest
        check("still Healthy after 3 s of NVML health monitoring", all(d.health == "Healthy" for d in latest))
        kubelet.restart()
        t_restart = time.monotonic()
        again = kubelet.wait_for_registration(RESOURCE, count=2, timeout=10)
        took_ms = (again.at - t_restart) * 1000
        check("re-registered after a kubelet restart", True, f"{took_ms:.0f} ms after the restart")
        relisted = kubelet.watch(RESOURCE).wait_for(lambda ds: len(ds) == len(expected), timeout=10)
        check("devices listed again after the restart", [d.ID for d in relisted] == expected)
        time.sleep(0.5)
        state = json.loads(state_file.read_text())
        state_devices = state["resources"][0]["devices"]
        check(
            "state file",
            [d["id"] for d in state_devices] == expected and state_devices[0]["allocations"] == 1,
            json.dumps(state_devices[0]),
        )
    except Exception as exc:  # report and fall through to the clean stop
        check("unexpected error", False, repr(exc))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        check("SIGTERM: exit 0", code == 0, f"exit {code}")
        check("SIGTERM: socket removed", not (kubelet.directory / "nvidia-gpu.sock").exists())
        kubelet.stop()
    if failures:
        print(f"  plugin log ({log_path}):")
        print("    " + "\n    ".join(log_path.read_text().splitlines()[-20:]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
