"""NVLink bandwidth as DCGM computes DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL: the change of the NVLink data
counters (received + transmitted, all links, KiB) since the previous scrape, per second, divided by 1000.

DCGM publishes 0 for the first sample and whenever the counter reads 0 (``ReadAndCacheNvLinkBandwidth``);
so does kgpu. The previous sample is the only state, one per GPU.

Example::

    rates = NvlinkRates()
    rates.update({"GPU-a": 1_000_000}, now=10.0)   # {'GPU-a': 0}
    rates.update({"GPU-a": 3_000_000}, now=12.0)   # {'GPU-a': 1000}  (2e6 KiB / 2 s / 1000)
"""

from __future__ import annotations

from collections.abc import Mapping


class NvlinkRates:
    def __init__(self) -> None:
        self._previous: dict[str, tuple[int, float]] = {}

    def update(self, counters: Mapping[str, int | None], now: float) -> dict[str, int]:
        """The bandwidth of each GPU that has an NVLink counter this scrape (GPUs without: no value)."""
        out: dict[str, int] = {}
        for uuid, counter in counters.items():
            if counter is None:
                self._previous.pop(uuid, None)
                continue
            previous = self._previous.get(uuid)
            self._previous[uuid] = (counter, now)
            if counter == 0 or previous is None or now <= previous[1]:
                out[uuid] = 0
                continue
            out[uuid] = max(int((counter - previous[0]) / (now - previous[1]) / 1000.0), 0)
        return out
