"""A pod's GPU assignment as HAMi writes it in ``hami.io/vgpu-devices-allocated``.

One entry per container (init containers first), each ending in ``;``; inside an entry, one
share per GPU, each ending in ``:``, as ``<uuid>,NVIDIA,<MiB>,<cores %>``::

    GPU-0aa…,NVIDIA,20000,30:;            one container, one share of 20000 MiB and 30 % of SMs
    ;GPU-0aa…,NVIDIA,20000,30:;           an init container without GPUs, then the same share

Entries of containers without GPUs stay (empty) so index *i* is always container *i*. The
device plugin empties the entries of ``hami.io/vgpu-devices-to-allocate`` one by one as the
kubelet allocates the containers.

Example::

    a = decode(pod["metadata"]["annotations"]["hami.io/vgpu-devices-allocated"])
    a.containers[0][0].uuid, a.containers[0][0].memory_mib     # ('GPU-0aa…', 20000)
    encode(a) == the annotation
"""

from __future__ import annotations

from dataclasses import dataclass

from kgpu.errors import KgpuError
from kgpu.scheduler.names import DEVICE_TYPE

MAX_ANNOTATION_CHARS = 64 * 1024
"""Far above 48 shares × a few containers; a longer value is not ours and is refused unread."""


class AssignmentError(KgpuError):
    """An assignment annotation that is not in HAMi's format."""


@dataclass(frozen=True, slots=True)
class Share:
    """One GPU share of one container."""

    uuid: str
    memory_mib: int
    cores: int
    device_type: str = DEVICE_TYPE

    def encode(self) -> str:
        return f"{self.uuid},{self.device_type},{self.memory_mib},{self.cores}"


@dataclass(frozen=True, slots=True)
class Assignment:
    """The shares of every container of a pod (index: HAMi's container index)."""

    containers: tuple[tuple[Share, ...], ...]

    @property
    def shares(self) -> tuple[Share, ...]:
        return tuple(s for c in self.containers for s in c)

    @property
    def empty(self) -> bool:
        return not self.shares

    def next_pending(self) -> int | None:
        """Index of the first container whose shares are not handed out yet."""
        return next((i for i, c in enumerate(self.containers) if c), None)

    def without(self, index: int) -> Assignment:
        """The same assignment with container ``index``'s entry emptied (handed out)."""
        return Assignment(tuple(() if i == index else c for i, c in enumerate(self.containers)))


def encode(assignment: Assignment) -> str:
    return "".join("".join(f"{s.encode()}:" for s in c) + ";" for c in assignment.containers)


def decode(text: str) -> Assignment:
    """Parse HAMi's format; AssignmentError names the part that is wrong."""
    if len(text) > MAX_ANNOTATION_CHARS:
        raise AssignmentError(f"assignment annotation of {len(text)} characters is longer than "
                              f"{MAX_ANNOTATION_CHARS}")
    if not text:
        return Assignment(())
    entries = text.split(";")
    if entries[-1] == "":
        entries.pop()  # the trailing separator
    containers: list[tuple[Share, ...]] = []
    for entry in entries:
        shares: list[Share] = []
        for item in entry.split(":"):
            if not item:
                continue
            fields = item.split(",")
            if len(fields) < 4:
                raise AssignmentError(f"{item[:100]!r} is not <uuid>,<type>,<MiB>,<cores>")
            uuid, device_type, memory, cores = fields[:4]
            if not (memory.isdigit() and cores.isdigit()) or not uuid:
                raise AssignmentError(f"{item[:100]!r}: memory and cores must be whole numbers")
            shares.append(Share(uuid=uuid, memory_mib=int(memory), cores=int(cores), device_type=device_type))
        containers.append(tuple(shares))
    return Assignment(tuple(containers))
