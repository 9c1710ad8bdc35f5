"""kgpu node report: validate's steps become the node's stages, as Node conditions with evidence and fix."""

from __future__ import annotations

import threading
from typing import Any

from kgpu.nodestatus import FIX_SEPARATOR, Stage, merge_conditions, node_stages
from kgpu.validate.report import run_report, stage_conditions
from kgpu.validate.result import failed, not_run, passed, skipped

NOW = "2026-01-01T00:00:00Z"


def _results(**override: Any) -> list[Any]:
    steps = {
        "driver": passed("driver", "kernel driver 580.95.05 loaded"),
        "nvml": passed("nvml", "8 GPU(s) via nvml"),
        "device-nodes": passed("device-nodes", "/dev/nvidia0-7 openable"),
        "cuda": passed("cuda", "Test PASSED"),
        "runtime": passed("runtime", "runtime.containerd: nvidia runtime configured"),
        "device-plugin": passed("device-plugin", "nvidia-gpu.sock next to kubelet.sock"),
        "pod": skipped("pod", "pass --pod"),
    }
    steps.update(override)
    return list(steps.values())


def _by_type(conditions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in conditions}


def test_a_healthy_node_reports_four_passing_stages_with_their_evidence() -> None:
    got = _by_type(stage_conditions(_results(), simulated=False, now=NOW))
    assert {t: c["status"] for t, c in got.items()} == {
        "KgpuDriver": "True", "KgpuRuntime": "True", "KgpuDevicePlugin": "True", "KgpuValidation": "True"}
    assert "580.95.05" in got["KgpuDriver"]["message"]
    assert got["KgpuValidation"]["message"].startswith("passed: driver, nvml, device-nodes, cuda")


def test_a_broken_runtime_names_itself_and_its_fix_and_breaks_validation() -> None:
    results = _results(runtime=failed("runtime", "runtime.containerd: no nvidia runtime",
                                      "kgpu runtime configure --runtime containerd"),
                       **{"device-plugin": not_run("device-plugin", "step 5 (runtime) failed")})
    got = _by_type(stage_conditions(results, simulated=False, now=NOW))
    runtime = got["KgpuRuntime"]
    assert runtime["status"] == "False" and runtime["reason"] == "Failed"
    assert runtime["message"].endswith(f"{FIX_SEPARATOR}kgpu runtime configure --runtime containerd")
    assert got["KgpuDevicePlugin"]["reason"] == "NotRun"
    assert got["KgpuValidation"]["status"] == "False"


def test_a_simulated_node_says_so_instead_of_checking_a_driver_it_does_not_have() -> None:
    results = _results(driver=skipped("driver", "--skip"), cuda=skipped("cuda", "no real GPU"),
                       runtime=skipped("runtime", "--skip"), **{"device-nodes": skipped("device-nodes", "--skip")})
    got = _by_type(stage_conditions(results, simulated=True, now=NOW))
    assert got["KgpuDriver"]["reason"] == "Simulated" and "simulated node" in got["KgpuDriver"]["message"]
    assert got["KgpuRuntime"]["reason"] == "Simulated"
    assert "cuda skipped: no real GPU" in got["KgpuValidation"]["message"]


def test_the_operator_reads_back_what_the_report_wrote_and_the_node_object_itself() -> None:
    conditions = stage_conditions(_results(runtime=failed("runtime", "no nvidia runtime", "kgpu node prepare")),
                                  simulated=False, now=NOW)
    node = {"metadata": {"name": "gpu-1", "labels": {"nvidia.com/gpu.present": "true"}},
            "status": {"conditions": conditions, "allocatable": {"nvidia.com/gpu": "0"}}}
    stages = {s.stage: s for s in node_stages(node)}
    assert stages[Stage.DRIVER].ok is True
    assert (stages[Stage.RUNTIME].ok, stages[Stage.RUNTIME].fix) == (False, "kgpu node prepare")
    assert stages[Stage.ALLOCATABLE].ok is False and "gpu-1" in stages[Stage.ALLOCATABLE].fix
    assert stages[Stage.LABELS].ok is False and "nvidia.com/gpu.product" in stages[Stage.LABELS].evidence


