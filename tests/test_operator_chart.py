"""One source of truth: the chart's DaemonSet templates are generated from kgpu.operator.components, and Helm's
own engine renders them to exactly the objects the operator renders for the same values."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kgpu.operator.components import documents
from kgpu.operator.template import Context, evaluate_document
from kgpu.operator.values import chart_defaults, coalesce

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import gen_chart  # noqa: E402
from render_manifests import render_documents  # noqa: E402

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "everything-set": {
        "driverRoot": "/usr/local/nvidia",
        "runtimeClassName": "nvidia",
        "simulate": {"fixture": "h100x8"},
        "mpsDaemon": {"enabled": True, "env": [{"name": "A", "value": "1"}]},
        "migManager": {"enabled": True},
        "labeler": {"affinity": None, "nodeSelector": None, "hostNetwork": True},
        "exporter": {"nodeSelector": {}},
        "nodeSelector": {"pool": "gpu"},
        "daemonsets": {"labels": {"team": "ml"}, "annotations": {"note": "a <b> & c"}},
        "priorityClassName": "",
        "imagePullSecrets": [{"name": "regcred"}],
        "image": {"repository": "registry.example/kgpu", "tag": "9.9"},
        "updateStrategy": {"type": "OnDelete"},
        "config": {"version": "v1", "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu",
                                                                                "replicas": 4}]}}},
    },
    "components-off": {"labeler": {"enabled": False}, "exporter": {"enabled": False},
                       "validator": {"enabled": False}},
}


def test_the_chart_templates_and_the_operators_defaults_are_generated_and_current() -> None:
    stale = [str(p) for p, text in gen_chart.generated().items() if not p.is_file() or p.read_text() != text]
    assert not stale, f"run python scripts/gen_chart.py: {stale}"


def _helm_daemonsets(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    docs = [yaml.safe_load(text) for _, text in render_documents(values)]
    return {d["metadata"]["name"]: d for d in docs if d and d["kind"] == "DaemonSet"}


def _operator_daemonsets(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    ctx = Context(values=coalesce(chart_defaults(), values))
    rendered = [evaluate_document(doc, ctx) for doc in documents()]
    return {d["metadata"]["name"]: d for d in rendered if d}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_and_the_operator_render_the_same_daemonsets(name: str) -> None:
    values = VALUE_SETS[name]
    helm = _helm_daemonsets(values)
    assert helm, "the chart rendered no DaemonSet"
    assert helm == _operator_daemonsets(values)


def test_a_changed_device_plugin_config_changes_every_pod_template_that_reads_it() -> None:
    before = _operator_daemonsets({})
    after = _operator_daemonsets({"config": {"version": "v1", "flags": {"migStrategy": "mixed"}}})
    changed = {n for n in before if before[n]["spec"]["template"] != after[n]["spec"]["template"]}
    assert changed == {"kgpu-device-plugin", "kgpu-labeler"}


def test_operator_mode_installs_the_operator_crd_and_policy_and_no_daemonset() -> None:
    docs = [yaml.safe_load(text) for _, text in render_documents({"operator": {"enabled": True}})]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs if d}
    assert not [k for k in kinds if k[0] == "DaemonSet"]
    assert ("CustomResourceDefinition", "clusterpolicies.kgpu.io") in kinds
    assert ("Deployment", "kgpu-operator") in kinds
    assert ("ClusterPolicy", "cluster-policy") in kinds
    assert ("ConfigMap", "kgpu-config") not in kinds, "the operator owns the config in operator mode"
    values_cm = next(d for d in docs if d and d["metadata"]["name"] == "kgpu-operator-values")
    base = yaml.safe_load(values_cm["data"]["values.yaml"])
    assert base["devicePlugin"] == chart_defaults()["devicePlugin"]
