"""The last XID per GPU, recorded from the backend's health stream, and XID descriptions.

This is state, not a metric: a supervised watcher follows the backend's health feed
(:meth:`XidTracker.tick`) and records the last XID each GPU reported; the collector reads it at
scrape time. A feed that fails is polled again where it was, so the counter never stops updating.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from kgpu.gpu.health import POLL_SLICE_SECONDS, HealthEvent, HealthEventKind, HealthFeed
from kgpu.gpu.model import Inventory

UNKNOWN_XID = "Unknown Error"

# NVIDIA's XID catalog (docs.nvidia.com/deploy/xid-errors), as dcgm-exporter labels them in err_msg.
_PUSH_BUFFER = "Invalid or corrupted push buffer stream"
_VIDEO = "Video processor exception"
_STOPPED = "GPU stopped processing"
_MICRO = "Internal micro-controller error"
XID_DESCRIPTIONS: dict[int, str] = {
    0: "No Error", 1: _PUSH_BUFFER, 2: _PUSH_BUFFER, 3: _PUSH_BUFFER, 4: _PUSH_BUFFER, 5: "Unused",
    6: _PUSH_BUFFER, 7: "Invalid or corrupted push buffer address", 8: _STOPPED,
    9: "Driver error programming GPU", 10: "Unused", 11: _PUSH_BUFFER,
    12: "Driver error handling GPU exception", 13: "Graphics Engine Exception", 14: "Unused", 15: "Unused",
    16: "Display engine hung", 17: "Unused", 18: "Bus mastering disabled in PCI Config Space",
    19: "Display Engine error", 20: "Invalid or corrupted Mpeg push buffer",
    21: "Invalid or corrupted Motion Estimation push buffer", 22: "Invalid or corrupted Video Processor push buffer",
    23: "Unused", 24: "GPU semaphore timeout", 25: "Invalid or illegal push buffer stream",
    26: "Framebuffer timeout", 27: _VIDEO, 28: _VIDEO, 29: _VIDEO, 30: "GPU semaphore access error",
    31: "GPU memory page fault", 32: _PUSH_BUFFER, 33: _MICRO, 34: _VIDEO, 35: _VIDEO, 36: _VIDEO,
    37: "Driver firmware error", 38: "Driver firmware error", 39: "Unused", 40: "Unused", 41: "Unused",
    42: _VIDEO, 43: _STOPPED, 44: "Graphics Engine fault during context switch",
    45: "Preemptive cleanup, due to previous errors -- Most likely to see when running multiple cuda",
    46: _STOPPED, 47: _VIDEO, 48: "Double Bit ECC Error", 49: "Unused", 50: "Unused", 51: "Unused",
    52: "Unused", 53: "Unused", 54: "Auxiliary power is not connected to the GPU board", 55: "Unused",
    56: "Display Engine error", 57: "Error programming video memory interface",
    58: "Unstable video memory interface detected", 59: _MICRO, 60: _VIDEO,
    61: "Internal micro-controller breakpoint/warning", 62: "Internal micro-controller halt",
    63: "ECC page retirement or row remapping recording event",
    64: "ECC page retirement or row remapper recording failure", 65: _VIDEO, 66: "Illegal access by driver",
    67: "Illegal access by driver", 68: "NVDEC0 Exception", 69: "Graphics Engine class error",
    70: "CE3: Unknown Error", 71: "CE4: Unknown Error", 72: "CE5: Unknown Error", 73: "NVENC2 Error",
    74: "NVLINK Error", 75: "CE6: Unknown Error", 76: "CE7: Unknown Error", 77: "CE8: Unknown Error",
    78: "vGPU Start Error", 79: "GPU has fallen off the bus", 80: "Corrupted data sent to GPU",
    81: "VGA Subsystem Error", 82: "NVJPG0 Error", 83: "NVDEC1 Error", 84: "NVDEC2 Error",
    85: "CE9: Unknown Error", 86: "OFA Exception", 87: "Reserved", 88: "NVDEC3 Error", 89: "NVDEC4 Error",
    90: "Reserved", 91: "Reserved", 92: "High single-bit ECC error rate",
    93: "Non-fatal violation of provisioned InfoROM wear limit", 94: "Contained ECC error",
    95: "Uncontained ECC error", 96: "NVDEC5 Error", 97: "NVDEC6 Error", 98: "NVDEC7 Error",
    99: "NVJPG1 Error", 100: "NVJPG2 Error", 101: "NVJPG3 Error", 102: "NVJPG4 Error", 103: "NVJPG5 Error",
    104: "NVJPG6 Error", 105: "NVJPG7 Error", 106: "SMBPBI Test Message", 107: "SMBPBI Test Message Silent",
    108: "Reserved", 109: "Context Switch Timeout Error", 110: "Security Fault Error",
    111: "Display Bundle Error Event", 112: "Display Supervisor Error", 113: "DP Link Training Error",
    114: "Display Pipeline Underflow Error", 115: "Display Core Channel Error",
    116: "Display Window Channel Error", 117: "Display Cursor Channel Error",
    118: "Display Pixel Pipeline Error", 119: "GSP RPC Timeout", 120: "GSP Error", 121: "C2C Link Error",
    122: "SPI PMU RPC Read Failure", 123: "SPI PMU RPC Write Failure", 124: "SPI PMU RPC Erase Failure",
    125: "Inforom FS Failure", 140: "Unrecovered ECC Error", 143: "GPU Initialization Failure",
    154: "GPU Recovery Action Changed",
}
XID_DESCRIPTIONS.update({126 + i: f"Robust Channel CE{10 + i} Error" for i in range(10)})


def xid_description(xid: int) -> str:
    return XID_DESCRIPTIONS.get(xid, UNKNOWN_XID)


@dataclass(frozen=True, slots=True)
class XidRecord:
    xid: int
    timestamp: float
    count: int
    """XID events seen on this GPU since the exporter started following the stream."""


class XidTracker:
    """The last XID per physical GPU (events on a MIG device count for its parent GPU)."""

    def __init__(self, inventory: Inventory) -> None:
        self._parent = {m.uuid: m.parent_uuid for m in inventory.mig_devices}
        self._last: dict[str, XidRecord] = {}
        self._lock = threading.Lock()

    def record(self, event: HealthEvent) -> None:
        if event.kind is not HealthEventKind.XID or event.xid is None:
            return
        uuid = self._parent.get(event.uuid, event.uuid)
        with self._lock:
            previous = self._last.get(uuid)
            self._last[uuid] = XidRecord(event.xid, event.timestamp, (previous.count if previous else 0) + 1)

    def last(self, gpu_uuid: str) -> XidRecord | None:
        with self._lock:
            return self._last.get(gpu_uuid)

    def follow(self, feed: HealthFeed) -> Callable[[], None]:
        """A watcher's tick recording the XIDs of ``feed`` (see :class:`kgpu.daemon.Watcher`)."""

        def tick() -> None:
            for event in feed.poll(POLL_SLICE_SECONDS):
                self.record(event)

        return tick
