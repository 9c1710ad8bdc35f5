"""Memory sizes as people write them in config files: ``20Gi``, ``10G``, ``512Mi`` or a plain MiB count.

Suffixes follow Kubernetes resource quantities: ``Ki Mi Gi Ti`` are powers of 1024, ``k M G T``
powers of 1000. A bare integer means MiB, the unit NVML and MPS use. Results are whole MiB,
rounded down (a slice never gets more than asked for).

Example::

    parse_memory_mib("20Gi")   # 20480
    parse_memory_mib("10G")    # 9536  (10 * 10**9 bytes)
    parse_memory_mib(4096)     # 4096
"""

from __future__ import annotations

import re

_MIB = 1024 * 1024
_FACTORS: dict[str, int] = {
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|k|K|M|G|T|MiB|GiB|TiB)?\s*$")

ALLOWED_FORMS = "an integer number of MiB (20480) or a quantity such as 20Gi, 512Mi, 10G"


def parse_memory_mib(value: str | int) -> int:
    """Whole MiB in ``value``; raises ValueError naming the allowed forms."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a memory size: use {ALLOWED_FORMS}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"{value} MiB is not a positive memory size")
        return value
    match = _QUANTITY.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a memory size: use {ALLOWED_FORMS}")
    number, suffix = match.group(1), match.group(2)
    if suffix is None:
        if "." in number:
            raise ValueError(f"{value!r}: a plain number means MiB and must be whole; use {ALLOWED_FORMS}")
        mib = int(number)
    else:
        suffix = {"MiB": "Mi", "GiB": "Gi", "TiB": "Ti"}.get(suffix, suffix)
        # Exact arithmetic in bytes before rounding down to MiB.
        whole, _, frac = number.partition(".")
        scale = 10 ** len(frac)
        total_bytes = (int(whole) * scale + int(frac or 0)) * _FACTORS[suffix] // scale
        mib = total_bytes // _MIB
    if mib <= 0:
        raise ValueError(f"{value!r} is less than 1 MiB")
    return mib


def format_mib(mib: int) -> str:
    """``20480`` → ``20Gi``; ``10240`` → ``10Gi``; ``9536`` → ``9536Mi``."""
    if mib % 1024 == 0:
        return f"{mib // 1024}Gi"
    return f"{mib}Mi"
