"""NVIDIA's gpu-feature-discovery command tests (cmd/gpu-feature-discovery/*_test.go, v0.20), replayed
against ``kgpu labeler`` and kgpu's labels, case for case.

NVIDIA checks a run's output file line by line against regular expressions
(tests/expected-output*.txt, copied to tests/fixtures/nvidia/gfd-expected-output-v0.20/): every line
must match one of them. kgpu's two labels of its own (``nvidia.com/gpu.present``, the GPU Operator's,
and NFD's ``feature.node.kubernetes.io/pci-10de.present``) are left out of that check.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_inproc import kgpu
from nvidia_mocks import full_gpu, mig, mig_enabled_gpu, node

from kgpu.gpu.model import GPU
from kgpu.labels import HostFacts, node_labels
from kgpu.labels.config import resolve_settings
from kgpu.labels.output import parse_lines

EXPECTED = Path(__file__).parent / "fixtures/nvidia/gfd-expected-output-v0.20"
KGPU_OWN = ("nvidia.com/gpu.present=", "feature.node.kubernetes.io/pci-10de.present=")


def check_result(lines: list[str], expected: str) -> None:
    """NVIDIA's checkResult (non-vGPU lines): each line matches one expected regexp, searched anywhere."""
    patterns = [re.compile(p) for p in (EXPECTED / expected).read_text().splitlines() if p]
    for line in lines:
        if "vgpu" in line or line.startswith(KGPU_OWN):
            continue
        assert any(p.search(line) for p in patterns), f"line does not match any regexp: {line}"


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """NVIDIA's setupMachineFile; KGPU_SIMULATE and GFD's variables cleared so the flags given decide."""
    for name in ("KGPU_SIMULATE", "MIG_STRATEGY", "GFD_MIG_STRATEGY", "FAIL_ON_INIT_ERROR", "GFD_FAIL_ON_INIT_ERROR",
                 "CONFIG_FILE", "GFD_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "machine-type"
    path.write_text("product-name\n")
    return path


def run_oneshot(tmp_path: Path, machine: Path, *args: str, backend: tuple[str, ...] = ("--simulate", "t4")
                ) -> tuple[int, str, dict[str, str]]:
    out = tmp_path / "gfd-test"
    done = kgpu(*backend, "labeler", "--oneshot", "--root", str(tmp_path), "--output-file", str(out),
                "--machine-type-file", str(machine), *args)
    written = parse_lines(out.read_text()) if done.returncode == 0 else {}
    return done.returncode, done.stderr, written


# --- main_test.go: TestRunOneshot / TestRunWithNoTimestamp ----------------------------------------
# NewTestNvmlMock is one full GPU: the simulated t4 node.

@pytest.mark.parametrize("no_timestamp", [False, True], ids=["TestRunOneshot", "TestRunWithNoTimestamp"])
def test_a_oneshot_run_writes_gfds_labels(tmp_path: Path, machine: Path, no_timestamp: bool) -> None:
    flags = ("--no-timestamp",) if no_timestamp else ()
    code, err, labels = run_oneshot(tmp_path, machine, "--mig-strategy", "none", "--sleep-interval", "1s", *flags)
    assert code == 0, err
    check_result([f"{k}={v}" for k, v in labels.items()], "expected-output.txt")
    assert labels["nvidia.com/gpu.machine"] == "product-name"
    assert ("nvidia.com/gfd.timestamp" in labels) is not no_timestamp
    if not no_timestamp:
        assert re.fullmatch(r"[0-9]{10}", labels["nvidia.com/gfd.timestamp"])


# --- main_test.go: TestFailOnNVMLInitError --------------------------------------------------------
# errorOnInit: the NVML backend over a driver root without the driver (libnvidia-ml.so.1 missing);
# "some other error": migStrategy bogus.

NO_DRIVER = ("--backend", "nvml", "--driver-root")


@pytest.mark.parametrize(
    ("error_on_init", "fail_on_init_error", "mig_strategy", "expect_error"),
    [
        pytest.param(True, True, "none", True, id="errorOnInit = true, failOnInitError = true, no other errors"),
        pytest.param(True, True, "bogus", True, id="errorOnInit = true, failOnInitError = true, some other error"),
        # NVIDIA's table writes "bogus" here too; its null manager, having no devices, never reads the
        # strategy. kgpu refuses a strategy it does not know before it looks for GPUs (one line naming the
        # flag): deliberate, so a typo never waits for a node whose driver works to surface.
        pytest.param(True, False, "bogus", True, id="errorOnInit = true, failOnInitError = false, no other errors"),
        pytest.param(True, False, "bogus", True, id="errorOnInit = true, failOnInitError = false, some other error"),
        pytest.param(False, True, "none", False, id="errorOnInit = false, failOnInitError = true, no other errors"),
        pytest.param(False, True, "bogus", True, id="errorOnInit = false, failOnInitError = true, some other error"),
        pytest.param(False, False, "none", False, id="errorOnInit = false, failOnInitError = false, no other errors"),
        pytest.param(False, False, "bogus", True, id="errorOnInit = false, failOnInitError = false, some other error"),
    ],
)
def test_fail_on_nvml_init_error(tmp_path: Path, machine: Path, error_on_init: bool, fail_on_init_error: bool,
                                 mig_strategy: str, expect_error: bool) -> None:
    backend = (*NO_DRIVER, str(tmp_path / "no-driver")) if error_on_init else ("--simulate", "t4")
    code, err, _ = run_oneshot(tmp_path, machine, "--mig-strategy", mig_strategy,
                               f"--fail-on-init-error={str(fail_on_init_error).lower()}", backend=backend)
    assert (code != 0) is expect_error, err
    if expect_error:
        assert len(err.strip().splitlines()) == 1 and err.startswith("kgpu: error: ")


def test_fail_on_init_error_false_labels_no_gpus_when_nvml_cannot_start(tmp_path: Path, machine: Path) -> None:
    # NVIDIA's case 3 with a valid strategy: GFD falls back to its null manager (no devices), so the
    # run succeeds and writes only the timestamp
    backend = (*NO_DRIVER, str(tmp_path / "no-driver"))
    code, err, labels = run_oneshot(tmp_path, machine, "--fail-on-init-error=false", backend=backend)
    assert code == 0, err
    assert list(labels) == ["nvidia.com/gfd.timestamp"]
    assert "libnvidia-ml.so.1" in err  # the reason is logged


# --- mig_test.go: TestMigStrategy* ----------------------------------------------------------------

def labels_of(strategy: str, *gpus: GPU) -> dict[str, str]:
    settings = resolve_settings(None, strategy, {})
    return node_labels(node(*gpus), settings, HostFacts(machine_type="product-name"), timestamp=1700000000)


@pytest.mark.parametrize(
    ("test", "strategy", "gpus", "expected_file", "expected"),
    [
        ("TestMigStrategyNone", "none", (mig_enabled_gpu(0, mig(3, 0, 20000), mig(3, 0, 20000)),),
         "expected-output-mig-none.txt",
         {"nvidia.com/gpu.count": "1", "nvidia.com/gpu.product": "MOCKMODEL", "nvidia.com/gpu.memory": "300"}),
        ("TestMigStrategySingleForNoMigDevices", "single", (full_gpu(),), "expected-output-mig-single.txt",
         {"nvidia.com/mig.strategy": "single", "nvidia.com/gpu.count": "1", "nvidia.com/gpu.product": "MOCKMODEL",
          "nvidia.com/gpu.memory": "300"}),
        # a GPU not in MIG mode: NVIDIA's mock lists MIG devices under it, which its labelers ignore;
        # kgpu's inventory has none for a GPU not in MIG mode
        ("TestMigStrategySingleForMigDeviceMigDisabled", "single", (full_gpu(),), "expected-output-mig-single.txt",
         {"nvidia.com/mig.strategy": "single", "nvidia.com/gpu.count": "1", "nvidia.com/gpu.product": "MOCKMODEL",
          "nvidia.com/gpu.memory": "300"}),
        ("TestMigStrategySingle", "single", (mig_enabled_gpu(0, mig(3, 0, 20), mig(3, 0, 20)),),
         "expected-output-mig-single.txt",
         {"nvidia.com/mig.strategy": "single", "nvidia.com/gpu.count": "2",
          "nvidia.com/gpu.product": "MOCKMODEL-MIG-3g.20gb", "nvidia.com/gpu.memory": "20"}),
        ("TestMigStrategyMixed", "mixed", (mig_enabled_gpu(0, mig(3, 0, 20), mig(1, 0, 5)),),
         "expected-output-mig-mixed.txt",
         {"nvidia.com/mig.strategy": "mixed", "nvidia.com/gpu.count": "1", "nvidia.com/gpu.product": "MOCKMODEL",
          "nvidia.com/gpu.memory": "300"}),
    ],
)
def test_mig_strategy(test: str, strategy: str, gpus: tuple[GPU, ...], expected_file: str,
                      expected: dict[str, str]) -> None:
    labels = labels_of(strategy, *gpus)
    check_result([f"{k}={v}" for k, v in labels.items()], expected_file)
    assert {k: labels.get(k) for k in expected} == expected
    if test == "TestMigStrategyMixed":
        assert "nvidia.com/mig-3g.20gb.count" in labels and "nvidia.com/mig-1g.5gb.count" in labels
