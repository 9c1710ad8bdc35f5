"""nvidia-container-toolkit's own `runtime configure` cases (cmd/nvidia-ctk/runtime/configure/configure_test.go).

Each case runs kgpu with nvidia-ctk's arguments, spelled as nvidia-ctk spells them, on the files the case
prepares, and checks what the case checks. ``{root}`` is the case's temporary directory, as their
``{{ .testRoot }}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import tomlkit
from cli_inproc import Done, kgpu

Check = Callable[[Path], None]


def _kgpu(args: list[str]) -> Done:
    return kgpu("runtime", "configure", *args)


def _write(root: Path, rel: str, text: str, mode: int = 0o600) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def _text(root: Path, rel: str) -> str:
    return (root / rel).read_text()


def _toml(root: Path, rel: str) -> dict:  # type: ignore[type-arg]
    return tomlkit.parse(_text(root, rel)).unwrap()


def _json(root: Path, rel: str) -> dict:  # type: ignore[type-arg]
    data = json.loads(_text(root, rel))
    assert isinstance(data, dict)
    return data


CTD = ["--runtime", "containerd", "--config", "{root}/etc/containerd/config.toml",
       "--drop-in-config", "{root}/etc/containerd/conf.d/99-nvidia.toml"]
CRIO = ["--runtime", "crio", "--config", "{root}/etc/crio/crio.conf",
        "--drop-in-config", "{root}/etc/crio/conf.d/99-nvidia.toml"]
DOCKER = ["--runtime", "docker", "--config", "{root}/etc/docker/daemon.json"]
MAIN = "etc/containerd/config.toml"
DROP = "etc/containerd/conf.d/99-nvidia.toml"


def _imports_kept(root: Path) -> None:
    assert _toml(root, MAIN) == {"imports": ["/foo/bar/*.toml", f"{root}/etc/containerd/conf.d/*.toml"],
                                 "version": 2}


def _created_with_drop_in(root: Path) -> None:
    main = _text(root, MAIN)
    assert "imports" in main and "version = 2" in main
    drop = _text(root, DROP)
    assert '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]' in drop
    assert 'BinaryName = "/usr/bin/nvidia-container-runtime"' in drop


def _default_in_drop_in(root: Path) -> None:
    assert "imports" in _text(root, MAIN)
    drop = _text(root, DROP)
    assert 'default_runtime_name = "nvidia"' in drop
    assert '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]' in drop


def _cdi_in_drop_in(root: Path) -> None:
    assert "enable_cdi = true" in _text(root, DROP)


def _custom_name(root: Path) -> None:
    drop = _text(root, DROP)
    assert '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.gpu]' in drop
    assert 'BinaryName = "/custom/path/nvidia-container-runtime"' in drop
    assert "gpu-cdi" not in drop and "gpu-legacy" not in drop


def _crio_drop_in_only(root: Path) -> None:
    assert not (root / "etc/crio/crio.conf").exists()
    drop = _text(root, "etc/crio/conf.d/99-nvidia.toml")
    assert "[crio.runtime.runtimes.nvidia]" in drop
    assert 'runtime_path = "/usr/bin/nvidia-container-runtime"' in drop
    assert "nvidia-cdi" not in drop and "nvidia-legacy" not in drop


CRIO_WITH_NVIDIA = """[crio]
[crio.runtime]
default_runtime = "runc"

[crio.runtime.runtimes.runc]
runtime_path = "/usr/bin/runc"
runtime_type = "oci"

