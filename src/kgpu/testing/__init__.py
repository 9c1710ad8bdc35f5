"""Public test utilities: stand-ins for the kubelet that speak its real gRPC APIs over unix sockets.

* :mod:`kgpu.testing.dra`: the kubelet's DRA side (plugin registration watcher, NodePrepareResources,
  NodeUnprepareResources, NodeWatchResources).

The device plugin's kubelet stand-in is :mod:`kgpu.deviceplugin.harness`.
"""
