"""GPUs shared dynamically by the device plugin: the shares it advertises, and Allocate answered from the pod's
share — first with the API calls played by a stand-in object, then end to end: `kgpu device-plugin` and
`kgpu mps-daemon` as processes, kgpu's API server and kubelet stand-ins, and kgpu's own extender placing pods."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from dp_helpers import build_logic, node, plugin_config
from lightkube import Client, KubeConfig

from kgpu.container import AllocationError
from kgpu.deviceplugin.dynamic import DynamicShares, NodeRecord
from kgpu.errors import ConfigError
from kgpu.scheduler.assignment import Assignment, Share
from kgpu.scheduler.extender import Extender
from kgpu.scheduler.handshake import HandshakeError, PendingShare
from kgpu.scheduler.inventory import NodeGPU, decode_gpus
from kgpu.scheduler.kube import KubeApi
from kgpu.scheduler.names import BIND_PHASE, DEVICES_ALLOCATED, NODE_GPUS, PHASE_SUCCESS
from kgpu.scheduler.state import ClusterState
from kgpu.sharing.daemon import spec_for
from kgpu.sharing.dynamic import dynamic_gpus
from kgpu.sharing.layout import build_layout
from kgpu.sharing.paths import MpsPaths
from kgpu.testing.apiserver import ApiServerStandIn
from kgpu.testing.kubelet import FakeKubelet

FAKE_MPS = Path(__file__).parent / "fakes" / "nvidia-cuda-mps-control"
H100_0 = "GPU-04af0a9b-6df0-595a-bd74-7498840294e2"
H100_1 = "GPU-e57918dd-6f99-5f96-95aa-8d09bb69141f"
DYNAMIC = "version: v1\nflags: {{mpsRoot: {root}}}\nsharing:\n  mps:\n    dynamic: {{devices: {devices}, shares: 4}}\n"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(dir="/tmp", prefix="kgpu-dyn-"))  # unix socket paths must stay short
    yield d
    for pid_file in d.glob("mps/*/pipe/nvidia-cuda-mps-control.pid"):
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
    shutil.rmtree(d, ignore_errors=True)


def test_dynamic_gpus_become_shares_of_nvidia_gpu_and_the_other_gpus_stay_whole(short_dir: Path) -> None:
    config = plugin_config(short_dir, DYNAMIC.format(root=short_dir, devices="all"))
    (gpu,) = build_logic(node("h100x8"), config).resources()
    assert gpu.name == "nvidia.com/gpu" and gpu.shared and len(gpu.devices) == 32
    assert [d.id for d in gpu.devices[:4]] == [f"{H100_0}::{n}" for n in range(4)]
    assert {d.gpu_uuid for d in gpu.devices[:4]} == {H100_0} and gpu.devices[0].mps_memory_mib is None
    # slices on other GPUs keep their own names; the same resource cannot mix whole GPUs and shares
    mixed = DYNAMIC.format(root=short_dir, devices="[0]") + \
        "    slices: [{name: gpu-20gb, memory: 20Gi, computePercent: 50, devices: [1]}]\n"
    with pytest.raises(ConfigError, match="on this node also has whole GPUs"):
        build_logic(node("h100x8"), plugin_config(short_dir, mixed))


def test_a_gpu_cannot_be_both_sliced_and_dynamic(short_dir: Path) -> None:
    text = DYNAMIC.format(root=short_dir, devices="all") + \
        "    slices: [{name: gpu-20gb, memory: 20Gi, computePercent: 50, devices: [1]}]\n"
    with pytest.raises(ConfigError, match="a GPU is whole, in fixed slices, or shared dynamically"):
        build_logic(node("h100x8"), plugin_config(short_dir, text))


def test_mps_daemon_runs_a_daemon_per_dynamic_gpu_without_default_limits(short_dir: Path) -> None:
    config = plugin_config(short_dir, DYNAMIC.format(root=short_dir, devices="[0, 3]"))
    assert config.sharing.mps is not None
    layout = build_layout(node("h100x8"), config.sharing.mps)
    assert [(g.index, g.dynamic_shares, g.slices) for g in layout.gpus] == [(0, 4, ()), (3, 4, ())]
    spec = spec_for(layout.gpus[0], MpsPaths(short_dir), Path("/bin/true"), {})
    assert (spec.default_memory_mib, spec.default_compute_percent) == (None, None)  # each client's share is its own


class RecordedClaims:
    """The handshake's API calls, answered from a given pending share."""

    def __init__(self, pending: PendingShare | None) -> None:
        self.pending = pending
        self.claimed: list[list[str]] = []
        self.published: list[tuple[NodeGPU, ...]] = []

    def claim(self, device_ids: Sequence[str]) -> PendingShare:
        if self.pending is None:
            raise HandshakeError("no pod on node n1 is waiting for a GPU share")
        self.claimed.append(list(device_ids))
        return self.pending

    def peek(self, size: int) -> PendingShare:
        return self.claim(["?"] * size)

    def publish(self, gpus: Sequence[NodeGPU]) -> None:
        self.published.append(tuple(gpus))


