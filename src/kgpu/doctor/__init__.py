"""The node doctor: checks over host and GPU facts, each with a stable id, evidence and an exact fix.

Example::

    from kgpu.doctor import gather, run_checks
    facts = gather(Path("/"), lambda: open_backend(simulate="h100x8"))
    for finding in run_checks(facts):
        print(finding.id, finding.status, finding.title)
"""

from kgpu.doctor.facts import GpuFacts, NodeFacts
from kgpu.doctor.finding import Finding, Outcome, Status
from kgpu.doctor.gather import gather, gpu_facts
from kgpu.doctor.registry import CHECK_IDS, CHECKS, Check, run_checks, select

__all__ = [
    "CHECKS",
    "CHECK_IDS",
    "Check",
    "Finding",
    "GpuFacts",
    "NodeFacts",
    "Outcome",
    "Status",
    "gather",
    "gpu_facts",
    "run_checks",
    "select",
]