[crio.runtime.runtimes.nvidia]
runtime_path = "/old/path/nvidia-container-runtime"
runtime_type = "oci"
"""


def _crio_overridden_by_drop_in(root: Path) -> None:
    assert "/old/path/nvidia-container-runtime" in _text(root, "etc/crio/crio.conf")
    drop = _text(root, "etc/crio/conf.d/99-nvidia.toml")
    assert 'default_runtime = "nvidia"' in drop
    assert 'runtime_path = "/usr/bin/nvidia-container-runtime"' in drop


def _docker_new(root: Path) -> None:
    runtimes = _json(root, "etc/docker/daemon.json")["runtimes"]
    assert "nvidia" in runtimes and "nvidia-cdi" not in runtimes and "nvidia-legacy" not in runtimes


def _docker_default(root: Path) -> None:
    data = _json(root, "etc/docker/daemon.json")
    assert data["log-driver"] == "json-file" and data["storage-driver"] == "overlay2"
    assert data["default-runtime"] == "nvidia" and "nvidia" in data["runtimes"]


def _docker_cdi(root: Path) -> None:
    assert _json(root, "etc/docker/daemon.json")["features"]["cdi"] is True


def _nothing_written(root: Path) -> None:
    assert not (root / MAIN).exists() and not (root / DROP).exists()


V2_WITH_RUNC = """version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"

          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            BinaryName = "/usr/bin/runc"
"""
DOCKER_EXISTING = json.dumps({"log-driver": "json-file", "log-opts": {"max-size": "100m"},
                              "storage-driver": "overlay2"}, indent=4)

CASES: list[tuple[str, list[str], dict[str, str], Check]] = [
    ("containerd: config exists with imports", CTD,
     {MAIN: 'version = 2\nimports = ["/foo/bar/*.toml"]\n'}, _imports_kept),
    ("containerd: v2 config does not exist with drop-in", CTD, {}, _created_with_drop_in),
    ("containerd: v2 existing config without nvidia runtime", [*CTD, "--nvidia-set-as-default"],
     {MAIN: V2_WITH_RUNC}, _default_in_drop_in),
    ("containerd: enable CDI", [*CTD, "--cdi.enabled"], {}, _cdi_in_drop_in),
    ("containerd: custom runtime name and path",
     [*CTD, "--nvidia-runtime-name", "gpu", "--nvidia-runtime-path", "/custom/path/nvidia-container-runtime"],
     {}, _custom_name),
    ("crio: config does not exist with drop-in", CRIO, {}, _crio_drop_in_only),
    ("crio: existing config with nvidia runtime", [*CRIO, "--nvidia-set-as-default"],
     {"etc/crio/crio.conf": CRIO_WITH_NVIDIA}, _crio_overridden_by_drop_in),
    ("docker: new JSON config", DOCKER, {}, _docker_new),
    ("docker: existing config with set as default", [*DOCKER, "--nvidia-set-as-default"],
     {"etc/docker/daemon.json": DOCKER_EXISTING}, _docker_default),
    ("docker: enable CDI", [*DOCKER, "--cdi.enabled"], {}, _docker_cdi),
    ("dry-run: no files written", ["--dry-run", *CTD], {}, _nothing_written),
    ("invalid config-mode falls back to config-file", ["--config-mode", "invalid", *DOCKER], {}, _docker_new),
    ("containerd: config from command",
     ["--runtime", "containerd", "--config-source", "command", "--executable-path", "{root}/bin/containerd",
      "--config", "{root}/etc/containerd/config.toml",
      "--drop-in-config", "{root}/etc/containerd/conf.d/99-nvidia.toml"],
     {MAIN: "version = 2\n"}, lambda root: (_created_with_drop_in(root), None)[1]),
]


@pytest.mark.parametrize(("case", "args", "files", "check"), CASES, ids=[c[0] for c in CASES])
def test_nvidia_ctk_case(tmp_path: Path, case: str, args: list[str], files: dict[str, str], check: Check) -> None:
    for rel, text in files.items():
        _write(tmp_path, rel, text)

    done = _kgpu([a.replace("{root}", str(tmp_path)) for a in args])

    assert done.returncode == 0, f"{case}: {done.stderr}"
    check(tmp_path)


def test_nvidia_ctk_refuses_an_unrecognized_runtime_and_so_does_kgpu(tmp_path: Path) -> None:
    done = _kgpu(["--runtime", "invalid"])
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "kgpu: error: --runtime 'invalid': allowed values are containerd, docker, crio"]
