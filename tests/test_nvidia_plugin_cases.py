"""NVIDIA's device-plugin server test cases (internal/plugin/server_test.go, v0.20), replayed against
kgpu's Allocate plan, case for case: what the device list strategy and the CDI annotation prefix put
in a container's response.

NVIDIA's tests name devices ``foo``/``bar``/``gpu0``/``gpu1`` through a mock; here they are the two GPUs
of the simulated ``mixed`` node, by UUID (deviceIDStrategy uuid).
"""

from __future__ import annotations

import re

import pytest
from dp_helpers import build_logic, node, plugin_config

from kgpu.container import AllocationError

MIXED = node("mixed")
GPU0, GPU1 = (g.uuid for g in MIXED.gpus)
KEY = r"nvidia-device-plugin_[0-9a-f-]{36}"  # NVIDIA's tests pass the response ID "uuid"; the plugin, a random UUID


# --- server_test.go: TestAllocate -----------------------------------------------------------------

@pytest.mark.parametrize(
    ("ids", "visible"),
    [
        pytest.param([GPU0], GPU0, id="single device"),
        pytest.param([GPU0, GPU1, GPU0], f"{GPU0},{GPU1}", id="duplicate device IDs"),
    ],
)
def test_allocate(ids: list[str], visible: str) -> None:
    logic = build_logic(MIXED, plugin_config(device_list_strategy="envvar", device_id_strategy="uuid"))
    response = logic.allocate("nvidia.com/gpu", ids)
    assert response.envs == {"NVIDIA_VISIBLE_DEVICES": visible}
    assert (response.annotations, response.mounts, response.cdi_devices) == ({}, (), ())


# --- server_test.go: TestCDIAllocateResponse ------------------------------------------------------

@pytest.mark.parametrize(
    ("ids", "prefix", "value"),
    [
        pytest.param([GPU0], "cdi.k8s.io/", f"nvidia.com/gpu={GPU0}", id="single device is added to annotations"),
        pytest.param([GPU0], "custom.cdi.k8s.io/", f"nvidia.com/gpu={GPU0}",
                     id="single device is added to annotations with custom prefix"),
        pytest.param([GPU0, GPU1], "cdi.k8s.io/", f"nvidia.com/gpu={GPU0},nvidia.com/gpu={GPU1}",
                     id="multiple devices are added to annotations"),
        pytest.param([GPU0, GPU1], "custom.cdi.k8s.io/", f"nvidia.com/gpu={GPU0},nvidia.com/gpu={GPU1}",
                     id="multiple devices are added to annotations with custom prefix"),
    ],
)
def test_cdi_allocate_response(ids: list[str], prefix: str, value: str) -> None:
    config = plugin_config(device_list_strategy="cdi-annotations", cdi_annotation_prefix=prefix)
    annotations = build_logic(MIXED, config).allocate("nvidia.com/gpu", ids).annotations
    ((key, got),) = annotations.items()
    assert re.fullmatch(re.escape(prefix) + KEY, key) and got == value


def test_an_empty_device_list_is_refused() -> None:
    # "empty device list has empty response": NVIDIA's helper answers nothing for no devices. The kubelet
    # never asks for none; kgpu refuses such a request in one line rather than answer an empty container.
    logic = build_logic(MIXED, plugin_config(device_list_strategy="cdi-annotations"))
    with pytest.raises(AllocationError, match="no device IDs"):
        logic.allocate("nvidia.com/gpu", [])


# Not replayed: "mofed devices are selected if configured", "gds devices are selected if configured",
# "gds and mofed devices are included with device ids" and "imex channel is included with devices".
# NVIDIA's plugin writes CDI specs for gds, mofed and imex-channel itself and names them in the
# annotation; kgpu's plugin writes no CDI spec (its CDI strategies name the node's nvidia.com/gpu spec,
# from kgpu cdi generate or nvidia-ctk), so it cannot name kinds no spec on the node defines. Under a
# CDI strategy kgpu sets NVIDIA_GDS/NVIDIA_MOFED=enabled (server.go does too) and leaves IMEX out.
