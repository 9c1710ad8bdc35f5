"""The real cluster the e2e suite runs on: the lab from ../shared/lab, or the one $KUBECONFIG names.

Everything here shells out to the tools an admin uses (the lab script, kubectl) and waits on states,
never on the clock: every wait has a deadline that only matters when something is broken.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[2]


def _find_lab() -> Path:
    """$KGPU_LAB, else ../shared/lab/lab beside the clone (or beside the main checkout of a git worktree)."""
    if os.environ.get("KGPU_LAB"):
        return Path(os.environ["KGPU_LAB"])
    beside = REPO.parent / "shared" / "lab" / "lab"
    if not beside.exists():
        common = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--path-format=absolute",
                                 "--git-common-dir"], capture_output=True, text=True).stdout.strip()
        if common:
            beside = Path(common).parent.parent / "shared" / "lab" / "lab"
    return beside


LAB = _find_lab()
GPU = "nvidia.com/gpu"
DEVICE_CHECKPOINT = Path("/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint")
"""The kubelet's record of which device plugin advertised which devices, read when it starts."""

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 120.0, interval: float = 0.5) -> T:
    """Poll ``probe`` until it returns something true (a value, True, a non-empty list); fail naming ``what``
    and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = probe()
        except (subprocess.CalledProcessError, OSError, KeyError, ValueError) as exc:
            value, last = None, exc
        else:
            last = value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:g}s (last: {last!r})")
        time.sleep(interval)


def lab(*args: str, version: str | None = None) -> str:
    """Run ``lab ARGS`` (its progress goes to our stderr) and return its stdout."""
    env = dict(os.environ)
    env.pop("LAB_VERSION", None)
    if version:
        env["LAB_VERSION"] = version
    done = subprocess.run(["bash", str(LAB), *args], env=env, stdout=subprocess.PIPE, text=True,
                          stderr=sys.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"lab {' '.join(args)} exited {done.returncode}")
    return done.stdout


def running_lab_version() -> str | None:
    """``1.36``/``1.28`` when a lab runs on this machine, else None."""
    done = subprocess.run(["bash", str(LAB), "status"], capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("version: v") and done.returncode == 0:
            return ".".join(line.split()[1].lstrip("v").split(".")[:2])
    return None


def parse_exports(text: str) -> dict[str, str]:
    """``export A=1 B="$PATH"`` lines as a dict, with $VARs expanded from our environment."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if words[:1] != ["export"]:
            continue
        for word in words[1:]:
            key, _, value = word.partition("=")
            env[key] = os.path.expandvars(value)
    return env


def start_lab(version: str) -> Cluster:
    """The lab of ``version``, up (switching from the other version if that one runs)."""
    running = running_lab_version()
    if running and running != version:
        lab("down")
    exports = parse_exports(lab("up", version=version))
    env = dict(os.environ) | exports
    return Cluster(env=env, node=os.environ.get("LAB_NODE_NAME", "lab-node"), on_lab=True, version=version)


def from_kubeconfig() -> Cluster:
    """The cluster $KUBECONFIG names; its first node carrying nvidia.com/gpu.present, else its first node."""
    cluster = Cluster(env=dict(os.environ), node="", on_lab=False, version="")
    nodes = cluster.get("nodes")["items"]
    gpu_nodes = [n for n in nodes if n["metadata"].get("labels", {}).get("nvidia.com/gpu.present") == "true"]
    cluster.node = (gpu_nodes or nodes)[0]["metadata"]["name"]
    cluster.version = cluster.get("node", cluster.node)["status"]["nodeInfo"]["kubeletVersion"]
    return cluster


