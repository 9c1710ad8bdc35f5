"""The Allocate request path: repeated requests, a device turning sick between two of them, the log line."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest
from dp_helpers import build_logic

from kgpu.config.resolve import resolve_config
from kgpu.deviceplugin.api import deviceplugin_pb2 as pb
from kgpu.deviceplugin.health import HealthTracker
from kgpu.deviceplugin.service import ResourcePlugin
from kgpu.gpu import HealthEvent, HealthEventKind, open_backend


class Aborted(Exception):
    def __init__(self, code: Any, details: str) -> None:
        super().__init__(details)
        self.code = code


class Context:
    """What a gRPC handler gets: abort raises, as grpc's own context does."""

    def abort(self, code: Any, details: str) -> None:
        raise Aborted(code, details)


def plugin_for(strategy: str = "envvar") -> tuple[ResourcePlugin, HealthTracker, list[str]]:
    backend = open_backend(simulate="h100x8")
    inventory = backend.inventory()
    backend.close()
    logic = build_logic(inventory, resolve_config({"device-list-strategy": strategy}, {}))
    tracker = HealthTracker()
    resource = logic.resources()[0]
    return ResourcePlugin(resource, logic, tracker), tracker, [d.id for d in resource.devices]


def allocate(plugin: ResourcePlugin, *containers: list[str]) -> pb.AllocateResponse:
    request = pb.AllocateRequest()
    for ids in containers:
        request.container_requests.add(devices_ids=ids)
    return plugin.Allocate(request, Context())


def test_a_repeated_request_gets_the_same_answer_and_other_requests_their_own() -> None:
    plugin, _, ids = plugin_for()
    first = allocate(plugin, ids[:2])
    again = allocate(plugin, ids[:2])
    other = allocate(plugin, ids[2:3], ids[:2])
    assert again == first
    assert first.container_responses[0].envs == {"NVIDIA_VISIBLE_DEVICES": f"{ids[0]},{ids[1]}"}
    assert [dict(c.envs) for c in other.container_responses] == [
        {"NVIDIA_VISIBLE_DEVICES": ids[2]}, {"NVIDIA_VISIBLE_DEVICES": f"{ids[0]},{ids[1]}"},
    ]


def test_a_response_the_kubelet_holds_is_its_own_copy() -> None:
    plugin, _, ids = plugin_for()
    held = allocate(plugin, ids[:1])
    held.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] = "changed by the caller"
    assert allocate(plugin, ids[:1]).container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == ids[0]


def test_a_device_that_turns_unhealthy_is_refused_even_for_a_request_answered_before() -> None:
    plugin, tracker, ids = plugin_for()
    allocate(plugin, ids[:2])
    tracker.handle_event(HealthEvent(ids[1], HealthEventKind.XID, xid=79))
    with pytest.raises(Aborted) as refused:
        allocate(plugin, ids[:2])
    assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert f"{ids[1]} ({ids[1]}: XID 79)" in str(refused.value)
    assert allocate(plugin, ids[:1]).container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == ids[0]
    tracker.handle_event(HealthEvent(ids[1], HealthEventKind.RECOVERED))
    assert tracker.all_healthy
    assert allocate(plugin, ids[:2]).container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"] == f"{ids[0]},{ids[1]}"


def test_cdi_annotations_name_a_fresh_response_every_time() -> None:
    plugin, _, ids = plugin_for("cdi-annotations")
    keys = [set(allocate(plugin, ids[:1]).container_responses[0].annotations) for _ in range(2)]
    assert keys[0] != keys[1]


def test_each_allocation_is_one_structured_log_line(caplog: pytest.LogCaptureFixture) -> None:
    plugin, _, ids = plugin_for()
    with caplog.at_level(logging.INFO, logger="kgpu.deviceplugin"):
        allocate(plugin, ids[:1])
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "allocate"]
    assert (record.getMessage(), record.devices, record.resource) == ("allocated", ids[:1], "nvidia.com/gpu")  # type: ignore[attr-defined]
