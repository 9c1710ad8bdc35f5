"""The names pods, nodes and the scheduler configuration share: HAMi's, unchanged, plus kgpu's node record.

Pods written for HAMi move over without edits, so its resource names, pod annotations and
policy values are used exactly as HAMi spells them (``pkg/util/types.go``,
``pkg/device/nvidia/device.go``, chart ``values.yaml`` of Project-HAMi/HAMi).
"""

from __future__ import annotations

from typing import Final, Literal

# -- resources a container asks for (HAMi's resourceName, resourceMem, resourceMemPercentage, resourceCores) --
GPU_COUNT: Final = "nvidia.com/gpu"
"""How many GPU shares (each on a different GPU) the container gets."""
GPU_MEMORY: Final = "nvidia.com/gpumem"
"""Device memory per share, in MiB."""
GPU_MEMORY_PERCENTAGE: Final = "nvidia.com/gpumem-percentage"
"""Device memory per share, as a percentage of the GPU's memory (used when gpumem is not given)."""
GPU_CORES: Final = "nvidia.com/gpucores"
"""Share of the GPU's SMs, in percent (100: the whole GPU, alone)."""

MANAGED_RESOURCES: Final = (GPU_COUNT, GPU_MEMORY, GPU_MEMORY_PERCENTAGE, GPU_CORES)
SCHEDULER_IGNORED_RESOURCES: Final = (GPU_MEMORY, GPU_MEMORY_PERCENTAGE, GPU_CORES)
"""No node advertises these; kube-scheduler must leave them to the extender (``ignoredByScheduler``)
and the kubelet admits them because it drops extended resources no device plugin serves."""

# -- pod annotations a user sets (HAMi's) -------------------------------------------------------------------
NODE_POLICY: Final = "hami.io/node-scheduler-policy"
GPU_POLICY: Final = "hami.io/gpu-scheduler-policy"
USE_GPU_TYPE: Final = "nvidia.com/use-gputype"
NOUSE_GPU_TYPE: Final = "nvidia.com/nouse-gputype"
USE_GPU_UUID: Final = "nvidia.com/use-gpuuuid"
NOUSE_GPU_UUID: Final = "nvidia.com/nouse-gpuuuid"

Policy = Literal["binpack", "spread"]
POLICIES: Final[tuple[Policy, ...]] = ("binpack", "spread")
DEFAULT_NODE_POLICY: Final[Policy] = "binpack"
DEFAULT_GPU_POLICY: Final[Policy] = "spread"
"""HAMi's chart defaults (``scheduler.defaultSchedulerPolicy``)."""

# -- pod annotations the extender and the device plugin write (HAMi's handshake) ---------------------------
ASSIGNED_NODE: Final = "hami.io/vgpu-node"
ASSIGNED_TIME: Final = "hami.io/vgpu-time"
DEVICES_ALLOCATED: Final = "hami.io/vgpu-devices-allocated"
"""The GPU shares of every container, HAMi's format: ``GPU-…,NVIDIA,20000,30:;`` (see :mod:`.assignment`)."""
DEVICES_TO_ALLOCATE: Final = "hami.io/vgpu-devices-to-allocate"
"""The containers' shares the device plugin has not handed out yet; emptied entry by entry by Allocate."""
BIND_PHASE: Final = "hami.io/bind-phase"
BIND_TIME: Final = "hami.io/bind-time"
PHASE_ALLOCATING: Final = "allocating"
PHASE_SUCCESS: Final = "success"
PHASE_FAILED: Final = "failed"

# -- kgpu's own -------------------------------------------------------------------------------------------
LABEL_MEMORY: Final = "kgpu.io/gpu-memory-mib"
"""Pod label: the MiB of GPU memory its containers were given in all (``kubectl get pods -L …``)."""
LABEL_CORES: Final = "kgpu.io/gpu-cores"
"""Pod label: the percent of SMs its containers were given in all (several GPUs add up)."""
NODE_GPUS: Final = "kgpu.io/dynamic-gpus"
"""Node annotation written by the device plugin: the node's GPUs shared dynamically (see :mod:`.inventory`)."""
SCHEDULER_NAME: Final = "kgpu-scheduler"
"""The ``schedulerName`` of the kube-scheduler profile that calls this extender."""
DEVICE_TYPE: Final = "NVIDIA"
"""HAMi's device type in container device entries."""
