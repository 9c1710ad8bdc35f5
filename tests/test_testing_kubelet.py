"""The kubelet stand-in checks registrations the way the kubelet does."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kgpu.deviceplugin.api import deviceplugin_pb2 as pb
from kgpu.testing.kubelet import FakeKubelet


@pytest.fixture
def kubelet() -> Iterator[FakeKubelet]:
    d = Path(tempfile.mkdtemp(dir="/tmp", prefix="kgpu-h-"))
    k = FakeKubelet(d, follow=False).start()
    yield k
    k.stop()
    shutil.rmtree(d, ignore_errors=True)


def _register(k: FakeKubelet, version: str, endpoint: str, resource: str) -> None:
    from kgpu.deviceplugin.api import deviceplugin_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"unix://{k.socket}") as channel:
        pb_grpc.RegistrationStub(channel).Register(
            pb.RegisterRequest(version=version, endpoint=endpoint, resource_name=resource), timeout=30
        )


def _listening(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.listen()
    return s


@pytest.mark.parametrize(
    ("version", "resource", "problem"),
    [
        ("v1alpha", "nvidia.com/gpu", "Unsupported version"),
        ("v1beta1", "gpu", "invalid extended resource name"),
        ("v1beta1", "kubernetes.io/gpu", "invalid extended resource name"),
    ],
)
def test_registrations_the_kubelet_would_refuse_are_refused(
    kubelet: FakeKubelet, version: str, resource: str, problem: str
) -> None:
    s = _listening(kubelet.directory / "p.sock")
    try:
        with pytest.raises(grpc.RpcError) as err:
            _register(kubelet, version, "p.sock", resource)
        assert problem in (err.value.details() or "")
        assert kubelet.registrations == []
    finally:
        s.close()


def test_a_registration_naming_a_missing_socket_is_refused(kubelet: FakeKubelet) -> None:
    with pytest.raises(grpc.RpcError):
        _register(kubelet, "v1beta1", "missing.sock", "nvidia.com/gpu")


def test_restart_wipes_the_directory_and_serves_a_new_socket(kubelet: FakeKubelet) -> None:
    (kubelet.directory / "nvidia-gpu.sock").write_text("")
    before = kubelet.socket.stat().st_ino, kubelet.socket.stat().st_ctime_ns
    kubelet.restart()
    assert not (kubelet.directory / "nvidia-gpu.sock").exists()
    after = kubelet.socket.stat().st_ino, kubelet.socket.stat().st_ctime_ns
    assert after != before
    s = _listening(kubelet.directory / "p.sock")
    try:
        _register(kubelet, "v1beta1", "p.sock", "nvidia.com/gpu")
    finally:
        s.close()
    assert kubelet.wait_for_registration("nvidia.com/gpu").endpoint == "p.sock"
