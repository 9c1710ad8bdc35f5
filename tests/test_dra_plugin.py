"""The DRA driver end to end against a kubelet stand-in speaking the real gRPC over unix sockets:
registration, prepare into CDI specs, MPS shares, the checkpoint across restarts, slices and health."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dra_helpers import DRIVER, NODE, Running, StaticClaims, claim, gpu_config, make_driver, ref

from kgpu.dra.api import drahealth_pb2 as health_pb
from kgpu.dra.checkpoint import STARTED, Checkpoint, Entry, save
from kgpu.dra.prepare import PreparedClaim, PreparedDevice
from kgpu.sharing.daemon import pid_alive
from kgpu.testing.dra import DraKubelet

GIB = 1024


@pytest.fixture
def root() -> Iterator[Path]:
    # Unix socket paths must stay short: pytest's tmp_path can be longer than the 107 bytes allowed.
    path = Path(tempfile.mkdtemp(prefix="kgpu-dra-", dir="/tmp"))
    yield path
    for pid_file in path.glob("mps/*/pipe/nvidia-cuda-mps-control.pid"):  # never leave a fake daemon behind
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), 15)
    shutil.rmtree(path, ignore_errors=True)


def spec_of(rig_cdi: Path, uid: str) -> dict[str, object]:
    return json.loads((rig_cdi / f"k8s.{DRIVER}-claim_{uid}.json").read_text())


def env_of(spec: dict[str, object]) -> dict[str, str]:
    """Every env entry of a spec, spec-wide and per device, as the runtime would apply them."""
    entries = list(spec["containerEdits"].get("env", []))  # type: ignore[attr-defined]
    for d in spec["devices"]:  # type: ignore[attr-defined]
        entries += d["containerEdits"].get("env", [])
    return dict(e.split("=", 1) for e in entries)


def test_a_registered_driver_publishes_the_gpus_and_prepares_a_whole_gpu_into_a_cdi_spec(root: Path) -> None:
    # Given an 8x H100 node and a claim the scheduler gave gpu-3
    c = claim("train", ["gpu-3"])
    rig = make_driver(root, claims=StaticClaims(c))
    gpu3 = rig.inventory.by_index(3)
    assert gpu3 is not None
    with DraKubelet(rig.registry) as kubelet, Running(rig):
        # when the driver runs, the kubelet accepts its registration and its slice lists the GPUs
        reg = kubelet.wait_for_registration(DRIVER)
        assert reg.endpoint == str(root / "plugins" / DRIVER / "dra.sock")
        assert reg.versions == ("v1.DRAPlugin",)
        slices = rig.publisher.wait_for(lambda devices: len(devices) == 8)
        assert [s["metadata"]["name"] for s in slices] == [f"{NODE}-{DRIVER}"]
        assert slices[0]["spec"]["pool"] == {"name": NODE, "generation": 1, "resourceSliceCount": 1}
        # and the kubelet's NodePrepareResources for the claim
        with kubelet.client(DRIVER) as plugin:
            answer = plugin.prepare([ref(c)])
            uid = c["metadata"]["uid"]
            prepared = answer.claims[uid]
            assert prepared.error == ""
            [device] = prepared.devices
            # then it gets gpu-3 with a CDI id of the claim's spec, which names the GPU
            assert (device.pool_name, device.device_name, list(device.request_names)) == (NODE, "gpu-3", ["gpu"])
            assert list(device.cdi_device_ids) == [f"k8s.{DRIVER}/claim={uid}-gpu-3"]
            spec = spec_of(rig.cdi_root, uid)
            assert spec["kind"] == f"k8s.{DRIVER}/claim"
            assert env_of(spec)["NVIDIA_VISIBLE_DEVICES"] == gpu3.uuid
            assert "CUDA_MPS_PIPE_DIRECTORY" not in env_of(spec)
            # and unprepare removes the spec and forgets the claim
            assert plugin.unprepare([ref(c)]).claims[uid].error == ""
    assert rig.cdi_specs() == []
    assert json.loads(rig.checkpoint.read_text())["claims"] == {}


def test_two_memory_shares_of_one_gpu_are_mps_clients_of_its_daemon_with_their_own_limits(root: Path) -> None:
    # Given two claims sharing gpu-0 through consumable capacity: 30 GiB with 25 % of the SMs, 60 GiB with 50 %
    small = claim("small", ["gpu-0"], memory="30Gi", configs=[gpu_config(defaultActiveThreadPercentage=25)])
    large = claim("large", ["gpu-0"], memory="60Gi", configs=[gpu_config(defaultActiveThreadPercentage=50)])
    rig = make_driver(root, claims=StaticClaims(small, large))
    uuid0 = rig.inventory.gpus[0].uuid
    pid_file = root / "mps" / uuid0 / "pipe" / "nvidia-cuda-mps-control.pid"
    with DraKubelet(rig.registry) as kubelet, Running(rig), kubelet.client(DRIVER) as plugin:
        # when both are prepared in one request
        answer = plugin.prepare([ref(small), ref(large)])
        for c in (small, large):
            assert answer.claims[c["metadata"]["uid"]].error == ""
            assert answer.claims[c["metadata"]["uid"]].devices[0].share_id == \
                c["status"]["allocation"]["devices"]["results"][0]["shareID"]
        # then each container gets the GPU's daemon and its own limits, as the device plugin's MPS slices do
        envs = {c["metadata"]["name"]: env_of(spec_of(rig.cdi_root, c["metadata"]["uid"])) for c in (small, large)}
        assert envs["small"]["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == f"0={30 * GIB}M"
        assert envs["small"]["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"
        assert envs["large"]["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == f"0={60 * GIB}M"
        assert envs["large"]["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "50"
        for env in envs.values():
            assert env["CUDA_MPS_PIPE_DIRECTORY"] == str(root / "mps" / uuid0 / "pipe")
            assert env["NVIDIA_VISIBLE_DEVICES"] == uuid0
        mounts = spec_of(rig.cdi_root, small["metadata"]["uid"])["devices"][0]["containerEdits"]["mounts"]  # type: ignore[index]
        assert {(m["hostPath"], m["containerPath"]) for m in mounts} >= {
            (str(root / "mps" / uuid0 / "pipe"), str(root / "mps" / uuid0 / "pipe")),
            (str(root / "mps" / "shm"), "/dev/shm"),
        }
        # and one control daemon runs for the GPU, until its last client's claim is unprepared
        daemon = int(pid_file.read_text())
        assert pid_alive(daemon)
        assert plugin.unprepare([ref(small)]).claims[small["metadata"]["uid"]].error == ""
        assert pid_alive(daemon)
        assert plugin.unprepare([ref(large)]).claims[large["metadata"]["uid"]].error == ""
        assert not pid_alive(daemon)
    assert json.loads((root / "mps" / uuid0 / "status.json").read_text())["state"] == "stopped"


def test_a_restart_between_prepare_and_unprepare_neither_loses_nor_prepares_twice(root: Path) -> None:
    # Given a share of gpu-1 prepared by a driver that is then stopped (SIGTERM's path)
    c = claim("job", ["gpu-1"], memory="20Gi")
    claims = StaticClaims(c)
    uid = c["metadata"]["uid"]
    first = make_driver(root, claims=claims)
    uuid1 = first.inventory.gpus[1].uuid
    with DraKubelet(first.registry) as kubelet, Running(first), kubelet.client(DRIVER) as plugin:
        before = plugin.prepare([ref(c)]).claims[uid]
        assert before.error == ""
    pid = int((root / "mps" / uuid1 / "pipe" / "nvidia-cuda-mps-control.pid").read_text())
    spec = spec_of(first.cdi_root, uid)
    assert pid_alive(pid)  # the daemon outlives the plugin: its clients keep running
    reads = claims.reads
    # when a new driver starts on the same node files and the kubelet asks again
    second = make_driver(root, claims=claims)
    with DraKubelet(second.registry) as kubelet, Running(second), kubelet.client(DRIVER) as plugin:
        again = plugin.prepare([ref(c)]).claims[uid]
        # then the answer is the same, the claim was not read or prepared again, the daemon was adopted
        assert [(d.device_name, list(d.cdi_device_ids)) for d in again.devices] == \
            [(d.device_name, list(d.cdi_device_ids)) for d in before.devices]
        assert claims.reads == reads
        assert int((root / "mps" / uuid1 / "pipe" / "nvidia-cuda-mps-control.pid").read_text()) == pid
        assert spec_of(second.cdi_root, uid) == spec
        # and unprepare after the restart cleans up everything the first driver made
        assert plugin.unprepare([ref(c)]).claims[uid].error == ""
        assert not pid_alive(pid)
    assert second.cdi_specs() == []


def test_a_prepare_cut_short_by_a_crash_is_rolled_back_at_start(root: Path) -> None:
    # Given a checkpoint that says a claim's prepare started but never finished, and its half-written spec
    rig = make_driver(root)
    uid = "2b0c2d3e-0000-4000-8000-000000000001"
    device = PreparedDevice("gpu", NODE, "gpu-5", f"{uid}-gpu-5", rig.inventory.gpus[5].uuid)
    save(rig.checkpoint, Checkpoint(DRIVER, NODE, "boot-1", {uid: Entry(STARTED, PreparedClaim(uid, "ns", "c",
                                                                                              (device,)))}))
    rig.cdi_root.mkdir(parents=True)
    (rig.cdi_root / f"k8s.{DRIVER}-claim_{uid}.json").write_text("{}")
    # when the driver starts
    with DraKubelet(rig.registry) as kubelet, Running(rig):
        kubelet.wait_for_registration(DRIVER)
        # then the claim is gone from the checkpoint and from the CDI directory
        assert json.loads(rig.checkpoint.read_text())["claims"] == {}
        assert rig.cdi_specs() == []


def test_a_checkpoint_from_an_earlier_boot_is_unprepared_whole(root: Path) -> None:
    # Given a claim prepared before the node rebooted
    c = claim("old", ["gpu-2"])
    first = make_driver(root, claims=StaticClaims(c), boot_id="boot-1")
    with DraKubelet(first.registry) as kubelet, Running(first), kubelet.client(DRIVER) as plugin:
        assert plugin.prepare([ref(c)]).claims[c["metadata"]["uid"]].error == ""
    # when the driver starts in a new boot, then no container can hold the claim any more: it is dropped
    second = make_driver(root, boot_id="boot-2")
    with DraKubelet(second.registry) as kubelet, Running(second):
        kubelet.wait_for_registration(DRIVER)
        assert second.cdi_specs() == []
        assert json.loads(second.checkpoint.read_text())["bootID"] == "boot-2"


def test_every_claim_of_a_request_gets_an_answer_and_one_failure_spoils_no_other(root: Path) -> None:
    good = claim("good", ["gpu-0"])
    bad_config = claim("bad", ["gpu-1"], configs=[gpu_config("Spatial")])
    stale = claim("stale", ["gpu-2"])
    rig = make_driver(root, claims=StaticClaims(good, bad_config, stale))
    with DraKubelet(rig.registry) as kubelet, Running(rig), kubelet.client(DRIVER) as plugin:
        missing = ("default", "0d3b5e6a-0000-4000-8000-00000000dead", "gone")
        wrong_uid = ("default", "0d3b5e6a-0000-4000-8000-00000000beef", "stale")
        answer = plugin.prepare([ref(good), ref(bad_config), missing, wrong_uid])
        assert set(answer.claims) == {good["metadata"]["uid"], bad_config["metadata"]["uid"], missing[1],
                                      wrong_uid[1]}
        assert answer.claims[good["metadata"]["uid"]].error == ""
        assert "unknown GPU sharing strategy: Spatial" in answer.claims[bad_config["metadata"]["uid"]].error
        assert "does not exist" in answer.claims[missing[1]].error
        assert "the kubelet asked for" in answer.claims[wrong_uid[1]].error
        # and a claim the driver never prepared is unprepared without complaint
        assert plugin.unprepare([missing]).claims[missing[1]].error == ""
    assert rig.cdi_specs() == [f"k8s.{DRIVER}-claim_{good['metadata']['uid']}.json"]


def test_a_gpu_that_is_not_shared_goes_to_one_claim_only(root: Path) -> None:
    first = claim("first", ["gpu-4"])
    second = claim("second", ["gpu-4"])
    rig = make_driver(root, claims=StaticClaims(first, second), shares="disabled")
    with DraKubelet(rig.registry) as kubelet, Running(rig), kubelet.client(DRIVER) as plugin:
        assert plugin.prepare([ref(first)]).claims[first["metadata"]["uid"]].error == ""
        error = plugin.prepare([ref(second)]).claims[second["metadata"]["uid"]].error
        assert "requested device gpu-4 is already allocated to different claim default/first" in error


def test_a_fatal_xid_takes_the_gpu_out_of_the_slice_and_onto_the_health_stream(root: Path) -> None:
    # Given a node whose health events come from a file
    events = root / "events.jsonl"
    events.touch()
    rig = make_driver(root, events=events)
    uuid2, uuid3 = rig.inventory.gpus[2].uuid, rig.inventory.gpus[3].uuid
    with DraKubelet(rig.registry) as kubelet, Running(rig), kubelet.client(DRIVER) as plugin:
        watch = plugin.watch_health()
        watch.wait_for(lambda u: len(u) == 8 and all(h == health_pb.HEALTHY for h, _ in u.values()))
        rig.publisher.wait_for(lambda devices: len(devices) == 8)
        # when GPU 2 raises XID 79 (fell off the bus) and GPU 3 XID 13 (the application's fault)
        with events.open("a") as f:
            f.write(json.dumps({"uuid": uuid3, "kind": "xid", "xid": 13}) + "\n")
            f.write(json.dumps({"uuid": uuid2, "kind": "xid", "xid": 79}) + "\n")
        # then gpu-2 leaves the slice, gpu-3 stays, and the kubelet hears that gpu-2 is unhealthy and why
        rig.publisher.wait_for(lambda devices: "gpu-2" not in devices and len(devices) == 7)
        update = watch.wait_for(lambda u: u["gpu-2"][0] == health_pb.UNHEALTHY)
        assert update["gpu-2"][1].endswith("XID 79")
        assert update["gpu-3"][0] == health_pb.HEALTHY
        # and once it recovers it is back
        with events.open("a") as f:
            f.write(json.dumps({"uuid": uuid2, "kind": "recovered"}) + "\n")
        rig.publisher.wait_for(lambda devices: "gpu-2" in devices)
        watch.wait_for(lambda u: u["gpu-2"][0] == health_pb.HEALTHY)
        watch.close()


def test_in_taint_mode_an_unhealthy_gpu_stays_with_nvidias_taint(root: Path) -> None:
    events = root / "events.jsonl"
    events.touch()
    rig = make_driver(root, events=events, unhealthy="taint")
    with DraKubelet(rig.registry), Running(rig):
        rig.publisher.wait_for(lambda devices: len(devices) == 8)
        with events.open("a") as f:
            f.write(json.dumps({"uuid": rig.inventory.gpus[6].uuid, "kind": "xid", "xid": 48}) + "\n")
            f.write(json.dumps({"uuid": rig.inventory.gpus[7].uuid, "kind": "lost"}) + "\n")
        slices = rig.publisher.wait_for(lambda d: "taints" in d["gpu-6"] and "taints" in d["gpu-7"])
        devices = {d["name"]: d for d in slices[0]["spec"]["devices"]}
        assert devices["gpu-6"]["taints"] == [{"key": f"{DRIVER}/xid", "value": "48", "effect": "NoSchedule"}]
        assert devices["gpu-7"]["taints"] == [{"key": f"{DRIVER}/gpu-lost", "effect": "NoSchedule"}]
        assert "taints" not in devices["gpu-5"]


def test_slices_the_kubelet_deleted_and_a_refused_publish_are_published_again(root: Path) -> None:
    rig = make_driver(root)
    rig.driver.settings = dataclasses.replace(rig.driver.settings, resync_interval=0.1)
    rig.publisher.fail = 1  # the API server is away at first
    with DraKubelet(rig.registry), Running(rig):
        rig.publisher.wait_for(lambda devices: len(devices) == 8)
        published = len(rig.publisher.applied)
        # when a starting kubelet deletes the node's slices, then the driver publishes them again
        rig.publisher.wipe()
        rig.publisher.wait_for(lambda devices: len(devices) == 8 and len(rig.publisher.applied) > published)


def test_a_removed_registration_socket_is_served_and_registered_again(root: Path) -> None:
    rig = make_driver(root)
    with DraKubelet(rig.registry) as kubelet, Running(rig):
        first = kubelet.wait_for_registration(DRIVER)
        first.socket.unlink()
        again = kubelet.wait_for_registration(DRIVER, after=first.at)
        assert again.socket == first.socket and again.socket.is_socket()
    # and SIGTERM's stop removes both sockets, so the kubelet sees the plugin go
    assert not (root / "plugins_registry" / f"{DRIVER}-reg.sock").exists()
    assert not (root / "plugins" / DRIVER / "dra.sock").exists()


def test_mig_devices_are_published_and_prepared_by_their_own_uuid(root: Path) -> None:
    c = claim("mig", [("mig", "gpu-0-mig-1g10gb-19-2")])
    rig = make_driver(root, simulate="a100-mig", claims=StaticClaims(c))
    mig = next(m for m in rig.inventory.mig_devices if m.placement_start == 2)
    with DraKubelet(rig.registry) as kubelet, Running(rig), kubelet.client(DRIVER) as plugin:
        rig.publisher.wait_for(lambda devices: "gpu-1" in devices)
        assert sorted(rig.publisher.devices()) == [
            "gpu-0-mig-1g10gb-19-2", "gpu-0-mig-1g10gb-19-3", "gpu-0-mig-2g20gb-14-0", "gpu-0-mig-3g40gb-9-4", "gpu-1",
        ]
        answer = plugin.prepare([ref(c)]).claims[c["metadata"]["uid"]]
        assert answer.error == ""
        assert env_of(spec_of(rig.cdi_root, c["metadata"]["uid"]))["NVIDIA_VISIBLE_DEVICES"] == mig.uuid


def test_a_new_mig_layout_found_by_a_rescan_reaches_the_slice(root: Path) -> None:
    # Given GPU 0 of the A100 node in MIG mode, published as its MIG devices
    rig = make_driver(root, simulate="a100-mig")
    gpus = rig.inventory.gpus
    whole = dataclasses.replace(rig.inventory, gpus=(dataclasses.replace(gpus[0], mig_enabled=False, mig_devices=()),
                                                     gpus[1]))
    reconfigured = threading.Event()
    rig.driver.rescan = lambda: whole if reconfigured.is_set() else rig.inventory
    rig.driver.settings = dataclasses.replace(rig.driver.settings, rescan_interval=0.05)
    with DraKubelet(rig.registry), Running(rig):
        rig.publisher.wait_for(lambda devices: len(devices) == 5)
        generation = rig.publisher.applied[-1][0]["spec"]["pool"]["generation"]
        # when MIG is turned off on it, then the next rescan publishes the whole GPU in a newer generation
        reconfigured.set()
        slices = rig.publisher.wait_for(lambda devices: sorted(devices) == ["gpu-0", "gpu-1"])
        assert slices[0]["spec"]["pool"]["generation"] > generation
