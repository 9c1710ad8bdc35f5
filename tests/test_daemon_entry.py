"""The daemons' own entry points (``kgpu-device-plugin``, ``kgpu-exporter``): lean, and the same as the commands.

The chart runs them instead of ``kgpu device-plugin`` / ``kgpu exporter`` so that a daemon never carries kgpu's
command line (Typer, click, rich, and the pydantic TypeAdapters Typer builds for every option) in its memory.
Their command lines are generated from the same flag rows and call the same ``run``; these tests hold them to it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from cli_inproc import kgpu

import kgpu.deviceplugin.daemon as dp_daemon
import kgpu.exporter.daemon as ex_daemon
from kgpu.config.flags import DCGM_EXPORTER, DEVICE_PLUGIN, Flag, flags_of
from kgpu.daemon import parse_listen
from kgpu.daemon.entry import parse
from kgpu.gpu import open_backend
from kgpu.operator.components import documents
from kgpu.operator.template import Context, evaluate_document
from kgpu.operator.values import chart_defaults, coalesce
from kgpu.options import GlobalOptions
from kgpu.testing.kubelet import FakeKubelet

COMMAND_LINE = ("typer", "click", "rich", "shellingham")
"""Top-level packages of kgpu's command line (Typer vendors click as typer._click; rich draws its errors)."""
API_SERVER = ("lightkube", "httpx", "httpx2", "kopf")


