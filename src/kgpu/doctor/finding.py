"""A finding: what one check concluded about the node, with the evidence seen and the exact fix."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    """FAIL: this node cannot run GPU pods now. WARN: they run, but a named risk (a reboot, a
    ``systemctl daemon-reload``, a full disk) will break them; the fix says exactly what to do.
    SKIP: the check does not apply, or what it needs could not be read (the evidence says which)."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a check function returns; the registry adds the check's stable id."""

    status: Status
    title: str
    evidence: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class Finding:
    id: str
    """Stable check id, e.g. ``driver.nouveau``."""
    status: Status
    title: str
    evidence: str
    """What was seen: files, lines, values."""
    fix: str = ""
    """Exact commands or file contents for this node's distribution family; empty when nothing to do."""

    @property
    def area(self) -> str:
        return self.id.split(".", 1)[0]

    def to_json(self) -> dict[str, str]:
        return {
            "id": self.id,
            "status": self.status.value,
            "title": self.title,
            "evidence": self.evidence,
            "fix": self.fix,
        }


def passed(title: str, *evidence: str) -> Outcome:
    return Outcome(Status.PASS, title, "\n".join(evidence))


def skipped(title: str, *evidence: str) -> Outcome:
    return Outcome(Status.SKIP, title, "\n".join(evidence))


def warned(title: str, evidence: str | list[str], fix: str) -> Outcome:
    return Outcome(Status.WARN, title, evidence if isinstance(evidence, str) else "\n".join(evidence), fix)


def failed(title: str, evidence: str | list[str], fix: str) -> Outcome:
    return Outcome(Status.FAIL, title, evidence if isinstance(evidence, str) else "\n".join(evidence), fix)