def test_the_fix_of_a_stage_read_from_the_node_is_a_command_that_runs() -> None:
    # `kubectl logs` takes no --field-selector: the pod on the node is found with `kubectl get` first
    node = {"metadata": {"name": "gpu-1", "labels": {"nvidia.com/gpu.present": "true"}},
            "status": {"conditions": [], "allocatable": {}}}
    stages = {s.stage: s for s in node_stages(node, "gpu-operator")}
    assert stages[Stage.ALLOCATABLE].fix == (
        "look at the device plugin on gpu-1: kubectl logs -n gpu-operator $(kubectl get pods -n gpu-operator -o name "
        "-l app.kubernetes.io/component=device-plugin --field-selector spec.nodeName=gpu-1) (or `kgpu validate` on "
        "the node)")
    assert "app.kubernetes.io/component=validator --field-selector spec.nodeName=gpu-1" in stages[Stage.DRIVER].fix
    unknown_namespace = {s.stage: s for s in node_stages(node)}
    assert unknown_namespace[Stage.LABELS].fix.startswith(
        "look at the labeler on gpu-1: kubectl get pods -A -o wide -l app.kubernetes.io/component=labeler ")


def test_a_stage_that_keeps_its_status_keeps_its_transition_time() -> None:
    old = stage_conditions(_results(), simulated=False, now="2025-01-01T00:00:00Z")
    new = merge_conditions(old, stage_conditions(_results(), simulated=False, now=NOW))
    assert all(c["lastTransitionTime"] == "2025-01-01T00:00:00Z" and c["lastHeartbeatTime"] == NOW for c in new)


def test_the_report_loop_survives_a_failing_api_and_withdraws_its_conditions_on_stop() -> None:
    stop = threading.Event()
    calls: list[str] = []

    def publish(_: list[dict[str, Any]]) -> None:
        calls.append("publish")
        if len(calls) == 1:
            raise ConnectionError("API server away")
        stop.set()

    run_report(lambda: [], publish, 0.0, stop, withdraw=lambda: calls.append("withdraw"))
    assert calls == ["publish", "publish", "withdraw"]


def test_kgpu_status_prints_a_row_per_node_and_the_fix_of_each_failing_stage(capsys: Any) -> None:
    from kgpu.cli.render_status import print_status

    healthy = stage_conditions(_results(), simulated=False, now=NOW)
    broken = stage_conditions(_results(runtime=failed("runtime", "no nvidia runtime", "kgpu node prepare --apply")),
                              simulated=False, now=NOW)
    nodes = []
    for name, conditions in (("gpu-1", healthy), ("gpu-2", broken)):
        body = {"metadata": {"name": name, "labels": {"nvidia.com/gpu.present": "true",
                                                      "nvidia.com/gpu.product": "H100", "nvidia.com/gpu.count": "8"}},
                "status": {"conditions": conditions, "allocatable": {"nvidia.com/gpu": "8"}}}
        stages = node_stages(body)
        nodes.append({"name": name, "ready": all(s.ok for s in stages), "stages": [s.to_json() for s in stages]})
    policy = {"name": "cluster-policy", "state": "notReady", "message": "1/2 GPU nodes not ready"}
    print_status({"clusterPolicy": policy, "nodes": nodes})
    out = capsys.readouterr().out
    assert "ClusterPolicy cluster-policy: notReady" in out
    table = [line.split() for line in out.splitlines() if line.split()[-1:] in (["yes"], ["no"])]
    rows = {cells[0]: cells for cells in table}
    assert rows["gpu-1"][1:] == ["ok", "ok", "ok", "ok", "ok", "ok", "yes"]
    assert rows["gpu-2"][1:] == ["ok", "FAIL", "ok", "ok", "ok", "FAIL", "no"]
    assert "fix: kgpu node prepare --apply" in out
