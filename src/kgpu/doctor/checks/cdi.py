"""cdi.spec: is there a CDI spec for the GPUs, does it parse, and does every path in it exist?"""

from __future__ import annotations

from typing import Any

from kgpu.doctor.facts import NodeFacts
from kgpu.doctor.finding import Outcome, failed, passed, skipped, warned
from kgpu.host.cdi import CdiSpecFile
from kgpu.host.paths import under

_GENERATE = (
    "kgpu cdi generate --output /etc/cdi/nvidia.yaml   "
    "(or: nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml)"
)


def _edits_paths(edits: Any) -> list[str]:
    if not isinstance(edits, dict):
        return []
    paths = []
    for node in edits.get("deviceNodes") or []:
        if isinstance(node, dict):
            p = node.get("hostPath") or node.get("path")
            if p:
                paths.append(str(p))
    for mount in edits.get("mounts") or []:
        if isinstance(mount, dict) and mount.get("hostPath"):
            paths.append(str(mount["hostPath"]))
    for hook in edits.get("hooks") or []:
        if isinstance(hook, dict) and hook.get("path"):
            paths.append(str(hook["path"]))
    return paths


def _shape_errors(spec: CdiSpecFile) -> list[str]:
    d = spec.data
    errors = []
    if not d.get("cdiVersion"):
        errors.append("no cdiVersion")
    devices = d.get("devices")
    if not isinstance(devices, list) or not devices:
        errors.append("no devices")
        return errors
    for i, dev in enumerate(devices):
        if not isinstance(dev, dict) or not dev.get("name"):
            errors.append(f"devices[{i}] has no name")
        elif not isinstance(dev.get("containerEdits"), dict):
            errors.append(f"device {dev['name']!r} has no containerEdits")
    return errors


def spec(facts: NodeFacts) -> Outcome:
    host = facts.host
    if facts.gpu_count == 0:
        return skipped("no GPU on this node", "neither NVML nor the PCI bus shows a GPU")
    specs = [s for s in host.cdi_specs if s.error or s.kind == "nvidia.com/gpu"]
    cdi_required = host.toolkit.config is not None and host.toolkit.config.mode == "cdi"
    if not specs:
        absent = "no spec with kind nvidia.com/gpu in /etc/cdi or /var/run/cdi"
        if cdi_required:
            return failed(
                "no CDI spec, but the toolkit runs in CDI mode",
                [absent, f'{host.toolkit.config.path if host.toolkit.config else ""}: mode = "cdi"'],
                _GENERATE,
            )
        return warned(
            "no CDI spec for the GPUs",
            absent,
            _GENERATE + "\nCDI lets runtimes inject exactly the allocated GPUs (containerd ≥ 1.7, CRI-O, "
            "docker ≥ 25)",
        )
    problems: list[str] = []
    evidence: list[str] = []
    names: set[str] = set()
    for s in specs:
        if s.error:
            problems.append(f"{s.path}: does not parse: {s.error}")
            continue
        shape = _shape_errors(s)
        problems += [f"{s.path}: {e}" for e in shape]
        raw_devices = s.data.get("devices")
        devices: list[Any] = raw_devices if isinstance(raw_devices, list) else []
        paths = _edits_paths(s.data.get("containerEdits"))
        for dev in devices:
            if isinstance(dev, dict):
                names.add(str(dev.get("name", "")))
                paths += _edits_paths(dev.get("containerEdits"))
        missing = sorted({p for p in paths if not under(host.root, p).exists()})
        problems += [f"{s.path}: {p} does not exist" for p in missing[:10]]
        if len(missing) > 10:
            problems.append(f"{s.path}: … and {len(missing) - 10} more missing paths")
        evidence.append(
            f"{s.path}: cdiVersion {s.data.get('cdiVersion')}, {len(devices)} device(s), "
            f"{len(set(paths))} host paths checked"
        )
    for g in facts.gpus:
        if str(g.index) not in names and g.uuid not in names:
            problems.append(
                f"GPU {g.index} ({g.uuid}) has no device in any spec: regenerate after GPU changes"
            )
    if not problems:
        return passed("CDI spec valid and every path in it exists", *evidence)
    return failed("CDI spec invalid or stale", problems + evidence, _GENERATE)
