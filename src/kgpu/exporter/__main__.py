"""``python -m kgpu.exporter``: the exporter on its own entry point (``kgpu-exporter``)."""

from kgpu.exporter.daemon import main

main()
