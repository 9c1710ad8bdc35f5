"""disk.root-free and disk.fs-type: room for the driver, CUDA and images, on a filesystem that suits them."""

from __future__ import annotations

from kgpu.doctor.facts import NodeFacts
from kgpu.doctor.finding import Outcome, failed, passed, skipped, warned
from kgpu.host.disk import mount_of

MIN_FREE_GIB = 50
_NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "9p")


def _preferred_runtime(facts: NodeFacts) -> tuple[str, str] | None:
    roots = facts.host.runtime_data_roots()
    wanted = facts.host.kubelet.runtime_name
    wanted = "docker" if wanted == "cri-dockerd" else wanted
    if wanted in roots:
        return wanted, roots[wanted]
    return next(iter(roots.items()), None)


def root_free(facts: NodeFacts) -> Outcome:
    disk = facts.host.disk
    root = disk.get("/")
    if root is None:
        return skipped("free space unknown", "statvfs of / failed")
    evidence = [f"/: {root.free_gib:.1f} GiB free of {root.total_bytes / 1024**3:.1f} GiB"]
    low: list[str] = []
    if root.free_gib < MIN_FREE_GIB:
        low.append("/")
    for name, path in facts.host.runtime_data_roots().items():
        space = disk.get(path)
        if space is None:
            continue
        if (space.free_bytes, space.total_bytes) == (root.free_bytes, root.total_bytes):
            evidence.append(f"{path} ({name} images): on the same filesystem as /")
            continue
        evidence.append(
            f"{path} ({name} images): {space.free_gib:.1f} GiB free (measured at {space.measured_at})"
        )
        if space.free_gib < MIN_FREE_GIB:
            low.append(path)
    if not low:
        return passed(f"{root.free_gib:.0f} GiB free on /", *evidence)
    fix = (
        f"Free or add space: driver and CUDA installs need several GB and fail when / fills; CUDA images are "
        f"10-20 GB each. Keep ≥ {MIN_FREE_GIB} GiB free: clean package caches (apt-get clean / dnf "
        f"clean all), "
        "prune unused images (crictl rmi --prune), or grow the filesystem."
    )
    title = f"less than {MIN_FREE_GIB} GiB free on {', '.join(low)}"
    if "/" in low and facts.host.kernel_driver is None:
        title += " and the NVIDIA driver is still to be installed"
    return warned(title, evidence, fix)


def fs_type(facts: NodeFacts) -> Outcome:
    runtime = _preferred_runtime(facts)
    if runtime is None:
        return skipped(
            "no container runtime installed", "no containerd, docker or CRI-O data root to look at"
        )
    name, path = runtime
    mount = mount_of(facts.host.mounts, path)
    if mount is None:
        return skipped("filesystem unknown", "/proc/mounts is not readable")
    evidence = f"{path} ({name}) is on {mount.mountpoint}: {mount.fstype} ({mount.device})"
    if mount.fstype == "xfs":
        return passed(f"{name} data root on XFS", evidence)
    if mount.fstype.startswith(_NETWORK_FS) or mount.fstype.startswith("fuse"):
        return failed(
            f"{name} data root on {mount.fstype}",
            evidence,
            f"overlayfs cannot keep its upper layers on {mount.fstype}: move {path} to a local XFS or "
            f"ext4 disk "
            f"(mount one at {path}, or set the runtime's root/data-root to a path on it)",
        )
    if mount.fstype in ("overlay", "tmpfs"):
        return warned(
            f"{name} data root on {mount.fstype}",
            evidence,
            f"Images on {mount.fstype} are lost at reboot or nest overlay mounts; mount a local XFS "
            f"disk at {path}",
        )
    return passed(
        f"{name} data root on {mount.fstype}",
        evidence + "; XFS is recommended for the large sequential I/O of image pulls and datasets",
    )
