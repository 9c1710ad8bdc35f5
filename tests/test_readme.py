"""Every command the README shows runs as a newcomer would run it, from a checkout after `make demo`.

Given the README, when each of its shell blocks is run in order — as written, with `kgpu` on the PATH as
the Quick start's `. .venv/bin/activate` puts it — then each command does what the README says. A few
commands need what a test machine lacks; each says so below, and how it runs here instead:

* on a GPU node: the same command line on the simulated backend (``KGPU_SIMULATE``), the way
  ``--simulate`` would (the GPU machine runs them on the real driver: ``scripts/device/``);
* writing the node's files (``/etc/...``): the same command with ``--root`` on a copy of a fixture node;
* against a cluster (``kubectl``, ``helm``, ``--node``): skipped here; each names the real-cluster test
  (``tests/e2e``, ``make e2e``) that runs it on the lab's Kubernetes: as written, taken from the README
  (``tests/e2e/readme.py``), or the same thing in the test's own words, which the plan says.

A command the table does not know fails the test: a new README example must say how it is checked.
Paths under ``/tmp/`` are a private directory per test; daemons are stopped with SIGTERM and must exit 0.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent
FIXTURE_NODE = ROOT / "tests/fixtures/nodes/ubuntu-h100"

GPU_NODE = {"KGPU_SIMULATE": "h100x8"}
"""A GPU node's commands run on the simulated backend (the GPU machine runs them for real)."""
E2E_DIR = ROOT / "tests" / "e2e"
sys.path.insert(0, str(E2E_DIR))
from readme import block_commands  # noqa: E402  (tests/e2e is a test root of its own)


@dataclass(frozen=True)
class Run:
    """Run the command; it must exit with one of ``rc`` and print every ``expect``."""

    env: dict[str, str] = field(default_factory=dict)
    rc: tuple[int, ...] = (0,)
    expect: tuple[str, ...] = ()
    root: bool = False
    """Append ``--root NODE`` (a copy of a fixture node) so the node's files it writes are the copy's."""
    etc: bool = False
    """Absolute /etc/ paths in the command point into the private directory."""


@dataclass(frozen=True)
class Daemon:
    """Start the command, wait for ``ready`` in its output, send SIGTERM: it must exit 0."""

    ready: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass(frozen=True)
class Script:
    """Run the whole block as one bash script (its commands depend on each other), less its skipped lines."""

    expect: tuple[str, ...] = ()


@dataclass(frozen=True)
class E2E:
    """Needs a Kubernetes cluster: run by ``test`` of the real-cluster suite (``FILE`` or ``FILE::FUNCTION`` under
    tests/e2e; a fixture counts), as written (the test takes it from the README) unless ``how`` says what it runs."""

    test: str
    how: str = ""

    @property
    def reason(self) -> str:
        return f"on a cluster: tests/e2e/{self.test} runs it " + (f"({self.how})" if self.how else "as written")


Plan = Run | Daemon | Skip | Script | E2E
SHARING = "test_chart.py::test_the_readmes_time_slicing_upgrade_advertises_32_gpus_and_its_verify_step_shows_it"
OPERATOR_READY = "test_operator.py::test_the_policy_is_ready_with_every_stage_of_the_node_filled_and_says_so"
OPERATOR_MIG = "test_operator.py::test_a_mig_config_label_reshapes_the_simulated_node_its_resources_and_labels"

EXPORTER_ENV = {**GPU_NODE, "KGPU_EXPORTER_LISTEN": "127.0.0.1:0", "KGPU_KUBELET_POD_RESOURCES": "none",
                "KGPU_DEVICE_PLUGIN_STATE": "none"}
"""The exporter on a free port, without this machine's kubelet (the lab's, under its lock) or plugin state."""

