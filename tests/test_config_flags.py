"""NVIDIA's flags, replayed: every flag and environment variable of nvidia-device-plugin and
gpu-feature-discovery v0.20 is accepted by kgpu under NVIDIA's spelling, with NVIDIA's precedence.

The list is extracted from NVIDIA's source (``scripts/nvidia_flags.py`` → ``fixtures/nvidia/flags-v0.20.json``);
each case below is generated from it, so a flag NVIDIA adds shows up here as a failure.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer

from kgpu.cli import app
from kgpu.config import FLAGS, Program, flag_named, flags_of
from kgpu.config.file import key_exists, parse_config_text
from kgpu.config.flags import parse_value
from kgpu.config.resolve import resolve_settings
from kgpu.errors import ConfigError

NVIDIA: dict[str, list[dict[str, Any]]] = json.loads(
    (Path(__file__).parent / "fixtures/nvidia/flags-v0.20.json").read_text())
COMMANDS: dict[str, str] = {"nvidia-device-plugin": "device-plugin", "gpu-feature-discovery": "labeler",
                            "config-manager": "config-manager"}
"""The kgpu command that stands in for each NVIDIA program."""
CASES = [(program, f) for program, flags in NVIDIA.items() for f in flags]
CLI_CASES = [(p, f) for p, f in CASES if p in COMMANDS]
BOOL_SPELLINGS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True,
                  "0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}
SAMPLE = {"string": "x", "strings": "a,b", "ints": "0", "duration": "90s", "int": "7", "float": "2.5"}
"""A value of each kind that parses (choices are taken from the row where it has them)."""


def case_id(case: tuple[str, dict[str, Any]]) -> str:
    return f"{case[0]}:{case[1]['name']}"


def sample(program: str, nvidia: dict[str, Any]) -> str:
    row = flag_named(nvidia["name"])
    if row.choices:
        return row.choices[-1] if nvidia["name"] != "device-discovery-strategy" else "nvml"
    return SAMPLE[nvidia["kind"]]


GROUP: Any = typer.main.get_command(app)


def parse_command(program: str, args: list[str]) -> dict[str, Any]:
    """The parameters kgpu's command for ``program`` gets from ``args`` (parsed as the CLI would, not run)."""
    command = GROUP.commands[COMMANDS[program]]
    params: dict[str, Any] = command.make_context(COMMANDS[program], args).params
    return params


def param_of(nvidia: dict[str, Any]) -> str:
    return "flag_" + nvidia["name"].replace("-", "_")


@pytest.mark.parametrize(("program", "nvidia"), CASES, ids=[case_id(c) for c in CASES])
def test_the_table_has_nvidias_flag_with_its_aliases_type_and_variables_in_order(
        program: Program, nvidia: dict[str, Any]) -> None:
    row = flag_named(nvidia["name"])
    assert row.name == nvidia["name"]  # NVIDIA's own name, not an alias of a kgpu name
    assert set(nvidia["aliases"]) <= set(row.aliases)
    assert row.kind == nvidia["kind"]
    assert list(row.env_for(program)) == nvidia["env"]  # the same variables, in NVIDIA's order
    assert row in flags_of(program)


@pytest.mark.parametrize(("program", "nvidia"), CASES, ids=[case_id(c) for c in CASES])
def test_the_default_is_nvidias_or_the_table_says_why_not(program: Program, nvidia: dict[str, Any]) -> None:
    row = flag_named(nvidia["name"])
    expected = nvidia["default"]
    if row.differs:
        return  # documented on the row: why kgpu's default or meaning is not NVIDIA's
    if nvidia["kind"] == "duration":
        expected = parse_value(row, expected, "NVIDIA's default")
    if nvidia["kind"] in ("strings", "ints"):
        expected = tuple(expected or ())
    if expected == "" or (expected is None and nvidia["kind"] == "bool"):
        expected = None if nvidia["kind"] != "bool" else False  # Go's zero values
    assert row.default == expected


@pytest.mark.parametrize(("program", "nvidia"), CLI_CASES, ids=[case_id(c) for c in CLI_CASES])
def test_kgpus_command_accepts_the_flag_under_each_of_nvidias_names(program: Program, nvidia: dict[str, Any]) -> None:
    value = "true" if nvidia["kind"] == "bool" else sample(program, nvidia)
    for name in (nvidia["name"], *nvidia["aliases"]):
        dashes = "-" if len(name) == 1 else "--"
        for args in ([f"{dashes}{name}={value}"], [f"{dashes}{name}", value] if nvidia["kind"] != "bool" else []):
            if args:
                assert parse_command(program, args)[param_of(nvidia)] in (value, [value]), args
        if len(name) > 1:  # Go's flag package also takes one dash before a long name
            assert parse_command(program, [f"-{name}={value}"])[param_of(nvidia)] in (value, [value])


BOOL_CASES = [(p, f) for p, f in CLI_CASES if f["kind"] == "bool"]


