"""How long `kgpu doctor` takes (target: the whole run < 2 s): reading host facts, each check, and the CLI.

Runs on the fixture nodes by default, or on this machine with --root /. Prints a table; asserts nothing.

    .venv/bin/python bench/doctor.py
    .venv/bin/python bench/doctor.py --root / --backend nvml
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from kgpu.doctor import CHECKS, gather
from kgpu.gpu.backend import open_backend

NODES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "nodes"
RUNS = 5


def _median_ms(fn: object, runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bench(root: Path, backend: str, simulate: str | None) -> None:
    opener = lambda: open_backend(backend, simulate=simulate)  # noqa: E731
    facts = gather(root, opener)
    rows = [("gather (host facts + GPU inventory)", _median_ms(lambda: gather(root, opener)))]
    slow = sorted(((c.id, _median_ms(lambda c=c: c.run(facts), runs=20)) for c in CHECKS), key=lambda r: -r[1])
    rows += [(f"check {cid}", ms) for cid, ms in slow[:5]]
    rows.append(("all 28 checks", sum(ms for _, ms in slow)))
    cmd = [sys.executable, "-m", "kgpu", "--backend", backend]
    if simulate:
        cmd += ["--simulate", simulate]
    cmd += ["doctor", "--root", str(root), "--json"]
    rows.append(("kgpu doctor --json (new process)",
                 _median_ms(lambda: subprocess.run(cmd, capture_output=True, check=False), runs=3)))
    print(f"\n{root} ({simulate or backend})")
    print(f"{'step':<48} {'median ms':>10}")
    for name, ms in rows:
        print(f"{name:<48} {ms:>10.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path)
    parser.add_argument("--backend", default="simulated")
    args = parser.parse_args()
    if args.root:
        bench(args.root, args.backend, None if args.backend == "nvml" else "h100x8")
    else:
        bench(NODES / "ubuntu-h100", "simulated", "h100x8")
        bench(NODES / "rocky-a100", "simulated", "a100-mig")
    return 0


if __name__ == "__main__":
    sys.exit(main())