@dataclass
class Cluster:
    env: dict[str, str]
    """Environment for kubectl and the lab (KUBECONFIG, PATH with the lab's kubectl first)."""
    node: str
    on_lab: bool
    """The node is this machine (the lab): node files can be laid out and read directly."""
    version: str
    created_namespaces: list[str] = field(default_factory=list)

    @property
    def kubeconfig(self) -> Path:
        return Path(self.env["KUBECONFIG"]).expanduser()

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120) -> str:
        done = subprocess.run(["kubectl", *args], env=self.env, input=input, capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise subprocess.CalledProcessError(done.returncode, ["kubectl", *args], done.stdout, done.stderr)
        return done.stdout

    def get(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def apply(self, manifest: dict[str, Any] | list[dict[str, Any]]) -> None:
        items = manifest if isinstance(manifest, list) else [manifest]
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))

    def node_object(self) -> dict[str, Any]:
        node: dict[str, Any] = self.get("node", self.node)
        return node

    def allocatable(self, resource: str = GPU) -> int:
        return int(self.node_object()["status"].get("allocatable", {}).get(resource, "0"))

    def node_labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.node_object()["metadata"].get("labels", {})
        return labels

    def forget_stale_resource(self, resource: str) -> None:
        """Remove ``resource`` from the Node's status when no device plugin advertises it any more.

        A Node keeps an extended resource in its status after the plugin that advertised it is gone when
        the kubelet restarted without its device checkpoint (it then never mentions the resource again), so
        a GPU pod could even be admitted on it. Kubernetes' documented way out is a JSON patch of the
        status; the suite does it before an install so that its timings start from zero GPUs."""
        status = self.node_object()["status"]
        if resource not in status.get("capacity", {}) and resource not in status.get("allocatable", {}):
            return
        key = resource.replace("~", "~0").replace("/", "~1")
        ops = [{"op": "remove", "path": f"/status/{part}/{key}"} for part in ("capacity", "allocatable")
               if resource in status.get(part, {})]
        self.kubectl("patch", "node", self.node, "--subresource=status", "--type=json", "-p", json.dumps(ops))

    def import_image(self, archive: Path) -> None:
        if not self.on_lab:
            raise RuntimeError("importing an image needs the lab; on another cluster, make the image pullable")
        lab("import", str(archive))

    def restart_kubelet(self, forget_devices: bool = False) -> None:
        """Stop the lab's kubelet (SIGTERM, as systemctl restart does) and start it again with ``lab up``;
        ``forget_devices``: without its device checkpoint, so it no longer knows the resources of device
        plugins that went away (``lab up`` does the same when the kubelet root changes hands)."""
        if not self.on_lab:
            raise RuntimeError("restarting the kubelet needs the lab")
        pid = int((self.kubeconfig.parent / "run" / "kubelet.pid").read_text())
        os.kill(pid, 15)
        wait_for("the kubelet to exit", lambda: not Path(f"/proc/{pid}").exists(), timeout=60)
        if forget_devices:
            DEVICE_CHECKPOINT.unlink(missing_ok=True)
        lab("up", version=self.version)

    def extended_resources(self, prefix: str = "nvidia.com/") -> dict[str, int]:
        """The Node's ``prefix`` resources, allocatable count by name (0 for one kept in capacity alone)."""
        status = self.node_object()["status"]
        names = {**status.get("capacity", {}), **status.get("allocatable", {})}
        return {k: int(status.get("allocatable", {}).get(k, 0)) for k in sorted(names) if k.startswith(prefix)}

    def forget_vanished_resources(self, resources: list[str]) -> None:
        """Take ``resources``, whose device plugin stopped advertising them, off the kubelet and the Node.

        The kubelet keeps such a resource for 5 minutes at its old capacity (allocatable 0), then at 0 for
        good, and puts it back into the Node's status when it is removed there; only a kubelet that never
        registered it lets it go. So the kubelet restarts without its device checkpoint (the plugins still
        running register again, as after any kubelet restart), then the resource is dropped from the Node."""
        status = self.node_object()["status"]
        present = [r for r in resources if r in status.get("capacity", {}) or r in status.get("allocatable", {})]
        if not present:
            return
        self.restart_kubelet(forget_devices=True)
        for resource in present:
            self.forget_stale_resource(resource)

    def pod_phase(self, namespace: str, name: str) -> str:
        return str(self.get("pod", "-n", namespace, name)["status"].get("phase", ""))

    def wait_pod_phase(self, namespace: str, name: str, phases: tuple[str, ...], timeout: float = 120) -> str:
        return wait_for(f"pod {namespace}/{name} in {'/'.join(phases)}",
                        lambda: (p := self.pod_phase(namespace, name)) in phases and p, timeout)

    def daemonsets_ready(self, namespace: str, selector: str) -> list[str] | None:
        """Names of the DaemonSets matching ``selector`` once each has all its pods ready and updated."""
        items = self.get("daemonsets", "-n", namespace, "-l", selector)["items"]
        if not items:
            return None
        for ds in items:
            st = ds["status"]
            want = st.get("desiredNumberScheduled", 0)
            if want == 0 or st.get("numberReady", 0) != want or st.get("updatedNumberScheduled", 0) != want:
                return None
            if st.get("observedGeneration") != ds["metadata"]["generation"]:
                return None
        return sorted(ds["metadata"]["name"] for ds in items)

    def create_namespace(self, name: str) -> str:
        self.kubectl("create", "namespace", name)
        self.created_namespaces.append(name)
        return name

    def delete_namespace(self, name: str) -> None:
        self.kubectl("delete", "namespace", name, "--ignore-not-found", "--wait=true", timeout=180)
        if name in self.created_namespaces:
            self.created_namespaces.remove(name)

    def state_report(self, namespace: str = "kube-system", selector: str = "app.kubernetes.io/name=kgpu") -> str:
        """What an admin looks at when something is wrong: pods, recent events, the last log lines of kgpu's
        pods. Printed under a failed test; never raises."""
        parts = []
        for title, args in (
            ("pods", ("get", "pods", "-A", "-o", "wide")),
            ("events (last 25)", ("get", "events", "-A", "--sort-by=.lastTimestamp")),
        ):
            done = subprocess.run(["kubectl", *args], env=self.env, capture_output=True, text=True, timeout=30)
            lines = (done.stdout or done.stderr).splitlines()
            parts.append(f"--- {title}\n" + "\n".join(lines[-26:] if "events" in title else lines))
        try:
            pods = self.get("pods", "-n", namespace, "-l", selector)["items"]
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, ValueError):
            pods = []
        for pod in pods:
            name = pod["metadata"]["name"]
            done = subprocess.run(["kubectl", "logs", "-n", namespace, name, "--all-containers", "--tail", "15"],
                                  env=self.env, capture_output=True, text=True, timeout=30)
            parts.append(f"--- logs {namespace}/{name}\n{(done.stdout or done.stderr).rstrip()}")
        return "\n".join(parts)

