"""kgpu lint: GPU requests Kubernetes would refuse or never schedule, each with the corrected YAML."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from kgpu.errors import ConfigError
from kgpu.lint import LintContext, Severity, Taint, lint_pod, load_documents, pod_templates
from kgpu.lint.offered import from_labels, from_names, from_nodes
from kgpu.lint.rules import parse_quantity

FIXTURES = Path(__file__).parent / "fixtures" / "lint"


def lint_text(text: str, ctx: LintContext | None = None, source: str = "m.yaml") -> list[Any]:
    ctx = ctx or LintContext()
    return [f for d in load_documents(source, text) for p in pod_templates(d) for f in lint_pod(p, ctx)]


def pod(resources: dict[str, Any], tolerate: bool = True, kind: str = "Pod") -> str:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "x", "resources": resources}]}
    if tolerate:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return yaml.safe_dump({"apiVersion": "v1", "kind": kind, "metadata": {"name": "p"}, "spec": spec})


def rules(findings: list[Any]) -> list[str]:
    return [f.rule for f in findings]


@pytest.mark.parametrize(
    ("text", "value"),
    [("2", Decimal(2)), ("500m", Decimal("0.5")), (0.5, Decimal("0.5")), ("1e3", Decimal(1000)), ("1k", Decimal(1000)),
     ("1Ki", Decimal(1024)), (3, Decimal(3)), ("abc", None), (True, None), ("1.5.2", None)],
)
def test_quantities_are_read_as_kubernetes_reads_them(text: Any, value: Decimal | None) -> None:
    assert parse_quantity(text) == value


def test_half_a_gpu_is_refused_and_the_fix_is_an_mps_slice() -> None:
    # Given seed 002's deployment asking for nvidia.com/gpu: 0.5
    (finding,) = lint_text((FIXTURES / "fractional-deployment.yaml").read_text(), source="web.yaml")
    assert finding.rule == "fractional-gpu" and finding.severity is Severity.ERROR
    assert finding.where == "web.yaml:doc 1:Deployment/web:spec.template.spec.containers[0](app)"
    assert "0.5 is a fraction of a device" in finding.message
    # Then the fix is a slice resource, as corrected YAML
    assert yaml.safe_load(finding.fix.split("\n# or")[0]) == {"resources": {"limits": {"nvidia.com/gpu-40gb": 1}}}
    assert "nvidia.com/gpu.shared: 1" in finding.fix


def test_millis_are_fractions_too_and_the_offered_slices_are_suggested() -> None:
    ctx = LintContext(offered=frozenset({"nvidia.com/gpu", "nvidia.com/gpu-20gb", "nvidia.com/mig-1g.10gb"}))
    (finding,) = lint_text(pod({"limits": {"nvidia.com/gpu": "250m"}}), ctx)
    assert finding.rule == "fractional-gpu" and "'250m'" in finding.message
    assert yaml.safe_load(finding.fix) == {"resources": {"limits": {"nvidia.com/gpu-20gb": 1}}}


def test_more_than_one_but_not_whole_rounds_up() -> None:
    (finding,) = lint_text(pod({"limits": {"nvidia.com/gpu": 1.5}}))
    assert finding.rule == "fractional-gpu" and "request 2" in finding.message
    assert yaml.safe_load(finding.fix) == {"resources": {"limits": {"nvidia.com/gpu": 2}}}


def test_a_request_without_a_limit_is_refused_by_the_api_server() -> None:
    (finding,) = lint_text(pod({"requests": {"nvidia.com/gpu": 1}}))
    assert finding.rule == "requests-without-limits" and finding.severity is Severity.ERROR
    assert yaml.safe_load(finding.fix) == {"resources": {"limits": {"nvidia.com/gpu": 1}}}


def test_requests_different_from_limits_are_refused() -> None:
    (finding,) = lint_text(pod({"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 2}}))
    assert finding.rule == "limits-differ-from-requests"
    assert "requests 1 ≠ limits 2" in finding.message


def test_equal_requests_and_limits_written_differently_are_fine() -> None:
    assert lint_text(pod({"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": 1}})) == []


def test_a_gpu_pod_without_the_toleration_is_warned_about() -> None:
    (finding,) = lint_text(pod({"limits": {"nvidia.com/gpu": 1}}, tolerate=False))
    assert finding.rule == "missing-gpu-toleration" and finding.severity is Severity.WARNING
    assert finding.where == "m.yaml:doc 1:Pod/p:spec"
    assert yaml.safe_load(finding.fix) == {
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    }


@pytest.mark.parametrize(
    ("toleration", "ok"),
    [
        ({"key": "nvidia.com/gpu", "operator": "Exists"}, True),
        ({"operator": "Exists"}, True),
        ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}, True),
        ({"key": "nvidia.com/gpu", "value": "present"}, True),
        ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"}, False),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"key": "gpu", "operator": "Exists"}, False),
    ],
)
def test_tolerations_match_as_kubernetes_matches_them(toleration: dict[str, str], ok: bool) -> None:
    doc = yaml.safe_load(pod({"limits": {"nvidia.com/gpu": 1}}, tolerate=False))
    doc["spec"]["tolerations"] = [toleration]
    assert (lint_text(yaml.safe_dump(doc)) == []) is ok


def test_no_toleration_needed_without_a_gpu_or_with_the_check_off() -> None:
    assert lint_text(pod({"limits": {"cpu": "500m"}}, tolerate=False)) == []
    assert lint_text(pod({"limits": {"nvidia.com/gpu": 1}}, tolerate=False), LintContext(taint=None)) == []
    custom = LintContext(taint=Taint.parse("gpu=yes:NoExecute"))
    (finding,) = lint_text(pod({"limits": {"nvidia.com/gpu": 1}}), custom)
    assert "gpu=yes:NoExecute" in finding.message


def test_a_resource_no_node_offers_is_an_error_with_the_closest_name() -> None:
    ctx = LintContext(offered=from_nodes((d.obj for d in load_documents("n", (FIXTURES / "nodes.yaml").read_text())),
                                         "nodes.yaml"))
    assert ctx.offered == {"nvidia.com/gpu", "nvidia.com/gpu-20gb", "nvidia.com/gpu-10gb"}
    (finding,) = lint_text(pod({"limits": {"nvidia.com/gpu-40gb": 1}}), ctx)
    assert finding.rule == "unknown-resource"
    assert "no node offers nvidia.com/gpu-40gb" in finding.message
    assert "did you mean nvidia.com/gpu-" in finding.message
    assert lint_text(pod({"limits": {"nvidia.com/gpu-20gb": 1}}), ctx) == []


def test_every_workload_kind_and_list_items_are_checked() -> None:
    kinds = ["Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"]
    docs = []
    for kind in kinds:
        spec = {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "0.5"}}}],
                "tolerations": [{"operator": "Exists"}]}
        body: dict[str, Any] = {"template": {"spec": spec}}
        if kind == "Pod":
            body = spec
        elif kind == "CronJob":
            body = {"jobTemplate": {"spec": {"template": {"spec": spec}}}}
        docs.append({"apiVersion": "v1", "kind": kind, "metadata": {"name": kind.lower()}, "spec": body})
    listed = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": docs[:3]})
    text = listed + "---\n" + yaml.safe_dump_all(docs[3:])
    found = lint_text(text)
    assert sorted(f.where.split(":")[-2].split("/")[0] for f in found) == sorted(kinds)
    assert all(f.rule == "fractional-gpu" for f in found)
    assert found[0].where.startswith("m.yaml:doc 1:items[0]:Pod/pod:spec.containers[0](c)")


def test_init_containers_are_checked() -> None:
    doc = yaml.safe_load(pod({}))
    doc["spec"]["initContainers"] = [{"name": "warm", "resources": {"requests": {"nvidia.com/gpu": 1}}}]
    (finding,) = lint_text(yaml.safe_dump(doc))
    assert finding.rule == "requests-without-limits" and "initContainers[0](warm)" in finding.where


def test_a_correct_file_has_no_findings() -> None:
    assert lint_text((FIXTURES / "good.yaml").read_text()) == []


def test_bad_yaml_names_the_file_and_line() -> None:
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML \(line 3, column 2\)"):
        load_documents("broken.yaml", "kind: Pod\nspec: {a: b\nc: d\n")


def test_offered_resources_from_labels_and_names() -> None:
    labels = "nvidia.com/gpu.count=8\nnvidia.com/gpu.replicas=4\nnvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3\n" \
             "nvidia.com/mig-1g.10gb.count=2\nnvidia.com/mig-2g.20gb.count=0\n"
    assert from_labels(labels, "l") == {"nvidia.com/gpu", "nvidia.com/gpu.shared", "nvidia.com/mig-1g.10gb"}
    not_renamed = labels.replace("HBM3", "HBM3-SHARED")
    assert "nvidia.com/gpu.shared" not in from_labels(not_renamed, "l")
    as_json = json.dumps({"nvidia.com/gpu.count": "2"})
    assert from_labels(as_json, "l") == {"nvidia.com/gpu"}
    assert from_names("nvidia.com/gpu, nvidia.com/gpu-20gb") == {"nvidia.com/gpu", "nvidia.com/gpu-20gb"}
    with pytest.raises(ConfigError, match="give full resource names"):
        from_names("gpu")


def kgpu(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kgpu", "lint", *args], input=stdin, capture_output=True, text=True,
                          timeout=60)


def test_cli_exits_1_on_errors_and_prints_the_fix() -> None:
    done = kgpu(str(FIXTURES / "fractional-deployment.yaml"))
    assert done.returncode == 1
    assert "error fractional-gpu: nvidia.com/gpu: 0.5 is a fraction" in done.stdout
    assert "  fix:\n    resources:\n      limits:\n        nvidia.com/gpu-40gb: 1" in done.stdout
    assert "1 pod template(s) checked: 1 error(s), 0 warning(s)" in done.stderr


def test_cli_reads_stdin_and_warnings_alone_exit_0() -> None:
    done = kgpu("-", "-o", "json", stdin=pod({"limits": {"nvidia.com/gpu": 1}}, tolerate=False))
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["errors"] == 0 and [f["rule"] for f in doc["findings"]] == ["missing-gpu-toleration"]
    assert doc["findings"][0]["where"].startswith("-:doc 1:Pod/p")


def test_cli_with_nodes_flags_resources_nobody_offers() -> None:
    done = kgpu(str(FIXTURES / "good.yaml"), "--nodes", str(FIXTURES / "nodes.yaml"))
    assert done.returncode == 0, done.stdout
    done = kgpu("-", "--nodes", str(FIXTURES / "nodes.yaml"), stdin=pod({"limits": {"nvidia.com/gpu.shared": 1}}))
    assert done.returncode == 1 and "no node offers nvidia.com/gpu.shared" in done.stdout


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = kgpu(str(tmp_path / "missing.yaml"))
    assert done.returncode == 2
    assert done.stderr.strip().endswith("missing.yaml: No such file or directory (ENOENT); check the path")
    done = kgpu(str(FIXTURES / "good.yaml"), "--taint", "nvidia.com/gpu")
    assert done.returncode == 2 and "--taint" in done.stderr


def test_a_fraction_on_a_cluster_without_shared_gpus_is_fixed_with_what_it_offers() -> None:
    """Given nodes that offer only whole GPUs, the fix names no resource they lack (no gpu-40gb, no .shared)."""
    ctx = LintContext(offered=frozenset({"nvidia.com/gpu"}))
    (finding,) = lint_text(pod({"limits": {"nvidia.com/gpu": "0.5"}}), ctx)
    assert finding.rule == "fractional-gpu"
    assert yaml.safe_load(finding.fix) == {"resources": {"limits": {"nvidia.com/gpu": 1}}}
    assert "request nvidia.com/gpu: 1 (a whole GPU)" in finding.message
    assert "MPS slices (sharing.mps.slices) or time-slicing" in finding.message
    assert "gpu-40gb" not in finding.message + finding.fix and "gpu.shared" not in finding.message + finding.fix


def test_yaml_is_read_by_libyaml_when_present_and_by_pure_python_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both parsers give the same objects and name the same line of a broken file."""
    good = (FIXTURES / "fractional-deployment.yaml").read_text() + "---\n" + pod({"limits": {"nvidia.com/gpu": 1}})
    broken = "apiVersion: v1\nkind: Pod\nspec: [unclosed\n"
    assert hasattr(yaml, "CSafeLoader")  # PyYAML's wheels ship libyaml: the fast path is the one tested here
    fast = [d.obj for d in load_documents("m.yaml", good)]
    with pytest.raises(ConfigError) as fast_error:
        load_documents("m.yaml", broken)
    monkeypatch.delattr(yaml, "CSafeLoader")
    assert [d.obj for d in load_documents("m.yaml", good)] == fast
    with pytest.raises(ConfigError) as pure_error:
        load_documents("m.yaml", broken)
    assert "(line 4, column 1)" in str(fast_error.value)
    assert str(pure_error.value).split(":")[:2] == str(fast_error.value).split(":")[:2]


