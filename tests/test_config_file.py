"""The shared config (kgpu.config): NVIDIA's v1 file, flags and env vars, precedence, and errors an admin can act on."""

from __future__ import annotations

from pathlib import Path

import pytest

from kgpu.config import DeviceSelector, DynamicShares, PluginConfig
from kgpu.config.file import parse_config_text
from kgpu.config.resolve import resolve_config
from kgpu.errors import ConfigError

NVIDIA_EXAMPLE = """\
version: v1
flags:
  migStrategy: "mixed"
  failOnInitError: true
  nvidiaDriverRoot: "/run/nvidia/driver"
  gdsEnabled: false
  mofedEnabled: false
  plugin:
    passDeviceSpecs: true
    deviceListStrategy: ["envvar", "cdi-annotations"]
    deviceIDStrategy: "index"
    cdiAnnotationPrefix: "cdi.k8s.io/"
    nvidiaCTKPath: "/usr/bin/nvidia-ctk"
    containerDriverRoot: "/driver-root"
  gfd:
    oneshot: false
    noTimestamp: false
    sleepInterval: 60s
    outputFile: /etc/kubernetes/node-feature-discovery/features.d/gfd
resources:
  gpus:
  - pattern: "NVIDIA H100*"
    name: h100
  mig:
  - pattern: "1g.10gb"
    name: mig-small
sharing:
  timeSlicing:
    renameByDefault: true
    failRequestsGreaterThanOne: true
    resources:
    - name: nvidia.com/gpu
      replicas: 10
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        resolve_config({}, {}, write(tmp_path, text))
    return str(exc.value)


def test_no_file_no_flags_gives_nvidias_defaults() -> None:
    config = resolve_config({}, {})
    f = config.flags
    assert (f.mig_strategy, f.fail_on_init_error, f.nvidia_driver_root, f.dev_root) == ("none", True, "/", "/")
    assert f.plugin.pass_device_specs is False
    assert f.plugin.device_list_strategy == ("envvar",)
    assert f.plugin.device_id_strategy == "uuid"
    assert f.plugin.cdi_annotation_prefix == "cdi.k8s.io/"
    assert f.plugin.container_driver_root == "/driver-root"
    assert f.plugin.shared_devices_allocation_policy == "distributed"
    assert config.sharing.strategy == "none"
    assert config.config_file is None


def test_nvidias_documented_example_file_is_read_key_for_key(tmp_path: Path) -> None:
    config = resolve_config({}, {}, write(tmp_path, NVIDIA_EXAMPLE))
    f = config.flags
    assert f.mig_strategy == "mixed"
    assert f.nvidia_driver_root == "/run/nvidia/driver"
    assert f.dev_root == "/run/nvidia/driver"
    assert f.plugin.pass_device_specs is True
    assert f.plugin.device_list_strategy == ("envvar", "cdi-annotations")
    assert f.plugin.device_id_strategy == "index"
    assert [(r.pattern, r.name) for r in config.resources.gpus] == [("NVIDIA H100*", "nvidia.com/h100")]
    assert [(r.pattern, r.name) for r in config.resources.mig] == [("1g.10gb", "nvidia.com/mig-small")]
    ts = config.sharing.time_slicing
    assert ts is not None and ts.fail_requests_greater_than_one is True
    (entry,) = ts.resources
    assert (entry.name, entry.replicas, entry.rename) == ("nvidia.com/gpu", 10, "nvidia.com/gpu.shared")
    assert entry.devices == DeviceSelector(all=True)
    assert config.sharing.strategy == "time-slicing"
    assert config.config_file == str(tmp_path / "config.yaml")


def test_an_empty_file_is_all_defaults(tmp_path: Path) -> None:
    assert resolve_config({}, {}, write(tmp_path, "")).flags == resolve_config({}, {}).flags


def test_device_list_strategy_may_be_a_single_string_in_the_file(tmp_path: Path) -> None:
    config = resolve_config({}, {}, write(tmp_path, "flags: {plugin: {deviceListStrategy: volume-mounts}}"))
    assert config.flags.plugin.device_list_strategy == ("volume-mounts",)


def test_kgpus_driver_mounts_strategy_is_accepted(tmp_path: Path) -> None:
    text = "flags: {plugin: {deviceListStrategy: [driver-mounts]}}"
    assert resolve_config({}, {}, write(tmp_path, text)).flags.plugin.device_list_strategy == ("driver-mounts",)


@pytest.mark.parametrize(
    ("flag", "env", "file", "expected"),
    [
        ("single", "mixed", "none", "single"),  # flag beats env and file
        (None, "mixed", "single", "mixed"),  # env beats file
        (None, None, "single", "single"),  # file beats default
        (None, None, None, "none"),  # default
    ],
)
def test_precedence_is_flag_then_env_then_file_then_default(
    tmp_path: Path, flag: str | None, env: str | None, file: str | None, expected: str
) -> None:
    path = write(tmp_path, f"flags: {{migStrategy: {file}}}" if file else "")
    environ = {"MIG_STRATEGY": env} if env else {}
    assert resolve_config({"mig-strategy": flag}, environ, path).flags.mig_strategy == expected


def test_env_vars_are_parsed_like_nvidias_cli() -> None:
    environ = {
        "FAIL_ON_INIT_ERROR": "false",
        "PASS_DEVICE_SPECS": "1",
        "DEVICE_LIST_STRATEGY": "envvar,volume-mounts",
        "DEVICE_ID_STRATEGY": "index",
        "NVIDIA_DRIVER_ROOT": "/run/nvidia/driver",
        "SHARED_DEVICES_ALLOCATION_POLICY": "packed",
    }
    f = resolve_config({}, environ).flags
    assert f.fail_on_init_error is False
    assert f.plugin.pass_device_specs is True
    assert f.plugin.device_list_strategy == ("envvar", "volume-mounts")
    assert f.plugin.device_id_strategy == "index"
    assert f.nvidia_driver_root == "/run/nvidia/driver"
    assert f.plugin.shared_devices_allocation_policy == "packed"


def test_flags_accept_python_values_and_underscore_names() -> None:
    f = resolve_config({"pass_device_specs": True, "device-list-strategy": ["cdi-cri"]}, {}).flags
    assert f.plugin.pass_device_specs is True
    assert f.plugin.device_list_strategy == ("cdi-cri",)


def test_an_empty_env_var_is_set_as_urfave_cli_takes_it(tmp_path: Path) -> None:
    path = write(tmp_path, "flags: {migStrategy: mixed, failOnInitError: true, nvidiaDriverRoot: /run/nvidia/driver}")
    # NVIDIA's plugin refuses MIG_STRATEGY="" (an unknown strategy); so does kgpu,
    with pytest.raises(ConfigError, match=r"environment variable MIG_STRATEGY: '' is not one of none, single, mixed"):
        resolve_config({}, {"MIG_STRATEGY": ""}, path)
    # an empty boolean is false (urfave/cli: "the env is defined but set to empty string"),
    assert resolve_config({}, {"FAIL_ON_INIT_ERROR": ""}, path).flags.fail_on_init_error is False
    # and an empty path is no path: the file's value stays (NVIDIA would use the empty string).
    assert resolve_config({}, {"NVIDIA_DRIVER_ROOT": ""}, path).flags.nvidia_driver_root == "/run/nvidia/driver"


def test_config_file_comes_from_the_flag_or_CONFIG_FILE(tmp_path: Path) -> None:
    path = write(tmp_path, "flags: {migStrategy: single}")
    assert resolve_config({"config-file": str(path)}, {}).flags.mig_strategy == "single"
    assert resolve_config({}, {"CONFIG_FILE": str(path)}).flags.mig_strategy == "single"


def test_nvidia_dev_root_defaults_to_the_driver_root_but_can_be_set() -> None:
    f = resolve_config({"nvidia-driver-root": "/run/nvidia/driver"}, {"NVIDIA_DEV_ROOT": "/"}).flags
    assert (f.nvidia_driver_root, f.dev_root) == ("/run/nvidia/driver", "/")


def test_per_gpu_replica_counts_and_explicit_renames_are_kept(tmp_path: Path) -> None:
    config = resolve_config({}, {}, write(tmp_path, """
