"""A malformed fixture is rejected with the file, the field and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kgpu.errors import ConfigError
from kgpu.gpu import open_backend
from kgpu.gpu.fixture import read_fixture_text


def _write_variant(tmp_path: Path, mutate: object) -> Path:
    _, text = read_fixture_text("a100-mig")
    node = yaml.safe_load(text)
    mutate(node)  # type: ignore[operator]
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(node))
    return path


def test_a_user_fixture_file_is_accepted(tmp_path: Path) -> None:
    path = _write_variant(tmp_path, lambda n: n["gpus"][1].update(name="NVIDIA A100-SXM4-40GB"))
    inv = open_backend(simulate=str(path)).inventory()
    assert inv.gpus[1].name == "NVIDIA A100-SXM4-40GB"


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (lambda n: n["gpus"][0].update(uuid="GPU-nope"), "gpus.0.uuid", "is not a GPU UUID"),
        (lambda n: n["gpus"][1].update(memory_total_mib="lots"), "gpus.1.memory_total_mib", "valid integer"),
        (lambda n: n["gpus"][0].update(colour="green"), "gpus.0.colour", "Extra inputs are not permitted"),
        (lambda n: n["gpus"][0].pop("name"), "gpus.0.name", "Field required"),
        (lambda n: n["gpus"][0].update(pci_bus_id="65:00"), "gpus.0.pci_bus_id", "not a PCI bus id"),
        (lambda n: n["gpus"][1].update(mig_devices=n["gpus"][0]["mig_devices"][:1]), "gpus.1", "mig_enabled is false"),
        (lambda n: n["gpus"][0]["mig_devices"][0].update(profile="big"), "gpus.0.mig_devices.0.profile", "MIG profile"),
        (lambda n: n["gpus"][1].update(uuid=n["gpus"][0]["uuid"]), "(top level)", "duplicate UUIDs"),
        (lambda n: n["gpus"][0]["nvlink"].append({"peer": 7, "links": 1}), "(top level)", "peer 7"),
        (lambda n: n.update(cuda_driver_version="thirteen"), "cuda_driver_version", "not a CUDA version"),
    ],
)
def test_bad_field_is_named_with_reason(tmp_path: Path, mutate: object, field: str, reason: str) -> None:
    path = _write_variant(tmp_path, mutate)
    with pytest.raises(ConfigError) as err:
        open_backend(simulate=str(path))
    message = str(err.value)
    assert str(path) in message
    assert f"field {field}:" in message
    assert reason in message


def test_broken_yaml_reports_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("driver_version: 1\ngpus:\n  - index: 0\n   uuid: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: line \d+, column \d+"):
        open_backend(simulate=str(path))


def test_unknown_fixture_name_lists_built_ins() -> None:
    with pytest.raises(ConfigError, match="built-in fixtures are a100-mig, a30, h100x8, mixed, p100, t4"):
        open_backend(simulate="v100")
