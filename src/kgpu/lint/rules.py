"""What Kubernetes or kgpu will reject or mis-schedule in a pod's GPU requests. Pure: pod specs in,
findings out, each with the corrected YAML.

Rules (ids are stable):

* ``fractional-gpu`` (error): an ``nvidia.com/…`` quantity that is not a whole number (``0.5``,
  ``500m``). Extended resources are integers; the API server refuses the pod. Half a GPU is an MPS
  slice: request ``nvidia.com/gpu.shared: 1`` or a slice resource such as ``nvidia.com/gpu-40gb: 1``.
* ``requests-without-limits`` (error): an ``nvidia.com/…`` request with no limit. Extended resources
  cannot be overcommitted; the API server requires the limit (requests may then be left out).
* ``limits-differ-from-requests`` (error): both given, with different values; refused likewise.
* ``missing-gpu-toleration`` (warning): a GPU request without a toleration for the GPU nodes' taint
  (``nvidia.com/gpu=present:NoSchedule``, what ``kgpu node taint`` sets): the pod stays Pending unless
  the cluster runs the ExtendedResourceToleration admission plugin.
* ``unknown-resource`` (error, only when the offered resources are known): an ``nvidia.com/…``
  resource no node offers; the pod stays Pending forever.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from kgpu.lint.manifests import PodTemplate

GPU_PREFIX = "nvidia.com/"
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
_FACTORS = {
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60, "n": Decimal("1e-9"), "u": Decimal("1e-6"),
    "m": Decimal("1e-3"), "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
}


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str
    effect: str

    @classmethod
    def parse(cls, text: str) -> Taint:
        """``KEY=VALUE:EFFECT`` or ``KEY:EFFECT``; ValueError naming the form."""
        head, sep, effect = text.rpartition(":")
        if not sep or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute") or not head:
            raise ValueError(f"{text!r} is not a taint: use KEY=VALUE:EFFECT such as nvidia.com/gpu=present:NoSchedule "
                             "(EFFECT: NoSchedule, PreferNoSchedule, NoExecute)")
        key, _, value = head.partition("=")
        return cls(key, value, effect)

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


GPU_TAINT = Taint("nvidia.com/gpu", "present", "NoSchedule")


@dataclass(frozen=True, slots=True)
class LintContext:
    offered: frozenset[str] | None = None
    """``nvidia.com/…`` resources some node offers; None when unknown (the rule is then skipped)."""
    taint: Taint | None = GPU_TAINT
    """The taint GPU nodes carry; None to skip the toleration rule."""


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    rule: str
    where: str
    """``file:doc N:Kind/name:yaml.path.to.container(name)``."""
    message: str
    fix: str
    """The corrected YAML snippet."""

    def to_json(self) -> dict[str, str]:
        return {"severity": str(self.severity), "rule": self.rule, "where": self.where, "message": self.message,
                "fix": self.fix}


def parse_quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity (``2``, ``500m``, ``0.5``, ``1e3``, ``1Ki``) as a number; None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY.match(str(value).strip())
    if not match:
        return None
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        return None
    suffix = match.group(2)
    if not suffix:
        return number
    if suffix[0] in "eE" and len(suffix) > 1:
        return number * Decimal(10) ** int(suffix[1:])
    return number * _FACTORS[suffix]


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _block(lines: Iterable[str]) -> str:
    return "\n".join(lines)


def _resources_snippet(limits: Mapping[str, str]) -> str:
    return _block(["resources:", "  limits:", *(f"    {k}: {v}" for k, v in limits.items())])


def slice_suggestions(amount: Decimal, offered: frozenset[str] | None) -> list[str]:
    """Resources that give a fraction of a GPU.

    When the offered resources are known (``--cluster``, ``--nodes``, …), only offered shared or slice
    resources — possibly none: a suggestion the cluster cannot satisfy would leave the pod Pending.
    When they are unknown, kgpu's usual names: a slice sized to the fraction of an 80 GB GPU, and
    time-slicing's renamed ``nvidia.com/gpu.shared``.
    """
    if offered is not None:
        return sorted(r for r in offered if r.startswith(GPU_PREFIX) and r != "nvidia.com/gpu"
                      and not r.startswith("nvidia.com/mig-"))
    size = max(1, int((amount * 80).to_integral_value()))
    return [f"nvidia.com/gpu-{size}gb", "nvidia.com/gpu.shared"]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _tolerates(tolerations: Any, taint: Taint) -> bool:
    """Kubernetes' ToleratesTaint: key (empty key with Exists matches all), effect (empty matches all), value."""
    if not isinstance(tolerations, list):
        return False
    for t in tolerations:
        if not isinstance(t, Mapping):
            continue
        key, op = str(t.get("key") or ""), str(t.get("operator") or "Equal")
        effect = str(t.get("effect") or "")
        if effect and effect != taint.effect:
            continue
        if key == "" and op == "Exists":
            return True
        if key != taint.key:
            continue
        if op == "Exists" or (op == "Equal" and str(t.get("value") or "") == taint.value):
            return True
    return False


