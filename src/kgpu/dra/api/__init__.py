"""The kubelet's DRA plugin APIs: generated stubs plus the names the kubelet matches on.

Three protos, copied from ``k8s.io/kubelet`` at the version the lab runs (v1.36.2) and compiled by
``make proto`` (``scripts/gen_proto.py``); the stubs are never edited by hand:

* ``pluginregistration`` (package ``pluginregistration``): ``Registration.GetInfo`` and
  ``NotifyRegistrationStatus``, served on a socket in the kubelet's ``plugins_registry`` directory;
* ``dra`` (package ``k8s.io.kubelet.pkg.apis.dra.v1``): ``DRAPlugin.NodePrepareResources`` and
  ``NodeUnprepareResources``, served on the endpoint GetInfo names;
* ``drahealth`` (package ``v1alpha1``): ``DRAResourceHealth.NodeWatchResources``, the optional
  device-health stream the kubelet opens when its ResourceHealthStatus gate is on (beta in 1.36).

This module stays light (no grpc import) so that importing the constants is cheap.

Example::

    from kgpu.dra.api import pluginregistration_pb2 as reg
    reg.PluginInfo(type=PLUGIN_TYPE, name="gpu.nvidia.com", endpoint="/var/lib/kubelet/plugins/gpu.nvidia.com/dra.sock",
                   supported_versions=[DRA_SERVICE_V1])
"""

from pathlib import Path

PLUGIN_TYPE = "DRAPlugin"
"""PluginInfo.type of a DRA driver (``kubelet/pkg/kubelet/pluginmanager``: DRAPlugin, CSIPlugin)."""
DRA_SERVICE_V1 = "v1.DRAPlugin"
"""What PluginInfo.supported_versions lists for the ``k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin`` service
(since 1.34 the kubelet reads these entries as gRPC service names, short form)."""
KUBELET_DIR = Path("/var/lib/kubelet")
REGISTRY_DIR = KUBELET_DIR / "plugins_registry"
"""Where the kubelet's plugin watcher looks for registration sockets."""
PLUGINS_DIR = KUBELET_DIR / "plugins"
"""Where plugins keep their own sockets and state, by convention ``plugins/<driver>/``."""

__all__ = ["DRA_SERVICE_V1", "KUBELET_DIR", "PLUGINS_DIR", "PLUGIN_TYPE", "REGISTRY_DIR"]
