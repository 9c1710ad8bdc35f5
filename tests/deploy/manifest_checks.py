"""Checks shared by the chart's tests and the standalone manifests' tests (deploy/manifests/*.yaml)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "deploy" / "manifests"
KUBE_VERSION = "1.33"  # schemas for a current Kubernetes release; the chart supports >= 1.27

# The layout of NVIDIA's DaemonSets, which the chart's driverRoot value and the manifests' commented
# "driver root" blocks both follow.
DRIVER_ROOT_MOUNT = "/driver-root"

# A comment that introduces a commented-out block an admin uncomments to use a driver root.
_DRIVER_ROOT_MARK = re.compile(r"^(?P<indent>[ \t]*)#.*driver root.*uncomment:[ \t]*$", re.IGNORECASE)


def load(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def with_driver_root(text: str) -> str:
    """The manifest as an admin leaves it after uncommenting every "driver root ... uncomment:" block:
    the lines right after the mark, at the mark's indentation, lose their leading ``# ``."""
    out: list[str] = []
    indent: str | None = None
    for line in text.splitlines(keepends=True):
        if indent is not None and line.startswith(f"{indent}# "):
            out.append(indent + line[len(indent) + 2:])
            continue
        indent = None
        mark = _DRIVER_ROOT_MARK.match(line)
        if mark:
            indent = mark["indent"]
        out.append(line)
    return "".join(out)


def pod_containers(objs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(owner name, pod spec, container) for every container of every DaemonSet and Job."""
    for o in objs:
        if o["kind"] in ("DaemonSet", "Job"):
            spec = o["spec"]["template"]["spec"]
            for c in spec["containers"]:
                yield o["metadata"]["name"], spec, c


def schema_problems(objs: list[dict[str, Any]]) -> list[str]:
    """Every object that the Kubernetes JSON schemas reject (CRD kinds, which they do not know, skipped)."""
    import kubernetes_validate

    problems = []
    for obj in objs:
        if obj["apiVersion"] == "monitoring.coreos.com/v1":
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{obj['kind']} {obj['metadata']['name']}: {exc.message} at {list(exc.path)}")
    return problems


def driver_root_problems(owner: str, spec: Mapping[str, Any], container: Mapping[str, Any],
                         host_path: str) -> list[str]:
    """What is missing for this container to find the driver as NVIDIA's DaemonSets lay it out: the host
    path mounted read-only at /driver-root, NVIDIA_DRIVER_ROOT = host path, CONTAINER_DRIVER_ROOT = mount."""
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    problems = []
    if env.get("NVIDIA_DRIVER_ROOT") != host_path:
        problems.append(f"NVIDIA_DRIVER_ROOT={env.get('NVIDIA_DRIVER_ROOT')!r}, not {host_path!r}")
    if env.get("CONTAINER_DRIVER_ROOT") != DRIVER_ROOT_MOUNT:
        problems.append(f"CONTAINER_DRIVER_ROOT={env.get('CONTAINER_DRIVER_ROOT')!r}, not {DRIVER_ROOT_MOUNT!r}")
    mount = mounts.get(DRIVER_ROOT_MOUNT)
    if mount is None or mount.get("readOnly") is not True:
        problems.append(f"no read-only mount at {DRIVER_ROOT_MOUNT}: {mount}")
    elif volumes.get(mount["name"], {}).get("hostPath", {}).get("path") != host_path:
        problems.append(f"{DRIVER_ROOT_MOUNT} is volume {volumes.get(mount['name'])}, not hostPath {host_path}")
    return [f"{owner}/{container['name']}: {p}" for p in problems]


def parse_kgpu_command(args: list[str]) -> dict[str, Any]:
    """Parse a container's ``kgpu`` arguments exactly as the CLI would (option names, values, types, extra
    arguments, and the environment variables the options read) without running the command.
    Returns the subcommand's parameters; raises the CLI's usage error."""
    import typer

    from kgpu.cli import app

    name, *rest = args
    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    params: dict[str, Any] = command.make_context(name, list(rest)).params
    return params


ENTRY_POINTS = {"kgpu-device-plugin": "device-plugin", "kgpu-exporter": "exporter"}
"""The daemons the manifests start from their own entry points, and the kgpu command each one is."""


def parse_container_command(container: Mapping[str, Any]) -> dict[str, Any]:
    """Parse a container's command line as it will run: ``kgpu <command> ...`` by the CLI, or a daemon's entry
    point (``kgpu-device-plugin ...``) by its own parser and, for the values' types, as its kgpu command."""
    command, args = container["command"], list(container["args"])
    if command == ["kgpu"]:
        return parse_kgpu_command(args)
    (entry,) = command
    from kgpu.config.flags import DCGM_EXPORTER, DEVICE_PLUGIN, flags_of
    from kgpu.daemon.entry import parse
    from kgpu.exporter.daemon import FLAGS

    rows = {"kgpu-device-plugin": (DEVICE_PLUGIN, flags_of(DEVICE_PLUGIN)), "kgpu-exporter": (DCGM_EXPORTER, FLAGS)}
    program, flags = rows[entry]
    parse(entry, program, flags, "", args)  # an unknown option exits 2
    return parse_kgpu_command([ENTRY_POINTS[entry], *args])


def global_driver_root() -> tuple[str, str]:
    """The driver root every kgpu command resolves from the environment: (host path, where it is mounted)."""
    import os

    from kgpu.config.flags import DEVICE_PLUGIN, flag_named, lookup

    host = lookup(flag_named("driver-root"), DEVICE_PLUGIN, {}, os.environ)
    mounted = lookup(flag_named("driver-root-ctr-path"), DEVICE_PLUGIN, {}, os.environ)
    return (str(host[0]) if host else "/", str(mounted[0]) if mounted else "")


def literal_env(container: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment variables that have a literal value."""
    return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}


def schedules_on(spec: Mapping[str, Any], node_labels: Mapping[str, str]) -> bool:
    """Whether the scheduler may place this pod on a node with these labels, as far as labels decide:
    every nodeSelector entry matches AND (when given) at least one required nodeSelectorTerm matches,
    a term matching when all its matchExpressions do (Kubernetes' semantics; taints aside)."""
    if any(node_labels.get(k) != v for k, v in spec.get("nodeSelector", {}).items()):
        return False
    required = spec.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return True
    return any(all(_expression_matches(e, node_labels) for e in term.get("matchExpressions", []))
               for term in required["nodeSelectorTerms"])


def _expression_matches(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op, values = expr["key"], expr["operator"], expr.get("values", [])
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    raise ValueError(f"operator {op!r} not modelled here")