# Each README command (trailing comment removed) → how it is checked. A block with a Script command runs as
# one script (commands without a plan of their own run as part of it).
PLANS: dict[str, Plan] = {
    # Quick start
    "make demo": Skip("run and timed in a fresh clone by bench/newcomer.sh"),
    ". .venv/bin/activate": Script(expect=("8 GPU(s)", "NVIDIA H100 80GB HBM3")),
    "make test": Skip("this suite is make test"),
    "kgpu gpus": Run(GPU_NODE, expect=("8 GPU(s)",)),
    "kgpu --driver-root /usr/local/nvidia gpus": Run(GPU_NODE, expect=("8 GPU(s)",)),
    # The inventory
    "kgpu --simulate h100x8 gpus": Run(expect=("8 GPU(s)",)),
    "kgpu --simulate a100-mig gpus --json": Run(expect=('"mig_devices"',)),
    "kgpu --simulate t4 gpus --readings": Run(expect=("Tesla T4",)),
    "kgpu gpus --watch-health": Daemon("watching health", GPU_NODE),
    "kgpu --simulate t4 --simulate-events /tmp/events.jsonl gpus --watch-health &": Script(
        expect=("GPU 0 GPU-c707cd42-1dcd-5307-b9cd-750818912a76: XID 79",)),
    # The device plugin
    "kgpu device-plugin --config-file /etc/kgpu/dp.yaml": Skip(
        "a GPU node's kubelet and /etc/kgpu/dp.yaml; the next block runs the plugin against a kubelet stand-in"),
    "python -m kgpu.testing.kubelet --kubelet-dir /tmp/dp --allocate 2 &": Script(
        expect=("registered: nvidia.com/gpu", "ListAndWatch: 8 device(s)", "Allocate")),
    # Fractional GPUs
    "kgpu --simulate h100x8 mps-layout --config-file examples/mps.yaml": Run(expect=("nvidia.com/gpu-20gb",)),
    "kgpu mps-daemon --config-file examples/mps.yaml": Skip(
        "runs nvidia-cuda-mps-control on a GPU (scripts/device/mps.sh); tests/test_mps_daemon.py runs it with a fake"),
    "kgpu lint examples/gpu-workloads.yaml": Run(rc=(1,), expect=("error fractional-gpu", "requests-without-limits",
                                                                  "missing-gpu-toleration")),
    "kgpu scheduler-extender --node-scheduler-policy binpack --gpu-scheduler-policy spread": Skip(
        "the chart's kgpu-scheduler pod; no real-cluster test of the scheduler on main yet (issue 15)"),
    "kubectl describe pod big": Skip("no real-cluster test of the scheduler on main yet (issue 15)"),
    # Node labels
    "kgpu --simulate a100-mig labels --mig-strategy mixed": Run(expect=("nvidia.com/mig.strategy=mixed",)),
    "kgpu labels --config-file examples/plugin.yaml -o /etc/kubernetes/node-feature-discovery/features.d/kgpu": Run(
        GPU_NODE, etc=True, expect=("nvidia.com/gpu.replicas",)),
    'kgpu labels --node "$(hostname)"': E2E(
        "test_admin_commands.py::test_labels_node_applies_the_nodes_labels_and_prune_takes_them",
        "the lab's Node for $(hostname): it is not named after this machine"),
    'kgpu labeler --node "$NODE_NAME" --interval 60': E2E(
        "test_chart.py::test_the_node_carries_gpu_feature_discoverys_labels", "the chart's kgpu-labeler runs it"),
    "kgpu node label && kgpu node taint": E2E("test_admin_commands.py::test_node_label_and_taint_bootstrap_a_gpu_node"),
    # GPU metrics
    "kgpu exporter": Daemon("serving GPU metrics on http://", EXPORTER_ENV),
    "kgpu --simulate h100x8 exporter --once": Run(EXPORTER_ENV, expect=("DCGM_FI_DEV_GPU_TEMP",)),
    "kgpu exporter --print-default-counters > my.csv": Run(),
    "kgpu exporter --collect my.csv --hostname-label hostname": Daemon("serving GPU metrics on http://", EXPORTER_ENV),
    # Doctor and node prepare: this machine is no GPU node, so checks may fail (exit 1); they must run and report
    "kgpu doctor": Run(GPU_NODE, rc=(0, 1), expect=("driver",)),
    "kgpu doctor --json --only driver.nouveau,k8s.swap": Run(GPU_NODE, rc=(0, 1), expect=('"driver.nouveau"',)),
    "kgpu --driver-root /usr/local/nvidia doctor": Run(GPU_NODE, rc=(0, 1), expect=("driver",)),
    "kgpu --simulate h100x8 doctor --root tests/fixtures/nodes/ubuntu-h100": Run(rc=(0, 1), expect=("nouveau",)),
    "kgpu node prepare": Run(root=True),
    "kgpu node prepare --apply": Run(root=True),
    # Validate: on this machine (no driver) the chain stops at step 1, saying so; the fixture node passes
    "kgpu validate": Run(GPU_NODE, rc=(1,), expect=("[1/7] driver", "validation FAILED at step 1")),
    "kgpu --driver-root /usr/local/nvidia validate --json": Run(GPU_NODE, rc=(1,), expect=('"step": 1',)),
    "kgpu validate --gpu 0 --skip runtime,device-plugin": Run(GPU_NODE, rc=(1,), expect=("[5/7] runtime",)),
    "kgpu --simulate h100x8 validate --root tests/fixtures/validate/h100x8-node": Run(expect=("validation PASSED",)),
    # Dynamic Resource Allocation
    'kgpu dra-plugin --node-name "$NODE_NAME"': E2E("test_dra.py", "simulated, on the lab's node as root"),
    "kgpu --simulate h100x8 dra-plugin --node-name lab-node --kubeconfig lab.conf": E2E(
        "test_dra.py", "the plugin on the lab's node as root, with the lab's kubeconfig, CDI and MPS directories"),
    "make e2e-dra": E2E("test_dra.py", "make e2e-dra is run.py -k test_dra on lab v1.36"),
    # Install on a cluster: what make e2e does on the lab
    "make image": Skip("builds kgpu's image (mmdebstrap, minutes); make e2e builds it and installs the chart with it"),
    '../shared/lab/lab up && eval "$(../shared/lab/lab env)"': E2E("conftest.py::cluster", "run.py: lab up, lab env"),
    "../shared/lab/lab import build/kgpu-image.tar": E2E("conftest.py::image", "lab import of make image's archive"),
    "kubectl label node lab-node nvidia.com/gpu.present=true": E2E("test_chart.py::installed"),
    ".venv/bin/python tests/e2e/node.py": E2E("conftest.py::driver_root", "node.py's lay_out_driver_root"),
    "helm install kgpu deploy/helm/kgpu -n kube-system -f deploy/helm/kgpu/ci/lab-values.yaml": E2E(
        "test_chart.py::installed"),
    "helm install kgpu deploy/helm/kgpu -n kube-system --set image.repository=registry.example.com/kgpu": Skip(
        "an image in your own registry; this render of the chart is tests/deploy/test_helm_chart.py's"),
    "cat > sharing.yaml <<'YAML'": E2E(SHARING),
    "helm upgrade kgpu deploy/helm/kgpu -n kube-system --reuse-values -f sharing.yaml": E2E(SHARING),
    "kubectl -n kube-system get pods -l app.kubernetes.io/instance=kgpu": E2E(SHARING),
    "kubectl describe node GPU-NODE | grep -A8 Allocatable": E2E(SHARING),
    ("kgpu validate --pod --kubeconfig ~/.kube/config --namespace kube-system "
     "--image registry.example.com/kgpu:0.1.0"): E2E(
        "test_chart.py::test_validation_job_and_validate_pod_skip_cuda_honestly",
        "with --simulate h100x8 and the host's steps skipped: the lab's host has no driver, so step 1 would stop it"),
    # The operator and MIG layouts
    "helm install kgpu deploy/helm/kgpu -n kube-system --set operator.enabled=true": E2E(
        "test_operator.py", "lab-values.yaml with operator.enabled=true"),
    "kubectl get clusterpolicies.kgpu.io": E2E(OPERATOR_READY),
    ("kubectl patch clusterpolicies.kgpu.io cluster-policy --type merge -p '{\"spec\":{\"devicePlugin\":{\"config\":"
     "{\"version\":\"v1\",\"sharing\":{\"timeSlicing\":{\"resources\":[{\"name\":\"nvidia.com/gpu\",\"replicas\":4}]}}}}}}'"):
        E2E("test_operator.py::test_a_sharing_change_rolls_out_node_by_node_after_validation_and_allocatable_follows"),
    "kgpu status": E2E(OPERATOR_READY),
    "kubectl label node gpu-1 nvidia.com/mig.config=all-balanced --overwrite": E2E(OPERATOR_MIG),
    "kubectl get node gpu-1 -L nvidia.com/mig.config.state": E2E(OPERATOR_MIG),
    # Container runtime and CDI: on a copy of a fixture node
    "kgpu runtime configure --runtime containerd --dry-run": Run(root=True, expect=("99-nvidia.toml",)),
    "kgpu runtime configure --runtime containerd --set-as-default --cdi": Run(root=True),
    "kgpu runtime configure --runtime containerd --no-drop-in": Run(root=True),
    "kgpu runtime configure --runtime docker --set-as-default": Run(root=True),
    "kgpu runtime configure --runtime crio": Run(root=True),
    "kgpu runtime unconfigure --runtime containerd": Run(root=True),
    "kgpu cdi generate --output /etc/cdi/nvidia.yaml": Run(GPU_NODE, root=True),
    "kgpu --driver-root /usr/local/nvidia cdi generate --device-name-strategy both --format json": Skip(
        "a driver installed under /usr/local/nvidia (scripts/device/cdi.sh on the GPU machine)"),
    "kgpu cdi validate /etc/cdi/nvidia.yaml": Run(root=True),
}


