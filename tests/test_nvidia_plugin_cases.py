"""NVIDIA's device-plugin server test cases (internal/plugin/server_test.go, v0.20), replayed against
kgpu's Allocate plan, case for case: what the device list strategy and the CDI annotation prefix put
in a container's response.

NVIDIA's tests name devices ``foo``/``bar``/``gpu0``/``gpu1`` through a mock; here they are the two GPUs
of the simulated ``mixed`` node, by UUID (deviceIDStrategy uuid).
"""

from __future__ import annotations

import re
from pathlib import Path

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


# The four cases with GDS, MOFED and IMEX channels. NVIDIA's mofed-only, gds-only and imex-only cases have no device
# IDs (its helper is called alone); the kubelet always asks for one, so here GPU0 comes first, as NVIDIA's own
# "gds and mofed devices are included with device ids" case orders them: GPUs, IMEX channels, GDS, MOFED.

@pytest.mark.parametrize(
    ("flags", "imex", "value"),
    [
        pytest.param({"mofed_enabled": True}, False, f"nvidia.com/gpu={GPU0},nvidia.com/mofed=all",
                     id="mofed devices are selected if configured"),
        pytest.param({"gds_enabled": True}, False, f"nvidia.com/gpu={GPU0},nvidia.com/gds=all",
                     id="gds devices are selected if configured"),
        pytest.param({"gds_enabled": True, "mofed_enabled": True}, False,
                     f"nvidia.com/gpu={GPU0},nvidia.com/gds=all,nvidia.com/mofed=all",
                     id="gds and mofed devices are included with device ids"),
        pytest.param({}, True, f"nvidia.com/gpu={GPU0},nvidia.com/imex-channel=0",
                     id="imex channel is included with devices"),
    ],
)
def test_cdi_allocate_response_names_gds_mofed_and_imex_channels(flags: dict[str, bool], imex: bool, value: str,
                                                                 tmp_path: Path) -> None:
    # Given a node with IMEX channel 0 and imex.channelIDs [0] (NVIDIA's imexChannels [{ID: "0"}]), or not:
    host = tmp_path / "host"
    (host / "dev/nvidia-caps-imex-channels").mkdir(parents=True)
    (host / "dev/nvidia-caps-imex-channels/channel0").touch()
    text = "version: v1\nimex:\n  channelIDs: [0]\n" if imex else "version: v1\n"
    config = plugin_config(tmp_path, text, device_list_strategy="cdi-annotations", **flags)
    # when the kubelet allocates GPU0, the one CDI annotation names them all, in NVIDIA's order.
    annotations = build_logic(MIXED, config, host).allocate("nvidia.com/gpu", [GPU0]).annotations
    ((key, got),) = annotations.items()
    assert re.fullmatch(r"cdi\.k8s\.io/" + KEY, key) and got == value
