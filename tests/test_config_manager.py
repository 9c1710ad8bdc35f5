"""`kgpu config-manager`: the node label picks one of the ConfigMap's named configs, as NVIDIA's does."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Node

from kgpu.configmanager import (
    ConfigManager,
    Inputs,
    ManagerSettings,
    apply_label,
    available_configs,
    choose_config,
    find_process,
    follow_configmap,
    follow_label,
    oneshot,
    parse_config_map,
    point_at,
    resolve_manager_settings,
)
from kgpu.errors import ConfigError

LABEL = "nvidia.com/device-plugin.config"


def configmap_mount(directory: Path, configs: dict[str, str]) -> Path:
    """A ConfigMap volume as the kubelet lays it out: files in a timestamped dir, ..data -> it, names -> ..data/."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / f"..{time.monotonic_ns()}"
    stamp.mkdir()
    for name, text in configs.items():
        (stamp / name).write_text(text)
    new = directory / "..data_tmp"
    new.symlink_to(stamp.name)
    os.replace(new, directory / "..data")
    for name in configs:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")
    return directory


def settings(tmp_path: Path, **extra: Any) -> ManagerSettings:
    return ManagerSettings(node_name="gpu-node-1", config_file_srcdir=tmp_path / "available",
                           config_file_dst=tmp_path / "config" / "config.yaml", **{"send_signal": False, **extra})


@pytest.mark.parametrize(
    ("label", "files", "default", "fallbacks", "expected"),
    [
        ("ts4", ["default", "ts4"], "", [], "ts4"),  # the label names a config
        ("", ["default", "ts4"], "ts4", [], "ts4"),  # no label: the default
        ("", ["default", "ts4"], "", ["named"], "default"),  # the config called default
        ("", ["ts4"], "", ["named", "single"], "ts4"),  # no 'default': the only config there is
        ("", ["a", "b"], "", ["named", "single", "empty"], ""),  # nothing fits: the empty config
        ("nope", ["default"], "", ["named"], None),  # an unknown name is an error, never a fallback
        ("", ["default"], "nope", ["named"], None),  # so is an unknown default
        ("", ["a", "b"], "", ["named", "single"], None),  # every fallback failed
        ("", [], "", ["empty"], None),  # no configuration files available
    ],
)
def test_the_config_is_chosen_by_nvidias_rules(label: str, files: list[str], default: str, fallbacks: list[str],
                                                expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ConfigError):
            choose_config(label, files, default, fallbacks)
    else:
        assert choose_config(label, files, default, fallbacks) == expected


def test_a_mounted_configmap_lists_its_configs_and_not_its_bookkeeping(tmp_path: Path) -> None:
    mount = configmap_mount(tmp_path / "available", {"default": "version: v1\n", "ts4": "version: v1\n"})
    assert available_configs(mount) == ["default", "ts4"]


def test_the_destination_is_swapped_atomically_and_follows_configmap_edits(tmp_path: Path) -> None:
    mount = configmap_mount(tmp_path / "available", {"default": "a: 1\n", "ts4": "b: 2\n"})
    dst = tmp_path / "config" / "config.yaml"
    dst.parent.mkdir()
    assert point_at(dst, mount / "default") is True
    assert dst.read_text() == "a: 1\n"
    assert point_at(dst, mount / "default") is False  # already configured: nothing touched
    assert point_at(dst, mount / "ts4") is True and dst.read_text() == "b: 2\n"
    assert [p.name for p in dst.parent.iterdir()] == ["config.yaml"]  # no temporary link left behind
    # An admin edits the ConfigMap: the kubelet swaps ..data, and the daemons' file changes with it.
    configmap_mount(mount, {"default": "a: 1\n", "ts4": "b: 3\n"})
    assert dst.read_text() == "b: 3\n"
    assert point_at(dst, mount / "ts4") is False


def test_the_empty_config_is_dev_null(tmp_path: Path) -> None:
    configmap_mount(tmp_path / "available", {"a": "x: 1\n", "b": "x: 2\n"})
    s = settings(tmp_path, fallback_strategies=("empty",))
    s.config_file_dst.parent.mkdir()
    assert apply_label(s, "") is True
    assert os.readlink(s.config_file_dst) == "/dev/null" and s.config_file_dst.read_text() == ""


