"""A relative --root works as an absolute one: `make demo` runs `kgpu cdi generate --root tests/fixtures/...`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_cdi_generate_with_a_relative_root_names_the_nodes_paths() -> None:
    """Given the fixture node by a relative path (from the checkout, as the demo gives it), the spec is
    generated, checked and names the driver's files as the node sees them (/usr/lib/...)."""
    done = subprocess.run([sys.executable, "-m", "kgpu", "--simulate", "h100x8", "cdi", "generate", "--root",
                           "tests/fixtures/nodes/ubuntu-h100"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    spec = yaml.safe_load(done.stdout)
    sources = [m["hostPath"] for m in spec["containerEdits"]["mounts"]]
    assert "/usr/lib/x86_64-linux-gnu/libcuda.so.580.95.05" in sources
    assert not [s for s in sources if "tests/fixtures" in s]