@dataclass(frozen=True)
class Block:
    section: str
    line: int
    lang: str
    text: str

    @property
    def id(self) -> str:
        return f"L{self.line}-{re.sub(r'[^a-z0-9]+', '-', self.section.lower()).strip('-')[:30]}"


def readme_blocks() -> list[Block]:
    text = README.read_text()
    blocks, section = [], ""
    for match in re.finditer(r"^(#{2,3} [^\n]*)$|^```(\w*)\n(.*?)^```", text, re.M | re.S):
        if match.group(1):
            section = match.group(1).lstrip("# ")
        else:
            line = text[: match.start()].count("\n") + 1
            blocks.append(Block(section, line, match.group(2), match.group(3)))
    return blocks


def _uncomment(line: str) -> str:
    return re.sub(r"\s+#\s.*$", "", line).rstrip()


def commands(block: Block) -> list[str]:
    """The block's commands as the real-cluster suite splits them (tests/e2e/readme.py), a heredoc by its
    command line alone: the key of its plan."""
    return [c.split("\n", 1)[0] for c in block_commands(block.text)]


SHELL_BLOCKS = [b for b in readme_blocks() if b.lang == "sh"]


def test_the_readme_has_its_examples() -> None:
    assert len(SHELL_BLOCKS) >= 15
    assert commands(SHELL_BLOCKS[0])[:2] == ["make demo", ". .venv/bin/activate"]


