"""make image (deploy/image/build.sh): its wheels satisfy pyproject.toml; it builds what the Dockerfile does."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
BUILD = (REPO / "deploy/image/build.sh").read_text()
DOCKERFILE = (REPO / "deploy/Dockerfile").read_text()


def pins(path: Path) -> dict[str, Version]:
    found = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\\n +--hash=sha256:[0-9a-f]{64}$", path.read_text(), re.M)
    return {canonicalize_name(name): Version(version) for name, version in found}


def test_every_runtime_dependency_is_pinned_with_a_hash_that_satisfies_pyproject() -> None:
    locked = pins(REPO / "deploy/image/requirements.txt")
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in map(Requirement, deps):
        name = canonicalize_name(dep.name)
        assert name in locked, f"{dep.name} is not in deploy/image/requirements.txt: run scripts/lock_image.py"
        assert dep.specifier.contains(locked[name]), f"locked {name}=={locked[name]} does not satisfy {dep}"
    assert "pip" not in locked  # pip installs the image's packages, it is not one of them
    assert set(pins(REPO / "deploy/image/pip.txt")) == {"pip"}


def test_the_image_has_the_dockerfiles_entrypoint_user_and_environment() -> None:
    assert '["kgpu"]' in DOCKERFILE and "--config.entrypoint kgpu --config.cmd --help" in BUILD
    (user,) = re.findall(r"^USER (\S+)$", DOCKERFILE, re.M)
    assert f"--config.user {user}" in BUILD
    for var in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"):
        assert var in DOCKERFILE and f"--config.env {var}" in BUILD
    assert "nonroot:x:65532:65532" in BUILD  # the UID has a name, as in distroless images
