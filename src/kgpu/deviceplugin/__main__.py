"""``python -m kgpu.deviceplugin``: the device plugin on its own entry point (``kgpu-device-plugin``)."""

from kgpu.deviceplugin.daemon import main

main()
