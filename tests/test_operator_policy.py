"""The ClusterPolicy spec: NVIDIA's section names onto the chart's values, bad input refused with its field."""

from __future__ import annotations

from typing import Any

import pytest

from kgpu.errors import ConfigError
from kgpu.operator.crd import crd
from kgpu.operator.policy import parse_spec, to_values
from kgpu.operator.values import chart_defaults

TIME_SLICING = {"version": "v1", "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}}}


def test_an_empty_policy_is_the_charts_defaults() -> None:
    assert to_values(parse_spec({})) == chart_defaults()


def test_nvidia_section_names_land_on_the_charts_components() -> None:
    spec = parse_spec({
        "devicePlugin": {"config": TIME_SLICING, "args": ["--fail-on-init-error=false"]},
        "gfd": {"enabled": False},
        "dcgmExporter": {"env": [{"name": "X", "value": "1"}]},
        "mps": {"enabled": True},
        "daemonsets": {"tolerations": [], "priorityClassName": "gpu-critical", "updateStrategy": "OnDelete",
                       "labels": {"team": "ml"}},
        "operator": {"runtimeClass": "nvidia"},
        "hostPaths": {"driverInstallDir": "/usr/local/nvidia"},
        "mig": {"strategy": "mixed"},
    })
    values = to_values(spec)
    assert values["config"]["sharing"] == TIME_SLICING["sharing"]
    assert values["config"]["flags"]["migStrategy"] == "mixed"
    assert values["devicePlugin"]["extraArgs"] == ["--fail-on-init-error=false"]
    assert values["devicePlugin"]["args"] == chart_defaults()["devicePlugin"]["args"]
    assert values["labeler"]["enabled"] is False
    assert values["exporter"]["env"] == [{"name": "X", "value": "1"}]
    assert values["mpsDaemon"]["enabled"] is True
    assert values["tolerations"] == [] and values["priorityClassName"] == "gpu-critical"
    assert values["updateStrategy"] == {"type": "OnDelete"}
    assert values["daemonsets"]["labels"] == {"team": "ml"}
    assert values["runtimeClassName"] == "nvidia" and values["driverRoot"] == "/usr/local/nvidia"


def test_max_unavailable_takes_a_number_or_a_percentage() -> None:
    values = to_values(parse_spec({"daemonsets": {"rollingUpdate": {"maxUnavailable": "25%"}}}))
    assert values["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%"}}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"devicePlugin": {"config": {"version": "v1", "sharing": {"timeSlicing": {"resources": [
            {"name": "nvidia.com/gpu", "replicas": "four"}]}}}}},
         "spec.devicePlugin.config"),
        ({"daemonsets": {"rollingUpdate": {"maxUnavailable": "0%"}}}, "spec.daemonsets.rollingUpdate.maxUnavailable"),
        ({"daemonsets": {"updateStrategy": "Sometimes"}}, "spec.daemonsets.updateStrategy"),
        ({"gfd": {"enabeld": True}}, "spec.gfd.enabeld"),
        ({"toolkit": {"enabled": True}}, "container toolkit"),
        ({"daemonsets": {"labels": {"app.kubernetes.io/name": "x"}}}, "app.kubernetes.io/"),
    ],
)
def test_a_bad_spec_is_refused_with_the_field_and_what_is_allowed(spec: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_spec(spec)
    assert expected in str(err.value)
    assert "\n" not in str(err.value) or len(str(err.value)) < 600


def _walk(node: dict[str, Any], path: str, problems: list[str]) -> None:
    """Kubernetes' structural-schema rule: every node says its type, or preserves unknown fields."""
    if not (node.get("type") or node.get("x-kubernetes-preserve-unknown-fields") or node.get(
            "x-kubernetes-int-or-string")):
        problems.append(path)
    for key in ("anyOf", "oneOf", "allOf", "$ref"):
        if key in node:
            problems.append(f"{path}: {key}")
    for name, child in (node.get("properties") or {}).items():
        _walk(child, f"{path}.{name}", problems)
    if isinstance(node.get("items"), dict):
        _walk(node["items"], f"{path}[]", problems)
    if isinstance(node.get("additionalProperties"), dict):
        _walk(node["additionalProperties"], f"{path}{{}}", problems)


def test_the_crd_schema_is_structural_and_shows_state_in_kubectl_get() -> None:
    version = crd()["spec"]["versions"][0]
    problems: list[str] = []
    _walk(version["schema"]["openAPIV3Schema"], "", problems)
    assert problems == []
    assert crd()["spec"]["scope"] == "Cluster"
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["State"] == ".status.state"
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    nvidia = {"devicePlugin", "gfd", "dcgmExporter", "mps", "migManager", "validator", "toolkit", "daemonsets"}
    assert nvidia <= set(spec)
