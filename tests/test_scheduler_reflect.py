"""The extender's reflector: a list, then a watch from it; any failure starts over from a fresh list."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx2
from lightkube.resources.core_v1 import Pod
from scheduler_helpers import gpu_pod

from kgpu.scheduler.kube import reflect


class _Obj:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        return self.data


class _Listing(list[_Obj]):
    resourceVersion = "100"


class ScriptedClient:
    """Answers list and watch from a script: each watch yields its events, then fails or ends the test."""

    def __init__(self, lists: list[list[dict[str, Any]]], watches: list[list[tuple[str, dict[str, Any]] | Exception]],
                 stop: threading.Event) -> None:
        self.lists, self.watches, self.stop = lists, watches, stop
        self.watched_from: list[str | None] = []

    def list(self, resource: type, chunk_size: int | None = None, namespace: str | None = None) -> _Listing:
        assert namespace == "*", "pods of every namespace"
        if not self.lists:
            self.stop.set()  # the script is over
            return _Listing()
        return _Listing(_Obj(p) for p in self.lists.pop(0))

    def watch(self, resource: type, resource_version: str | None = None,
              namespace: str | None = None) -> Iterator[tuple[str, _Obj]]:
        assert namespace == "*", "pods of every namespace"
        self.watched_from.append(resource_version)
        if not self.watches:
            self.stop.set()
            return
        for item in self.watches.pop(0):
            if isinstance(item, Exception):
                raise item
            yield item[0], _Obj(item[1])


def test_events_follow_the_list_and_a_broken_watch_relists() -> None:
    a, b, c = gpu_pod("a"), gpu_pod("b"), gpu_pod("c")
    stop = threading.Event()
    gone = httpx2.RemoteProtocolError("peer closed connection")
    client = ScriptedClient(lists=[[a], [a, c]],
                            watches=[[("ADDED", b), ("DELETED", a), gone], [("MODIFIED", c)]], stop=stop)
    seen: list[str] = []
    reflect(client, Pod,
            replace=lambda items: seen.append("list:" + ",".join(p["metadata"]["name"] for p in items)),
            upsert=lambda p: seen.append("upsert:" + p["metadata"]["name"]),
            delete=lambda p: seen.append("delete:" + p["metadata"]["name"]),
            stop=stop)
    assert seen == ["list:a", "upsert:b", "delete:a", "list:a,c", "upsert:c"]
    assert client.watched_from == ["100", "100"]
