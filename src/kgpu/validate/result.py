"""What one validation step found: the values every step returns and the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    """Deliberately not run: ``--skip``, no ``--pod``, or nothing to test (a simulated node has no CUDA)."""
    NOT_RUN = "not-run"
    """Not reached: an earlier link of the chain is broken."""


@dataclass(frozen=True, slots=True)
class Step:
    number: int
    name: str
    title: str


STEPS: tuple[Step, ...] = (
    Step(1, "driver", "NVIDIA kernel driver loaded"),
    Step(2, "nvml", "NVML reads the inventory, every GPU answers"),
    Step(3, "device-nodes", "device nodes present and openable"),
    Step(4, "cuda", "CUDA vectorAdd on the GPU (driver API, JIT-compiled PTX)"),
    Step(5, "runtime", "container runtime configured for NVIDIA GPUs"),
    Step(6, "device-plugin", "device plugin registered with the kubelet"),
    Step(7, "pod", "a pod requesting nvidia.com/gpu runs the CUDA check"),
)
STEP_NAMES: tuple[str, ...] = tuple(s.name for s in STEPS)


def step_named(name: str) -> Step:
    return next(s for s in STEPS if s.name == name)


@dataclass(frozen=True, slots=True)
class StepResult:
    step: int
    name: str
    status: Status
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not Status.FAILED

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "name": self.name,
            "status": str(self.status),
            "detail": self.detail,
            "fix": self.fix,
        }


def passed(name: str, detail: str) -> StepResult:
    return StepResult(step_named(name).number, name, Status.PASSED, detail)


def failed(name: str, detail: str, fix: str) -> StepResult:
    return StepResult(step_named(name).number, name, Status.FAILED, detail, fix)


def skipped(name: str, detail: str) -> StepResult:
    return StepResult(step_named(name).number, name, Status.SKIPPED, detail)


def not_run(name: str, detail: str) -> StepResult:
    return StepResult(step_named(name).number, name, Status.NOT_RUN, detail)


def exit_code(results: list[StepResult]) -> int:
    """0 only when every step that ran passed."""
    return 0 if all(r.ok for r in results) else 1
