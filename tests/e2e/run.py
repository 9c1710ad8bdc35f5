"""`make e2e`: the real-cluster suite (tests/e2e) on each lab version, or once on the cluster $KUBECONFIG names.

    .venv/bin/python tests/e2e/run.py [--versions 1.36,1.28] [--image-archive build/kgpu-image.tar] [PYTEST ARGS]

Each version costs a `lab down` and a warm `lab up` (~5 s); the lab is left on the version that ran before
(v1.36 when none did).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cluster import LAB, REPO, running_lab_version, start_lab  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", default=os.environ.get("E2E_VERSIONS", "1.36,1.28"),
                        help="lab versions to run on, in order (default: 1.36,1.28; env E2E_VERSIONS)")
    parser.add_argument("--image-archive", default="build/kgpu-image.tar", help="kgpu's image (make image)")
    args, pytest_args = parser.parse_known_args()
    # --durations: the slowest steps (a module's install is its first test's setup), to keep CI under 20 minutes
    base = [str(REPO / ".venv/bin/pytest"), str(HERE), "-o", "addopts=-ra", "-p", "no:cacheprovider", "-v",
            "--durations=12", "--durations-min=5", *pytest_args]
    env = dict(os.environ, KGPU_E2E_IMAGE_ARCHIVE=str(Path(args.image_archive).resolve()))
    if os.environ.get("KUBECONFIG"):
        print(f"e2e: on the cluster KUBECONFIG names ({os.environ['KUBECONFIG']})", flush=True)
        return subprocess.run(base, env=env).returncode
    if not LAB.exists():
        print(f"e2e: no lab at {LAB} (../shared/lab beside the clone, or $KGPU_LAB) and no $KUBECONFIG: no cluster "
              "to run on", file=sys.stderr)
        return 2
    versions = [v.strip() for v in args.versions.split(",") if v.strip()]
    failed: list[str] = []
    rows: list[tuple[str, int, float]] = []
    leave_on = running_lab_version() or "1.36"  # the lab is left as its other users expect it
    try:
        for version in versions:
            print(f"\n=== e2e on the lab v{version} ===", flush=True)
            start = time.monotonic()
            start_lab(version)
            code = subprocess.run(base, env=env | {"KGPU_E2E_LAB_VERSION": version}).returncode
            rows.append((version, code, time.monotonic() - start))
            if code != 0:
                failed.append(version)
    finally:
        if running_lab_version() != leave_on:
            start_lab(leave_on)
    print("\ne2e summary")
    for version, code, seconds in rows:
        print(f"  v{version:<6} {'passed' if code == 0 else f'FAILED (pytest exit {code})':<24} {seconds:6.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
