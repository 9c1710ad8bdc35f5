"""A simulated node's MIG layout: the file ``kgpu mig-manager`` writes and every simulated backend reads.

On a real node MIG mode and GPU instances live in the driver; on a simulated node they live in this file
(``KGPU_SIMULATE_MIG_STATE``, in the chart ``/run/kgpu/simulated-mig.json``, shared by the node's pods), so
the device plugin, labeler and exporter started after a change see the new layout, as they would read it
from NVML. Its shape is one typed contract, written and read here only::

    {"gpus": {"GPU-…": {"mig_enabled": true, "instances": [{"profile": "3g.40gb", "start": 0}, ...]}}}

The MIG devices a layout produces are what NVML would report for it: one per GPU instance (with its default
compute instance), the profile's ID, placement, SMs, engines and memory (the profile's, capped at the GPU's
share of its memory slices), and a UUID derived from the GPU's UUID and the placement, stable across reads.
"""

from __future__ import annotations

import json
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

from kgpu.errors import ConfigError
from kgpu.fsio import read_text, write_atomic
from kgpu.gpu.fixture import GPUSpec, MigDeviceSpec, NodeSpec

MAX_STATE_BYTES = 1 << 20
_NAMESPACE = uuidlib.UUID("6f1c1f8e-3b8e-4c55-9d0e-6b1d4e8a7c21")


@dataclass(frozen=True, slots=True)
class InstanceState:
    profile: str
    start: int


@dataclass(frozen=True, slots=True)
class GpuMigState:
    mig_enabled: bool
    instances: tuple[InstanceState, ...] = ()


def read_mig_state(path: Path) -> dict[str, GpuMigState]:
    """The layout per GPU UUID; empty when the file does not exist (no change from the fixture)."""
    try:
        if path.stat().st_size > MAX_STATE_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_STATE_BYTES} bytes")
        raw = json.loads(read_text(path, f"simulated MIG state {path}"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"simulated MIG state {path}: {exc}") from exc
    gpus = raw.get("gpus") if isinstance(raw, dict) else None
    if not isinstance(gpus, dict):
        raise ConfigError(f"simulated MIG state {path}: expected {{\"gpus\": {{uuid: {{mig_enabled, instances}}}}}}")
    out: dict[str, GpuMigState] = {}
    for uuid, gpu in gpus.items():
        try:
            instances = tuple(InstanceState(str(i["profile"]), int(i["start"])) for i in gpu.get("instances", []))
            out[str(uuid)] = GpuMigState(bool(gpu["mig_enabled"]), instances)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"simulated MIG state {path}: GPU {uuid}: {exc!r}") from exc
    return out


def write_mig_state(path: Path, state: dict[str, GpuMigState]) -> None:
    body = {"gpus": {uuid: {"mig_enabled": g.mig_enabled,
                            "instances": [{"profile": i.profile, "start": i.start} for i in g.instances]}
                     for uuid, g in sorted(state.items())}}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(body, indent=2) + "\n")


def mig_uuid(gpu_uuid: str, profile: str, start: int) -> str:
    return "MIG-" + str(uuidlib.uuid5(_NAMESPACE, f"{gpu_uuid}/{profile}/{start}"))


def apply_mig_state(spec: NodeSpec, state: dict[str, GpuMigState]) -> NodeSpec:
    """The fixture as the node looks with this MIG layout (GPUs the state does not name are unchanged)."""
    # Here, not at the top: kgpu.mig.profiles imports kgpu.gpu.model, so at the top this is a circular import;
    # the tables are GPU facts that belong under kgpu.gpu (tests/test_import_graph.py lists the cycle).
    from kgpu.mig.profiles import TABLES

    gpus: list[GPUSpec] = []
    for gpu in spec.gpus:
        layout = state.get(gpu.uuid)
        if layout is None:
            gpus.append(gpu)
            continue
        table = TABLES.get(gpu.pci_device_id)
        if layout.mig_enabled and (table is None or not gpu.mig_capable):
            raise ConfigError(f"simulated MIG state: GPU {gpu.uuid} ({gpu.name}) cannot be in MIG mode")
        devices: list[MigDeviceSpec] = []
        used_ids: set[int] = set()
        for inst in sorted(layout.instances, key=lambda i: i.start):
            assert table is not None
            profile = table.by_name.get(inst.profile)
            if profile is None or inst.start not in profile.starts:
                raise ConfigError(f"simulated MIG state: GPU {gpu.uuid}: {inst.profile}@{inst.start} is not a "
                                  f"placement {table.model} allows")
            # NVML numbers GPU instances from 1 (0 is the whole GPU's 7g instance); the lowest free ID here.
            gi_id = 0 if profile.compute_slices == 7 else min(set(range(1, 15)) - used_ids)
            used_ids.add(gi_id)
            share = gpu.memory_total_mib * profile.size // table.memory_slices
            devices.append(MigDeviceSpec(
                uuid=mig_uuid(gpu.uuid, inst.profile, inst.start), profile=inst.profile, gpu_instance_id=gi_id,
                compute_instance_id=0, memory_total_mib=min(profile.memory_mib, share),
                multiprocessor_count=profile.multiprocessors, gpu_instance_slices=profile.compute_slices,
                compute_instance_slices=profile.compute_slices, copy_engines=profile.compute_slices,
                decoders=profile.decoders, jpeg_decoders=profile.jpeg, ofa_engines=profile.ofa,
                profile_id=profile.profile_id, placement_start=inst.start, placement_size=profile.size,
            ))
        gpus.append(gpu.model_copy(update={"mig_enabled": layout.mig_enabled, "mig_devices": devices}))
    return NodeSpec.model_validate(spec.model_copy(update={"gpus": gpus}).model_dump())
