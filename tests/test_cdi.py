"""Given a node's GPUs and driver files, `kgpu cdi generate` writes the spec nvidia-ctk would, every path real."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from cdi_node import VERSION, make_node, multiarch_lib

from kgpu.cdi import CdiError, CdiOptions, generate_spec, minimum_version, render, validate
from kgpu.cli import app
from kgpu.gpu import open_backend
from kgpu.gpu.model import Inventory

RO = ["ro", "nosuid", "nodev", "rbind", "rprivate"]  # nvidia-ctk's options for the driver's files


def _inventory(name: str) -> Inventory:
    backend = open_backend(simulate=name)
    try:
        return backend.inventory()
    finally:
        backend.close()


def _mounts(doc: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {m["containerPath"]: m for m in doc["containerEdits"]["mounts"]}


def test_h100_node_with_a_distro_driver_gets_one_device_per_gpu_plus_all(tmp_path: Path) -> None:
    inv = _inventory("h100x8")
    make_node(tmp_path, inv)

    doc = generate_spec(inv, CdiOptions(root=tmp_path, strategies=("index",))).spec.to_json()

    assert doc["kind"] == "nvidia.com/gpu"
    assert doc["cdiVersion"] == "0.5.0"  # index names start with a digit: 0.5.0 is the lowest that allows it
    names = [d["name"] for d in doc["devices"]]
    assert names == [str(i) for i in range(8)] + ["all"]
    assert doc["devices"][3]["containerEdits"] == {"deviceNodes": [{"path": "/dev/nvidia3"}]}
    assert [n["path"] for n in doc["devices"][-1]["containerEdits"]["deviceNodes"]] == [
        f"/dev/nvidia{i}" for i in range(8)
    ]
    edits = doc["containerEdits"]
    assert edits["env"] == [f"NVIDIA_CTK_LIBCUDA_DIR=/{multiarch_lib()}", "NVIDIA_VISIBLE_DEVICES=void"]
    assert [n["path"] for n in edits["deviceNodes"]] == [
        "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"
    ]
    lib = "/" + multiarch_lib()
    mounts = _mounts(doc)
    assert mounts[f"{lib}/libcuda.so.{VERSION}"] == {
        "hostPath": f"{lib}/libcuda.so.{VERSION}", "containerPath": f"{lib}/libcuda.so.{VERSION}", "options": RO
    }
    for binary in ("nvidia-smi", "nvidia-debugdump", "nvidia-persistenced", "nvidia-cuda-mps-control",
                   "nvidia-cuda-mps-server"):
        assert mounts[f"/usr/bin/{binary}"]["options"] == RO
    assert f"/lib/firmware/nvidia/{VERSION}/gsp_ga10x.bin" in mounts
    # a hook binary that names none of the newer subcommands gets the two every nvidia-cdi-hook has
    create, ldcache = edits["hooks"]
    assert create == {"hookName": "createContainer", "path": "/usr/bin/nvidia-cdi-hook",
                      "args": ["nvidia-cdi-hook", "create-symlinks", "--link", f"libcuda.so.1::{lib}/libcuda.so"],
                      "env": ["NVIDIA_CTK_DEBUG=false"]}
    assert ldcache["args"] == ["nvidia-cdi-hook", "update-ldcache", "--folder", lib]
    assert ldcache["env"] == ["NVIDIA_CTK_DEBUG=false"]
    assert validate(doc, tmp_path).ok


def test_mig_devices_get_their_parent_and_capability_nodes_named_gpu_colon_mig(tmp_path: Path) -> None:
    inv = _inventory("a100-mig")
    make_node(tmp_path, inv)

    doc = generate_spec(inv, CdiOptions(root=tmp_path, strategies=("index", "uuid"))).spec.to_json()

    by_name = {d["name"]: d["containerEdits"]["deviceNodes"] for d in doc["devices"]}
    # gpu0/gi2 is minor 21 and gpu0/gi2/ci0 minor 22 in the driver's mig-minors table
    three_g = [{"path": "/dev/nvidia0"}, {"path": "/dev/nvidia-caps/nvidia-cap21"},
               {"path": "/dev/nvidia-caps/nvidia-cap22"}]
    assert by_name["0:0"] == three_g
    assert by_name["MIG-51ae983c-d1ea-5513-88c1-a818a9ff928a"] == three_g
    assert by_name["1"] == by_name["GPU-b08da2bc-858e-51d4-8537-d405fc57691e"] == [{"path": "/dev/nvidia1"}]
    assert {"0", "0:1", "0:2", "0:3", "all"} <= set(by_name)
    assert len(by_name["all"]) == 1 + 4 * 2 + 1
    assert validate(doc, tmp_path).ok


def test_uuid_names_still_get_the_0_5_0_floor(tmp_path: Path) -> None:
    inv = _inventory("t4")
    make_node(tmp_path, inv)

    doc = generate_spec(inv, CdiOptions(root=tmp_path, strategies=("uuid",))).spec.to_json()

    assert [d["name"] for d in doc["devices"]] == [inv.gpus[0].uuid, "all"]
    assert minimum_version(doc, floor="0.3.0") == "0.3.0"
    assert doc["cdiVersion"] == "0.5.0"


def test_gke_style_driver_root_maps_files_to_container_paths_without_the_root(tmp_path: Path) -> None:
    inv = _inventory("h100x8")
    make_node(tmp_path, inv, driver_root="/usr/local/nvidia", lib_dir="lib64", bin_dir="bin", hook=False)

    result = generate_spec(inv, CdiOptions(root=tmp_path, driver_root="/usr/local/nvidia"))
    doc = result.spec.to_json()

    mounts = _mounts(doc)
    nvml = mounts[f"/lib64/libnvidia-ml.so.{VERSION}"]
    assert nvml["hostPath"] == f"/usr/local/nvidia/lib64/libnvidia-ml.so.{VERSION}"
    assert mounts["/bin/nvidia-smi"]["hostPath"] == "/usr/local/nvidia/bin/nvidia-smi"
    # no nvidia-cdi-hook on this node: no hooks, the soname links are mounted as files instead
    assert "hooks" not in doc["containerEdits"]
    assert mounts["/lib64/libcuda.so.1"]["hostPath"] == "/usr/local/nvidia/lib64/libcuda.so.1"
    assert any("nvidia-cdi-hook is not installed" in n for n in result.notes)
    check = validate(doc, tmp_path)
    assert check.ok and not check.warnings
    assert result.left_out == ()


def test_driver_root_with_a_dev_of_its_own_but_no_device_nodes_uses_the_nodes_dev(tmp_path: Path) -> None:
    # as on the H200 machine: /usr/local/nvidia/dev exists, but the device nodes are only in the node's /dev
    inv = _inventory("t4")
    make_node(tmp_path, inv, driver_root="/usr/local/nvidia", lib_dir="lib64", bin_dir="bin", hook=False)
    (tmp_path / "usr/local/nvidia/dev").mkdir()

    result = generate_spec(inv, CdiOptions(root=tmp_path, driver_root="/usr/local/nvidia"))

    nodes = {n["path"]: n.get("hostPath", n["path"]) for n in result.spec.to_json()["containerEdits"]["deviceNodes"]}
    assert nodes["/dev/nvidiactl"] == "/dev/nvidiactl"
    assert any("no /dev/nvidiactl under the driver root" in n for n in result.notes)


def test_missing_device_node_or_driver_is_an_error_naming_it(tmp_path: Path) -> None:
    inv = _inventory("t4")
    make_node(tmp_path, inv)
    (tmp_path / "dev/nvidia0").unlink()
    with pytest.raises(CdiError, match="/dev/nvidia0 does not exist"):
        generate_spec(inv, CdiOptions(root=tmp_path))

    with pytest.raises(CdiError, match=r"no NVIDIA driver libraries .* under /opt/none"):
        (tmp_path / "dev/nvidia0").touch()
        generate_spec(inv, CdiOptions(root=tmp_path, driver_root="/opt/none"))


def test_validation_catches_paths_that_vanished_and_bad_shape(tmp_path: Path) -> None:
    inv = _inventory("t4")
    make_node(tmp_path, inv)
    doc = generate_spec(inv, CdiOptions(root=tmp_path)).spec.to_json()
    (tmp_path / "usr/bin/nvidia-smi").unlink()
    (tmp_path / "usr/bin/nvidia-cdi-hook").unlink()
    doc["devices"].append({"name": "all", "containerEdits": {}})
    doc["cdiVersion"] = "0.4.0"

    check = validate(doc, tmp_path)

    joined = "\n".join(check.errors)
    assert "mount source /usr/bin/nvidia-smi does not exist" in joined
    assert "duplicate device name" in joined
    assert "containerEdits must not be empty" in joined
    assert "too old" in joined
    assert any("nvidia-cdi-hook is not installed" in w for w in check.warnings)


def test_cli_writes_yaml_or_json_that_parses_back(tmp_path: Path) -> None:
    inv = _inventory("mixed")
    make_node(tmp_path, inv)
    runner = CliRunner()

    result = runner.invoke(app, ["--simulate", "mixed", "cdi", "generate", "--root", str(tmp_path),
                                 "--output", "/etc/cdi/nvidia.yaml"])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"created {tmp_path}/etc/cdi/nvidia.yaml: 5 devices")  # the path written
    text = (tmp_path / "etc/cdi/nvidia.yaml").read_text()
    assert text.startswith("---\ncdiVersion: 0.5.0\n")
    doc = yaml.safe_load(text)
    assert [d["name"] for d in doc["devices"]] == ["0", inv.gpus[0].uuid, "1", inv.gpus[1].uuid, "all"]

    as_json = runner.invoke(app, ["--simulate", "mixed", "cdi", "generate", "--root", str(tmp_path),
                                  "--format", "json", "--device-name-strategy", "both"])
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout) == doc

    check = runner.invoke(app, ["cdi", "validate", "--root", str(tmp_path), "/etc/cdi/nvidia.yaml"])
    assert check.exit_code == 0, check.output
    assert check.stdout.startswith(f"{tmp_path}/etc/cdi/nvidia.yaml: valid CDI spec")


def test_render_yaml_is_sorted_like_nvidia_ctk(tmp_path: Path) -> None:
    inv = _inventory("t4")
    make_node(tmp_path, inv)
    text = render(generate_spec(inv, CdiOptions(root=tmp_path)).spec, "yaml")
    assert text.startswith("---\n")
    top = [line.split(":")[0] for line in text.splitlines()[1:] if not line.startswith((" ", "-"))]
    assert top == ["cdiVersion", "containerEdits", "devices", "kind"]
