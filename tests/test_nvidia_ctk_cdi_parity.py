"""nvidia-container-toolkit's own `cdi generate` cases (cmd/nvidia-ctk/cdi/generate/generate_test.go), replayed.

Their node is testdata/lookup/rootfs-1: the driver's libraries in /lib/x86_64-linux-gnu (libcuda and the
VDPAU library, version 999.88.77), /dev/nvidia0 and /dev/nvidiactl beside them, all under the driver root,
one GPU. Given that node and the same options, kgpu must write the spec nvidia-ctk expects, byte for byte
after its YAML is parsed (kgpu sorts keys as nvidia-ctk's YAML writer does not; the values are the contract).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kgpu.cli import app

FIXTURE = """\
driver_version: 999.88.77
cuda_driver_version: '13.0'
gpus:
- index: 0
  uuid: GPU-36b3a9a1-3f39-4bc4-b0d8-d1c9e7cd8fbd
  name: NVIDIA A100-SXM4-40GB
  brand: Nvidia
  compute_capability: '8.0'
  memory_total_mib: 40960
  pci_bus_id: '00000000:07:00.0'
  pci_device_id: 0x20b010de
  numa_node: 0
  multiprocessor_count: 108
"""

# The hook binary of a toolkit that has every subcommand nvidia-ctk emits (kgpu reads their names from it).
HOOK = b"\x7fELF...create-symlinks\x00enable-cuda-compat\x00update-ldcache\x00disable-device-node-modification" \
       b"\x00update-application-profile\x00chmod\x00"

LIB = "/lib/x86_64-linux-gnu"
RO = ["ro", "nosuid", "nodev", "rbind", "rprivate"]


def _rootfs_1(tmp_path: Path) -> Path:
    driver_root = tmp_path / "testdata/lookup/rootfs-1"
    for name in ("dev/nvidia0", "dev/nvidiactl", "dev/nvidia-caps/nvidia-cap1", "etc/cufile.json",
                 f"{LIB}/libcuda.so.999.88.77", f"{LIB}/vdpau/libvdpau_nvidia.so.999.88.77"):
        (driver_root / name.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (driver_root / name.lstrip("/")).write_bytes(b"")
    (driver_root / LIB.lstrip("/") / "libcuda.so.1").symlink_to("libcuda.so.999.88.77")
    hook = tmp_path / "usr/bin/nvidia-cdi-hook"
    hook.parent.mkdir(parents=True)
    hook.write_bytes(HOOK)
    return driver_root


def _hook(*args: str) -> dict[str, object]:
    return {"hookName": "createContainer", "path": "/usr/bin/nvidia-cdi-hook", "args": ["nvidia-cdi-hook", *args],
            "env": ["NVIDIA_CTK_DEBUG=false"]}


def _expected(driver_root: Path, hooks: list[dict[str, object]]) -> dict[str, object]:
    gpu = {"deviceNodes": [{"path": "/dev/nvidia0", "hostPath": f"{driver_root}/dev/nvidia0"}]}
    edits: dict[str, object] = {
        "env": [f"NVIDIA_CTK_LIBCUDA_DIR={LIB}", "NVIDIA_VISIBLE_DEVICES=void"],
        "deviceNodes": [{"path": "/dev/nvidiactl", "hostPath": f"{driver_root}/dev/nvidiactl"}],
        "hooks": hooks,
        "mounts": [
            {"hostPath": f"{driver_root}{LIB}/libcuda.so.999.88.77", "containerPath": f"{LIB}/libcuda.so.999.88.77",
             "options": RO},
            {"hostPath": f"{driver_root}{LIB}/vdpau/libvdpau_nvidia.so.999.88.77",
             "containerPath": f"{LIB}/vdpau/libvdpau_nvidia.so.999.88.77", "options": RO},
        ],
    }
    if not hooks:
        del edits["hooks"]
    return {"cdiVersion": "0.5.0", "kind": "example.com/device",
            "devices": [{"name": "0", "containerEdits": gpu}, {"name": "all", "containerEdits": gpu}],
            "containerEdits": edits}


CREATE = ("create-symlinks", "--link", f"libcuda.so.1::{LIB}/libcuda.so")
COMPAT = ("enable-cuda-compat", "--host-driver-version=999.88.77")
LDCACHE = ("update-ldcache", "--folder", LIB, "--folder", f"{LIB}/vdpau")
NODES = ("disable-device-node-modification",)
PROFILE = ("update-application-profile",)


@pytest.mark.parametrize(
    ("case", "disabled", "hooks"),
    [
        ("default", [], [CREATE, COMPAT, LDCACHE, NODES, PROFILE]),
        ("disableHooks1", ["enable-cuda-compat"], [CREATE, LDCACHE, NODES, PROFILE]),
        ("disableHooks2", ["enable-cuda-compat", "update-ldcache"], [CREATE, NODES, PROFILE]),
        ("disableHooksAll", ["all"], []),
    ],
)
def test_kgpu_writes_the_spec_nvidia_ctk_expects(tmp_path: Path, case: str, disabled: list[str],
                                                 hooks: list[tuple[str, ...]]) -> None:
    driver_root = _rootfs_1(tmp_path)
    fixture = tmp_path / "one-gpu.yaml"
    fixture.write_text(FIXTURE)
    args = ["--simulate", str(fixture), "cdi", "generate", "--root", str(tmp_path),
            "--driver-root", "/" + str(driver_root.relative_to(tmp_path)),
            "--device-name-strategy", "index", "--vendor", "example.com", "--class", "device"]
    for name in disabled:
        args += ["--disable-hook", name]

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 0, result.output
    node_root = Path("/") / driver_root.relative_to(tmp_path)  # the spec names paths as the node sees them
    assert yaml.safe_load(result.stdout) == _expected(node_root, [_hook(*h) for h in hooks]), case


def test_an_older_hook_binary_gets_only_the_hooks_it_has(tmp_path: Path) -> None:
    driver_root = _rootfs_1(tmp_path)
    (tmp_path / "usr/bin/nvidia-cdi-hook").write_bytes(b"\x7fELF create-symlinks\x00update-ldcache\x00")
    fixture = tmp_path / "one-gpu.yaml"
    fixture.write_text(FIXTURE)

    result = CliRunner().invoke(app, ["--simulate", str(fixture), "cdi", "generate", "--root", str(tmp_path),
                                      "--driver-root", "/" + str(driver_root.relative_to(tmp_path)),
                                      "--device-name-strategy", "index"])

    assert result.exit_code == 0, result.output
    hooks = yaml.safe_load(result.stdout)["containerEdits"]["hooks"]
    # toolkit 1.16 would fail every container on 'enable-cuda-compat': it is left out
    assert [h["args"][1] for h in hooks] == ["create-symlinks", "update-ldcache"]
