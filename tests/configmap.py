"""A mounted ConfigMap, updated the way the kubelet updates one: a new timestamped directory, then an
atomic swap of the ``..data`` symlink that ``<key>`` points through."""

from __future__ import annotations

import os
from pathlib import Path


class ConfigMapVolume:
    def __init__(self, directory: Path, key: str = "config.yaml") -> None:
        self.directory = directory
        self.key = key
        self.versions = 0
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def path(self) -> Path:
        """What a daemon is given: ``<mount>/<key>``."""
        return self.directory / self.key

    def update(self, content: str) -> None:
        self.versions += 1
        version = self.directory / f"..2026_01_01_00_00_{self.versions:02d}.000000001"
        version.mkdir()
        (version / self.key).write_text(content)
        (self.directory / "..data_tmp").symlink_to(version.name)
        os.replace(self.directory / "..data_tmp", self.directory / "..data")
        if not self.path.is_symlink():
            self.path.symlink_to(f"..data/{self.key}")