def test_after_a_change_the_named_process_gets_the_signal(tmp_path: Path) -> None:
    configmap_mount(tmp_path / "available", {"default": "x: 1\n"})
    s = settings(tmp_path, send_signal=True, process_to_signal=sys.executable)
    s.config_file_dst.parent.mkdir()
    sent: list[tuple[int, int]] = []
    assert apply_label(s, "default", send=lambda pid, sig: sent.append((pid, sig))) is True
    assert sent and sent[0][1] == 1  # SIGHUP, to a process whose argv[0] is this interpreter
    assert apply_label(s, "default", send=lambda pid, sig: sent.append((pid, sig))) is False
    assert len(sent) == 1  # no change, no signal
    with pytest.raises(ConfigError, match="no process 'no-such-process' to signal"):
        find_process("no-such-process")


def test_an_unknown_name_keeps_the_previous_config_and_is_tried_again(tmp_path: Path) -> None:
    mount = configmap_mount(tmp_path / "available", {"default": "x: 1\n", "ts4": "x: 2\n"})
    s = settings(tmp_path)
    s.config_file_dst.parent.mkdir()
    value = Inputs()
    manager = ConfigManager(s, value)
    value.set_label("ts4")
    manager.tick()
    assert s.config_file_dst.read_text() == "x: 2\n"
    value.set_label("mps")  # not (yet) in the ConfigMap
    with pytest.raises(ConfigError, match="specified config mps does not exist"):
        manager.tick()
    assert s.config_file_dst.read_text() == "x: 2\n"
    with pytest.raises(ConfigError):
        manager.tick()  # still wanted, still refused: the supervisor reports it, the health says so
    configmap_mount(mount, {"default": "x: 1\n", "ts4": "x: 2\n", "mps": "x: 3\n"})
    manager.tick()  # the ConfigMap gained it
    assert s.config_file_dst.read_text() == "x: 3\n"


class FakeNodes:
    """A client for one Node: get returns its labels, watch yields what the test puts in ``events``."""

    def __init__(self, labels: dict[str, str]) -> None:
        self.labels = labels
        self.events: queue.Queue[tuple[str, dict[str, str]] | None] = queue.Queue()
        self.versions: list[str | None] = []

    def node(self, labels: dict[str, str]) -> Node:
        return Node(metadata=ObjectMeta(name="gpu-node-1", labels=labels, resourceVersion="7"))

    def get(self, res: type, name: str) -> Node:
        assert res is Node and name == "gpu-node-1"
        return self.node(self.labels)

    def watch(self, res: type, *, fields: dict[str, str], resource_version: str | None) -> Iterator[tuple[str, Node]]:
        assert fields == {"metadata.name": "gpu-node-1"}
        self.versions.append(resource_version)
        while (item := self.events.get()) is not None:
            yield item[0], self.node(item[1])


def test_label_changes_reach_the_config_file(tmp_path: Path) -> None:
    configmap_mount(tmp_path / "available", {"default": "x: 1\n", "ts4": "x: 2\n"})
    s = settings(tmp_path, default_config="default")
    s.config_file_dst.parent.mkdir()
    client = FakeNodes({})
    value = Inputs()
    manager = ConfigManager(s, value)
    stop = threading.Event()
    follower = threading.Thread(target=follow_label, args=(client, s, value, stop), daemon=True)
    follower.start()
    try:
        manager.tick()  # no label: the default
        assert s.config_file_dst.read_text() == "x: 1\n"
        client.events.put(("MODIFIED", {LABEL: "ts4"}))
        deadline = time.monotonic() + 10
        while s.config_file_dst.read_text() != "x: 2\n":
            assert time.monotonic() < deadline
            manager.tick()
        assert client.versions == ["7"]  # the watch starts where the get left off
        client.events.put(("MODIFIED", {LABEL: ""}))  # the label removed: back to the default
        while s.config_file_dst.read_text() != "x: 1\n":
            assert time.monotonic() < deadline
            manager.tick()
    finally:
        stop.set()
        client.events.put(None)
        follower.join(5)


