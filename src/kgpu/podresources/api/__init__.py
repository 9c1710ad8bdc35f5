"""Kubelet PodResources API v1: generated stubs (``podresources_pb2``, ``podresources_pb2_grpc``).

Generated from ``podresources.proto`` by ``make proto``; never edited by hand. The kubelet serves
this API on ``/var/lib/kubelet/pod-resources/kubelet.sock``.

Example::

    import grpc
    from kgpu.podresources.api import podresources_pb2 as pb, podresources_pb2_grpc as pb_grpc
    with grpc.insecure_channel(f"unix://{SOCKET}") as channel:
        pods = pb_grpc.PodResourcesListerStub(channel).List(pb.ListPodResourcesRequest(), timeout=5)
"""

from pathlib import Path

SOCKET = Path("/var/lib/kubelet/pod-resources/kubelet.sock")
"""Where the kubelet serves PodResourcesLister."""

__all__ = ["SOCKET"]