def loaded_packages(*modules: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after importing ``modules``."""
    code = f"import sys\nimport {', '.join(modules)}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


# Given the device plugin's entry point as the chart starts it on an NVML node,
# then its process holds no part of kgpu's command line, and no API-server client (dynamic shares load one).
def test_the_device_plugins_entry_point_loads_no_command_line_and_no_api_client() -> None:
    loaded = loaded_packages("kgpu.deviceplugin.daemon", "kgpu.gpu.nvml")
    assert {"grpc", "pynvml"} <= loaded  # what it does need
    assert loaded.isdisjoint(COMMAND_LINE + API_SERVER), loaded & set(COMMAND_LINE + API_SERVER)


# Given the exporter's entry point on an NVML node, then not even pydantic or YAML: it reads no config file.
def test_the_exporters_entry_point_loads_no_command_line_no_pydantic_and_no_yaml() -> None:
    loaded = loaded_packages("kgpu.exporter.daemon", "kgpu.gpu.nvml")
    assert {"grpc", "pynvml"} <= loaded
    unwanted = (*COMMAND_LINE, *API_SERVER, "pydantic", "pydantic_core", "yaml")
    assert loaded.isdisjoint(unwanted), loaded & set(unwanted)


def sample_args(rows: tuple[Flag, ...]) -> list[str]:
    """Every row given once, in the forms NVIDIA's users write: --name=value, -name value, a bare boolean,
    a list repeated."""
    args: list[str] = []
    for i, row in enumerate(rows):
        name = row.names[-1] if i % 3 == 0 else row.name  # aliases too (--nvidia-driver-root, --container-…)
        if row.kind == "bool":
            args += [f"--{name}"] if i % 2 else [f"-{name}=false"]
        elif row.kind in ("strings", "ints"):
            value = row.choices[0] if row.choices else "0" if row.kind == "ints" else "a"
            args += [f"--{name}", value, f"--{name}={value}"]
        else:
            value = row.choices[-1] if row.choices else "7" if row.kind in ("int", "float") else f"v{i}"
            args += [f"-{name}", value] if i % 2 else [f"--{name}={value}"]
    return args


class Captured:
    """What ``run`` was called with, in place of serving."""

    def __init__(self) -> None:
        self.calls: list[tuple[GlobalOptions, dict[str, object]]] = []

    def __call__(self, options: GlobalOptions, given: Mapping[str, object]) -> None:
        self.calls.append((options, dict(given)))


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("KGPU_BACKEND", "KGPU_SIMULATE", "KGPU_SIMULATE_EVENTS", "KGPU_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KGPU_SIMULATE", "a30")
    monkeypatch.setenv("KGPU_LOG_LEVEL", "warning")
    yield


# Given the same flags (and kgpu's global options from the environment, as a pod sets them),
# when each daemon is started as a kgpu command and from its own entry point,
# then both reach the same run() with the same options and the same flags.
@pytest.mark.parametrize(("command", "module", "main", "rows"), [
    ("device-plugin", dp_daemon, dp_daemon.main, flags_of(DEVICE_PLUGIN)),
    ("exporter", ex_daemon, ex_daemon.main, ex_daemon.FLAGS),
])
def test_the_entry_point_and_the_command_hand_run_the_same_settings(
        environment: None, monkeypatch: pytest.MonkeyPatch, command: str, module: object, main: object,
        rows: tuple[Flag, ...]) -> None:
    args = sample_args(rows)
    captured = Captured()
    monkeypatch.setattr(module, "run", captured)
    done = kgpu(command, *args)
    assert done.returncode == 0, done.stderr
    monkeypatch.setattr(sys, "argv", [f"kgpu-{command}", *args])
    main()  # type: ignore[operator]
    (by_command, from_command), (by_entry, from_entry) = captured.calls
    assert from_entry == from_command
    assert set(from_entry) == {r.name for r in rows}  # every row arrived, under its name
    assert by_entry == by_command == GlobalOptions(simulate="a30", log_level="warning")


@pytest.mark.parametrize(("prog", "rows"), [
    ("kgpu.deviceplugin", flags_of(DEVICE_PLUGIN)), ("kgpu.exporter", ex_daemon.FLAGS),
])
def test_help_names_every_flag_whole_at_80_columns_with_its_variables(prog: str, rows: tuple[Flag, ...]) -> None:
    out = subprocess.run([sys.executable, "-m", prog, "--help"], capture_output=True, text=True, check=True,
                         env={**os.environ, "COLUMNS": "80"}).stdout
    assert max(len(line) for line in out.splitlines()) <= 80
    words = {w.rstrip(".") for w in out.replace(",", " ").split()}
    for row in rows:
        assert {f"--{n}" for n in row.names if len(n) > 1} <= words, row.name
        assert set(row.env_for(DEVICE_PLUGIN if prog == "kgpu.deviceplugin" else DCGM_EXPORTER)) <= words
    assert "KGPU_SIMULATE" in out and "/run/kgpu/device-plugin/state.json" in out


# A bad value is refused as the command refuses it: one line naming the flag, the value and what is allowed.
def test_a_bad_value_is_the_same_one_line_from_both(environment: None, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    done = kgpu("device-plugin", "--mig-strategy", "mixd")
    monkeypatch.setattr(sys, "argv", ["kgpu-device-plugin", "--mig-strategy", "mixd"])
    with pytest.raises(SystemExit) as exit_:
        dp_daemon.main()
    assert exit_.value.code == done.returncode == 2
    line = capsys.readouterr().err
    assert line == done.stderr and line.count("\n") == 1 and "'mixd' is not one of none, single, mixed" in line


def test_an_unknown_option_or_global_setting_is_a_usage_error(environment: None, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["kgpu-exporter", "--listn", ":9400"])
    with pytest.raises(SystemExit) as exit_:
        ex_daemon.main()
    assert exit_.value.code == 2 and "unrecognized arguments: --listn" in capsys.readouterr().err
    monkeypatch.setenv("KGPU_BACKEND", "cuda")
    monkeypatch.setattr(sys, "argv", ["kgpu-exporter", "--once"])
    with pytest.raises(SystemExit) as exit_:
        ex_daemon.main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("kgpu: error: environment variable KGPU_BACKEND: 'cuda' is not one of auto, "
                                       "nvml, simulated\n")


def without_timing(metrics: str) -> list[str]:
    return [line for line in metrics.splitlines() if not line.startswith("kgpu_exporter_scrape_duration_seconds")]


# Given a simulated A30, one scrape from `kgpu-exporter --once` is the scrape `kgpu exporter --once` prints.
def test_one_scrape_from_the_exporters_entry_point_is_the_commands(tmp_path: Path) -> None:
    env = {**os.environ, "KGPU_SIMULATE": "a30"}
    flags = ["--once", "--kubelet-pod-resources", "none", "--device-plugin-state", "none", "--hostname", "n1"]
    lean = subprocess.run([sys.executable, "-m", "kgpu.exporter", *flags], env=env, capture_output=True, text=True,
                          check=True, timeout=60).stdout
    command = subprocess.run([sys.executable, "-m", "kgpu", "exporter", *flags], env=env, capture_output=True,
                             text=True, check=True, timeout=60).stdout
    assert "DCGM_FI_DEV_FB_TOTAL{" in lean and 'Hostname="n1"' in lean
    assert without_timing(lean) == without_timing(command)


# Given a kubelet, `kgpu-device-plugin` registers, allocates and stops on SIGTERM as `kgpu device-plugin` does.
def test_the_device_plugins_entry_point_serves_the_kubelet_and_stops_on_sigterm(tmp_path: Path) -> None:
    kubelet = FakeKubelet(tmp_path / "dp").start()
    env = {**os.environ, "KGPU_SIMULATE": "t4"}
    proc = subprocess.Popen([sys.executable, "-m", "kgpu.deviceplugin", "--kubelet-dir", str(kubelet.directory),
                             "--state-file", str(tmp_path / "state.json")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        reg = kubelet.wait_for_registration("nvidia.com/gpu", timeout=60)
        assert reg.endpoint == "nvidia-gpu.sock"
        uuid = open_backend(simulate="t4").inventory().gpus[0].uuid
        response = kubelet.client("nvidia.com/gpu").allocate([[uuid]])
        assert response.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == uuid
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        kubelet.stop()
    assert code == 0, proc.stderr.read() if proc.stderr else ""
    assert not (kubelet.directory / "nvidia-gpu.sock").exists()


# Given the chart with its default values (rendered by the operator's engine, which tests/test_operator_chart.py
# holds equal to Helm's), then the device plugin and the exporter start from their own entry points, installed
# as console scripts, with arguments those entry points accept, and the kubelet probes the plugin's /healthz.
def test_the_chart_starts_both_daemons_from_their_entry_points_and_probes_their_healthz() -> None:
    ctx = Context(values=coalesce(chart_defaults(), {}))
    rendered = [d for d in (evaluate_document(doc, ctx) for doc in documents()) if d]
    containers = {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0] for d in rendered}
    scripts = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["scripts"]
    for name, program, rows in (("kgpu-device-plugin", DEVICE_PLUGIN, flags_of(DEVICE_PLUGIN)),
                                ("kgpu-exporter", DCGM_EXPORTER, ex_daemon.FLAGS)):
        container = containers[name]
        assert container["command"] == [name] and name in scripts
        given = parse(name, program, rows, "", container["args"])  # exits 2 on a flag the entry point lacks
        probe = container["livenessProbe"]["httpGet"]
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == probe["port"])
        address = given["healthz"] if name == "kgpu-device-plugin" else given["listen"]
        assert probe["path"] == "/healthz" and parse_listen(str(address), "--healthz")[1] == port
