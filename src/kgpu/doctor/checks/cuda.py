"""cuda.toolkit-compat: is an installed CUDA toolkit newer than the driver supports?

The minimum Linux x86_64 driver for each toolkit comes from NVIDIA's CUDA release notes
("CUDA Toolkit and Corresponding Driver Versions"); within one major version, minor version
compatibility lets a newer toolkit run on an older driver of the same major branch, except
for PTX JIT compilation and features that need the newer driver.
"""

from __future__ import annotations

from kgpu.doctor.facts import NodeFacts
from kgpu.doctor.finding import Outcome, passed, skipped, warned
from kgpu.gpu.model import CudaVersion

# Toolkit (major, minor) → minimum driver of its GA release.
MIN_DRIVER: dict[tuple[int, int], str] = {
    (13, 1): "590.44.01",
    (13, 0): "580.65.06",
    (12, 9): "575.51.03",
    (12, 8): "570.26",
    (12, 6): "560.28.03",
    (12, 5): "555.42.02",
    (12, 4): "550.54.14",
    (12, 3): "545.23.06",
    (12, 2): "535.54.03",
    (12, 1): "530.30.02",
    (12, 0): "525.60.13",
    (11, 8): "520.61.05",
    (11, 7): "515.43.04",
    (11, 6): "510.39.01",
    (11, 5): "495.29.05",
    (11, 4): "470.42.01",
    (11, 3): "465.19.01",
    (11, 2): "460.27.03",
    (11, 1): "455.23.05",
    (11, 0): "450.36.06",
    (10, 2): "440.33",
    (10, 1): "418.39",
    (10, 0): "410.48",
}
# Minor version compatibility: the oldest driver that runs any toolkit of that major version.
MINOR_COMPAT_FLOOR: dict[int, str] = {13: "580.65.06", 12: "525.60.13", 11: "450.80.02"}


def _vkey(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def max_cuda_for_driver(driver: str) -> CudaVersion | None:
    """The newest CUDA version a driver supports natively (what nvidia-smi prints as "CUDA Version")."""
    best = None
    for toolkit, minimum in MIN_DRIVER.items():
        if _vkey(driver) >= _vkey(minimum) and (best is None or toolkit > best):
            best = toolkit
    return CudaVersion(*best) if best else None


def toolkit_compat(facts: NodeFacts) -> Outcome:
    toolkits = facts.host.cuda_toolkits
    if not toolkits:
        return skipped(
            "no CUDA toolkit on the host", "containers bring their own CUDA; only the driver matters"
        )
    inv = facts.gpu.inventory
    kernel = facts.host.kernel_driver
    if inv is not None:
        driver, supported = inv.driver_version, inv.cuda_driver_version
        source = f"NVML: driver {driver} supports CUDA {supported}"
    elif kernel is not None and kernel.version:
        driver = kernel.version
        found = max_cuda_for_driver(driver)
        if found is None:
            return skipped("driver too old for the compatibility table", f"driver {driver}")
        supported = found
        source = f"/proc/driver/nvidia/version: driver {driver} supports CUDA {supported}"
    else:
        return skipped("driver version unknown", "NVML did not answer and no kernel driver is loaded")
    evidence = [source]
    worst = "pass"
    fixes = []
    for tk in toolkits:
        major, minor = tk.major_minor
        need = MIN_DRIVER.get((major, minor))
        line = f"CUDA toolkit {tk.version} ({tk.source})"
        if (major, minor) <= (supported.major, supported.minor):
            evidence.append(f"{line}: supported")
            continue
        floor = MINOR_COMPAT_FLOOR.get(major)
        if major == supported.major and floor and _vkey(driver) >= _vkey(floor):
            evidence.append(
                f"{line}: newer than the driver's CUDA {supported}; runs through minor version "
                f"compatibility (driver ≥ {floor}) except PTX JIT and features that need a newer driver"
            )
            worst = "fail" if worst == "fail" else "warn"
        else:
            evidence.append(f"{line}: needs driver ≥ {need or '?'}, the driver is {driver}")
            worst = "fail"
        fixes.append(
            f"Upgrade the driver to ≥ {need} for CUDA {major}.{minor}"
            if need
            else f"Upgrade the driver for CUDA {major}.{minor}"
        )
    if worst == "pass":
        return passed(f"CUDA toolkit(s) supported by driver {driver}", *evidence)
    fix = (
        "\n".join(dict.fromkeys(fixes))
        + f", or install a toolkit ≤ {supported} (e.g. /usr/local/cuda-{supported}) and point "
        f"/usr/local/cuda at it"
    )
    if worst == "warn":
        return warned("CUDA toolkit newer than the driver (minor version compatibility)", evidence, fix)
    # GPU pods bring their own CUDA: only programs built with the host's toolkit are affected
    return warned("CUDA toolkit newer than the driver supports (host programs built with it fail)", evidence, fix)
