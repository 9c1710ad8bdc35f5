"""The extender's and the device plugin's API calls, through lightkube, against kgpu's API server stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lightkube import Client, KubeConfig
from scheduler_helpers import gpu_pod, gpus
from typer.testing import CliRunner

from kgpu.cli import app
from kgpu.scheduler.assignment import Assignment, Share, encode
from kgpu.scheduler.extender import ApiConflict, ApiFailure
from kgpu.scheduler.handshake import HandshakeError
from kgpu.scheduler.inventory import decode_gpus
from kgpu.scheduler.kube import KubeApi, NodeShares, withdraw_node_gpus
from kgpu.scheduler.names import BIND_PHASE, DEVICES_ALLOCATED, DEVICES_TO_ALLOCATE, NODE_GPUS, PHASE_SUCCESS
from kgpu.testing.apiserver import ApiServerStandIn


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[ApiServerStandIn, Client]]:
    with ApiServerStandIn() as stand_in:
        client = Client(config=KubeConfig.from_file(stand_in.kubeconfig(tmp_path)), trust_env=False)
        yield stand_in, client


def test_assignment_patch_carries_uid_and_resource_version_preconditions(
        api: tuple[ApiServerStandIn, Client]) -> None:
    stand_in, client = api
    pod = stand_in.add_pod(gpu_pod("a", memory=1000))
    kube = KubeApi(client)
    meta = pod["metadata"]
    patched = kube.patch_pod_annotations("default", "a", meta["uid"], meta["resourceVersion"], {"x": "1"})
    assert patched["metadata"]["annotations"]["x"] == "1"
    with pytest.raises(ApiConflict):  # the version read before is stale now
        kube.patch_pod_annotations("default", "a", meta["uid"], meta["resourceVersion"], {"x": "2"})
    with pytest.raises(ApiConflict):  # a pod of the same name, but not the same pod
        kube.patch_pod_annotations("default", "a", "another-uid", "", {"x": "2"})
    assert kube.get_pod("default", "a")["metadata"]["annotations"]["x"] == "1"


def test_binding_and_events(api: tuple[ApiServerStandIn, Client]) -> None:
    stand_in, client = api
    pod = stand_in.add_pod(gpu_pod("a"))
    kube = KubeApi(client)
    kube.bind("default", "a", pod["metadata"]["uid"], "n1")
    assert stand_in.pod("a")["spec"]["nodeName"] == "n1"
    with pytest.raises(ApiConflict):
        kube.bind("default", "a", pod["metadata"]["uid"], "n2")
    kube.event(pod, "FilteringFailed", "no node can take it")
    (event,) = stand_in.events
    assert event["reason"] == "FilteringFailed" and event["involvedObject"]["name"] == "a"
    with pytest.raises(ApiFailure, match="404"):
        kube.get_pod("default", "missing")


def test_the_device_plugin_publishes_its_gpus_and_claims_the_pod_in_flight(
        api: tuple[ApiServerStandIn, Client]) -> None:
    stand_in, client = api
    stand_in.add_node("n1")
    shares = NodeShares(client, "n1")
    shares.publish(gpus(2, node="n1"))
    assert decode_gpus(stand_in.node("n1")["metadata"]["annotations"][NODE_GPUS]) == gpus(2, node="n1")
    assigned = gpu_pod("a", memory=20000, cores=30)
    text = encode(Assignment(((Share("GPU-n1-0001", 20000, 30),),)))
    assigned["metadata"]["annotations"].update({DEVICES_ALLOCATED: text, DEVICES_TO_ALLOCATE: text,
                                                BIND_PHASE: "allocating"})
    assigned["spec"]["nodeName"] = "n1"
    stand_in.add_pod(assigned)
    elsewhere = gpu_pod("b", memory=1)
    elsewhere["spec"]["nodeName"] = "n2"
    stand_in.add_pod(elsewhere)
    pending = shares.claim(["GPU-n1-0001::4"])
    assert pending.key == "default/a" and pending.shares == (Share("GPU-n1-0001", 20000, 30),)
    after = stand_in.pod("a")["metadata"]["annotations"]
    assert after[DEVICES_TO_ALLOCATE] == ";" and after[BIND_PHASE] == PHASE_SUCCESS
    with pytest.raises(HandshakeError, match="no pod on node n1 is waiting"):
        shares.claim(["GPU-n1-0001::5"])


def test_helm_uninstall_prune_withdraws_the_dynamic_gpus_the_device_plugin_could_not(
        api: tuple[ApiServerStandIn, Client], tmp_path: Path) -> None:
    # Given a node whose device plugin published its GPUs and was stopped after helm took its RBAC away,
    # and a node that never shared GPUs
    stand_in, client = api
    stand_in.add_node("n1")
    stand_in.add_node("n2", annotations={"team": "web"})
    NodeShares(client, "n1").publish(gpus(2, node="n1"))
    # when the chart's post-delete hook prunes
    result = CliRunner().invoke(app, ["labeler", "--prune", "--kubeconfig", str(stand_in.kubeconfig(tmp_path))])
    # then the extender is told nothing about n1's GPUs any more, and n2 is left alone
    assert result.exit_code == 0, result.output
    assert NODE_GPUS not in stand_in.node("n1")["metadata"].get("annotations", {})
    assert stand_in.node("n2")["metadata"]["annotations"] == {"team": "web"}
    assert f"node/n1: removed annotation {NODE_GPUS}" in result.stdout and "n2" not in result.stdout
    # and a second prune has nothing to do
    assert withdraw_node_gpus(client) == []