def test_flags_and_variables_are_nvidias(tmp_path: Path) -> None:
    env = {"NODE_NAME": "n1", "CONFIG_FILE_SRCDIR": "/available", "CONFIG_FILE_DST": "/config/config.yaml",
           "FALLBACK_STRATEGIES": "named,single", "SEND_SIGNAL": "false", "ONESHOT": "true"}
    s = resolve_manager_settings({}, env)
    assert (s.node_name, s.node_label, s.fallback_strategies, s.send_signal, s.oneshot, s.signal) == (
        "n1", LABEL, ("named", "single"), False, True, 1)
    assert resolve_manager_settings({"default-config": "ts4", "send-signal": "true"}, env).default_config == "ts4"
    with pytest.raises(ConfigError, match=r"invalid <node-name>: must not be empty string"):
        resolve_manager_settings({}, {k: v for k, v in env.items() if k != "NODE_NAME"})
    with pytest.raises(ConfigError, match="'nope' is not one of named, single, empty"):
        resolve_manager_settings({"fallback-strategies": "nope"}, env)


def test_a_missing_flag_is_one_line_and_a_non_zero_exit() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("NODE_NAME", "CONFIG_FILE_SRCDIR", "CONFIG_FILE_DST")}
    proc = subprocess.run([sys.executable, "-m", "kgpu", "config-manager", "--config-file-dst", "/tmp/x"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "kgpu: error: invalid <node-name>: must not be empty string (--node-name)"


# ---- kgpu's --config-map: the configs read through the API server, an edit written within a second ----

class FakeApi:
    """A client for one ConfigMap (and one Node): get returns them, watch yields what the test puts in the queues."""

    def __init__(self, configs: dict[str, str], labels: dict[str, str] | None = None) -> None:
        self.configs = configs
        self.labels = labels or {}
        self.events: dict[type, queue.Queue[tuple[str, Any] | None]] = {ConfigMap: queue.Queue(), Node: queue.Queue()}
        self.down = False

    def get(self, res: type, name: str, namespace: str | None = None) -> Any:
        if self.down:
            raise OSError(111, "Connection refused")
        if res is ConfigMap:
            assert (namespace, name) == ("kube-system", "kgpu-config")
            return ConfigMap(metadata=ObjectMeta(name=name, resourceVersion="3"), data=dict(self.configs))
        assert res is Node and namespace is None
        return Node(metadata=ObjectMeta(name=name, labels=self.labels, resourceVersion="7"))

    def watch(self, res: type, *, fields: dict[str, str], resource_version: str | None,
              namespace: str | None = None) -> Iterator[tuple[str, Any]]:
        while (item := self.events[res].get()) is not None:
            yield item

    def stop(self) -> None:
        for q in self.events.values():
            q.put(None)


def api_settings(tmp_path: Path, **extra: Any) -> ManagerSettings:
    s = settings(tmp_path, config_map=("kube-system", "kgpu-config"), **{"node_label": "",
                                                                        "default_config": "config.yaml", **extra})
    s.config_file_dst.parent.mkdir()
    return s


def tick_until(manager: ConfigManager, done: Any) -> None:
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline
        manager.tick()


def test_a_configmap_edit_is_written_to_the_daemons_file_without_waiting_for_the_kubelet(tmp_path: Path) -> None:
    # Given the chart's sidecar without configManager.enabled: one config, no node label followed.
    s = api_settings(tmp_path)
    api = FakeApi({"config.yaml": "version: v1\n"})
    inputs = Inputs()
    inputs.set_label("")
    manager = ConfigManager(s, inputs)
    stop = threading.Event()
    follower = threading.Thread(target=follow_configmap, args=(api, s, inputs, stop), daemon=True)
    follower.start()
    try:
        tick_until(manager, lambda: s.config_file_dst.exists())
        assert s.config_file_dst.read_text() == "version: v1\n" and not s.config_file_dst.is_symlink()
        # When an admin edits the ConfigMap, then the watch brings it and the file is replaced.
        shared = "version: v1\nsharing: {timeSlicing: {resources: [{name: nvidia.com/gpu, replicas: 2}]}}\n"
        api.events[ConfigMap].put(("MODIFIED", ConfigMap(metadata=ObjectMeta(name="kgpu-config"),
                                                         data={"config.yaml": shared})))
        tick_until(manager, lambda: s.config_file_dst.read_text() == shared)
        assert [p.name for p in s.config_file_dst.parent.iterdir()] == ["config.yaml"]  # no temporary file left
        # A deleted ConfigMap is no config: refused, the one in force stays.
        api.events[ConfigMap].put(("DELETED", ConfigMap(metadata=ObjectMeta(name="kgpu-config"))))
        with pytest.raises(ConfigError, match="no configuration files available"):
            tick_until(manager, lambda: False)
        assert s.config_file_dst.read_text() == shared
    finally:
        stop.set()
        api.stop()
        follower.join(5)


def test_with_the_label_an_edit_of_the_chosen_config_is_written_and_of_another_one_is_not(tmp_path: Path) -> None:
    s = api_settings(tmp_path, node_label=LABEL, default_config="default")
    inputs = Inputs()
    manager = ConfigManager(s, inputs)
    inputs.set_configs({"default": "x: 1\n", "ts4": "x: 4\n"})
    inputs.set_label("ts4")
    manager.tick()
    assert s.config_file_dst.read_text() == "x: 4\n"
    before = s.config_file_dst.stat().st_ino
    inputs.set_configs({"default": "x: 0\n", "ts4": "x: 4\n"})
    manager.tick()
    assert s.config_file_dst.stat().st_ino == before  # another config edited: the file is not rewritten
    inputs.set_configs({"default": "x: 0\n", "ts4": "x: 5\n"})
    manager.tick()
    assert s.config_file_dst.read_text() == "x: 5\n"
    inputs.set_label("")  # label removed: the default config
    manager.tick()
    assert s.config_file_dst.read_text() == "x: 0\n"


def test_an_init_container_without_the_api_server_uses_the_mounted_copy_unless_it_needs_the_label(
        tmp_path: Path) -> None:
    configmap_mount(tmp_path / "available", {"config.yaml": "x: mounted\n"})
    s = api_settings(tmp_path, oneshot=True)
    api = FakeApi({"config.yaml": "x: api\n"})
    oneshot(s, api)
    assert s.config_file_dst.read_text() == "x: api\n"
    api.down = True
    s.config_file_dst.unlink()
    oneshot(s, api)
    assert s.config_file_dst.read_text() == "x: mounted\n"
    # With configManager.enabled the node label decides, which only the API server says: no guess.
    labelled = ManagerSettings(**{**{f: getattr(s, f) for f in s.__slots__}, "node_label": LABEL})
    with pytest.raises(OSError):
        oneshot(labelled, api)


def test_config_map_names_a_namespace_or_takes_the_pods(tmp_path: Path) -> None:
    assert parse_config_map("kube-system/kgpu-config", {}) == ("kube-system", "kgpu-config")
    assert parse_config_map("kgpu-config", {"POD_NAMESPACE": "gpu"}) == ("gpu", "kgpu-config")
    (tmp_path / "namespace").write_text("ops\n")
    assert parse_config_map("kgpu-config", {}, tmp_path / "namespace") == ("ops", "kgpu-config")
    with pytest.raises(ConfigError, match="give NAMESPACE/NAME"):
        parse_config_map("kgpu-config", {}, tmp_path / "none")
    with pytest.raises(ConfigError, match="expected NAMESPACE/NAME or NAME"):
        parse_config_map("a/b/c", {})


def test_an_empty_node_label_is_kgpus_no_label_only_with_config_map() -> None:
    env = {"NODE_NAME": "n1", "CONFIG_FILE_DST": "/config/config.yaml", "KGPU_CONFIG_MAP": "kube-system/kgpu-config"}
    s = resolve_manager_settings({"node-label": ""}, env)
    assert (s.node_label, s.config_map, str(s.config_file_srcdir)) == ("", ("kube-system", "kgpu-config"), ".")
    with pytest.raises(ConfigError, match=r"invalid <node-label>: must not be empty string"):
        resolve_manager_settings({"node-label": "", "config-file-srcdir": "/available"},
                                 {k: v for k, v in env.items() if k != "KGPU_CONFIG_MAP"})


def test_a_failing_api_server_is_read_again(tmp_path: Path) -> None:
    s = api_settings(tmp_path)
    api = FakeApi({"config.yaml": "x: 1\n"})
    calls: list[int] = []
    real_get = api.get

    def flaky(res: type, name: str, namespace: str | None = None) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise ApiError.__new__(ApiError)  # e.g. 403 before the RoleBinding exists
        return real_get(res, name, namespace)

    api.get = flaky  # type: ignore[method-assign]
    inputs = Inputs()
    stop = threading.Event()
    follower = threading.Thread(target=follow_configmap, args=(api, s, inputs, stop), daemon=True)
    follower.start()
    try:
        got = None
        deadline = time.monotonic() + 10
        while got is None or got[1] is None:
            assert time.monotonic() < deadline
            got = inputs.take(timeout=1.0)
        assert got[1] == {"config.yaml": "x: 1\n"} and len(calls) == 2
    finally:
        stop.set()
        api.stop()
        follower.join(5)
