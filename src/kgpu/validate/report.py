"""`kgpu node report`: `kgpu validate`'s node steps, as the stages of :mod:`kgpu.nodestatus`, on the Node.

Decisions (:func:`stage_conditions`) are pure: validate's step results in, Node conditions out. The loop
(:func:`run_report`) runs validate every interval and patches the Node's status conditions; on SIGTERM it
removes them, so an uninstalled kgpu leaves no condition behind.

On a simulated node (``--simulate``, test clusters) there is no kernel driver and no runtime to check: those
two stages say so with reason ``Simulated`` and the fixture's facts, rather than failing or passing silently.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from kgpu.nodestatus import CONDITION_TYPES, Stage, condition, merge_conditions
from kgpu.validate.result import StepResult

log = logging.getLogger(__name__)

SIMULATED_SKIPS = frozenset({"driver", "device-nodes", "runtime", "cuda", "pod"})
"""Steps that read a real driver or runtime: skipped on a simulated node (their stages say Simulated)."""
NODE_SKIPS = frozenset({"pod"})
"""A node report never creates pods: the chart's validation Job does that once per install."""


def _reason(result: StepResult) -> str:
    return {"passed": "Passed", "failed": "Failed", "skipped": "Skipped", "not-run": "NotRun"}[str(result.status)]


def _combine(stage: Stage, results: Sequence[StepResult], now: str) -> dict[str, Any]:
    """One stage from several steps: the first that failed or was not reached decides, else all passed."""
    bad = next((r for r in results if str(r.status) in ("failed", "not-run")), None)
    if bad is not None:
        fix = bad.fix or "fix the earlier failing stage first"
        return condition(stage, False, _reason(bad), f"{bad.name}: {bad.detail}", fix, now)
    evidence = "; ".join(f"{r.name}: {r.detail}" for r in results)
    return condition(stage, True, "Passed", evidence, "", now)


def stage_conditions(results: Sequence[StepResult], simulated: bool, now: str) -> list[dict[str, Any]]:
    """The Node conditions of the four node-found stages, from one validate run."""
    by_name = {r.name: r for r in results}
    out: list[dict[str, Any]] = []
    nvml = by_name["nvml"]
    if simulated:
        if nvml.ok:
            out.append(condition(Stage.DRIVER, True, "Simulated",
                                 f"simulated node, no kernel driver checked; {nvml.detail}", "", now))
        else:
            out.append(condition(Stage.DRIVER, False, "Failed", nvml.detail, nvml.fix, now))
        out.append(condition(Stage.RUNTIME, True, "Simulated",
                             "simulated node: no container runtime injects a GPU; containers get device IDs "
                             "in environment variables only", "", now))
    else:
        out.append(_combine(Stage.DRIVER, [by_name["driver"], nvml, by_name["device-nodes"]], now))
        out.append(_combine(Stage.RUNTIME, [by_name["runtime"]], now))
    out.append(_combine(Stage.DEVICE_PLUGIN, [by_name["device-plugin"]], now))
    ran = [r for r in results if str(r.status) != "skipped"]
    skipped = [r for r in results if str(r.status) == "skipped" and r.name != "pod"]
    verdict = _combine(Stage.VALIDATION, ran, now)
    if verdict["status"] == "True":
        passed = ", ".join(r.name for r in ran)
        notes = "; ".join(f"{r.name} skipped: {r.detail}" for r in skipped)
        verdict = condition(Stage.VALIDATION, True, "Passed", f"passed: {passed}" + (f"; {notes}" if notes else ""),
                            "", now)
    out.append(verdict)
    return out


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def patch_conditions(client: Any, node: str, conditions: list[dict[str, Any]]) -> None:
    """Merge these conditions into the Node's status (a strategic merge keyed by type)."""
    from lightkube.resources.core_v1 import Node
    from lightkube.types import PatchType

    current = client.get(Node, node)
    existing = [c.to_dict() if hasattr(c, "to_dict") else c for c in (current.status.conditions or [])]
    merged = merge_conditions(existing, conditions)
    client.patch(Node.Status, node, {"status": {"conditions": merged}}, patch_type=PatchType.STRATEGIC)


def remove_conditions(client: Any, node: str) -> None:
    """Take kgpu's conditions off the Node (on SIGTERM: an uninstall leaves nothing behind)."""
    from lightkube.resources.core_v1 import Node
    from lightkube.types import PatchType

    ours = set(CONDITION_TYPES.values())
    patch = {"status": {"conditions": [{"type": t, "$patch": "delete"} for t in sorted(ours)]}}
    client.patch(Node.Status, node, patch, patch_type=PatchType.STRATEGIC)


def run_report(
    once: Callable[[], list[dict[str, Any]]],
    publish: Callable[[list[dict[str, Any]]], None],
    interval_s: float,
    stop: threading.Event,
    withdraw: Callable[[], None] | None = None,
) -> None:
    """Report at once, then every ``interval_s`` until ``stop``; failures are logged once per distinct cause."""
    last_error = ""
    while not stop.is_set():
        try:
            publish(once())
            if last_error:
                log.info("reporting again")
            last_error = ""
        except Exception as exc:  # the API or a check failed: keep reporting, say why once
            text = f"{type(exc).__name__}: {exc}"
            if text != last_error:
                log.warning("node report failed: %s", text)
            last_error = text
        stop.wait(interval_s)  # set at once by the runtime's signal thread (kgpu.daemon.StopSignals)
    if withdraw is not None:
        try:
            withdraw()
        except Exception as exc:  # stopping anyway
            log.warning("could not remove the node's kgpu conditions: %s", exc)