def script_plan(block: Block) -> Script | None:
    return next((p for c in commands(block) if isinstance(p := PLANS.get(c), Script)), None)


def test_every_readme_command_says_how_it_is_checked() -> None:
    unknown = []
    for block in SHELL_BLOCKS:
        if script_plan(block) is None:
            unknown += [f"README line {block.line}: {c}" for c in commands(block) if c not in PLANS]
    assert not unknown, "add these README commands to tests/test_readme.py's PLANS:\n" + "\n".join(unknown)
    used = {c for b in SHELL_BLOCKS for c in commands(b)}
    assert not set(PLANS) - used, f"PLANS lists commands the README no longer has: {sorted(set(PLANS) - used)}"


def test_every_cluster_command_names_the_e2e_test_that_runs_it() -> None:
    """A README command for a cluster names a real-cluster test that exists; one it runs as written, that test
    takes from the README (tests/e2e/readme.py: ``readme.command(SECTION, "its first words")``)."""
    problems = []
    for command, plan in PLANS.items():
        if not isinstance(plan, E2E):
            continue
        file, _, function = plan.test.partition("::")
        source = (E2E_DIR / file).read_text() if (E2E_DIR / file).exists() else ""
        if not source or (function and not re.search(rf"^def {function}\(", source, re.M)):
            problems.append(f"{command}: tests/e2e/{plan.test} does not exist")
        elif not plan.how and not any(command.startswith(words) for words in
                                      re.findall(r'readme\.command\(\w+, "([^"]+)"\)', source)):
            problems.append(f"{command}: tests/e2e/{file} does not take it from the README (readme.command)")
    assert not problems, "\n".join(problems)


def test_readme_yaml_examples_are_the_files_in_examples() -> None:
    """A YAML block headed ``# examples/NAME`` is that file (less the file's own header comments)."""
    shown = [b for b in readme_blocks() if b.lang == "yaml" and b.text.startswith("# examples/")]
    assert {b.text.splitlines()[0] for b in shown} >= {"# examples/plugin.yaml", "# examples/mps.yaml"}
    for block in shown:
        name, *body = block.text.splitlines()
        lines = (ROOT / name.removeprefix("# ")).read_text().splitlines()
        while lines and lines[0].startswith("#"):
            lines.pop(0)
        assert lines == body, f"README line {block.line} differs from {name.removeprefix('# ')}"