sharing:
  timeSlicing:
    resources:
    - {name: gpu, replicas: 4, devices: [0, "1"]}
    - {name: gpu, replicas: 2, devices: ["GPU-04af0a9b-6df0-595a-bd74-7498840294e2"], rename: gpu-small}
    - {name: mig-1g.10gb, replicas: 3, devices: 2}
"""))
    ts = config.sharing.time_slicing
    assert ts is not None
    a, b, c = ts.resources
    assert (a.name, a.replicas, a.rename, a.devices.refs) == ("nvidia.com/gpu", 4, None, ("0", "1"))
    assert b.advertised_name == "nvidia.com/gpu-small"
    assert b.devices.refs == ("GPU-04af0a9b-6df0-595a-bd74-7498840294e2",)
    assert (c.name, c.replicas, c.devices.count, c.devices.all) == ("nvidia.com/mig-1g.10gb", 3, 2, False)


def test_mps_section_keeps_nvidias_shape_and_makes_the_strategy_mps(tmp_path: Path) -> None:
    text = "sharing: {mps: {resources: [{name: nvidia.com/gpu, replicas: 4}]}}"
    config = resolve_config({}, {}, write(tmp_path, text))
    assert config.sharing.strategy == "mps"
    assert config.sharing.mps is not None and config.sharing.mps.resources[0].replicas == 4


def test_dynamic_shares_alone_make_an_mps_config_with_hamis_default_split(tmp_path: Path) -> None:
    config = resolve_config({}, {}, write(tmp_path, "sharing: {mps: {dynamic: {}}}"))
    assert config.sharing.strategy == "mps"
    assert config.sharing.mps is not None and config.sharing.mps.dynamic == DynamicShares(DeviceSelector(all=True), 10)
    text = "sharing: {mps: {dynamic: {devices: [0, 2], shares: 48}}}"
    dynamic = resolve_config({}, {}, write(tmp_path, text)).sharing.mps.dynamic  # type: ignore[union-attr]
    assert dynamic is not None and (dynamic.devices.refs, dynamic.shares) == (("0", "2"), 48)
    logged = resolve_config({}, {}, write(tmp_path, text)).to_dict()["sharing"]["mps"]["dynamic"]
    assert logged == {"devices": ["0", "2"], "shares": 48}  # devices as NVIDIA marshals them


@pytest.mark.parametrize(("text", "expected"), [
    ("sharing: {mps: {dynamic: {shares: 49}}}", ["sharing.mps.dynamic.shares", "49", "48"]),
    ("sharing: {mps: {dynamic: {shares: 0}}}", ["sharing.mps.dynamic.shares", "0"]),
    ("sharing: {mps: {dynamic: {devices: ['0:1']}}}", ["sharing.mps.dynamic.devices", "0:1"]),
    ("sharing: {mps: {dynamic: {replicas: 4}}}", ["unknown key sharing.mps.dynamic.replicas"]),
])
def test_bad_dynamic_shares_are_refused(tmp_path: Path, text: str, expected: list[str]) -> None:
    message = error_of(tmp_path, text)
    for part in expected:
        assert part in message, (part, message)


def test_config_in_nvidias_shape_round_trips_for_logging(tmp_path: Path) -> None:
    out = resolve_config({}, {}, write(tmp_path, NVIDIA_EXAMPLE)).to_dict()
    assert out["flags"]["plugin"]["deviceIDStrategy"] == "index"
    assert out["flags"]["plugin"]["deviceListStrategy"] == ["envvar", "cdi-annotations"]
    assert out["sharing"]["timeSlicing"]["resources"][0]["rename"] == "nvidia.com/gpu.shared"
    assert isinstance(resolve_config({}, {}), PluginConfig)


# --- errors: each names the file, the key, the value and what is allowed ---------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: v2", ["version", "'v2'", "'v1'"]),
        ("flags: {migStrategy: half}", ["flags.migStrategy", "'half'", "'none'", "'single'", "'mixed'"]),
        ("flags: {plugin: {deviceIDStrategy: serial}}", ["flags.plugin.deviceIDStrategy", "'serial'", "'uuid'"]),
        ("flags: {plugin: {deviceListStrategy: [envvar, tarball]}}", ["deviceListStrategy", "'tarball'",
                                                                     "volume-mounts", "driver-mounts"]),
        ("flags: {plugin: {deviceListStrategy: []}}", ["deviceListStrategy", "at least one of"]),
        ("flags: {failOnInitError: sometimes}", ["flags.failOnInitError", "boolean", "'sometimes'"]),
        ("flags: {plugin: {sharedDevicesAllocationPolicy: random}}", ["sharedDevicesAllocationPolicy", "'packed'"]),
        ("flags: {gfd: {sleepInterval: soon}}", ["flags.gfd.sleepInterval", "'soon'", "60s"]),
        ("resources: {gpus: [{pattern: '*', name: 'Big_GPU'}]}", ["resources.gpus[0].name", "Big_GPU", "lower-case"]),
        ("resources: {gpus: [{name: gpu}]}", ["resources.gpus[0].pattern", "required"]),
        ("sharing: {timeSlicing: {resources: [{name: gpu, replicas: 1}]}}",
         ["sharing.timeSlicing.resources[0].replicas", "1 is below the minimum of 2"]),
        ("sharing: {timeSlicing: {resources: [{name: gpu}]}}", ["sharing.timeSlicing.resources[0].replicas",
                                                                 "required"]),
        ("sharing: {timeSlicing: {resources: [{name: gpu, replicas: 2, devices: some}]}}",
         ["resources[0].devices", "'some'", "'all'"]),
        ("sharing: {timeSlicing: {resources: [{name: gpu, replicas: 2, devices: 0}]}}", ["devices", "> 0"]),
        ("sharing: {timeSlicing: {resources: [{name: gpu, replicas: 2, devices: [GPU-nope]}]}}",
         ["devices", "GPU-nope", "GPU index"]),
        ("sharing: {timeSlicing: {}}", ["sharing.timeSlicing", "no resources"]),
        ("imex: {channelIDs: [3]}", ["imex.channelIDs", "[] or [0]"]),
        ("health: {criticalXIDs: [79], ignoredXIDs: [79]}", ["health", "79", "ignoredXIDs"]),
        ("[1, 2]", ["expected a mapping"]),
        ("flags: [", ["line 1", "not valid YAML"]),
    ],
)
def test_bad_values_are_refused_with_file_key_value_and_allowed_values(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    message = error_of(tmp_path, text)
    assert message.startswith(f"config file {tmp_path / 'config.yaml'}:")
    for part in expected:
        assert part in message, (part, message)


def test_unknown_keys_are_errors_that_list_the_allowed_keys_and_guess_the_typo(tmp_path: Path) -> None:
    message = error_of(tmp_path, "flags:\n  plugin:\n    deviceIdStrategy: index\n")
    assert "unknown key flags.plugin.deviceIdStrategy" in message
    assert "'index'" in message
    assert "did you mean deviceIDStrategy?" in message
    assert "passDeviceSpecs" in message and "deviceListStrategy" in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, "sharding: {}")
    assert "unknown key sharding" in message and "did you mean sharing?" in message


def test_unknown_key_inside_mps_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, "sharing: {mps: {resources: [{name: gpu, replicas: 2}], bogus: 1}}")
    assert "sharing.mps" in message and "bogus" in message


def test_time_slicing_and_mps_together_are_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, """
sharing:
  timeSlicing: {resources: [{name: gpu, replicas: 2}]}
  mps: {resources: [{name: gpu, replicas: 2}]}
