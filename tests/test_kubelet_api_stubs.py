"""The committed stubs speak exactly the kubelet's wire format: same packages, services, fields and numbers."""

from __future__ import annotations

from pathlib import Path

from google.protobuf.descriptor import FieldDescriptor

from kgpu.deviceplugin.api import deviceplugin_pb2 as dp
from kgpu.podresources.api import podresources_pb2 as pr

# (message, field name, number, label) from upstream k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1/api.proto
DEVICEPLUGIN_FIELDS = [
    ("DevicePluginOptions", "pre_start_required", 1, "bool"),
    ("DevicePluginOptions", "get_preferred_allocation_available", 2, "bool"),
    ("RegisterRequest", "version", 1, "string"),
    ("RegisterRequest", "endpoint", 2, "string"),
    ("RegisterRequest", "resource_name", 3, "string"),
    ("RegisterRequest", "options", 4, "v1beta1.DevicePluginOptions"),
    ("ListAndWatchResponse", "devices", 1, "v1beta1.Device"),
    ("TopologyInfo", "nodes", 1, "v1beta1.NUMANode"),
    ("NUMANode", "ID", 1, "int64"),
    ("Device", "ID", 1, "string"),
    ("Device", "health", 2, "string"),
    ("Device", "topology", 3, "v1beta1.TopologyInfo"),
    ("PreStartContainerRequest", "devices_ids", 1, "string"),
    ("PreferredAllocationRequest", "container_requests", 1, "v1beta1.ContainerPreferredAllocationRequest"),
    ("ContainerPreferredAllocationRequest", "available_deviceIDs", 1, "string"),
    ("ContainerPreferredAllocationRequest", "must_include_deviceIDs", 2, "string"),
    ("ContainerPreferredAllocationRequest", "allocation_size", 3, "int32"),
    ("PreferredAllocationResponse", "container_responses", 1, "v1beta1.ContainerPreferredAllocationResponse"),
    ("ContainerPreferredAllocationResponse", "deviceIDs", 1, "string"),
    ("AllocateRequest", "container_requests", 1, "v1beta1.ContainerAllocateRequest"),
    ("ContainerAllocateRequest", "devices_ids", 1, "string"),
    ("CDIDevice", "name", 1, "string"),
    ("AllocateResponse", "container_responses", 1, "v1beta1.ContainerAllocateResponse"),
    ("ContainerAllocateResponse", "envs", 1, "v1beta1.ContainerAllocateResponse.EnvsEntry"),
    ("ContainerAllocateResponse", "mounts", 2, "v1beta1.Mount"),
    ("ContainerAllocateResponse", "devices", 3, "v1beta1.DeviceSpec"),
    ("ContainerAllocateResponse", "annotations", 4, "v1beta1.ContainerAllocateResponse.AnnotationsEntry"),
    ("ContainerAllocateResponse", "cdi_devices", 5, "v1beta1.CDIDevice"),
    ("Mount", "container_path", 1, "string"),
    ("Mount", "host_path", 2, "string"),
    ("Mount", "read_only", 3, "bool"),
    ("DeviceSpec", "container_path", 1, "string"),
    ("DeviceSpec", "host_path", 2, "string"),
    ("DeviceSpec", "permissions", 3, "string"),
]

