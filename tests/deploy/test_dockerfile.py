"""deploy/Dockerfile: a slim Python image with kgpu installed from this checkout, no CUDA toolkit, non-root."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "deploy" / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_final_stage_is_python_slim_without_cuda() -> None:
    bases = [rest for word, rest in instructions() if word == "FROM"]
    assert bases and all(b.split()[0].startswith("python:3.") and "-slim" in b.split()[0] for b in bases)
    assert not any("cuda" in b.lower() for b in bases)
    runs = " ".join(rest for word, rest in instructions() if word == "RUN").lower()
    assert "cuda" not in runs and "nvcc" not in runs


def test_kgpu_is_built_from_this_checkout_and_smoke_tested() -> None:
    steps = instructions()
    assert ("COPY", "src ./src") in steps
    assert any(word == "RUN" and "pip wheel" in rest and rest.rstrip().endswith(" .") for word, rest in steps)
    assert any(word == "RUN" and "kgpu --version" in rest for word, rest in steps)


def test_image_runs_kgpu_as_a_numeric_non_root_user() -> None:
    steps = instructions()
    users = [rest for word, rest in steps if word == "USER"]
    assert users == ["65532:65532"]  # numeric, so runAsNonRoot can verify it
    assert ("ENTRYPOINT", '["kgpu"]') in steps
    chart_uid = re.search(r"^nonRootUser: (\d+)", (REPO / "deploy/helm/kgpu/values.yaml").read_text(), re.M)
    assert chart_uid is not None and chart_uid.group(1) == "65532"
