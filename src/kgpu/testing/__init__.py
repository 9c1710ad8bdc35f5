"""Public test utilities: stand-ins for the kubelet that speak its real gRPC APIs over unix sockets.

* :mod:`kgpu.testing.kubelet`: the kubelet's device-plugin side (Registration on ``kubelet.sock``, then
  GetDevicePluginOptions, ListAndWatch, Allocate, GetPreferredAllocation as the kubelet calls them);
  ``python -m kgpu.testing.kubelet --kubelet-dir DIR`` acts as the kubelet for one plugin.
* :mod:`kgpu.testing.dra`: the kubelet's DRA side (plugin registration watcher, NodePrepareResources,
  NodeUnprepareResources, NodeWatchResources).
"""
