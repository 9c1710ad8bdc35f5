"""Kubelet Device Plugin API v1beta1: generated stubs plus the constants upstream keeps in ``constants.go``.

The stubs (``deviceplugin_pb2``, ``deviceplugin_pb2_grpc``) are generated from ``deviceplugin.proto``
by ``make proto`` and never edited by hand. Import them explicitly; this module stays light so that
importing the constants does not load grpc.

Example::

    from kgpu.deviceplugin.api import deviceplugin_pb2 as pb
    pb.RegisterRequest(version=VERSION, endpoint="nvidia-gpu.sock", resource_name="nvidia.com/gpu")
"""

from pathlib import Path

VERSION = "v1beta1"
"""The API version a plugin sends in RegisterRequest.version."""
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
DEVICE_PLUGIN_PATH = Path("/var/lib/kubelet/device-plugins")
"""Where the kubelet serves Registration and looks for plugin sockets."""
KUBELET_SOCKET = "kubelet.sock"
"""The kubelet's Registration socket, inside the device-plugins directory."""

__all__ = ["DEVICE_PLUGIN_PATH", "HEALTHY", "KUBELET_SOCKET", "UNHEALTHY", "VERSION"]
