"""CDI specs on the node (``/etc/cdi``, ``/var/run/cdi``), parsed but not judged (the doctor judges)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kgpu.errors import KgpuError
from kgpu.fsio import read_text
from kgpu.host.paths import under

SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")


@dataclass(frozen=True, slots=True)
class CdiSpecFile:
    path: str
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def kind(self) -> str:
        return str(self.data.get("kind", ""))


def read_cdi_specs(root: Path, dirs: tuple[str, ...] = SPEC_DIRS) -> list[CdiSpecFile]:
    out = []
    seen: set[str] = set()
    for d in dirs:
        directory = under(root, d)
        if not directory.is_dir():
            continue
        real_dir = os.path.realpath(directory)
        if real_dir in seen:  # /var/run is usually a link to /run
            continue
        seen.add(real_dir)
        for spec in sorted(directory.iterdir()):
            if spec.suffix not in (".yaml", ".yml", ".json") or not spec.is_file():
                continue
            shown = f"{d}/{spec.name}"
            try:
                data = yaml.safe_load(read_text(spec, shown))
            except (KgpuError, yaml.YAMLError) as exc:
                out.append(CdiSpecFile(shown, {}, str(exc).replace("\n", " ")))
                continue
            if not isinstance(data, dict):
                out.append(CdiSpecFile(shown, {}, "not a YAML/JSON mapping"))
                continue
            out.append(CdiSpecFile(shown, data))
    return out
