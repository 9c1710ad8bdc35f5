"""The GPU machine's scripts (scripts/device/) leave the host as they found it.

scripts/device/toolkit_free.sh once made /driver-root on every host it ran on: `mkdir` inside `unshare --mount`
creates the directory on the host, only the mount stays private. The empty /driver-root it left is NVIDIA's
default mount point, where kgpu looks for the driver first. The "container" those scripts run kgpu in
(scripts/device/container.sh) is run here, as root, exactly as they run it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MOUNT_POINT = Path("/driver-root")


@pytest.mark.skipif(os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")),
                    reason="mount namespaces need root, unshare and setpriv")
def test_the_toolkit_free_container_sees_the_driver_read_only_and_leaves_no_driver_root(tmp_path: Path) -> None:
    if MOUNT_POINT.exists():
        pytest.skip(f"{MOUNT_POINT} exists on this host: nothing to tell apart (remove it if it is empty and stray)")
    # Given a driver root on the host
    driver = tmp_path / "nvidia"
    (driver / "lib64").mkdir(parents=True)
    (driver / "lib64" / "libnvidia-ml.so.1").write_text("not a library\n")
    # When a device script runs a command in its container, as the chart's non-root labeler would run
    script = ("source scripts/device/container.sh; trap container_cleanup EXIT\n"
              "in_container 65532 sh -c 'ls /driver-root/lib64; "
              "echo CONTAINER_DRIVER_ROOT=$CONTAINER_DRIVER_ROOT; "
              "touch /driver-root/x 2>/dev/null && echo writable || echo read-only; "
              "ls \"$NVIDIA_DRIVER_ROOT\" | wc -l'")
    done = subprocess.run(["bash", "-c", script], cwd=ROOT, env={"PATH": os.environ["PATH"], "DRIVER": str(driver)},
                          capture_output=True, text=True, timeout=60)
    # Then the command saw the driver only at /driver-root, read-only, the host path empty, as in the chart's pod
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["libnvidia-ml.so.1", "CONTAINER_DRIVER_ROOT=/driver-root", "read-only", "0"]
    # and the host has no /driver-root afterwards, nor anything written into the driver root
    assert not MOUNT_POINT.exists()
    assert sorted(p.name for p in driver.rglob("*")) == ["lib64", "libnvidia-ml.so.1"]
