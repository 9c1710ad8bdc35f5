"""Wall time of `kgpu gpus --simulate h100x8 --json`, median of 10 runs (target < 300 ms).

Also lists which heavy modules the command imported: it must not import grpc, Kubernetes
clients or prometheus_client.

    .venv/bin/python bench/cli_startup.py
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

RUNS = 10
TARGET_MS = 300.0
HEAVY = ("grpc", "lightkube", "kubernetes", "prometheus_client", "pynvml", "tomlkit")


def kgpu_command() -> list[str]:
    local = Path(sys.executable).parent / "kgpu"
    exe = str(local) if local.exists() else shutil.which("kgpu")
    return [exe] if exe else [sys.executable, "-m", "kgpu"]


def main() -> int:
    cmd = [*kgpu_command(), "--simulate", "h100x8", "gpus", "--json"]
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - start) * 1000)
    probe = (
        "import sys; sys.argv=['kgpu','--simulate','h100x8','gpus','--json'];"
        "import kgpu.cli as c\ntry:\n c.app()\nexcept SystemExit: pass\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=os.environ)
    heavy = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ""
    median = statistics.median(times)
    label = " ".join(cmd[1:])
    print(f"{'command':<45} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'target':>8}")
    print(f"{label:<45} {median:>10.1f} {min(times):>8.1f} {max(times):>8.1f} {'<' + str(int(TARGET_MS)):>8}")
    print(f"heavy modules imported: {heavy or 'none'}")
    return 0 if median < TARGET_MS and not heavy else 1


if __name__ == "__main__":
    sys.exit(main())
