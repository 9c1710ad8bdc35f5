"""The Allocate request path: repeated requests, a device turning sick between two of them, the log line.

The path is kept cheap (a repeated request reuses its plan and its gRPC message, the log line is
built on the log writer's thread); these stories check that nothing the kubelet or the admin sees
changes because of that.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import grpc
import pytest

from kgpu.config.resolve import resolve_config
from kgpu.deviceplugin.api import deviceplugin_pb2 as pb
from kgpu.deviceplugin.health import HealthTracker
from kgpu.deviceplugin.logwriter import BatchingHandler
from kgpu.deviceplugin.resources import build_logic
from kgpu.deviceplugin.server import ResourcePlugin
from kgpu.gpu import HealthEvent, HealthEventKind, open_backend
from kgpu.log import JsonFormatter

EMPTY_HOST = Path("/nonexistent-host-root")


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
    logic = build_logic(inventory, resolve_config({"device-list-strategy": strategy}, {}), EMPTY_HOST)
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


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_each_allocation_is_one_structured_log_line_written_by_the_writer_thread() -> None:
    plugin, _, ids = plugin_for()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    lines = Lines()
    root.handlers[:] = [lines]
    root.setLevel(logging.INFO)
    try:
        batching = BatchingHandler.install(interval=60)  # only close() writes here
        allocate(plugin, ids[:2], ids[2:3])
        assert lines.lines == []  # nothing written, nothing formatted on the request path
        batching.close()
        assert root.handlers == [lines]  # the root logger's handlers are back
    finally:
        root.handlers[:], root.level = saved_handlers, saved_level
    allocated = [line for line in lines.lines if line.get("event") == "allocate"]
    assert [(a["msg"], a["level"], a["logger"], a["resource"], a["devices"]) for a in allocated] == [
        ("allocated", "info", "kgpu.deviceplugin", "nvidia.com/gpu", ids[:2]),
        ("allocated", "info", "kgpu.deviceplugin", "nvidia.com/gpu", ids[2:3]),
    ]
    assert all(a["ts"].endswith("Z") for a in allocated)


def test_without_a_writer_thread_the_line_is_logged_at_once(caplog: pytest.LogCaptureFixture) -> None:
    plugin, _, ids = plugin_for()
    with caplog.at_level(logging.INFO, logger="kgpu.deviceplugin"):
        allocate(plugin, ids[:1])
    (record,) = [r for r in caplog.records if getattr(r, "event", None) == "allocate"]
    assert (record.getMessage(), record.devices, record.resource) == ("allocated", ids[:1], "nvidia.com/gpu")  # type: ignore[attr-defined]