def pending(share: Share) -> PendingShare:
    return PendingShare("default", "a", "uid-a", "7", 0, "main", (share,), Assignment(((),)))


def dynamic_logic(short_dir: Path, claims: RecordedClaims, **flags: object) -> DynamicShares:
    config = plugin_config(short_dir, DYNAMIC.format(root=short_dir / "mps", devices="all"), **flags)
    assert config.sharing.mps is not None and config.sharing.mps.dynamic is not None
    gpus = dynamic_gpus(node("h100x8"), config.sharing.mps.dynamic, "c")
    return DynamicShares(build_logic(node("h100x8"), config), gpus, claims, MpsPaths(short_dir / "mps"))


def test_allocate_gives_the_pods_gpu_as_an_mps_client_with_exactly_its_share(short_dir: Path) -> None:
    claims = RecordedClaims(pending(Share(H100_1, 30720, 25)))
    plan = dynamic_logic(short_dir, claims).allocate("nvidia.com/gpu", [f"{H100_0}::2"])
    assert claims.claimed == [[f"{H100_0}::2"]]
    # the GPU recorded on the pod, whatever ID the kubelet chose
    assert plan.envs["NVIDIA_VISIBLE_DEVICES"] == H100_1
    assert plan.envs["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=30720M"
    assert plan.envs["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"
    assert plan.envs["CUDA_MPS_PIPE_DIRECTORY"] == str(short_dir / "mps" / H100_1 / "pipe")
    assert {m.container_path for m in plan.mounts} >= {"/dev/shm", str(short_dir / "mps" / H100_1 / "pipe")}


def test_the_index_strategy_keeps_the_mps_environment(short_dir: Path) -> None:
    claims = RecordedClaims(pending(Share(H100_1, 30720, 25)))
    plan = dynamic_logic(short_dir, claims, device_id_strategy="index").allocate("nvidia.com/gpu", [f"{H100_1}::0"])
    assert plan.envs["NVIDIA_VISIBLE_DEVICES"] == "1" and plan.envs["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"


def test_no_pod_waiting_fails_the_allocation_with_the_reason(short_dir: Path) -> None:
    with pytest.raises(AllocationError, match="no pod on node n1 is waiting"):
        dynamic_logic(short_dir, RecordedClaims(None)).allocate("nvidia.com/gpu", [f"{H100_0}::0"])


def test_preferred_ids_are_on_the_pods_gpu(short_dir: Path) -> None:
    logic = dynamic_logic(short_dir, RecordedClaims(pending(Share(H100_1, 1000, 10))))
    available = [f"{H100_0}::0", f"{H100_0}::1", f"{H100_1}::3"]
    assert logic.preferred_allocation("nvidia.com/gpu", available, [], 1) == [f"{H100_1}::3"]
    # nobody waiting: the plain decisions answer
    plain = dynamic_logic(short_dir, RecordedClaims(None))
    assert len(plain.preferred_allocation("nvidia.com/gpu", available, [], 1)) == 1


def test_the_node_record_follows_gpu_health_and_is_withdrawn_on_stop(short_dir: Path) -> None:
    claims = RecordedClaims(None)
    logic = dynamic_logic(short_dir, claims)
    sick: set[str] = set()
    record = NodeRecord(lambda: logic, lambda uuid: uuid not in sick)
    record.tick()
    record.tick()  # nothing changed: nothing written
    assert len(claims.published) == 1 and all(g.healthy for g in claims.published[0])
    sick.add(H100_1)
    record.tick()
    assert [g.healthy for g in claims.published[1][:2]] == [True, False]
    record.withdraw()
    assert claims.published[-1] == ()


def wait(what: str, probe: object, timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()  # type: ignore[operator]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:g} s")
        time.sleep(0.05)


def test_end_to_end_the_extender_places_the_plugin_allocates_exactly_the_recorded_shares(short_dir: Path) -> None:
    # Given `kgpu device-plugin` sharing the 8 GPUs dynamically, with `kgpu mps-daemon` running their daemons,
    # an API server stand-in holding the node, and the kubelet stand-in
    root = short_dir / "mps"
    config = short_dir / "config.yaml"
    config.write_text(DYNAMIC.format(root=root, devices="all"))
    kubelet = FakeKubelet(short_dir / "dp").start()
    procs: list[subprocess.Popen[str]] = []
    with ApiServerStandIn() as api:
        api.add_node("n1")
        env = {**os.environ, "NODE_NAME": "n1", "KUBECONFIG": str(api.kubeconfig(short_dir))}
        try:
            for args in (["device-plugin", "--config-file", str(config), "--kubelet-dir", str(kubelet.directory),
                          "--state-file", str(short_dir / "state.json")],
                         ["mps-daemon", "--config-file", str(config), "--control-binary", str(FAKE_MPS),
                          "--interval", "0.1"]):
                procs.append(subprocess.Popen([sys.executable, "-m", "kgpu", "--simulate", "h100x8", *args], env=env,
                                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            kubelet.wait_for_registration("nvidia.com/gpu")
            watch = kubelet.watch("nvidia.com/gpu")
            watch.wait_for(lambda ds: len(ds) == 32 and all(d.health == "Healthy" for d in ds), timeout=60)
            # Then the plugin has published its GPUs where the extender reads them
            text = wait("the node's dynamic GPUs", lambda: api.node("n1")["metadata"]["annotations"].get(NODE_GPUS))
            assert [g.uuid for g in decode_gpus(str(text))][:2] == [H100_0, H100_1]
            # When kgpu's extender places two pods (binpack: both on one GPU) and the kubelet allocates each
            state = ClusterState()
            state.replace_nodes([api.node("n1")])
            state.synced.set()
            extender = Extender(state, KubeApi(Client(config=KubeConfig.from_file(env["KUBECONFIG"]),
                                                      trust_env=False)))
            client = kubelet.client("nvidia.com/gpu")
            envs = {}
            for name, memory, cores in (("a", 30720, 25), ("b", 40960, 50)):
                binpack = {"hami.io/gpu-scheduler-policy": "binpack"}
                pod = api.add_pod({"metadata": {"name": name, "annotations": binpack},
                                   "spec": {"containers": [{"name": "main", "resources": {"limits": {
                                       "nvidia.com/gpu": "1", "nvidia.com/gpumem": str(memory),
                                       "nvidia.com/gpucores": str(cores)}}}]}})
                assert extender.filter({"Pod": pod, "NodeNames": ["n1"]})["NodeNames"] == ["n1"]
                assert extender.bind({"PodName": name, "PodNamespace": "default", "PodUID": pod["metadata"]["uid"],
                                      "Node": "n1"}) == {"Error": ""}
                state.upsert_pod(api.pod(name))
                free = [d.ID for d in watch.latest]
                ids = client.preferred_allocation(free, [], 1)
                response = client.allocate([ids]).container_responses[0]
                envs[name] = (ids, dict(response.envs))
                with api.lock:  # the kubelet reports the container
                    api.pods[("default", name)]["status"]["containerStatuses"] = [
                        {"name": "main", "image": "busybox", "imageID": "", "ready": False, "restartCount": 0}]
                state.upsert_pod(api.pod(name))
            # Then each container got exactly the share recorded on its pod, on that GPU, and both pods are done
            for name, limit, threads in (("a", "0=30720M", "25"), ("b", "0=40960M", "50")):
                share = api.pod(name)["metadata"]["annotations"][DEVICES_ALLOCATED]
                uuid = share.split(",")[0]
                ids, got = envs[name]
                assert (got["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"], got["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"]) == \
                    (limit, threads)
                assert got["NVIDIA_VISIBLE_DEVICES"] == uuid and ids[0].startswith(uuid)
                assert api.pod(name)["metadata"]["annotations"][BIND_PHASE] == PHASE_SUCCESS
            assert envs["a"][1]["NVIDIA_VISIBLE_DEVICES"] == envs["b"][1]["NVIDIA_VISIBLE_DEVICES"]
            # And a pod placed by another scheduler is refused, naming what to do
            stray = api.add_pod({"metadata": {"name": "stray"}, "spec": {"nodeName": "n1", "containers": [
                {"name": "main", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}})
            assert stray
            with pytest.raises(Exception, match="schedulerName: kgpu-scheduler"):
                client.allocate([[free[-1]]])
        finally:
            for proc in reversed(procs):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.communicate(timeout=60)
            kubelet.stop()
        # And on SIGTERM the plugin withdrew the node's record
        assert NODE_GPUS not in api.node("n1")["metadata"]["annotations"]
