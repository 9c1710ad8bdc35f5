"""Bounds on what a configuration may ask for, and how a refused value is shown.

Every number an admin writes is checked against what the machinery below kgpu can serve, so
that a typo (``replicas: 100000000``) is refused within a second with one line instead of
growing the daemon until the kernel kills it.

Why these limits:

* **MPS clients per GPU: 48.** An MPS control daemon serves at most 48 clients per device on
  Volta and newer (CUDA MPS documentation, "Limitations"); a 49th client of a GPU waits forever.
  So MPS replicas plus slices on one GPU may not exceed 48.
* **Time-slicing replicas per GPU: 1024.** Every replica is one device ID the kubelet keeps, lists
  in ``ListAndWatch`` and stores in its checkpoint. A replica serves one container at a time and a
  node runs at most a few hundred pods (Kubernetes supports 110 per node by default), so 1024
  replicas per GPU is already far more than can ever be in use; and 16 GPUs x 1024 replicas is
  16 384 IDs, about 1.5 MB in one ``ListAndWatch`` message, well below the 4 MiB the kubelet's
  gRPC client accepts.
* **Config files: 1 MiB.** A ConfigMap holds at most 1 MiB; so does any sensible config file.
  Fixture files (simulated nodes) are bounded the same way.
* **YAML aliases: 100.** Anchors and aliases let a 1 KiB document expand into gigabytes
  ("billion laughs"); a real config file needs few if any.
"""

from __future__ import annotations

from typing import Final

MAX_MPS_CLIENTS_PER_GPU: Final = 48
MAX_REPLICAS_PER_GPU: Final = 1024
MAX_CONFIG_BYTES: Final = 1024 * 1024
MAX_FIXTURE_BYTES: Final = 1024 * 1024
MAX_YAML_ALIASES: Final = 100
MAX_SHOWN_CHARS: Final = 100
"""A value quoted in an error line is cut to about this many characters."""


def shown(value: object) -> str:
    """``repr(value)``, cut to :data:`MAX_SHOWN_CHARS` characters with a note of the full length.

    Example::

        shown("x" * 50_000_000)   # "'xxxx…' (50000002 characters)"
    """
    text = repr(value)
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    return f"{text[:MAX_SHOWN_CHARS]}… ({len(text)} characters)"
