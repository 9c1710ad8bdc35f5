"""`kgpu node label` / `kgpu node taint`: marking a GPU node by hand, against a fake API server over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_apiserver import FakeApiServer
from typer.testing import CliRunner

from kgpu.cli import app
from kgpu.errors import ConfigError
from kgpu.labels.node import GPU_TAINT, NodeTaint, parse_taint, taint_list

runner = CliRunner()
OTHER = {"key": "dedicated", "value": "ml", "effect": "NoSchedule"}


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        server.add_node("gpu-node-1", **{"kubernetes.io/hostname": "gpu-node-1"})
        yield server


def kgpu(api: FakeApiServer, tmp_path: Path, *args: str, simulate: str = "t4") -> str:
    result = runner.invoke(app, ["--simulate", simulate, "node", *args, "--node", "gpu-node-1",
                                 "--kubeconfig", str(api.kubeconfig(tmp_path))])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_label_marks_a_gpu_node_present_under_its_own_field_manager(api: FakeApiServer, tmp_path: Path) -> None:
    assert kgpu(api, tmp_path, "label") == "node/gpu-node-1 labeled nvidia.com/gpu.present=true\n"
    assert api.nodes["gpu-node-1"].labels["nvidia.com/gpu.present"] == "true"
    assert "nvidia.com/gpu.present" in api.owned_by("gpu-node-1", "kgpu-node")
    # The labeler later applies its own set without the label: the bootstrap label stays.
    result = runner.invoke(app, ["--simulate", "t4", "labels", "--root", str(tmp_path), "--node", "gpu-node-1",
                                 "--kubeconfig", str(api.kubeconfig(tmp_path))])
    assert result.exit_code == 0, result.output
    api.requests.clear()
    # Withdrawing kgpu-node's label leaves it on: the labeler (field manager kgpu) still owns it — and says so.
    result = runner.invoke(app, ["node", "label", "--remove", "--node", "gpu-node-1",
                                 "--kubeconfig", str(api.kubeconfig(tmp_path))])
    assert result.exit_code == 1
    message = str(result.exception)
    assert "nvidia.com/gpu.present=true is still on node/gpu-node-1" in message
    assert "kgpu (Apply) still owns it" in message and "kgpu labeler" in message
    assert "kubectl label node gpu-node-1 nvidia.com/gpu.present-" in message
    assert api.nodes["gpu-node-1"].labels["nvidia.com/gpu.present"] == "true"
    assert api.owned_by("gpu-node-1", "kgpu-node") == set()


def test_remove_deletes_the_label_when_kgpu_node_was_its_only_owner(api: FakeApiServer, tmp_path: Path) -> None:
    kgpu(api, tmp_path, "label")
    assert kgpu(api, tmp_path, "label", "--remove") == "node/gpu-node-1 unlabeled nvidia.com/gpu.present\n"
    assert "nvidia.com/gpu.present" not in api.nodes["gpu-node-1"].labels


def test_remove_names_a_hand_made_label_and_how_to_remove_it(api: FakeApiServer, tmp_path: Path) -> None:
    """`kubectl label node … nvidia.com/gpu.present=true` is an Update by kubectl-label: apply cannot take it away."""
    api.set_label("gpu-node-1", "nvidia.com/gpu.present", "true", manager="kubectl-label")
    result = runner.invoke(app, ["node", "label", "--remove", "--node", "gpu-node-1",
                                 "--kubeconfig", str(api.kubeconfig(tmp_path))])
    assert result.exit_code == 1
    message = str(result.exception)
    assert "kubectl-label (Update) still owns it" in message and "kgpu labeler" not in message
    assert api.nodes["gpu-node-1"].labels["nvidia.com/gpu.present"] == "true"


def test_label_refuses_a_node_without_gpus(api: FakeApiServer, tmp_path: Path) -> None:
    empty = tmp_path / "no-gpus.yaml"
    empty.write_text("driver_version: 580.95.05\ncuda_driver_version: '13.0'\ngpus: []\n")
    result = runner.invoke(app, ["--simulate", str(empty), "node", "label", "--node", "gpu-node-1",
                                 "--kubeconfig", str(api.kubeconfig(tmp_path))])
    assert result.exit_code != 0
    assert "no NVIDIA GPU on this node" in str(result.exception)
    assert api.requests == []


def test_taint_adds_the_gpu_taint_once_and_keeps_other_taints(api: FakeApiServer, tmp_path: Path) -> None:
    api.nodes["gpu-node-1"].taints = [dict(OTHER)]
    assert kgpu(api, tmp_path, "taint") == "node/gpu-node-1 tainted (nvidia.com/gpu=present:NoSchedule)\n"
    assert api.nodes["gpu-node-1"].taints == [OTHER, {"key": "nvidia.com/gpu", "value": "present",
                                                      "effect": "NoSchedule"}]
    patch = api.requests[-1]
    assert patch.headers["content-type"] == "application/json-patch+json"
    assert patch.body[0] == {"op": "test", "path": "/metadata/resourceVersion", "value": "1"}
    assert kgpu(api, tmp_path, "taint") == "node/gpu-node-1 unchanged (nvidia.com/gpu=present:NoSchedule)\n"
    assert kgpu(api, tmp_path, "taint", "--remove") == "node/gpu-node-1 untainted (nvidia.com/gpu=present:NoSchedule)\n"
    assert api.nodes["gpu-node-1"].taints == [OTHER]


def test_a_concurrent_write_between_read_and_patch_is_retried(api: FakeApiServer, tmp_path: Path) -> None:
    api.race_once = True
    kgpu(api, tmp_path, "taint", "--taint", "nvidia.com/gpu:NoExecute")
    assert api.nodes["gpu-node-1"].taints == [{"key": "nvidia.com/gpu", "effect": "NoExecute"}]
    assert [r.method for r in api.requests] == ["GET", "PATCH", "GET", "PATCH"]


def test_taint_text() -> None:
    assert parse_taint("nvidia.com/gpu=present:NoSchedule") == GPU_TAINT
    assert parse_taint("gpu:NoExecute") == NodeTaint("gpu", "", "NoExecute")
    assert str(GPU_TAINT) == "nvidia.com/gpu=present:NoSchedule"
    with pytest.raises(ConfigError, match="EFFECT one of NoSchedule, PreferNoSchedule, NoExecute"):
        parse_taint("nvidia.com/gpu=present:Never")


def test_a_new_value_replaces_the_taint_with_the_same_key_and_effect() -> None:
    current = [{"key": "nvidia.com/gpu", "value": "old", "effect": "NoSchedule"}, OTHER]
    assert taint_list(current, GPU_TAINT, remove=False) == [OTHER, GPU_TAINT.to_json()]
    assert taint_list([OTHER], GPU_TAINT, remove=True) is None


def test_api_calls_are_not_logged_one_line_each(api: FakeApiServer, tmp_path: Path) -> None:
    """lightkube's HTTP library logs every request at INFO; at kgpu's default level none shows."""
    result = runner.invoke(app, ["--simulate", "t4", "node", "label", "--node", "gpu-node-1",
                                 "--kubeconfig", str(api.kubeconfig(tmp_path))])
    assert result.exit_code == 0, result.output
    assert len(api.requests) == 2  # GET, then the apply
    assert "HTTP Request" not in result.stderr and result.stderr == ""
