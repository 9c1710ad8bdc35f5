"""What a container gets for MPS slices: the client environment and the mounts that reach the daemon.

Pure. For a request of one or more slice IDs::

    alloc = slice_allocation(layout, ["GPU-…::gpu-20gb-0"], MpsPaths())
    alloc.envs["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"]   # '0=20480M'
    alloc.envs["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"]  # '25'

The limits are set per client through the environment, which is what lets slices of one GPU
differ in size. The container sees only the parent GPU, as device 0, so the memory limit names
device 0. Several slices of the same GPU in one request add up; slices of different GPUs cannot
be served by one client (one pipe directory per process) and are refused.

Mounts follow NVIDIA's plugin: the daemon's pipe directory (read-write: clients connect to its
sockets), and a ``/dev/shm`` shared with the daemon (MPS passes memory handles through it).
The device list strategy (``NVIDIA_VISIBLE_DEVICES``, CDI, driver mounts) is the device plugin's
to add for the parent GPU; :func:`slice_allocation` sets ``NVIDIA_VISIBLE_DEVICES`` itself so the
result is complete on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

from kgpu.container import AllocationError, ContainerAllocation, Mount
from kgpu.sharing.layout import MpsLayout, MpsSlice
from kgpu.sharing.paths import CONTAINER_SHM, MpsPaths

ENV_PIPE = "CUDA_MPS_PIPE_DIRECTORY"
ENV_LOG = "CUDA_MPS_LOG_DIRECTORY"
ENV_MEM_LIMIT = "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"
ENV_THREADS = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"


def resolve_slices(layout: MpsLayout, device_ids: Sequence[str], resource: str | None = None) -> list[MpsSlice]:
    """The slices behind ``device_ids``; AllocationError for unknown IDs, mixed GPUs or >1 when refused."""
    if not device_ids:
        raise AllocationError("empty request: the kubelet asked for no device")
    slices: list[MpsSlice] = []
    for device_id in device_ids:
        s = layout.slice(device_id)
        if s is None or (resource is not None and s.resource != resource):
            where = f" of {resource}" if resource else ""
            raise AllocationError(f"unknown MPS slice {device_id!r}{where}: this node does not advertise it")
        slices.append(s)
    if len(set(device_ids)) != len(device_ids):
        raise AllocationError(f"the request names a slice twice: {', '.join(device_ids)}")
    if len(slices) > 1 and layout.fail_requests_greater_than_one:
        raise AllocationError(
            f"request for {len(slices)} MPS slices of {slices[0].resource} refused: "
            "sharing.mps.failRequestsGreaterThanOne is true, so a container may ask for 1; "
            "request a larger slice resource instead"
        )
    check_one_gpu(slices)
    return slices


def client_limit_envs(memory_mib: int | None, compute_percent: int | None) -> dict[str, str]:
    """An MPS client's limits, for a container that sees its one GPU as device 0; None leaves a limit unset."""
    envs = {}
    if memory_mib is not None:
        envs[ENV_MEM_LIMIT] = f"0={memory_mib}M"
    if compute_percent is not None:
        envs[ENV_THREADS] = str(min(compute_percent, 100))
    return envs


def client_envs(gpu_uuid: str, paths: MpsPaths, memory_mib: int | None, compute_percent: int | None) -> dict[str, str]:
    """The environment of an MPS client of ``gpu_uuid``'s daemon: its directories, then its limits.

    The one place both the device plugin's slices and the DRA driver's shares get their limits from.
    """
    return {
        ENV_PIPE: str(paths.pipe_dir(gpu_uuid)),
        ENV_LOG: str(paths.log_dir(gpu_uuid)),
        **client_limit_envs(memory_mib, compute_percent),
    }


def limit_envs(slices: Sequence[MpsSlice]) -> dict[str, str]:
    """The client limits of ``slices`` of one GPU, summed. The container sees only that GPU, as device 0."""
    return client_limit_envs(sum(s.memory_mib for s in slices), sum(s.compute_percent for s in slices))


def slice_envs(slices: Sequence[MpsSlice], paths: MpsPaths) -> dict[str, str]:
    """The MPS client environment for ``slices`` (one GPU): its daemon's directories and the summed limits."""
    return client_envs(
        slices[0].gpu_uuid, paths, sum(s.memory_mib for s in slices), sum(s.compute_percent for s in slices)
    )


def slice_mounts(gpu_uuid: str, paths: MpsPaths, shm_dir: str | None = None) -> tuple[Mount, ...]:
    """The daemon's pipe directory (clients connect to its sockets), its logs, and the shared /dev/shm
    (``shm_dir`` on the host, by default ``<mps root>/shm``)."""
    pipe = str(paths.pipe_dir(gpu_uuid))
    log = str(paths.log_dir(gpu_uuid))
    return (
        Mount(container_path=pipe, host_path=pipe, read_only=False),
        Mount(container_path=log, host_path=log, read_only=True),
        Mount(container_path=CONTAINER_SHM, host_path=shm_dir or str(paths.shm_dir), read_only=False),
    )


def check_one_gpu(slices: Sequence[MpsSlice]) -> None:
    gpus = {s.gpu_uuid for s in slices}
    if len(gpus) > 1:
        raise AllocationError(
            f"request for {len(slices)} MPS slices spans {len(gpus)} GPUs ({', '.join(sorted(gpus))}): "
            "an MPS client talks to one GPU's daemon, so its slices must share a GPU; request 1 slice "
            "or a larger slice resource"
        )


def slice_allocation(
    layout: MpsLayout,
    device_ids: Sequence[str],
    paths: MpsPaths,
    *,
    resource: str | None = None,
    visible_device: str | None = None,
) -> ContainerAllocation:
    """The container's MPS environment and mounts for ``device_ids`` (all on one GPU), with the
    envvar device list (``NVIDIA_VISIBLE_DEVICES``: the GPU's UUID, or ``visible_device``)."""
    slices = resolve_slices(layout, device_ids, resource)
    envs = {"NVIDIA_VISIBLE_DEVICES": visible_device or slices[0].gpu_uuid, **slice_envs(slices, paths)}
    return ContainerAllocation(envs=envs, mounts=slice_mounts(slices[0].gpu_uuid, paths))