def lint_pod(pod: PodTemplate, ctx: LintContext) -> list[Finding]:
    findings: list[Finding] = []
    wants_gpu = False
    for path, container in pod.containers():
        where = f"{pod.where}:{path}({container.get('name', '?')})"
        resources = _mapping(container.get("resources"))
        limits = _mapping(resources.get("limits"))
        requests = _mapping(resources.get("requests"))
        names = [k for k in dict.fromkeys([*limits, *requests]) if str(k).startswith(GPU_PREFIX)]
        for name in names:
            lim, req = limits.get(name), requests.get(name)
            given = lim if lim is not None else req
            amount = parse_quantity(given)
            if amount is None or amount < 0:
                findings.append(Finding(Severity.ERROR, "fractional-gpu", where,
                                        f"{name}: {_shown(given)} is not a quantity of devices; use a whole number",
                                        _resources_snippet({name: "1"})))
                continue
            if amount > 0:
                wants_gpu = True
            if amount != amount.to_integral_value():
                findings.append(_fractional(where, name, given, amount, ctx))
            elif req is not None and lim is None:
                findings.append(Finding(
                    Severity.ERROR, "requests-without-limits", where,
                    f"{name} is requested ({_shown(req)}) without a limit: extended resources cannot be overcommitted, "
                    "so Kubernetes requires the limit (and then the request may be left out)",
                    _resources_snippet({name: str(int(amount))}),
                ))
            elif req is not None and lim is not None and parse_quantity(req) != amount:
                findings.append(Finding(
                    Severity.ERROR, "limits-differ-from-requests", where,
                    f"{name}: requests {_shown(req)} ≠ limits {_shown(lim)}: for extended resources Kubernetes "
                    "requires them equal (or only the limit)",
                    _resources_snippet({name: str(int(amount))}),
                ))
            if ctx.offered is not None and name not in ctx.offered and amount > 0:
                findings.append(_unknown(where, name, given, ctx.offered))
    if wants_gpu and ctx.taint is not None and not _tolerates(pod.spec.get("tolerations"), ctx.taint):
        findings.append(Finding(
            Severity.WARNING, "missing-gpu-toleration", f"{pod.where}:{pod.path}",
            f"requests a GPU but does not tolerate the GPU nodes' taint {ctx.taint}: it stays Pending unless "
            "the cluster adds tolerations itself (ExtendedResourceToleration admission plugin)",
            _block(["tolerations:", f"- key: {ctx.taint.key}", "  operator: Exists", f"  effect: {ctx.taint.effect}"]),
        ))
    return findings


def _fractional(where: str, name: str, given: Any, amount: Decimal, ctx: LintContext) -> Finding:
    if amount < 1:
        options = slice_suggestions(amount, ctx.offered)
        if not options:
            return _no_shared_gpus(where, name, given, ctx.offered or frozenset())
        fix = _resources_snippet({options[0]: "1"})
        if len(options) > 1:
            fix += f"\n# or: {', '.join(f'{o}: 1' for o in options[1:])}"
        return Finding(
            Severity.ERROR, "fractional-gpu", where,
            f"{name}: {_shown(given)} is a fraction of a device; extended resources are whole numbers and the API "
            f"server refuses the pod. A share of a GPU with enforced memory and SM limits is an MPS slice: "
            f"request {options[0]}: 1" + (f" (or {', '.join(options[1:])})" if len(options) > 1 else ""),
            fix,
        )
    whole = int(amount.to_integral_value(rounding="ROUND_CEILING"))
    return Finding(
        Severity.ERROR, "fractional-gpu", where,
        f"{name}: {_shown(given)} is not a whole number of devices; extended resources are integers and the API "
        f"server refuses the pod; request {whole}",
        _resources_snippet({name: str(whole)}),
    )


def _no_shared_gpus(where: str, name: str, given: Any, offered: frozenset[str]) -> Finding:
    """A fraction of a GPU on nodes that offer no share of one: a whole GPU, or set up sharing first."""
    whole = "nvidia.com/gpu" if "nvidia.com/gpu" in offered else None
    offered_text = ", ".join(sorted(r for r in offered if r.startswith(GPU_PREFIX))) or "no nvidia.com resources"
    sharing = ("no node offers a share of a GPU: configure MPS slices (sharing.mps.slices) or time-slicing "
               "in the device-plugin config to get one")
    fix = _resources_snippet({whole: "1"}) if whole else "# no node offers an nvidia.com resource"
    return Finding(
        Severity.ERROR, "fractional-gpu", where,
        f"{name}: {_shown(given)} is a fraction of a device; extended resources are whole numbers and the API "
        f"server refuses the pod. The nodes offer {offered_text}: "
        + (f"request {whole}: 1 (a whole GPU), or {sharing}" if whole else sharing),
        fix,
    )


def _unknown(where: str, name: str, given: Any, offered: frozenset[str]) -> Finding:
    gpu_offered = sorted(r for r in offered if r.startswith(GPU_PREFIX))
    close = difflib.get_close_matches(name, gpu_offered, n=1, cutoff=0.6)
    suggestion = close[0] if close else (gpu_offered[0] if gpu_offered else None)
    offered_text = ", ".join(gpu_offered) or "no nvidia.com resources"
    fix = _resources_snippet({suggestion: "1"}) if suggestion else "# no node offers an nvidia.com resource"
    return Finding(
        Severity.ERROR, "unknown-resource", where,
        f"{name}: {_shown(given)} but no node offers {name} (offered: {offered_text}); the pod would stay Pending"
        + (f"; did you mean {suggestion}?" if close else ""),
        fix,
    )
