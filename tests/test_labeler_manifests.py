"""The labeler's manifests: least-privilege RBAC, the node name from the downward API, real flags only."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kgpu.cli import app

DEPLOY = Path(__file__).parent.parent / "deploy" / "manifests"
MANIFESTS = [DEPLOY / "labeler.yaml", DEPLOY / "kgpu.yaml"]


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def labeler_flags() -> set[str]:
    result = CliRunner().invoke(app, ["labeler", "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert result.exit_code == 0
    return set(re.findall(r"(--[a-z][a-z-]+)", result.stdout))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_the_labeler_may_get_and_patch_nodes_and_nothing_else(path: Path) -> None:
    roles = [d for d in docs(path) if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "kgpu-labeler"]
    assert [r["rules"] for r in roles] == [[{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]]
    assert not [d for d in docs(path) if d["kind"] == "Role" and "labeler" in d["metadata"]["name"]]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_the_daemonset_labels_its_own_node_with_real_flags(path: Path) -> None:
    (ds,) = [d for d in docs(path) if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "kgpu-labeler"]
    container, *sidecars = ds["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in sidecars] in ([], ["config-manager"])  # the chart's writes the config it reads
    args = container["args"]
    assert args[0] == "labeler"
    assert args[args.index("--node") + 1] == "$(NODE_NAME)"
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    flags = {a.split("=")[0] for a in args if a.startswith("--")}
    assert flags <= labeler_flags(), flags - labeler_flags()
    port = container["ports"][0]["containerPort"]
    assert args[args.index("--healthz") + 1] == f":{port}"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
