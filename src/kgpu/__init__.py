"""kgpu: NVIDIA GPUs as first-class Kubernetes citizens."""

__version__ = "0.1.0"