PODRESOURCES_FIELDS = [
    ("AllocatableResourcesResponse", "devices", 1, "v1.ContainerDevices"),
    ("AllocatableResourcesResponse", "cpu_ids", 2, "int64"),
    ("AllocatableResourcesResponse", "memory", 3, "v1.ContainerMemory"),
    ("ListPodResourcesResponse", "pod_resources", 1, "v1.PodResources"),
    ("PodResources", "name", 1, "string"),
    ("PodResources", "namespace", 2, "string"),
    ("PodResources", "containers", 3, "v1.ContainerResources"),
    ("ContainerResources", "name", 1, "string"),
    ("ContainerResources", "devices", 2, "v1.ContainerDevices"),
    ("ContainerResources", "cpu_ids", 3, "int64"),
    ("ContainerResources", "memory", 4, "v1.ContainerMemory"),
    ("ContainerResources", "dynamic_resources", 5, "v1.DynamicResource"),
    ("ContainerMemory", "memory_type", 1, "string"),
    ("ContainerMemory", "size", 2, "uint64"),
    ("ContainerMemory", "topology", 3, "v1.TopologyInfo"),
    ("ContainerDevices", "resource_name", 1, "string"),
    ("ContainerDevices", "device_ids", 2, "string"),
    ("ContainerDevices", "topology", 3, "v1.TopologyInfo"),
    ("TopologyInfo", "nodes", 1, "v1.NUMANode"),
    ("NUMANode", "ID", 1, "int64"),
    ("DynamicResource", "claim_name", 2, "string"),
    ("DynamicResource", "claim_namespace", 3, "string"),
    ("DynamicResource", "claim_resources", 4, "v1.ClaimResource"),
    ("ClaimResource", "cdi_devices", 1, "v1.CDIDevice"),
    ("ClaimResource", "driver_name", 2, "string"),
    ("ClaimResource", "pool_name", 3, "string"),
    ("ClaimResource", "device_name", 4, "string"),
    ("CDIDevice", "name", 1, "string"),
    ("GetPodResourcesRequest", "pod_name", 1, "string"),
    ("GetPodResourcesRequest", "pod_namespace", 2, "string"),
    ("GetPodResourcesResponse", "pod_resources", 1, "v1.PodResources"),
]

_SCALARS = {
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_UINT64: "uint64",
}


def _fields(module: object) -> list[tuple[str, str, int, str]]:
    out = []
    for name, message in module.DESCRIPTOR.message_types_by_name.items():  # type: ignore[attr-defined]
        for f in message.fields:
            kind = f.message_type.full_name if f.message_type is not None else _SCALARS[f.type]
            out.append((name, f.name, f.number, kind))
    return out


def test_device_plugin_messages_match_upstream_field_for_field() -> None:
    assert dp.DESCRIPTOR.package == "v1beta1"
    assert sorted(_fields(dp)) == sorted(DEVICEPLUGIN_FIELDS)


def test_device_plugin_services_have_the_kubelets_method_paths() -> None:
    registration = dp.DESCRIPTOR.services_by_name["Registration"]
    assert [m.full_name for m in registration.methods] == ["v1beta1.Registration.Register"]
    plugin = dp.DESCRIPTOR.services_by_name["DevicePlugin"]
    methods = {m.name: (m.input_type.name, m.output_type.name, m.server_streaming) for m in plugin.methods}
    assert methods == {
        "GetDevicePluginOptions": ("Empty", "DevicePluginOptions", False),
        "ListAndWatch": ("Empty", "ListAndWatchResponse", True),
        "GetPreferredAllocation": ("PreferredAllocationRequest", "PreferredAllocationResponse", False),
        "Allocate": ("AllocateRequest", "AllocateResponse", False),
        "PreStartContainer": ("PreStartContainerRequest", "PreStartContainerResponse", False),
    }


def test_pod_resources_messages_and_service_match_upstream() -> None:
    assert pr.DESCRIPTOR.package == "v1"
    assert sorted(_fields(pr)) == sorted(PODRESOURCES_FIELDS)
    lister = pr.DESCRIPTOR.services_by_name["PodResourcesLister"]
    assert [m.name for m in lister.methods] == ["List", "GetAllocatableResources", "Get"]


def test_a_register_request_encodes_to_the_bytes_a_go_kubelet_expects() -> None:
    # Given the request NVIDIA's plugin sends, the encoding is fixed by field numbers alone.
    request = dp.RegisterRequest(
        version="v1beta1", endpoint="nvidia-gpu.sock", resource_name="nvidia.com/gpu",
        options=dp.DevicePluginOptions(get_preferred_allocation_available=True),
    )
    assert request.SerializeToString() == (
        b"\n\x07v1beta1" b"\x12\x0fnvidia-gpu.sock" b"\x1a\x0envidia.com/gpu" b"\x22\x02\x10\x01"
    )


def test_generated_stubs_do_not_demand_the_newest_grpc_or_protobuf() -> None:
    api_dirs = [Path(dp.__file__).parent, Path(pr.__file__).parent]
    for d in api_dirs:
        for pb2 in d.glob("*_pb2.py"):
            assert "ValidateProtobufRuntimeVersion" not in pb2.read_text(), pb2
        for grpc_file in d.glob("*_pb2_grpc.py"):
            text = grpc_file.read_text()
            assert "GRPC_GENERATED_VERSION = '1.66.0'" in text, grpc_file
            assert "from . import" in text, grpc_file
