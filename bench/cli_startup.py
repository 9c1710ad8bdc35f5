"""Start-up of the commands a newcomer types first: `kgpu --simulate h100x8 gpus` (target: median < 300 ms).

Runs each command 15 times, interleaved (so a busy machine slows all rows alike), and prints the median,
fastest and slowest wall time and the median CPU time (user + system: what the command itself costs, steadier
than wall time on a busy machine). The last row is the floor under every kgpu command: a Typer app with the
same global options and a command that prints a line (Typer >= 0.29 validates every option through pydantic,
so pydantic is imported by any Typer command). Then the heavy modules `gpus` imported: it must import no gRPC,
Kubernetes client, prometheus_client, pynvml or tomlkit (pydantic and PyYAML it needs: a simulated node is a
YAML fixture validated by pydantic). Find where the time goes with
``python -X importtime -m kgpu --simulate h100x8 gpus``.

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
HEAVY = ("grpc", "lightkube", "kubernetes", "prometheus_client", "pynvml", "tomlkit", "httpx", "kopf")
COMMANDS = (
    ["--simulate", "h100x8", "gpus"],
    ["--simulate", "h100x8", "gpus", "--json"],
    ["--help"],
)
FLOOR = "typer floor (same options, prints a line)"
FLOOR_APP = """
from pathlib import Path
import typer
app = typer.Typer()
@app.callback()
def main(backend: str = "auto", simulate: str | None = None, simulate_events: Path | None = None,
         log_level: str = "info", version: bool = False, driver_root: str | None = None,
         driver_root_ctr_path: str | None = None, dev_root: str | None = None) -> None: ...
@app.command()
def gpus(json: bool = False, readings: bool = False, watch_health: bool = False) -> None:
    print("8 GPU(s)")
@app.command()
def other() -> None: ...
app()
"""


def kgpu_command() -> list[str]:
    local = Path(sys.executable).parent / "kgpu"
    exe = str(local) if local.exists() else shutil.which("kgpu")
    return [exe] if exe else [sys.executable, "-m", "kgpu"]


def measure(cmd: list[str], runs: int = RUNS) -> tuple[list[float], list[float]]:
    wall, cpu = [], []
    for _ in range(runs):
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
    rows = {"kgpu " + " ".join(args): [*exe, *args] for args in COMMANDS}
    rows[FLOOR] = [sys.executable, "-c", FLOOR_APP, "gpus"]
    times: dict[str, tuple[list[float], list[float]]] = {label: ([], []) for label in rows}
    for _ in range(RUNS):
        for label, cmd in rows.items():
            wall, cpu = measure(cmd, runs=1)
            times[label][0].extend(wall)
            times[label][1].extend(cpu)
    print(f"{'command':<42} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'cpu ms':>8} {'target':>8}")
    medians = {}
    for label, (wall, cpu) in times.items():
        medians[label] = statistics.median(wall)
        target = f"<{int(TARGET_MS)}" if label.startswith("kgpu --simulate h100x8 gpus") else "-"
        print(f"{label:<42} {medians[label]:>10.1f} {min(wall):>8.1f} {max(wall):>8.1f} "
              f"{statistics.median(cpu):>8.1f} {target:>8}")
    print(f"load average while measured: {os.getloadavg()[0]:.1f} (this machine has {os.cpu_count()} cores)")
    heavy = heavy_modules(["--simulate", "h100x8", "gpus"])
    print(f"heavy modules imported by kgpu --simulate h100x8 gpus: {heavy or 'none'}")
    return 0 if medians["kgpu --simulate h100x8 gpus"] < TARGET_MS and not heavy else 1


if __name__ == "__main__":
    sys.exit(main())
