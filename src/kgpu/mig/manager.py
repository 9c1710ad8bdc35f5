"""`kgpu mig-manager`: the node label ``nvidia.com/mig.config=<name>`` applies that mig-parted layout.

As NVIDIA's mig-manager: ``nvidia.com/mig.config.state`` goes ``pending`` while a layout is applied, then
``success`` or ``failed``; after a change, the GPU pods of the node (device plugin, labeler, exporter, MPS
daemon, validator) are restarted so they read the new layout, and the device plugin registers the new MIG
resources. Why a layout failed is in the log and in the Node annotation ``kgpu.io/mig.config.message``.

:func:`apply_named` decides and applies through a :class:`MigControl`: NVML on a real node, the simulated
node's MIG state file otherwise. Applying the layout a GPU already has changes nothing and restarts nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kgpu.errors import KgpuError
from kgpu.fsio import read_text
from kgpu.gpu.migstate import GpuMigState, InstanceState, read_mig_state, write_mig_state
from kgpu.gpu.model import Inventory
from kgpu.mig.config import MigConfigEntry, parse_mig_config
from kgpu.mig.plan import GpuLayout, current_layout, plan_layout

log = logging.getLogger(__name__)

MIG_CONFIG_LABEL = "nvidia.com/mig.config"
MIG_STATE_LABEL = "nvidia.com/mig.config.state"
MESSAGE_ANNOTATION = "kgpu.io/mig.config.message"
GPU_COMPONENTS = ("device-plugin", "labeler", "exporter", "mps-daemon", "validator")


class MigControl(Protocol):
    def inventory(self) -> Inventory: ...

    def apply(self, layouts: Sequence[GpuLayout]) -> None: ...


class SimulatedMigControl:
    """A simulated node's MIG layout, kept in the state file every simulated backend of the node reads."""

    def __init__(self, fixture: str, state_file: Path) -> None:
        self.fixture = fixture
        self.state_file = state_file

    def inventory(self) -> Inventory:
        from kgpu.gpu.simulated import SimulatedBackend

        return SimulatedBackend.open(self.fixture, mig_state=self.state_file).inventory()

    def apply(self, layouts: Sequence[GpuLayout]) -> None:
        """Record the new layouts; a node back to its fixture's layout keeps no state file at all."""
        from kgpu.gpu.simulated import SimulatedBackend

        state = read_mig_state(self.state_file)
        for layout in layouts:
            state[layout.uuid] = GpuMigState(layout.mig_enabled, tuple(
                InstanceState(i.profile.name, i.start) for i in layout.instances))
        fixture = {g.uuid: current_layout(g) for g in SimulatedBackend.open(self.fixture).inventory().gpus}
        as_fixture = all(
            fixture.get(uuid) is not None and fixture[uuid].mig_enabled == gpu.mig_enabled
            and [(i.profile.name, i.start) for i in fixture[uuid].instances]
            == [(i.profile, i.start) for i in sorted(gpu.instances, key=lambda i: i.start)]
            for uuid, gpu in state.items()
        )
        if as_fixture:
            self.state_file.unlink(missing_ok=True)
        else:
            write_mig_state(self.state_file, state)