def test_cluster_is_read_through_the_kubeconfig_given(tmp_path: Path) -> None:
    """`kgpu lint --cluster --kubeconfig FILE` lists that cluster's Nodes, and suggests only what they offer."""
    from fake_apiserver import FakeApiServer

    manifest = tmp_path / "job.yaml"
    manifest.write_text(pod({"limits": {"nvidia.com/gpu": "0.5"}}))
    with FakeApiServer() as api:
        api.add_node("gpu-node-1")
        api.nodes["gpu-node-1"].allocatable = {"cpu": "8", "nvidia.com/gpu": "8"}
        done = kgpu(str(manifest), "--cluster", "--kubeconfig", str(api.kubeconfig(tmp_path)))
        assert [r.path for r in api.requests] == ["/api/v1/nodes"]
    assert done.returncode == 1, done.stderr
    assert "The nodes offer nvidia.com/gpu: request nvidia.com/gpu: 1" in done.stdout
    assert "gpu-40gb" not in done.stdout and "gpu.shared" not in done.stdout


def test_kubeconfig_without_cluster_is_refused() -> None:
    done = kgpu(str(FIXTURES / "good.yaml"), "--kubeconfig", "/nonexistent")
    assert done.returncode == 2 and "--kubeconfig: only used with --cluster" in done.stderr