@pytest.mark.parametrize(("program", "nvidia"), BOOL_CASES, ids=[case_id(c) for c in BOOL_CASES])
def test_a_boolean_is_a_bare_flag_or_takes_any_of_gos_spellings(program: Program, nvidia: dict[str, Any]) -> None:
    row = flag_named(nvidia["name"])
    given = {nvidia["name"]: parse_command(program, [f"--{nvidia['name']}"])[param_of(nvidia)]}
    assert resolve_settings(program, given, {})[row.name].value is True
    for text, expected in BOOL_SPELLINGS.items():
        given = {nvidia["name"]: parse_command(program, [f"--{nvidia['name']}={text}"])[param_of(nvidia)]}
        assert resolve_settings(program, given, {})[row.name].value is expected, text
        environ = {nvidia["env"][0]: text}
        assert resolve_settings(program, {}, environ)[row.name].value is expected, text
    with pytest.raises(ConfigError, match="is not a boolean"):
        resolve_settings(program, {nvidia["name"]: "yes"}, {})


@pytest.mark.parametrize(("program", "nvidia"), CASES, ids=[case_id(c) for c in CASES])
def test_precedence_is_flag_then_each_variable_in_order_then_file_then_default(
        program: Program, nvidia: dict[str, Any]) -> None:
    row = flag_named(nvidia["name"])
    values = _distinct_values(nvidia)
    file_text = _file_with(row.key, values[-1]) if row.key else None
    spec = parse_config_text(file_text, "config.yaml") if file_text else None
    env = {name: values[i + 1] for i, name in enumerate(nvidia["env"])}
    # every source set: the flag wins
    got = resolve_settings(program, {row.name: values[0]}, env, spec)[row.name]
    assert (got.value, got.source) == (parse_value(row, values[0], "flag"), f"flag --{row.name}")
    # without the flag, the first variable that is set wins, in NVIDIA's order
    for i, name in enumerate(nvidia["env"]):
        remaining = {n: v for n, v in env.items() if nvidia["env"].index(n) >= i}
        got = resolve_settings(program, {}, remaining, spec)[row.name]
        assert (got.value, got.source) == (parse_value(row, env[name], name), f"environment variable {name}")
    # without flag and variables, the config file (where the setting has a key there)
    if spec is not None:
        got = resolve_settings(program, {}, {}, spec)[row.name]
        assert got.source == f"config file: {row.key}"
    # and nothing set: the default
    got_default = resolve_settings(program, {}, {}, None).get(row.name)
    assert (got_default.value if got_default else None) == row.default


def _distinct_values(nvidia: dict[str, Any]) -> list[str]:
    """Enough different valid values for the flag, every variable and the file."""
    row = flag_named(nvidia["name"])
    n = len(nvidia["env"]) + 2
    if row.kind == "bool":
        return ["true", "false", "true", "false"][:n] if n <= 4 else ["true"] * n
    if row.choices:
        pool = [c for c in row.choices if nvidia["name"] != "device-discovery-strategy" or c in ("auto", "nvml")]
        return [pool[i % len(pool)] for i in range(n)]
    if row.kind == "ints":
        return ["0"] * n  # only [] or [0] are valid; the sources tell the values apart
    if row.kind == "duration":
        return [f"{10 + i}s" for i in range(n)]
    if row.kind in ("int", "float"):
        return [str(3 + i) for i in range(n)]
    return [f"/value-{i}" for i in range(n)]


def _file_with(key: str, value: str) -> str:
    """A config file setting ``key`` (dotted camelCase) to ``value``."""
    parts = key.split(".")
    text = ""
    for depth, part in enumerate(parts[:-1]):
        text += "  " * depth + f"{part}:\n"
    literal = f"[{value}]" if key in ("imex.channelIDs", "flags.plugin.deviceListStrategy") else json.dumps(value)
    if key.endswith(("Enabled", "Error", "Specs", "oneshot", "noTimestamp", "required", "API")):
        literal = value
    return text + "  " * (len(parts) - 1) + f"{parts[-1]}: {literal}\n"


def test_every_file_key_in_the_table_is_a_key_of_the_file_format() -> None:
    keyed = [f for f in FLAGS if f.key]
    assert keyed and all(key_exists(f.key) for f in keyed), [f.key for f in keyed if not key_exists(f.key)]


def test_kgpus_own_rows_never_rename_an_nvidia_flag() -> None:
    nvidia_names = {n for flags in NVIDIA.values() for f in flags for n in (f["name"], *f["aliases"])}
    for row in FLAGS:
        if row.origin == "kgpu":
            assert row.name not in nvidia_names
        else:
            assert row.name in nvidia_names, row.name


