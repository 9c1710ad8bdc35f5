"""The DRA stubs speak the v1.36 kubelet's wire format, and the committed files are what `make proto` writes."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor

from kgpu.dra.api import dra_pb2, drahealth_pb2, pluginregistration_pb2

ROOT = Path(__file__).resolve().parent.parent
API_DIRS = [
    ROOT / "src/kgpu/deviceplugin/api",
    ROOT / "src/kgpu/podresources/api",
    ROOT / "src/kgpu/dra/api",
]

_SCALARS = {
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_ENUM: "enum",
}

# (message, field, number, type) from k8s.io/kubelet v0.36.2 pkg/apis/dra/v1/api.proto
DRA_FIELDS = [
    ("NodePrepareResourcesRequest", "claims", 1, "k8s.io.kubelet.pkg.apis.dra.v1.Claim"),
    ("NodePrepareResourcesResponse", "claims", 1,
     "k8s.io.kubelet.pkg.apis.dra.v1.NodePrepareResourcesResponse.ClaimsEntry"),
    ("NodePrepareResourceResponse", "devices", 1, "k8s.io.kubelet.pkg.apis.dra.v1.Device"),
    ("NodePrepareResourceResponse", "error", 2, "string"),
    ("Device", "request_names", 1, "string"),
    ("Device", "pool_name", 2, "string"),
    ("Device", "device_name", 3, "string"),
    ("Device", "cdi_device_ids", 4, "string"),
    ("Device", "share_id", 5, "string"),
    ("NodeUnprepareResourcesRequest", "claims", 1, "k8s.io.kubelet.pkg.apis.dra.v1.Claim"),
    ("NodeUnprepareResourcesResponse", "claims", 1,
     "k8s.io.kubelet.pkg.apis.dra.v1.NodeUnprepareResourcesResponse.ClaimsEntry"),
    ("NodeUnprepareResourceResponse", "error", 1, "string"),
    ("Claim", "namespace", 1, "string"),
    ("Claim", "uid", 2, "string"),
    ("Claim", "name", 3, "string"),
]

# pkg/apis/dra-health/v1alpha1/api.proto
HEALTH_FIELDS = [
    ("DeviceIdentifier", "pool_name", 1, "string"),
    ("DeviceIdentifier", "device_name", 2, "string"),
    ("DeviceHealth", "device", 1, "v1alpha1.DeviceIdentifier"),
    ("DeviceHealth", "health", 2, "enum"),
    ("DeviceHealth", "last_updated_time", 3, "int64"),
    ("DeviceHealth", "health_check_timeout_seconds", 4, "int64"),
    ("DeviceHealth", "message", 5, "string"),
    ("NodeWatchResourcesResponse", "devices", 1, "v1alpha1.DeviceHealth"),
]

# pkg/apis/pluginregistration/v1/api.proto
REGISTRATION_FIELDS = [
    ("PluginInfo", "type", 1, "string"),
    ("PluginInfo", "name", 2, "string"),
    ("PluginInfo", "endpoint", 3, "string"),
    ("PluginInfo", "supported_versions", 4, "string"),
    ("RegistrationStatus", "plugin_registered", 1, "bool"),
    ("RegistrationStatus", "error", 2, "string"),
]


def _fields(module: object) -> list[tuple[str, str, int, str]]:
    out = []
    for name, message in module.DESCRIPTOR.message_types_by_name.items():  # type: ignore[attr-defined]
        for f in message.fields:
            kind = f.message_type.full_name if f.message_type is not None else _SCALARS[f.type]
            out.append((name, f.name, f.number, kind))
    return out


def test_dra_v1_messages_and_service_match_the_kubelets() -> None:
    assert dra_pb2.DESCRIPTOR.package == "k8s.io.kubelet.pkg.apis.dra.v1"
    assert sorted(_fields(dra_pb2)) == sorted(DRA_FIELDS)
    service = dra_pb2.DESCRIPTOR.services_by_name["DRAPlugin"]
    assert [m.full_name for m in service.methods] == [
        "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin.NodePrepareResources",
        "k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin.NodeUnprepareResources",
    ]


def test_health_stream_and_registration_match_the_kubelets() -> None:
    assert drahealth_pb2.DESCRIPTOR.package == "v1alpha1"
    assert sorted(_fields(drahealth_pb2)) == sorted(HEALTH_FIELDS)
    watch = drahealth_pb2.DESCRIPTOR.services_by_name["DRAResourceHealth"].methods_by_name["NodeWatchResources"]
    assert watch.server_streaming and not watch.client_streaming
    assert dict(drahealth_pb2.HealthStatus.items()) == {"UNKNOWN": 0, "HEALTHY": 1, "UNHEALTHY": 2}
    assert pluginregistration_pb2.DESCRIPTOR.package == "pluginregistration"
    assert sorted(_fields(pluginregistration_pb2)) == sorted(REGISTRATION_FIELDS)
    registration = pluginregistration_pb2.DESCRIPTOR.services_by_name["Registration"]
    assert [m.full_name for m in registration.methods] == [
        "pluginregistration.Registration.GetInfo", "pluginregistration.Registration.NotifyRegistrationStatus",
    ]


def test_a_prepare_answer_encodes_as_a_go_kubelet_reads_it() -> None:
    # Given one prepared device with its CDI id, the bytes follow from field numbers alone.
    response = dra_pb2.NodePrepareResourceResponse(devices=[dra_pb2.Device(
        request_names=["gpu"], pool_name="n", device_name="gpu-0", cdi_device_ids=["k/c=d"])])
    assert response.SerializeToString() == (
        b"\n\x16" b"\n\x03gpu" b"\x12\x01n" b"\x1a\x05gpu-0" b"\x22\x05k/c=d"
    )


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools (dev extra) not installed")
def test_committed_stubs_are_what_make_proto_writes(tmp_path: Path) -> None:
    # Given every proto compiled afresh by scripts/gen_proto.py into a scratch directory,
    # then each committed stub is byte for byte the same: nobody edited one by hand or forgot to regenerate.
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_proto
    finally:
        sys.path.pop(0)
    for proto in gen_proto.PROTOS:
        scratch = tmp_path / proto.parent.name / proto.parent.parent.name
        scratch.mkdir(parents=True, exist_ok=True)
        shutil.copy(proto, scratch / proto.name)
        for fresh in gen_proto.generate(scratch / proto.name):
            committed = proto.parent / fresh.name
            assert committed.read_text() == fresh.read_text(), f"{committed} is stale: run make proto"
    assert {p.parent for p in gen_proto.PROTOS} == set(API_DIRS)
