"""`kgpu labels --node`: server-side apply of the labels kgpu owns, against a fake API server over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_inproc import kgpu
from fake_apiserver import FakeApiServer
from typer.testing import CliRunner

from kgpu.cli import app
from kgpu.labels.node import FIELD_MANAGER, NodeLabelError, apply_body, apply_node_labels, kube_client

runner = CliRunner()
CLEAN_ENV: dict[str, str | None] = {"MIG_STRATEGY": None, "GFD_MIG_STRATEGY": None, "CONFIG_FILE": None,
                                    "GFD_CONFIG_FILE": None}


@pytest.fixture
def api(tmp_path: Path) -> FakeApiServer:
    with FakeApiServer() as server:
        server.add_node("gpu-node-1", **{"kubernetes.io/hostname": "gpu-node-1"})
        yield server


def label_node(api: FakeApiServer, tmp_path: Path, simulate: str, *args: str) -> str:
    result = runner.invoke(
        app, ["--simulate", simulate, "labels", "--no-timestamp", "--root", str(tmp_path), "--node", "gpu-node-1",
              "--kubeconfig", str(api.kubeconfig(tmp_path)), *args], env=CLEAN_ENV,
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_request_is_a_forced_server_side_apply_of_exactly_the_owned_labels(api: FakeApiServer,
                                                                               tmp_path: Path) -> None:
    printed = label_node(api, tmp_path, "t4")
    expected = dict(line.split("=", 1) for line in printed.splitlines())
    get, patch = api.requests
    assert (get.method, get.path) == ("GET", "/api/v1/nodes/gpu-node-1")
    assert (patch.method, patch.path) == ("PATCH", "/api/v1/nodes/gpu-node-1")
    assert patch.query == {"fieldManager": "kgpu", "force": "true"}
    assert patch.headers["content-type"] == "application/apply-patch+yaml"
    assert patch.headers["authorization"] == "Bearer t0ken"
    assert patch.body == {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-node-1", "labels": expected},
    }
    assert api.nodes["gpu-node-1"].labels == {"kubernetes.io/hostname": "gpu-node-1", **expected}


def test_labels_kgpu_no_longer_computes_are_removed_and_others_kept(api: FakeApiServer, tmp_path: Path) -> None:
    label_node(api, tmp_path, "a100-mig")
    api.set_label("gpu-node-1", "team", "ml", manager="kubectl-label")
    before = label_node(api, tmp_path, "a100-mig", "--mig-strategy", "mixed")
    assert "nvidia.com/mig-3g.40gb.count=1" in before
    after = label_node(api, tmp_path, "a100-mig", "--mig-strategy", "none")
    node = api.nodes["gpu-node-1"].labels
    assert not [k for k in node if k.startswith(("nvidia.com/mig-", "nvidia.com/mig.strategy"))]
    assert node["team"] == "ml" and node["kubernetes.io/hostname"] == "gpu-node-1"
    assert api.owned_by("gpu-node-1", FIELD_MANAGER) == {line.split("=", 1)[0] for line in after.splitlines()}


def test_force_takes_over_a_label_someone_set_by_hand(api: FakeApiServer, tmp_path: Path) -> None:
    api.set_label("gpu-node-1", "nvidia.com/gpu.product", "hand-made", manager="kubectl-label")
    label_node(api, tmp_path, "t4")
    assert api.nodes["gpu-node-1"].labels["nvidia.com/gpu.product"] == "Tesla-T4"
    assert "nvidia.com/gpu.product" in api.owned_by("gpu-node-1", FIELD_MANAGER)


def test_a_missing_node_is_never_created(api: FakeApiServer, tmp_path: Path) -> None:
    client = kube_client(api.kubeconfig(tmp_path))
    with pytest.raises(NodeLabelError, match="node 'gpu-node-9' not found in the cluster"):
        apply_node_labels(client, "gpu-node-9", {"nvidia.com/gpu.present": "true"})
    assert [r.method for r in api.requests] == ["GET"]
    assert "gpu-node-9" not in api.nodes


def test_missing_rbac_says_what_the_role_needs(api: FakeApiServer, tmp_path: Path) -> None:
    api.forbid = True
    with pytest.raises(NodeLabelError, match="needs get and patch on nodes"):
        apply_node_labels(kube_client(api.kubeconfig(tmp_path)), "gpu-node-1", {"a": "b"})


def test_an_unreachable_api_server_is_a_clear_error(tmp_path: Path) -> None:
    with FakeApiServer() as gone:
        config = gone.kubeconfig(tmp_path)
    with pytest.raises(NodeLabelError, match="cannot reach the Kubernetes API server"):
        apply_node_labels(kube_client(config), "gpu-node-1", {"a": "b"})


def test_a_broken_kubeconfig_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("clusters: 42\n")
    with pytest.raises(NodeLabelError, match=f"no usable Kubernetes configuration from {bad}"):
        kube_client(bad)


def test_the_apply_body_carries_only_name_and_labels() -> None:
    assert apply_body("n", {"b": "2", "a": "1"}) == {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n", "labels": {"a": "1", "b": "2"}},
    }


def test_prune_removes_only_what_the_labeler_alone_holds_on_every_node(api: FakeApiServer, tmp_path: Path) -> None:
    # Given two GPU nodes the labeler labelled, one of which an admin also labelled gpu.present by hand,
    # and a CPU node kgpu never touched,
    api.add_node("gpu-node-2")
    api.add_node("cpu-node", team="web")
    label_node(api, tmp_path, "t4")
    runner.invoke(app, ["--simulate", "t4", "labels", "--no-timestamp", "--root", str(tmp_path), "--node",
                        "gpu-node-2", "--kubeconfig", str(api.kubeconfig(tmp_path))], env=CLEAN_ENV)
    api.set_label("gpu-node-2", "nvidia.com/gpu.present", "true", manager="kubectl-label")
    requests_before = len(api.requests)
    # when helm uninstall prunes,
    result = runner.invoke(app, ["labeler", "--prune", "--kubeconfig", str(api.kubeconfig(tmp_path))])
    # then no kgpu label is left, the admin's own label and other labels stay, the CPU node is not patched,
    assert result.exit_code == 0, result.output
    assert not [k for k in api.nodes["gpu-node-1"].labels if k.startswith("nvidia.com/")]
    assert [k for k in api.nodes["gpu-node-2"].labels if k.startswith("nvidia.com/")] == ["nvidia.com/gpu.present"]
    assert api.nodes["cpu-node"].labels == {"team": "web"}
    patched = {r.path for r in api.requests[requests_before:] if r.method == "PATCH"}
    assert patched == {"/api/v1/nodes/gpu-node-1", "/api/v1/nodes/gpu-node-2"}
    assert "node/gpu-node-1: removed" in result.stdout and "nvidia.com/gpu.product" in result.stdout
    # and a second prune finds nothing to do.
    again = runner.invoke(app, ["labeler", "--prune", "--kubeconfig", str(api.kubeconfig(tmp_path))])
    assert again.exit_code == 0 and "no node carries a label of field manager kgpu" in again.stdout


def test_prune_without_the_right_to_list_nodes_says_what_it_needs(api: FakeApiServer, tmp_path: Path) -> None:
    api.forbid = True
    done = kgpu("labeler", "--prune", "--kubeconfig", str(api.kubeconfig(tmp_path)))
    assert done.returncode != 0
    assert "list, get and patch on nodes" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
