"""Run a node's own program (``kubelet --version``, ``nvcc --version``) with a short timeout, never
raising."""

from __future__ import annotations

import subprocess
from pathlib import Path

TIMEOUT_SECONDS = 5.0


def program_output(program: Path, *args: str) -> str | None:
    """stdout+stderr of ``program args``; ``None`` when it cannot run, fails or takes longer than 5 s."""
    try:
        done = subprocess.run(
            [str(program), *args], capture_output=True, text=True, timeout=TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout + done.stderr
