"""kgpu validate on fixture nodes: each link of the chain, broken one at a time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kgpu.cli import app

T4_UUID = "GPU-c707cd42-1dcd-5307-b9cd-750818912a76"

runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, list[dict[str, Any]]]:
    result = runner.invoke(app, [*args, "--json"] if "validate" in args else list(args), env=env or {})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, json.loads(result.stdout)


def statuses(results: list[dict[str, Any]]) -> dict[str, str]:
    return {r["name"]: r["status"] for r in results}


def step(results: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(r for r in results if r["name"] == name)


def test_healthy_simulated_node_passes_every_host_step_and_skips_cuda(node: Any) -> None:
    code, results = run("--simulate", "t4", "validate", "--root", str(node.root))
    assert statuses(results) == {
        "driver": "passed",
        "nvml": "passed",
        "device-nodes": "passed",
        "cuda": "skipped",
        "runtime": "passed",
        "device-plugin": "passed",
        "pod": "skipped",
    }
    assert [r["step"] for r in results] == [1, 2, 3, 4, 5, 6, 7]
    assert "no real GPU (simulated backend)" in step(results, "cuda")["detail"]
    assert "570.172.08" in step(results, "driver")["detail"]
    assert T4_UUID in step(results, "nvml")["detail"]
    assert "nvidia-gpu.sock" in step(results, "device-plugin")["detail"]
    assert code == 0


def test_missing_kernel_module_stops_at_step_1(node: Any) -> None:
    node.write("proc/modules", "overlay 212992 12 - Live 0x0000000000000000\n")
    node.remove("proc/driver/nvidia/version")
    code, results = run("--simulate", "t4", "validate", "--root", str(node.root))
    driver = step(results, "driver")
    assert driver["status"] == "failed"
    assert "nvidia is not loaded" in driver["detail"]
    assert "modprobe nvidia" in driver["fix"]
    assert {r["status"] for r in results[1:]} == {"not-run"}
    assert code == 1


def test_module_listed_but_no_version_file_fails_step_1(node: Any) -> None:
    node.remove("proc/driver/nvidia/version")
    code, results = run("--simulate", "t4", "validate", "--root", str(node.root))
    assert step(results, "driver")["status"] == "failed"
    assert "/proc/driver/nvidia/version is missing" in step(results, "driver")["detail"]
    assert code == 1


def test_gpu_fallen_off_the_bus_fails_nvml(node: Any, lost_t4_events: Path) -> None:
    code, results = run(
        "--simulate", "t4", "--simulate-events", str(lost_t4_events), "validate", "--root", str(node.root)
    )
    nvml = step(results, "nvml")
    assert nvml["status"] == "failed"
    assert f"GPU 0 {T4_UUID} does not answer" in nvml["detail"]
    assert step(results, "device-nodes")["status"] == "not-run"
    assert code == 1


def test_no_nvml_library_fails_nvml_with_where_it_looked(node: Any, tmp_path: Path) -> None:
    code, results = run(
        "--backend", "nvml", "--driver-root", str(tmp_path / "nodriver"), "validate", "--root", str(node.root)
    )
    nvml = step(results, "nvml")
    assert nvml["status"] == "failed"
    assert "libnvidia-ml.so.1 not found under driver root" in nvml["detail"]
    assert code == 1


def test_missing_device_node_fails_step_3(node: Any) -> None:
    node.remove("dev/nvidia0")
    code, results = run("--simulate", "t4", "validate", "--root", str(node.root))
    nodes = step(results, "device-nodes")
    assert nodes["status"] == "failed"
    assert nodes["detail"] == "missing: /dev/nvidia0"
    assert nodes["fix"].startswith("create them: `nvidia-modprobe -c=0`")
    assert code == 1


def test_missing_uvm_node_names_the_uvm_fix(node: Any) -> None:
    node.remove("dev/nvidia-uvm")
    _, results = run("--simulate", "t4", "validate", "--root", str(node.root))
    assert step(results, "device-nodes")["fix"].startswith("load nvidia-uvm")


def test_device_nodes_follow_the_inventory_minors(tmp_path: Path, node_factory: Any) -> None:
    tree = node_factory(tmp_path / "n", gpus=7)  # h100x8 has eight GPUs, nvidia0..7
    _, results = run("--simulate", "h100x8", "validate", "--root", str(tree.root))
    assert step(results, "device-nodes")["detail"] == "missing: /dev/nvidia7"
    assert step(results, "device-nodes")["fix"].startswith("create them: `nvidia-modprobe -c=7`")
    _, results = run("--simulate", "h100x8", "validate", "--root", str(tree.root), "--gpu", "3")
    assert step(results, "device-nodes")["status"] == "passed"


def test_unopenable_device_node_fails_step_3(node: Any) -> None:
    node.remove("dev/nvidia0")
    (
        node.root / "dev/nvidia0"
    ).mkdir()  # present, but open(O_RDWR) fails (as it would for a stale bind mount)
    _, results = run("--simulate", "t4", "validate", "--root", str(node.root))
    nodes = step(results, "device-nodes")
    assert nodes["detail"] == "cannot open: /dev/nvidia0 (Is a directory)"
    assert "0666" in nodes["fix"]


def test_no_container_runtime_fails_step_5(node: Any) -> None:
    node.remove("etc/containerd/config.toml")
    node.remove("usr/bin/containerd")
    code, results = run("--simulate", "t4", "validate", "--root", str(node.root))
    rt = step(results, "runtime")
    assert rt["status"] == "failed"
    assert rt["detail"].startswith("no container runtime installed")
    assert "kgpu runtime configure" in rt["fix"]
    assert step(results, "device-plugin")["status"] == "not-run"
    assert code == 1


def test_containerd_without_nvidia_runtime_fails_step_5_with_the_doctors_fix(node: Any) -> None:
    node.write("etc/containerd/config.toml", 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n'
               '  default_runtime_name = "runc"\n')
    _, results = run("--simulate", "t4", "validate", "--root", str(node.root))
    rt = step(results, "runtime")
    assert rt["detail"].startswith("runtime.containerd: containerd has no nvidia runtime")
    assert rt["fix"].startswith("kgpu runtime configure --runtime containerd")


def test_runtime_pointing_at_missing_binary_fails_step_5(node: Any) -> None:
    node.remove("usr/bin/nvidia-container-runtime")
    _, results = run("--simulate", "t4", "validate", "--root", str(node.root))
    rt = step(results, "runtime")
    assert rt["detail"].startswith("runtime.toolkit: NVIDIA Container Toolkit missing or broken: GPU containers fail")
    assert "runs '/usr/bin/nvidia-container-runtime', which does not exist" in rt["detail"]


def test_containerd_v3_with_nvidia_runtime_passes_step_5(node: Any) -> None:
    node.write("etc/containerd/config.toml", 'version = 3\n'
               '[plugins."io.containerd.cri.v1.runtime".containerd]\n  default_runtime_name = "runc"\n'
               '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nvidia]\n'
               '  runtime_type = "io.containerd.runc.v2"\n'
               '[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.nvidia.options]\n'
               '  BinaryName = "/usr/bin/nvidia-container-runtime"\n')
    _, results = run("--simulate", "t4", "validate", "--root", str(node.root))
    rt = step(results, "runtime")
    assert rt["status"] == "passed", rt
    assert "runtime.containerd: containerd has the nvidia runtime" in rt["detail"]


def test_docker_daemon_json_with_nvidia_runtime_passes_step_5(node: Any) -> None:
    node.remove("etc/containerd/config.toml")
    node.remove("usr/bin/containerd")
    node.write("usr/bin/dockerd", "#!/bin/sh\n")
    node.write("etc/docker/daemon.json", json.dumps(
        {"default-runtime": "nvidia", "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}}))
    _, results = run("--simulate", "t4", "validate", "--root", str(node.root))
    rt = step(results, "runtime")
    assert rt["status"] == "passed", rt
    assert "runtime.docker" in rt["detail"]


def test_broken_toml_is_named(node: Any) -> None:
    node.write("etc/containerd/config.toml", "version = 2\n[plugins\n")
    _, results = run("--simulate", "t4", "validate", "--root", str(node.root))
    rt = step(results, "runtime")
    assert rt["detail"].startswith("runtime.containerd: /etc/containerd/config.toml does not parse")


def test_plugin_socket_absent_fails_step_6(node: Any) -> None:
    node.remove("var/lib/kubelet/device-plugins/nvidia-gpu.sock")
    code, results = run("--simulate", "t4", "validate", "--root", str(node.root))
    dp = step(results, "device-plugin")
    assert dp["status"] == "failed"
    assert "no nvidia-*.sock" in dp["detail"]
    assert "helm install kgpu" in dp["fix"]
    assert code == 1


def test_no_kubelet_fails_step_6(node: Any) -> None:
    node.remove("var/lib/kubelet/device-plugins/kubelet.sock")
    _, results = run("--simulate", "t4", "validate", "--root", str(node.root))
    assert "no kubelet.sock" in step(results, "device-plugin")["detail"]


def test_skip_by_name_and_number_lets_later_steps_run(node: Any) -> None:
    node.remove("etc/containerd/config.toml")
    code, results = run("--simulate", "t4", "validate", "--root", str(node.root), "--skip", "runtime,1")
    assert statuses(results)["driver"] == "skipped"
    assert statuses(results)["runtime"] == "skipped"
    assert statuses(results)["device-plugin"] == "passed"
    assert code == 0


def test_unknown_skip_is_a_one_line_error(node: Any) -> None:
    result = runner.invoke(app, ["--simulate", "t4", "validate", "--root", str(node.root), "--skip", "gpu"])
    assert result.exit_code != 0
    assert "unknown step 'gpu'" in str(result.exception)


def test_bad_timeout_is_rejected(node: Any) -> None:
    result = runner.invoke(app, ["--simulate", "t4", "validate", "--timeout", "soon"])
    assert "--timeout: 'soon' is not a duration" in str(result.exception)


def test_text_output_names_the_broken_link_and_its_fix(node: Any) -> None:
    node.remove("dev/nvidiactl")
    result = runner.invoke(app, ["--simulate", "t4", "validate", "--root", str(node.root)])
    assert result.exit_code == 1
    assert "[3/7] device-nodes   FAILED   missing: /dev/nvidiactl" in result.stdout
    assert "fix: create them" in result.stdout
    assert "validation FAILED at step 3 (device-nodes)" in result.stdout


def test_cuda_step_with_a_non_library_fails_step_4(tmp_path: Path) -> None:
    bogus = tmp_path / "libcuda.so.1"
    bogus.write_text("not an ELF file\n")
    code, results = run("validate", "--in-pod", "--cuda-library", str(bogus))
    cuda = step(results, "cuda")
    assert cuda["status"] == "failed"
    assert "libcuda.so.1 could not be loaded" in cuda["detail"]
    assert {r["status"] for r in results if r["name"] != "cuda"} == {"skipped"}
    assert code == 1


def test_cuda_step_with_missing_library_path_fails(tmp_path: Path) -> None:
    code, results = run("validate", "--in-pod", "--cuda-library", str(tmp_path / "nope" / "libcuda.so.1"))
    assert step(results, "cuda")["status"] == "failed"
    assert code == 1


def test_in_pod_vector_add_through_fake_driver_passes(fake_libcuda: Path) -> None:
    code, results = run("validate", "--in-pod", "--cuda-library", str(fake_libcuda))
    cuda = step(results, "cuda")
    assert cuda["status"] == "passed", cuda
    assert "vectorAdd of 50000 floats, 196 blocks of 256 threads" in cuda["detail"]
    assert cuda["detail"].endswith("Test PASSED")
    assert code == 0


def test_wrong_results_fail_step_4(fake_libcuda: Path) -> None:
    code, results = run(
        "validate", "--in-pod", "--cuda-library", str(fake_libcuda), env={"FAKE_CUDA_MODE": "wrong"}
    )
    cuda = step(results, "cuda")
    assert cuda["status"] == "failed"
    assert "1 of 50000 results wrong, first at element 25000" in cuda["detail"]
    assert "Test FAILED" in cuda["detail"]
    assert code == 1


def test_driver_that_refuses_old_ptx_falls_back_to_the_gpus_own_target(
    fake_libcuda: Path, tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    code, results = run(
        "validate",
        "--in-pod",
        "--cuda-library",
        str(fake_libcuda),
        env={"FAKE_CUDA_MODE": "refuse50", "FAKE_CUDA_LOG": str(log)},
    )
    cuda = step(results, "cuda")
    assert cuda["status"] == "passed"
    assert "PTX .target sm_90 (PTX ISA 7.8) JIT-compiled for sm_90" in cuda["detail"]
    assert "sm_50 (PTX ISA 4.0) refused by the JIT: CUDA_ERROR_INVALID_PTX" in cuda["detail"]
    assert log.read_text().splitlines() == ["cuCtxCreate_v4", ".target sm_90"]
    assert code == 0


def test_cuda_12_driver_gets_cuCtxCreate_v2(fake_libcuda: Path, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    _, results = run(
        "validate",
        "--in-pod",
        "--cuda-library",
        str(fake_libcuda),
        env={"FAKE_CUDA_VERSION": "12080", "FAKE_CUDA_LOG": str(log)},
    )
    assert "CUDA 12.8" in step(results, "cuda")["detail"]
    assert log.read_text().splitlines() == ["cuCtxCreate_v2", ".target sm_50"]


def test_jit_refusing_every_module_fails_with_its_log(fake_libcuda: Path) -> None:
    _, results = run(
        "validate", "--in-pod", "--cuda-library", str(fake_libcuda), env={"FAKE_CUDA_MODE": "badptx"}
    )
    cuda = step(results, "cuda")
    assert cuda["status"] == "failed"
    assert "Unsupported .target 'sm_50'" in cuda["detail"]


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("nodevice", "cuInit failed: CUDA_ERROR_NO_DEVICE (100): no CUDA-capable device is detected"),
        ("oom", "cuMemAlloc_v2 failed: CUDA_ERROR_OUT_OF_MEMORY (2): out of memory"),
    ],
)
def test_driver_errors_name_the_failing_call(fake_libcuda: Path, mode: str, message: str) -> None:
    code, results = run(
        "validate", "--in-pod", "--cuda-library", str(fake_libcuda), env={"FAKE_CUDA_MODE": mode}
    )
    assert message in step(results, "cuda")["detail"]
    assert code == 1


def test_gpu_flag_selects_by_cuda_ordinal_in_a_pod(fake_libcuda: Path) -> None:
    _, results = run("validate", "--in-pod", "--cuda-library", str(fake_libcuda), "--gpu", "1")
    assert step(results, "cuda")["detail"] == "--gpu 1: no such GPU visible to CUDA"
    _, results = run("validate", "--in-pod", "--cuda-library", str(fake_libcuda), "--gpu", "0")
    assert step(results, "cuda")["status"] == "passed"


def test_simulated_node_never_runs_cuda_even_when_nvml_is_skipped(node: Any, fake_libcuda: Path) -> None:
    _, results = run(
        "--simulate",
        "t4",
        "validate",
        "--root",
        str(node.root),
        "--skip",
        "nvml",
        "--cuda-library",
        str(fake_libcuda),
    )
    assert step(results, "cuda")["status"] == "skipped"


def test_the_documented_fixture_node_validates() -> None:
    root = Path(__file__).resolve().parents[1] / "fixtures" / "validate" / "h100x8-node"
    result = runner.invoke(app, ["--simulate", "h100x8", "validate", "--root", str(root)], env={})
    assert result.exit_code == 0, result.stdout
    lines = result.stdout.splitlines()
    assert lines[1].startswith("[2/7] nvml           PASSED   8 GPU(s) via simulated, driver 580.95.05")
    assert lines[2] == "      0: NVIDIA H100 80GB HBM3 GPU-04af0a9b-6df0-595a-bd74-7498840294e2"
    assert lines[-1] == "validation PASSED: 5 of 5 step(s) that ran passed"


def _toolkit_free(node: Any, driver_root: str = "usr/local/nvidia") -> None:
    """The node as kgpu's driver-mounts strategy sets it up: plain containerd (runc), no NVIDIA runtime or
    toolkit, the driver installed under ``driver_root`` (as on GKE or the H200 machine)."""
    node.write("etc/containerd/config.toml", 'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n'
               '  default_runtime_name = "runc"\n')
    for binary in ("nvidia-container-runtime", "nvidia-ctk", "nvidia-container-runtime-hook"):
        node.remove(f"usr/bin/{binary}")
    lib = node.root / driver_root / "lib64"
    for name in ("libcuda.so.570.172.08", "libnvidia-ml.so.570.172.08", "libnvidia-ptxjitcompiler.so.570.172.08"):
        node.write(f"{driver_root}/lib64/{name}", "")
    (lib / "libcuda.so.1").symlink_to("libcuda.so.570.172.08")
    (lib / "libnvidia-ml.so.1").symlink_to("libnvidia-ml.so.570.172.08")
    node.write(f"{driver_root}/bin/nvidia-smi", "#!/bin/sh\n")


def _plugin_state(node: Any, strategy: list[str], driver_root: str) -> None:
    node.write("run/kgpu/device-plugin/state.json", json.dumps({
        "version": 1, "pid": 1, "updated": "", "kubelet_dir": "/var/lib/kubelet/device-plugins",
        "device_list_strategy": strategy, "nvidia_driver_root": driver_root, "resources": [],
    }))


def test_a_node_set_up_for_driver_mounts_passes_step_5_without_a_toolkit(node: Any) -> None:
    """Given the device plugin runs with driver-mounts (its state file says so), step 5 asks for what that
    strategy needs — a runtime that runs plain containers and the driver's files — not the NVIDIA runtime."""
    _toolkit_free(node)
    _plugin_state(node, ["driver-mounts"], "/usr/local/nvidia")
    code, results = run("--simulate", "t4", "validate", "--root", str(node.root))
    rt = step(results, "runtime")
    assert rt["status"] == "passed", rt
    assert rt["detail"].startswith("device list strategy driver-mounts (the device plugin's state file "
                                   "/run/kgpu/device-plugin/state.json): no NVIDIA runtime or container toolkit")
    assert "containerd (/etc/containerd/config.toml) runs the containers" in rt["detail"]
    assert "from /usr/local/nvidia read-only (libcuda.so.1, libnvidia-ml.so.1, nvidia-smi" in rt["detail"]
    assert code == 0


