"""Shared helpers for the exporter tests: a one-GPU node with known readings, and text parsing."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

NODE_YAML = """\
driver_version: 580.95.05
cuda_driver_version: '13.0'
gpus:
- index: 0
  uuid: GPU-11111111-2222-3333-4444-555555555555
  name: NVIDIA H100 80GB HBM3
  compute_capability: '9.0'
  memory_total_mib: 81559
  pci_bus_id: '00000000:18:00.0'
  pci_device_id: 0x233010de
  multiprocessor_count: 132
  readings:
    gpu_utilization_percent: 87
    memory_copy_utilization_percent: 41
    encoder_utilization_percent: 3
    decoder_utilization_percent: 5
    memory_used_mib: 40000
    memory_reserved_mib: 559
    temperature_c: 64
    memory_temperature_c: 71
    power_w: 512.25
    total_energy_mj: 987654321
    sm_clock_mhz: 1980
    memory_clock_mhz: 2619
    pcie_replay_counter: 2
    correctable_remapped_rows: 1
    uncorrectable_remapped_rows: 0
    row_remap_failure: false
- index: 1
  uuid: GPU-66666666-7777-8888-9999-000000000000
  name: NVIDIA H100 80GB HBM3
  compute_capability: '9.0'
  memory_total_mib: 81559
  pci_bus_id: '00000000:2A:00.0'
  pci_device_id: 0x233010de
  multiprocessor_count: 132
  readings:
    fail: {fail}
"""
GPU0 = "GPU-11111111-2222-3333-4444-555555555555"
GPU1 = "GPU-66666666-7777-8888-9999-000000000000"


def write_node(tmp_path: Path, *, gpu1_fails: bool = False) -> str:
    path = tmp_path / "node.yaml"
    path.write_text(NODE_YAML.replace("{fail}", "true" if gpu1_fails else "false"))
    return str(path)


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Family name → [(labels, value)], through prometheus_client's own text parser."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = [(s.labels, s.value) for s in family.samples]
    return out


def series_of(text: str, name: str, uuid: str) -> list[tuple[dict[str, str], float]]:
    return [(labels, value) for labels, value in samples(text).get(name, []) if labels.get("UUID") == uuid]