class NvmlMigControl:
    """The real GPUs, through NVML (never exercised against the shared H200: its MIG mode must not change)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def inventory(self) -> Inventory:
        inventory: Inventory = self.backend.inventory()
        return inventory

    def apply(self, layouts: Sequence[GpuLayout]) -> None:
        from kgpu.gpu.nvml import apply_mig_layout

        for layout in layouts:
            apply_mig_layout(self.backend, layout.uuid, layout.mig_enabled,
                             [(i.profile.nvml_index, i.start, i.profile.compute_slices) for i in layout.instances])


@dataclass(frozen=True, slots=True)
class Outcome:
    state: str
    """success or failed: the value of nvidia.com/mig.config.state."""
    changed: bool
    message: str


def apply_named(control: MigControl, configs: Mapping[str, Sequence[MigConfigEntry]], name: str) -> Outcome:
    """Apply the layout called ``name``; nothing changes (and nothing restarts) when the GPUs already have it."""
    entries = configs.get(name)
    if entries is None:
        known = ", ".join(sorted(configs))
        return Outcome("failed", False, f"no MIG config named {name!r}; the config file has: {known}")
    try:
        inventory = control.inventory()
        layouts = plan_layout(inventory, name, entries)
        current = {g.uuid: current_layout(g) for g in inventory.gpus}
        changes = [layout for layout in layouts if current.get(layout.uuid) != layout]
        if changes:
            control.apply(changes)
    except KgpuError as exc:
        return Outcome("failed", False, str(exc))
    described = "; ".join(layout.describe() for layout in layouts)
    if not changes:
        return Outcome("success", False, f"{name}: already applied ({described})")
    return Outcome("success", True, f"{name}: applied ({described})")


# --------------------------------------------------------------------------------------------------
# The daemon: the Node's label in, the state label out
# --------------------------------------------------------------------------------------------------


def _patch_node(client: Any, node: str, state: str, message: str) -> None:
    from lightkube.resources.core_v1 import Node
    from lightkube.types import PatchType

    client.patch(Node, node, {"metadata": {"labels": {MIG_STATE_LABEL: state},
                                           "annotations": {MESSAGE_ANNOTATION: message[:1024]}}},
                 patch_type=PatchType.MERGE)


def withdraw(client: Any, node: str) -> None:
    """Take the manager's state label and message off the Node (on SIGTERM: an uninstall leaves nothing)."""
    from lightkube.resources.core_v1 import Node
    from lightkube.types import PatchType

    client.patch(Node, node, {"metadata": {"labels": {MIG_STATE_LABEL: None},
                                           "annotations": {MESSAGE_ANNOTATION: None}}}, patch_type=PatchType.MERGE)


def restart_gpu_pods(client: Any, namespace: str, node: str) -> list[str]:
    """Delete the node's GPU pods of kgpu (their DaemonSets recreate them with the new layout)."""
    from lightkube.resources.core_v1 import Pod

    selector = {"app.kubernetes.io/component": GPU_COMPONENTS}
    names = [p.metadata.name for p in client.list(Pod, namespace=namespace, labels=selector,
                                                  fields={"spec.nodeName": node}) if p.metadata]
    for name in names:
        client.delete(Pod, name, namespace=namespace)
    return names


def run_manager(client: Any, control: MigControl, node: str, config_file: Path, default: str, namespace: str,
                interval_s: float, stop: threading.Event, once: bool = False) -> Outcome | None:
    """Watch the Node's nvidia.com/mig.config label (polling every ``interval_s``) until ``stop``."""
    from lightkube.resources.core_v1 import Node

    done: tuple[str, float] | None = None
    outcome: Outcome | None = None
    last_error = ""
    while not stop.is_set():
        try:
            labels = client.get(Node, node).metadata.labels or {}
            wanted = labels.get(MIG_CONFIG_LABEL) or default
            mtime = config_file.stat().st_mtime if config_file.exists() else 0.0
            if wanted and (done != (wanted, mtime) or labels.get(MIG_STATE_LABEL) not in ("success", "failed")):
                _patch_node(client, node, "pending", f"applying {wanted}")
                try:
                    configs = parse_mig_config(read_text(config_file), str(config_file))
                    outcome = apply_named(control, configs, wanted)
                except (KgpuError, OSError) as exc:
                    outcome = Outcome("failed", False, str(exc))
                if outcome.changed:
                    restarted = restart_gpu_pods(client, namespace, node)
                    log.info("restarted GPU pods after the MIG change: %s", ", ".join(restarted) or "none")
                (log.info if outcome.state == "success" else log.error)("mig.config %s: %s", outcome.state,
                                                                        outcome.message)
                _patch_node(client, node, outcome.state, outcome.message)
                done = (wanted, mtime)
            last_error = ""
        except Exception as exc:  # the API server is away or refused: say it once, keep trying
            text = f"{type(exc).__name__}: {exc}"
            if text != last_error:
                log.warning("mig-manager: %s", text)
            last_error = text
        if once:
            return outcome
        stop.wait(interval_s)  # set at once by the runtime's signal thread (kgpu.daemon.StopSignals)
    try:
        withdraw(client, node)
    except Exception as exc:  # stopping anyway
        log.warning("could not remove %s from node %s: %s", MIG_STATE_LABEL, node, exc)
    return outcome