def test_the_same_node_without_the_strategy_known_still_asks_for_the_nvidia_runtime(node: Any) -> None:
    _toolkit_free(node)
    _, results = run("--simulate", "t4", "validate", "--root", str(node.root))
    assert step(results, "runtime")["status"] == "failed"
    _, results = run("--simulate", "t4", "validate", "--root", str(node.root), "--device-list-strategy",
                     "driver-mounts", "--skip", "device-plugin", env={"NVIDIA_DRIVER_ROOT": "/usr/local/nvidia"})
    assert step(results, "runtime")["status"] == "passed"
    assert "(--device-list-strategy)" in step(results, "runtime")["detail"]


def test_driver_mounts_with_the_driver_root_wrong_names_it(node: Any) -> None:
    _toolkit_free(node)
    _plugin_state(node, ["driver-mounts"], "/")
    _, results = run("--simulate", "t4", "validate", "--root", str(node.root))
    rt = step(results, "runtime")
    assert rt["status"] == "failed"
    assert "the driver root / has no libcuda.so.1 or libnvidia-ml.so.1 to mount" in rt["detail"]
    assert "nvidiaDriverRoot" in rt["fix"]


def test_driver_mounts_still_needs_a_container_runtime(node: Any) -> None:
    _toolkit_free(node)
    _plugin_state(node, ["driver-mounts"], "/usr/local/nvidia")
    node.remove("etc/containerd/config.toml")
    node.remove("usr/bin/containerd")
    _, results = run("--simulate", "t4", "validate", "--root", str(node.root))
    assert "no container runtime is installed" in step(results, "runtime")["detail"]


def test_envvar_beside_driver_mounts_still_needs_the_nvidia_runtime(node: Any) -> None:
    _toolkit_free(node)
    _plugin_state(node, ["envvar", "driver-mounts"], "/usr/local/nvidia")
    _, results = run("--simulate", "t4", "validate", "--root", str(node.root))
    assert step(results, "runtime")["detail"].startswith("runtime.")