""")
    assert "either sharing.timeSlicing or sharing.mps" in message


def test_mps_shares_whole_gpus_only(tmp_path: Path) -> None:
    message = error_of(tmp_path, "sharing: {mps: {resources: [{name: mig-1g.10gb, replicas: 2}]}}")
    assert "sharing.mps.resources[0].name: 'nvidia.com/mig-1g.10gb': MPS shares whole GPUs only" in message
    # a whole-GPU resource renamed by resources.gpus is a whole GPU too
    text = ("resources: {gpus: [{pattern: '*H100*', name: h100}]}\n"
            "sharing: {mps: {resources: [{name: h100, replicas: 2}]}}")
    assert resolve_config({}, {}, write(tmp_path, text)).sharing.strategy == "mps"


def test_mps_with_mixed_mig_strategy_is_refused_as_nvidia_does(tmp_path: Path) -> None:
    message = error_of(tmp_path, "flags: {migStrategy: mixed}\nsharing: {mps: {resources: [{name: gpu, replicas: 2}]}}")
    assert "migStrategy mixed" in message


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope.yaml: No such file or directory \(ENOENT\)"):
        resolve_config({}, {}, tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("flags", "environ", "expected"),
    [
        ({"mig-strategy": "half"}, {}, ["flag --mig-strategy", "'half'", "none, single, mixed"]),
        ({}, {"MIG_STRATEGY": "half"}, ["environment variable MIG_STRATEGY: 'half'", "none, single, mixed"]),
        ({}, {"PASS_DEVICE_SPECS": "maybe"}, ["PASS_DEVICE_SPECS", "'maybe'", "true or false"]),
        ({}, {"DEVICE_LIST_STRATEGY": "envvar,nope"}, ["DEVICE_LIST_STRATEGY", "'nope'", "cdi-cri"]),
        ({"device-id-strategy": "serial"}, {}, ["--device-id-strategy", "uuid, index"]),
    ],
)
def test_bad_flags_and_env_vars_name_their_source(
    flags: dict[str, object], environ: dict[str, str], expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as exc:
        resolve_config(flags, environ)
    for part in expected:
        assert part in str(exc.value), (part, str(exc.value))


def test_a_bad_value_in_the_file_is_reported_even_if_a_flag_would_override_it(tmp_path: Path) -> None:
    # NVIDIA parses the whole file first; so do we, so a broken ConfigMap never goes unnoticed.
    with pytest.raises(ConfigError, match=r"flags\.migStrategy"):
        resolve_config({"mig-strategy": "none"}, {}, write(tmp_path, "flags: {migStrategy: half}"))


def test_parse_config_text_names_the_given_source() -> None:
    with pytest.raises(ConfigError, match=r"^ConfigMap kube-system/dp: "):
        parse_config_text("version: v3", "ConfigMap kube-system/dp")


def test_the_readme_example_is_a_valid_config(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Device plugin config", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = resolve_config({}, {}, write(tmp_path, example))
    assert config.flags.mig_strategy == "mixed"
    assert config.sharing.strategy == "time-slicing"
    assert [r.devices.refs for r in config.sharing.time_slicing.resources] == [("0", "1"), ("2",)]  # type: ignore[union-attr]


def test_the_logged_configuration_spells_every_key_as_the_file_does() -> None:
    from dataclasses import fields, is_dataclass

    from pydantic.alias_generators import to_camel

    from kgpu.config import values as config_module

    names = {f.name for cls in vars(config_module).values() if isinstance(cls, type) and is_dataclass(cls)
             for f in fields(cls)}
    assert names  # PluginConfig, Flags, PluginFlags, Sharing, ...
    assert {n: config_module._camel(n) for n in names} == {n: to_camel(n) for n in names}


def test_reading_the_plain_config_values_loads_neither_pydantic_nor_yaml() -> None:
    import subprocess
    import sys

    code = ("import sys, kgpu.config, kgpu.sharing.paths, kgpu.options; "
            "print(sorted(m for m in ('pydantic', 'yaml') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_the_driver_root_is_read_where_it_is_mounted_and_an_empty_default_mount_is_not_the_driver(
        tmp_path: Path) -> None:
    from kgpu.config import resolve_driver_root
    from kgpu.config.driverroot import driver_root_from

    mount = tmp_path / "driver-root"
    mount.mkdir()
    # An empty directory where NVIDIA's default mount point would be is not a driver (a stray /driver-root).
    assert resolve_driver_root("/run/nvidia/driver", str(mount)).view == Path("/run/nvidia/driver")
    # A mount point that holds the driver is where this process reads it; paths stay the host's.
    (mount / "lib64").mkdir()
    (mount / "lib64/libcuda.so.1").write_bytes(b"\x7fELF")
    root = resolve_driver_root("/run/nvidia/driver", str(mount))
    assert (root.view, root.explicit) == (mount, True)
    assert root.host_path(mount / "lib64/libcuda.so.1") == "/run/nvidia/driver/lib64/libcuda.so.1"
    # Named explicitly, a mount point is used as it is, and one that is missing is an error.
    assert resolve_driver_root("/", str(tmp_path), container_given=True).view == tmp_path
    with pytest.raises(ConfigError, match=r"driver-root-ctr-path .* does not exist in this container"):
        driver_root_from({"driver-root-ctr-path": str(tmp_path / "missing")}, {})
    # The host path alone: read there (kgpu runs on the host), and named, so no other place is searched.
    root = driver_root_from({}, {"NVIDIA_DRIVER_ROOT": "/usr/local/nvidia"})
    assert (root.host, root.view, root.explicit) == ("/usr/local/nvidia", Path("/usr/local/nvidia"), True)
    assert driver_root_from({}, {}).explicit is False
