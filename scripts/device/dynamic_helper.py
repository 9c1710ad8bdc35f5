"""Helper for scripts/device/dynamic_shares.sh: dynamic GPU shares placed as the extender places them.

allocate  Start kgpu's API server stand-in (pods and nodes, real HTTP) and the kubelet stand-in, then
          ``kgpu device-plugin`` with a ``sharing.mps.dynamic`` config, NODE_NAME and KUBECONFIG naming the
          stand-in. Once the plugin has published the node's GPUs (``kgpu.io/dynamic-gpus``), kgpu's own
          extender (the filter and bind the chart's kgpu-scheduler calls) places one pod per ``--share``
          (HAMi's ``nvidia.com/gpumem`` MiB and ``nvidia.com/gpucores``) on GPU 0 and writes its assignment
          onto it; the kubelet stand-in then asks the plugin GetPreferredAllocation and Allocate over its unix
          socket, exactly as the kubelet does. Each container's environment goes to ``<out>/<name>.env`` and
          ``<out>/<name>.allocate.json`` (the format scripts/device/mps_helper.py check reads).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NODE = "gpu-node"


def pod_manifest(name: str, memory_mib: int, cores: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "annotations": {}},
        "spec": {"schedulerName": "kgpu-scheduler", "containers": [{
            "name": "main", "image": "any",
            "resources": {"limits": {"nvidia.com/gpu": "1", "nvidia.com/gpumem": str(memory_mib),
                                     "nvidia.com/gpucores": str(cores)}},
        }]},
        "status": {"phase": "Pending"},
    }


def wait(what: str, probe: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"FAIL: {what}: not after {timeout:.0f} s")
        time.sleep(0.2)


def allocate(args: argparse.Namespace) -> int:
    from lightkube import Client, KubeConfig

    from kgpu.scheduler.extender import Extender, ExtenderConfig
    from kgpu.scheduler.kube import KubeApi
    from kgpu.scheduler.names import NODE_GPUS
    from kgpu.scheduler.state import ClusterState
    from kgpu.testing.apiserver import ApiServerStandIn
    from kgpu.testing.kubelet import FakeKubelet

    out = Path(args.out)
    work = Path(tempfile.mkdtemp(dir="/tmp", prefix="kgpu-dyn-"))
    shares = [(s.split(":")[0], int(s.split(":")[1]), int(s.split(":")[2])) for s in args.share]
    with ApiServerStandIn() as api, FakeKubelet(work / "kubelet") as kubelet:
        api.add_node(NODE)
        kubeconfig = api.kubeconfig(work)
        cmd = [sys.executable, "-m", "kgpu", *(["--driver-root", args.driver_root] if args.driver_root else []),
               "device-plugin", "--config-file", args.config_file, "--kubelet-dir", str(work / "kubelet"),
               "--state-file", str(out / "device-plugin-state.json")]
        print(f"$ NODE_NAME={NODE} KUBECONFIG={kubeconfig} {' '.join(cmd)}", flush=True)
        with open(out / "device-plugin.log", "w") as log:
            plugin = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                      env={**os.environ, "NODE_NAME": NODE, "KUBECONFIG": str(kubeconfig)})
        try:
            reg = kubelet.wait_for_registration("nvidia.com/gpu", timeout=60)
            print(f"registered: {reg.resource_name} at {reg.endpoint}", flush=True)
            devices = kubelet.watch("nvidia.com/gpu").wait_for(
                lambda ds: bool(ds) and all(d.health == "Healthy" for d in ds), timeout=60)
            print(f"ListAndWatch: {len(devices)} shares, all Healthy ({devices[0].ID} ...)", flush=True)
            published = wait("the plugin publishes the node's GPUs",
                             lambda: api.node(NODE)["metadata"].get("annotations", {}).get(NODE_GPUS))
            print(f"node annotation {NODE_GPUS}: {published}", flush=True)
            state = ClusterState()
            state.replace_nodes([api.node(NODE)])
            state.synced.set()
            extender = Extender(state, KubeApi(Client(config=KubeConfig.from_file(kubeconfig), trust_env=False)),
                                ExtenderConfig(gpu_policy="binpack"))
            client = kubelet.client("nvidia.com/gpu")
            for name, memory, cores in shares:
                pod = api.add_pod(pod_manifest(name, memory, cores))
                passed = extender.filter({"Pod": pod, "NodeNames": [NODE]})
                if passed["NodeNames"] != [NODE]:
                    raise SystemExit(f"FAIL: the extender refuses {name}: {passed}")
                bound = extender.bind({"PodName": name, "PodNamespace": "default", "PodUID": pod["metadata"]["uid"],
                                       "Node": NODE})
                if bound["Error"]:
                    raise SystemExit(f"FAIL: the extender's bind of {name}: {bound['Error']}")
                state.upsert_pod(api.pod(name))  # what the extender's watch would tell it
                annotations = api.pod(name)["metadata"]["annotations"]
                print(f"extender: {name} bound to {NODE} with hami.io/vgpu-devices-allocated="
                      f"{annotations['hami.io/vgpu-devices-allocated']}", flush=True)
                free = [d.ID for d in kubelet.watch("nvidia.com/gpu").latest if d.health == "Healthy"]
                preferred = client.preferred_allocation(free, [], 1)
                response = client.allocate([preferred]).container_responses[0]
                envs = dict(response.envs)
                (out / f"{name}.env").write_text("".join(f"{k}={v}\n" for k, v in sorted(envs.items())))
                (out / f"{name}.allocate.json").write_text(json.dumps({
                    "pod": name, "device_ids": preferred, "envs": envs,
                    "mounts": [{"container_path": m.container_path, "host_path": m.host_path,
                                "read_only": m.read_only} for m in response.mounts]}, indent=2))
                print(f"Allocate {preferred} for {name}:", flush=True)
                for k, v in sorted(envs.items()):
                    print(f"    {k}={v}")
                after = api.pod(name)["metadata"]["annotations"]
                print(f"    pod {name}: hami.io/bind-phase={after.get('hami.io/bind-phase')}", flush=True)
                with api.lock:  # the kubelet starts the container and reports it
                    api.pods[("default", name)]["status"]["containerStatuses"] = [
                        {"name": "main", "image": "any", "imageID": "", "ready": False, "restartCount": 0}]
                state.upsert_pod(api.pod(name))
        finally:
            plugin.terminate()
            try:
                plugin.wait(15)
            except subprocess.TimeoutExpired:
                plugin.kill()
    shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("allocate")
    a.add_argument("--config-file", required=True)
    a.add_argument("--driver-root")
    a.add_argument("--out", required=True)
    a.add_argument("--share", action="append", required=True, help="NAME:MiB:CORES, e.g. share-30g:30720:25")
    args = parser.parse_args()
    return allocate(args)


if __name__ == "__main__":
    sys.exit(main())
