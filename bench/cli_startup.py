"""Start-up of the commands a newcomer types first: `kgpu --simulate h100x8 gpus` (target: median < 300 ms).

Runs each command 15 times and prints the median, fastest and slowest wall time and the median CPU
time (user + system: what the command itself costs, steadier than wall time on a busy machine), then
the heavy modules `gpus` imported (it must import no gRPC, Kubernetes client, prometheus_client,
pynvml or tomlkit). Find where the time goes with ``python -X importtime -m kgpu --simulate h100x8 gpus``.

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

RUNS = 15
TARGET_MS = 300.0
HEAVY = ("grpc", "lightkube", "kubernetes", "prometheus_client", "pynvml", "tomlkit", "pydantic", "yaml")
COMMANDS = (
    ["--simulate", "h100x8", "gpus"],
    ["--simulate", "h100x8", "gpus", "--json"],
    ["--help"],
)


def kgpu_command() -> list[str]:
    local = Path(sys.executable).parent / "kgpu"
    exe = str(local) if local.exists() else shutil.which("kgpu")
    return [exe] if exe else [sys.executable, "-m", "kgpu"]


def measure(cmd: list[str]) -> tuple[list[float], list[float]]:
    wall, cpu = [], []
    for _ in range(RUNS):
        before = os.times()
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall.append((time.perf_counter() - start) * 1000)
        after = os.times()
        cpu.append((after.children_user + after.children_system - before.children_user - before.children_system)
                   * 1000)
    return wall, cpu


def heavy_modules(args: list[str]) -> str:
    probe = (
        f"import sys; sys.argv = ['kgpu', *{args!r}]\n"
        "import kgpu.cli as c\ntry:\n c.app()\nexcept SystemExit: pass\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=os.environ)
    return res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ""


def main() -> int:
    exe = kgpu_command()
    print(f"{'command':<40} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'cpu ms':>8} {'target':>8}")
    medians = {}
    for args in COMMANDS:
        wall, cpu = measure([*exe, *args])
        label = "kgpu " + " ".join(args)
        medians[label] = statistics.median(wall)
        target = f"<{int(TARGET_MS)}" if args[:3] == ["--simulate", "h100x8", "gpus"] else "-"
        print(f"{label:<40} {medians[label]:>10.1f} {min(wall):>8.1f} {max(wall):>8.1f} "
              f"{statistics.median(cpu):>8.1f} {target:>8}")
    heavy = heavy_modules(["--simulate", "h100x8", "gpus"])
    print(f"heavy modules imported by kgpu --simulate h100x8 gpus: {heavy or 'none'}")
    return 0 if medians["kgpu --simulate h100x8 gpus"] < TARGET_MS and not heavy else 1


if __name__ == "__main__":
    sys.exit(main())
