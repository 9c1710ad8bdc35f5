"""NVIDIA's MPS control-daemon device cases (cmd/mps-control-daemon/mps/device_test.go, v0.20), replayed
against the replicas kgpu accepts per GPU under ``sharing.mps``, case for case.

NVIDIA's TestDevice checks a device's compute capability → maximum MPS clients → whether its replicas
fit. Here a one-GPU node of NVIDIA's mock model gets that compute capability and a config file asks for
the replicas; the device plugin's decisions either accept it or refuse it naming the key.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from dp_helpers import build_logic, plugin_config
from nvidia_mocks import full_gpu, node

from kgpu.errors import ConfigError
from kgpu.gpu.model import ComputeCapability


def serve(tmp_path: Path, capability: tuple[int, int], replicas: int) -> None:
    gpu = dataclasses.replace(full_gpu(), compute_capability=ComputeCapability(*capability), memory_total_mib=81559)
    text = f"sharing: {{mps: {{resources: [{{name: nvidia.com/gpu, replicas: {replicas}}}]}}}}"
    build_logic(node(gpu), plugin_config(tmp_path, text))


@pytest.mark.parametrize(
    ("capability", "replicas", "accepted"),
    [
        # NVIDIA's cases without replicas check only the maximum; replayed at that maximum
        pytest.param((7, 5), 48, True, id="leading v ignored"),  # "v7.5": kgpu's capability is two integers
        pytest.param((7, 5), 48, True, id="no-leading v supported"),
        pytest.param((9, 0), 48, True, id="post-volta clients"),
        pytest.param((9, 0), 49, False, id="post-volta clients exceeded"),
        pytest.param((9, 0), 48, True, id="post-volta clients max"),
        pytest.param((7, 0), 16, True, id="pre-volta clients max"),
        # NVIDIA counts 7.0 as pre-Volta (it compares with 7.5) and allows it 16 clients, refusing 29.
        # Volta is 7.0, and CUDA's MPS serves 48 clients from Volta on; kgpu allows 7.0 the 48
        # (kgpu.sharing.layout), so a config NVIDIA accepts is accepted, and a V100 may take more.
        pytest.param((7, 0), 29, True, id="pre-volta clients exceeded"),
        pytest.param((7, 0), 48, True, id="pre-volta clients (kgpu: Volta's 48)"),
    ],
)
def test_device(tmp_path: Path, capability: tuple[int, int], replicas: int, accepted: bool) -> None:
    if accepted:
        serve(tmp_path, capability, replicas)
    else:
        with pytest.raises(ConfigError, match=r"sharing\.mps"):
            serve(tmp_path, capability, replicas)


def test_gpus_before_volta_are_refused(tmp_path: Path) -> None:
    # Beyond NVIDIA's table: NVIDIA serves a Pascal GPU (6.0) 16 MPS clients without per-client limits;
    # kgpu refuses it in one line (its MPS replicas carry per-client memory and SM limits, which need Volta)
    with pytest.raises(ConfigError, match=r"need Volta"):
        serve(tmp_path, (6, 0), 2)
