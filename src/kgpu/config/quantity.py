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

import math
import re
from fractions import Fraction

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


_K8S_QUANTITY = re.compile(r"^([+-]?)(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
_K8S_FACTORS: dict[str, int] = {**_FACTORS, "Pi": 1024**5, "Ei": 1024**6, "P": 1000**5, "E": 1000**6}


def parse_quantity(text: str) -> Fraction:
    """A Kubernetes resource quantity (``20k``, ``30Gi``, ``1.5G``, ``2e9``, ``500m``) as its exact value, as
    ``resource.ParseQuantity`` reads it; ValueError for anything else or a negative amount."""
    text = text.strip()
    match = _K8S_QUANTITY.match(text)
    if not match or len(text) > 64:
        raise ValueError(f"{text[:64]!r} is not a Kubernetes quantity such as 30Gi, 512Mi, 10G or 32212254720")
    sign, number, suffix = match.groups()
    if sign == "-":
        raise ValueError(f"{text!r} is negative")
    whole, _, frac = number.partition(".")
    value = Fraction(int(whole or 0) * 10 ** len(frac) + int(frac or 0), 10 ** len(frac))
    if suffix is None:
        return value
    if suffix == "m":
        return value / 1000
    if suffix[0] in "eE":
        exponent = int(suffix[1:])
        if exponent > 30:
            raise ValueError(f"{text!r} is too large")
        return value * Fraction(10) ** exponent
    return value * _K8S_FACTORS[suffix]


def parse_quantity_bytes(value: str | int) -> int:
    """A Kubernetes resource quantity (``30Gi``, ``32212254720``, ``1.5G``, ``2e9``) as whole bytes, rounded
    up as Kubernetes rounds a quantity's ``Value()``; ValueError for anything else or a negative amount.

    Unlike :func:`parse_memory_mib`, a plain number means bytes: this reads what the API server writes
    (claims' ``consumedCapacity``, NVIDIA's ``defaultPinnedDeviceMemoryLimit``).
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative")
        return value
    return math.ceil(parse_quantity(str(value)))