@pytest.fixture
def sandbox(tmp_path: Path) -> Path:
    """A working directory like the checkout's (examples/, tests/ beside it) with a private /tmp."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("examples", "tests", "deploy", ".venv"):
        if (ROOT / name).exists():
            (work / name).symlink_to(ROOT / name)
    (tmp_path / "tmp").mkdir()
    (tmp_path / "home").mkdir()
    return work


def _env(sandbox: Path, extra: dict[str, str], activated: bool = True) -> dict[str, str]:
    """A login shell's environment; ``activated``: the virtual environment's bin first, as after activate."""
    keep = {k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL", "SYSTEMROOT")}
    path = f"{VENV_BIN}:/usr/bin:/bin" if activated else "/usr/local/bin:/usr/bin:/bin"
    return {**keep, "PATH": path, "HOME": str(sandbox.parent / "home"), "COLUMNS": "120",
            "TMPDIR": str(sandbox.parent / "tmp"), **extra}


def _private_tmp(command: str, sandbox: Path) -> str:
    return re.sub(r"(?<![\w.])/tmp/", f"{sandbox.parent / 'tmp'}/", command)


def _run(command: str, plan: Run, sandbox: Path) -> None:
    line = _private_tmp(command, sandbox)
    if plan.etc:
        line = re.sub(r"(?<![\w.])/etc/", f"{sandbox.parent / 'etc'}/", line)
    if plan.root:
        node = sandbox.parent / "node"
        if not node.exists():
            shutil.copytree(FIXTURE_NODE, node, symlinks=True)
        line += f" --root {node}"
    done = subprocess.run(["bash", "-c", line], cwd=sandbox, env=_env(sandbox, plan.env), capture_output=True,
                          text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode in plan.rc, f"{command!r} exited {done.returncode}:\n{output}"
    assert "Traceback" not in output, output
    for text in plan.expect:
        assert text in output, f"{command!r} did not print {text!r}:\n{output}"


def _daemon(command: str, plan: Daemon, sandbox: Path) -> None:
    out = sandbox.parent / "daemon.out"
    with out.open("w") as sink:
        proc = subprocess.Popen(["bash", "-c", f"exec {_private_tmp(command, sandbox)}"], cwd=sandbox,
                                env=_env(sandbox, plan.env), stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while plan.ready not in out.read_text():
            assert proc.poll() is None, f"{command!r} exited {proc.returncode}:\n{out.read_text()}"
            assert time.monotonic() < deadline, f"{command!r} never said {plan.ready!r}:\n{out.read_text()}"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _script(block: Block, plan: Script, sandbox: Path) -> None:
    if ".venv/bin/activate" in block.text and not (ROOT / ".venv/bin/activate").exists():
        pytest.skip("the tests run from a virtual environment other than the checkout's .venv")
    lines = [line for line in block.text.splitlines()
             if not isinstance(PLANS.get(_uncomment(line)), Skip | E2E)]
    if commands(block)[-1].startswith("kgpu --simulate h100x8 device-plugin"):
        # The README says: the plugin stays in the foreground until stopped. Stop it as a reader would, once
        # the stand-in has exited (it is the first background job).
        *lines, last = lines
        lines += [f"{last} &", "wait %1", "kill -TERM %2", "wait %2"]
    script = "set -e\n" + _private_tmp("\n".join(lines) + "\n", sandbox)
    # The Quick start's block starts from a plain shell: only its own `. .venv/bin/activate` puts kgpu on PATH.
    env = _env(sandbox, {}, activated=".venv/bin/activate" not in block.text)
    done = subprocess.run(["bash", "-c", script], cwd=sandbox, env=env, capture_output=True, text=True, timeout=120)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"README line {block.line} exited {done.returncode}:\n{output}"
    assert "Traceback" not in output, output
    for expected in plan.expect:
        assert expected in output, f"README line {block.line} did not print {expected!r}:\n{output}"


@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[b.id for b in SHELL_BLOCKS])
def test_readme_block_runs_as_written(block: Block, sandbox: Path) -> None:
    cmds = commands(block)
    script = script_plan(block)
    if script is not None:
        _script(block, script, sandbox)
        return
    ran = 0
    for command in cmds:
        plan = PLANS[command]
        if isinstance(plan, Run):
            _run(command, plan, sandbox)
        elif isinstance(plan, Daemon):
            _daemon(command, plan, sandbox)
        else:
            continue
        ran += 1
    if not ran:
        pytest.skip("; ".join(sorted({p.reason for c in cmds if isinstance(p := PLANS[c], Skip | E2E)})))