def test_each_flag_is_declared_once_in_the_source() -> None:
    # "Searching the source for a flag's name finds its one declaration": no command declares
    # one of the table's names by hand.
    # (--output and --kubeconfig are also everyday options of kgpu's other commands: lint, cdi, node; --healthz and
    # --once those of its other daemons (labeler, config-manager, mig-manager, node), with their own help. And
    # kgpu cdi / kgpu runtime take nvidia-ctk's flags, another NVIDIA program whose --driver-root, --dev-root
    # and --nvidia-cdi-hook-path have their own defaults and variables.)
    nvidia_ctk = {"cdi.py", "runtime.py"}
    src = Path(__file__).resolve().parents[1] / "src/kgpu"
    for row in FLAGS:
        for name in row.names:
            if len(name) == 1 or name in ("output", "kubeconfig", "healthz", "once"):
                continue
            declared = re.compile(r"Option\([^)]*[\"']--" + re.escape(name) + r"[\"'/]", re.S)
            hits = [p for p in src.rglob("*.py") if p.name not in nvidia_ctk and declared.search(p.read_text())]
            assert hits == [], (name, hits)


# ---- NVIDIA's config file (api/config/v1): every key, from scripts/nvidia_flags.py --config-keys ----

CONFIG_KEYS: dict[str, str] = json.loads((Path(__file__).parent / "fixtures/nvidia/config-keys-v0.20.json").read_text())
SHARED = {"name": "nvidia.com/gpu", "replicas": 2}
CHANGED: dict[str, object] = {
    # a value of each key that differs from what the file says without it (NVIDIA's default)
    "version": "v1", "flags.migStrategy": "mixed", "flags.failOnInitError": False, "flags.mpsRoot": "/run/mps",
    "flags.nvidiaDriverRoot": "/run/nvidia/driver", "flags.nvidiaDevRoot": "/run/nvidia/driver",
    "flags.gdrcopyEnabled": True, "flags.gdsEnabled": True, "flags.mofedEnabled": True,
    "flags.useNodeFeatureAPI": True, "flags.deviceDiscoveryStrategy": "nvml",
    "flags.plugin.passDeviceSpecs": True, "flags.plugin.deviceListStrategy": "volume-mounts",
    "flags.plugin.deviceIDStrategy": "index", "flags.plugin.cdiAnnotationPrefix": "nvidia.cdi.k8s.io/",
    "flags.plugin.nvidiaCTKPath": "/usr/local/bin/nvidia-ctk", "flags.plugin.containerDriverRoot": "/host",
    "flags.plugin.sharedDevicesAllocationPolicy": "packed",
    "flags.gfd.oneshot": True, "flags.gfd.noTimestamp": True, "flags.gfd.sleepInterval": "90s",
    "flags.gfd.outputFile": "/tmp/gfd", "flags.gfd.machineTypeFile": "/tmp/machine",
    "resources.gpus.pattern": "NVIDIA H100*", "resources.gpus.name": "h100",
    "resources.mig.pattern": "1g.10gb", "resources.mig.name": "mig-small",
    "renameByDefault": True, "failRequestsGreaterThanOne": False, "resources.name": "nvidia.com/other",
    "resources.rename": "nvidia.com/gpu.shared", "resources.devices": [0], "resources.replicas": 3,
    "imex.channelIDs": [0], "imex.required": True,
}


def nvidia_document(key: str | None) -> dict[str, Any]:
    """A file with ``key`` set to its CHANGED value (None: the same file without it)."""
    doc: dict[str, Any] = {"version": "v1", "resources": {"gpus": [{"pattern": "*", "name": "gpu"}],
                                                          "mig": [{"pattern": "*", "name": "mig"}]}}
    if key is None:
        return doc
    parts = key.split(".")
    if parts[0] == "sharing":
        doc["sharing"] = {parts[1]: {"resources": [dict(SHARED)]}}
        if parts[1] == "mps":
            doc["resources"] = {"gpus": [{"pattern": "*", "name": "gpu"}]}
        entry = doc["sharing"][parts[1]]
        if parts[2] == "resources":
            entry, parts = entry["resources"][0], parts[3:]
        else:
            parts = parts[2:]
        value = CHANGED[".".join(["resources", *parts]) if entry is not doc["sharing"][key.split(".")[1]]
                        else parts[0]]
        entry[parts[-1]] = value
        return doc
    if parts[0] == "resources":
        doc["resources"][parts[1]][0][parts[2]] = CHANGED[key]
        return doc
    node = doc
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = CHANGED[key]
    return doc


def resolved(doc: dict[str, Any], tmp_path: Path, name: str) -> Any:
    from kgpu.config.resolve import resolve_config

    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return resolve_config({}, {}, path)


@pytest.mark.parametrize("key", sorted(CONFIG_KEYS))
def test_every_key_of_nvidias_file_has_an_effect_or_is_refused_naming_it(key: str, tmp_path: Path) -> None:
    # Given NVIDIA's key, kgpu's file format has it (a flag's key is its row in the one table),
    assert key_exists(key)
    if key.startswith("flags."):
        assert [f.name for f in FLAGS if f.key == key], key
    # and when a file sets it, the configuration differs from the file without it, or one line says why not.
    if key == "version":
        return  # the only version there is: required, not a setting
    try:
        with_key = resolved(nvidia_document(key), tmp_path, "with.yaml")
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and key.split(".")[-1] in message, message
        return
    assert with_key != resolved(nvidia_document(None), tmp_path, "without.yaml"), key
