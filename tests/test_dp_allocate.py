"""When the kubelet allocates device IDs, what does the container get under each device list strategy?"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dp_helpers import EMPTY_HOST, build_logic, node
from dp_helpers import plugin_config as cfg

from kgpu.config.resolve import resolve_config
from kgpu.container import AllocationError, DeviceNode, Mount
from kgpu.deviceplugin.hostfacts import NoDriverFiles
from kgpu.errors import ConfigError

VERSION = "580.95.05"


def make_dev(root: Path, *names: str) -> None:
    for name in names:
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")


H100 = node("h100x8")
UUIDS = [g.uuid for g in H100.gpus]


# --- envvar ----------------------------------------------------------------------------------------


def test_envvar_lists_the_uuids_and_nothing_else() -> None:
    logic = build_logic(H100, cfg(), EMPTY_HOST)
    alloc = logic.allocate("nvidia.com/gpu", [UUIDS[3], UUIDS[1]])
    assert dict(alloc.envs) == {"NVIDIA_VISIBLE_DEVICES": f"{UUIDS[3]},{UUIDS[1]}"}
    assert alloc.mounts == () and alloc.devices == () and dict(alloc.annotations) == {} and alloc.cdi_devices == ()


def test_index_strategy_names_gpus_by_index_while_the_kubelet_keeps_uuids() -> None:
    logic = build_logic(H100, cfg(device_id_strategy="index"), EMPTY_HOST)
    assert [d.id for d in logic.resources()[0].devices] == UUIDS
    alloc = logic.allocate("nvidia.com/gpu", [UUIDS[0], UUIDS[5]])
    assert alloc.envs["NVIDIA_VISIBLE_DEVICES"] == "0,5"


def test_index_strategy_names_mig_devices_gpu_colon_mig() -> None:
    inv = node("a100-mig")
    logic = build_logic(inv, cfg(mig_strategy="mixed", device_id_strategy="index"), EMPTY_HOST)
    small = [m.uuid for m in inv.gpus[0].mig_devices if m.profile == "1g.10gb"]
    assert logic.allocate("nvidia.com/mig-1g.10gb", small).envs["NVIDIA_VISIBLE_DEVICES"] == "0:2,0:3"
    uuid_logic = build_logic(inv, cfg(mig_strategy="mixed"), EMPTY_HOST)
    assert uuid_logic.allocate("nvidia.com/mig-1g.10gb", small[:1]).envs["NVIDIA_VISIBLE_DEVICES"] == small[0]


def test_replicas_map_back_to_their_gpu_listed_once(tmp_path: Path) -> None:
    config = cfg(tmp_path, "sharing: {timeSlicing: {resources: [{name: gpu, replicas: 4}]}}")
    logic = build_logic(H100, config, EMPTY_HOST)
    alloc = logic.allocate("nvidia.com/gpu", [f"{UUIDS[2]}::0", f"{UUIDS[2]}::3", f"{UUIDS[6]}::1"])
    assert alloc.envs["NVIDIA_VISIBLE_DEVICES"] == f"{UUIDS[2]},{UUIDS[6]}"
    index_logic = build_logic(H100, cfg(tmp_path, config_text(tmp_path), device_id_strategy="index"), EMPTY_HOST)
    assert index_logic.allocate("nvidia.com/gpu", [f"{UUIDS[2]}::1"]).envs["NVIDIA_VISIBLE_DEVICES"] == "2"


def config_text(tmp_path: Path) -> str:
    return (tmp_path / "config.yaml").read_text()


# --- failRequestsGreaterThanOne and bad requests ----------------------------------------------------


def test_fail_requests_greater_than_one_refuses_two_replicas_with_an_admin_message(tmp_path: Path) -> None:
    text = "sharing: {timeSlicing: {renameByDefault: true, failRequestsGreaterThanOne: true, " \
           "resources: [{name: gpu, replicas: 2}]}}"
    logic = build_logic(H100, cfg(tmp_path, text), EMPTY_HOST)
    ok = logic.allocate("nvidia.com/gpu.shared", [f"{UUIDS[0]}::1"])
    assert ok.envs["NVIDIA_VISIBLE_DEVICES"] == UUIDS[0]
    with pytest.raises(AllocationError) as exc:
        logic.allocate("nvidia.com/gpu.shared", [f"{UUIDS[0]}::0", f"{UUIDS[1]}::0"])
    message = str(exc.value)
    assert "2 nvidia.com/gpu.shared" in message and "at most 1" in message
    assert "failRequestsGreaterThanOne" in message


def test_without_the_flag_several_replicas_are_fine(tmp_path: Path) -> None:
    logic = build_logic(H100, cfg(tmp_path, "sharing: {timeSlicing: {resources: [{name: gpu, replicas: 2}]}}"),
                        EMPTY_HOST)
    alloc = logic.allocate("nvidia.com/gpu", [f"{UUIDS[0]}::0", f"{UUIDS[1]}::0"])
    assert alloc.envs["NVIDIA_VISIBLE_DEVICES"] == f"{UUIDS[0]},{UUIDS[1]}"


def test_unknown_ids_and_resources_are_refused_never_silently_allocated() -> None:
    logic = build_logic(H100, cfg(), EMPTY_HOST)
    with pytest.raises(AllocationError, match="unknown device 'GPU-deadbeef'"):
        logic.allocate("nvidia.com/gpu", [UUIDS[0], "GPU-deadbeef"])
    with pytest.raises(AllocationError, match="unknown device"):
        logic.allocate("nvidia.com/gpu", [f"{UUIDS[0]}::0"])  # not shared on this node
    with pytest.raises(AllocationError, match="not served by this plugin"):
        logic.allocate("nvidia.com/mig-1g.10gb", [UUIDS[0]])
    with pytest.raises(AllocationError, match="no device IDs"):
        logic.allocate("nvidia.com/gpu", [])


# --- volume-mounts, CDI -----------------------------------------------------------------------------


def test_volume_mounts_mount_dev_null_per_device_as_nvidia_does() -> None:
    logic = build_logic(H100, cfg(device_list_strategy="volume-mounts"), EMPTY_HOST)
    alloc = logic.allocate("nvidia.com/gpu", UUIDS[:2])
    assert dict(alloc.envs) == {"NVIDIA_VISIBLE_DEVICES": "/var/run/nvidia-container-devices"}
    assert alloc.mounts == tuple(
        Mount(container_path=f"/var/run/nvidia-container-devices/{u}", host_path="/dev/null", read_only=False)
        for u in UUIDS[:2]
    )


def test_envvar_and_volume_mounts_together_leave_the_directory_in_the_env() -> None:
    logic = build_logic(H100, cfg(device_list_strategy="envvar,volume-mounts"), EMPTY_HOST)
    alloc = logic.allocate("nvidia.com/gpu", UUIDS[:1])
    assert alloc.envs["NVIDIA_VISIBLE_DEVICES"] == "/var/run/nvidia-container-devices"
    assert len(alloc.mounts) == 1


def test_cdi_annotations_name_nvidia_com_gpu_devices_under_a_unique_key() -> None:
    logic = build_logic(H100, cfg(device_list_strategy="cdi-annotations"), EMPTY_HOST)
    alloc = logic.allocate("nvidia.com/gpu", UUIDS[:2])
    ((key, value),) = alloc.annotations.items()
    uuid4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}"
    assert re.fullmatch(rf"cdi\.k8s\.io/nvidia-device-plugin_{uuid4}", key)
    assert value == f"nvidia.com/gpu={UUIDS[0]},nvidia.com/gpu={UUIDS[1]}"
    # Only CDI strategies: NVIDIA adds no env, mounts or device specs.
    assert dict(alloc.envs) == {} and alloc.mounts == () and alloc.devices == ()
    second = logic.allocate("nvidia.com/gpu", UUIDS[:2])
    assert set(second.annotations) != set(alloc.annotations)  # one key per response


def test_cdi_annotation_prefix_is_configurable() -> None:
    logic = build_logic(H100, cfg(device_list_strategy="cdi-annotations", cdi_annotation_prefix="cdi.example.com/"),
                        EMPTY_HOST)
    (key,) = logic.allocate("nvidia.com/gpu", UUIDS[:1]).annotations
    assert key.startswith("cdi.example.com/nvidia-device-plugin_")


def test_cdi_cri_fills_the_cdi_devices_field_with_index_names() -> None:
    logic = build_logic(H100, cfg(device_list_strategy="cdi-cri", device_id_strategy="index"), EMPTY_HOST)
    alloc = logic.allocate("nvidia.com/gpu", [UUIDS[4], UUIDS[7]])
    assert alloc.cdi_devices == ("nvidia.com/gpu=4", "nvidia.com/gpu=7")
    assert dict(alloc.annotations) == {} and dict(alloc.envs) == {}


def test_cdi_with_envvar_gives_both() -> None:
    logic = build_logic(H100, cfg(device_list_strategy="envvar,cdi-cri"), EMPTY_HOST)
    alloc = logic.allocate("nvidia.com/gpu", UUIDS[:1])
    assert alloc.cdi_devices == (f"nvidia.com/gpu={UUIDS[0]}",)
    assert alloc.envs["NVIDIA_VISIBLE_DEVICES"] == UUIDS[0]


# --- device specs -----------------------------------------------------------------------------------


def test_pass_device_specs_gives_gpu_and_existing_control_nodes(tmp_path: Path) -> None:
    make_dev(tmp_path, "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia3", "/dev/nvidia5")
    logic = build_logic(H100, cfg(pass_device_specs=True), tmp_path)
    alloc = logic.allocate("nvidia.com/gpu", [UUIDS[3], UUIDS[5]])
    assert alloc.devices == tuple(
        DeviceNode(p, p, "rw")
        for p in ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia3", "/dev/nvidia5")
    )
    assert alloc.envs["NVIDIA_VISIBLE_DEVICES"] == f"{UUIDS[3]},{UUIDS[5]}"


def test_device_spec_host_paths_are_under_a_driver_container_root(tmp_path: Path) -> None:
    make_dev(tmp_path, "/run/nvidia/driver/dev/nvidiactl", "/run/nvidia/driver/dev/nvidia-modeset")
    logic = build_logic(H100, cfg(pass_device_specs=True, nvidia_driver_root="/run/nvidia/driver"), tmp_path)
    alloc = logic.allocate("nvidia.com/gpu", [UUIDS[0]])
    assert [(d.container_path, d.host_path) for d in alloc.devices] == [
        ("/dev/nvidiactl", "/run/nvidia/driver/dev/nvidiactl"),
        ("/dev/nvidia-modeset", "/run/nvidia/driver/dev/nvidia-modeset"),
        ("/dev/nvidia0", "/run/nvidia/driver/dev/nvidia0"),
    ]


def test_mig_device_specs_include_the_capability_nodes(tmp_path: Path) -> None:
    inv = node("a100-mig")
    make_dev(tmp_path, "/dev/nvidiactl")
    (tmp_path / "proc/driver/nvidia-caps").mkdir(parents=True)
    (tmp_path / "proc/driver/nvidia-caps/mig-minors").write_text(
        "config 1\nmonitor 2\ngpu0/gi9/access 84\ngpu0/gi9/ci0/access 85\n"
        "gpu0/gi10/access 93\ngpu0/gi10/ci0/access 94\n"
    )
    logic = build_logic(inv, cfg(mig_strategy="mixed", pass_device_specs=True), tmp_path)
    mig = inv.gpus[0].mig_devices[3]  # 1g.10gb, GPU instance 10
    alloc = logic.allocate("nvidia.com/mig-1g.10gb", [mig.uuid])
    assert [d.container_path for d in alloc.devices] == [
        "/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia-caps/nvidia-cap93", "/dev/nvidia-caps/nvidia-cap94"
    ]


def test_replicas_of_one_gpu_give_its_device_node_once(tmp_path: Path) -> None:
    text = "sharing: {timeSlicing: {resources: [{name: gpu, replicas: 3}]}}"
    make_dev(tmp_path / "host", "/dev/nvidiactl")
    logic = build_logic(H100, cfg(tmp_path, text, pass_device_specs=True), tmp_path / "host")
    alloc = logic.allocate("nvidia.com/gpu", [f"{UUIDS[1]}::0", f"{UUIDS[1]}::2"])
    assert [d.container_path for d in alloc.devices] == ["/dev/nvidiactl", "/dev/nvidia1"]


def test_when_the_plugin_cannot_see_host_device_nodes_it_passes_the_required_ones_and_says_so() -> None:
    logic = build_logic(H100, cfg(pass_device_specs=True), EMPTY_HOST)
    alloc = logic.allocate("nvidia.com/gpu", [UUIDS[0]])
    assert [d.container_path for d in alloc.devices] == [
        "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia0"
    ]
    assert any("cannot see" in w and "nvidiactl" in w for w in logic.warnings)


def test_gdrcopy_gds_and_mofed_envs_whatever_the_list_strategy() -> None:
    # As NVIDIA's server.go sets them before it returns for an all-CDI strategy.
    for strategy in ("envvar", "cdi-cri"):
        config = resolve_config({"gds-enabled": True, "gdrcopy-enabled": "true", "device-list-strategy": strategy},
                                {"MOFED_ENABLED": "true"})
        alloc = build_logic(H100, config, EMPTY_HOST).allocate("nvidia.com/gpu", UUIDS[:1])
        assert {k: v for k, v in alloc.envs.items() if k.startswith(("NVIDIA_G", "NVIDIA_M"))} == {
            "NVIDIA_GDRCOPY": "enabled", "NVIDIA_GDS": "enabled", "NVIDIA_MOFED": "enabled"}, strategy
    assert "NVIDIA_GDRCOPY" not in build_logic(H100, resolve_config(), EMPTY_HOST).allocate(
        "nvidia.com/gpu", UUIDS[:1]).envs


# --- kgpu's driver-mounts ---------------------------------------------------------------------------


def lay_out_driver(host: Path, root: str = "/usr/local/nvidia") -> Path:
    base = host / root.lstrip("/")
    (base / "lib64").mkdir(parents=True)
    (base / "bin").mkdir(parents=True)
    for stem in ("libnvidia-ml.so", "libcuda.so", "libnvidia-ptxjitcompiler.so"):
        (base / "lib64" / f"{stem}.{VERSION}").write_bytes(b"\x7fELF")
        (base / "lib64" / f"{stem}.1").symlink_to(f"{stem}.{VERSION}")
    (base / "lib64" / "libcuda.so").symlink_to("libcuda.so.1")
    for name in ("nvidia-smi", "nvidia-cuda-mps-control"):
        (base / "bin" / name).write_text("#!/bin/sh\n")
    make_dev(host, "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
    return base


def test_driver_mounts_give_device_nodes_libraries_binaries_and_search_paths(tmp_path: Path) -> None:
    lay_out_driver(tmp_path)
    config = resolve_config({"device-list-strategy": "driver-mounts", "nvidia-driver-root": "/usr/local/nvidia"}, {})
    logic = build_logic(H100, config, tmp_path)
    assert logic.warnings == ()
    alloc = logic.allocate("nvidia.com/gpu", [UUIDS[2]])
    # The driver root has no dev/, so device nodes come from the host's /dev.
    assert [(d.container_path, d.host_path, d.permissions) for d in alloc.devices] == [
        ("/dev/nvidiactl", "/dev/nvidiactl", "rw"),
        ("/dev/nvidia-uvm", "/dev/nvidia-uvm", "rw"),
        ("/dev/nvidia-uvm-tools", "/dev/nvidia-uvm-tools", "rw"),
        ("/dev/nvidia2", "/dev/nvidia2", "rw"),
    ]
    mounts = {m.container_path: (m.host_path, m.read_only) for m in alloc.mounts}
    lib = "/usr/local/nvidia/lib64"
    assert mounts == {
        f"{lib}/libcuda.so.{VERSION}": (f"{lib}/libcuda.so.{VERSION}", True),
        f"{lib}/libnvidia-ml.so.{VERSION}": (f"{lib}/libnvidia-ml.so.{VERSION}", True),
        f"{lib}/libnvidia-ptxjitcompiler.so.{VERSION}": (f"{lib}/libnvidia-ptxjitcompiler.so.{VERSION}", True),
        # soname links are mounted as the file they point at: no ldconfig needed in the container
        f"{lib}/libcuda.so.1": (f"{lib}/libcuda.so.{VERSION}", True),
        f"{lib}/libnvidia-ml.so.1": (f"{lib}/libnvidia-ml.so.{VERSION}", True),
        f"{lib}/libnvidia-ptxjitcompiler.so.1": (f"{lib}/libnvidia-ptxjitcompiler.so.{VERSION}", True),
        "/usr/local/nvidia/bin/nvidia-smi": ("/usr/local/nvidia/bin/nvidia-smi", True),
        "/usr/local/nvidia/bin/nvidia-cuda-mps-control": ("/usr/local/nvidia/bin/nvidia-cuda-mps-control", True),
    }
    assert alloc.envs["LD_LIBRARY_PATH"] == "/usr/local/nvidia/lib64"
    assert alloc.envs["PATH"].startswith("/usr/local/nvidia/bin:") and ":/usr/bin:" in alloc.envs["PATH"]
    # No toolkit list strategy: a toolkit runtime must not expose every GPU from the image's env.
    assert alloc.envs["NVIDIA_VISIBLE_DEVICES"] == "void"


def test_driver_mounts_with_a_distro_driver_mount_host_paths(tmp_path: Path) -> None:
    import platform

    arch = {"aarch64": "aarch64-linux-gnu"}.get(platform.machine(), "x86_64-linux-gnu")
    libdir = tmp_path / "usr/lib" / arch
    libdir.mkdir(parents=True)
    (libdir / f"libcuda.so.{VERSION}").write_bytes(b"\x7fELF")
    (libdir / "libcuda.so.1").symlink_to(f"libcuda.so.{VERSION}")
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/nvidia-smi").write_text("#!/bin/sh\n")
    logic = build_logic(H100, resolve_config({"device-list-strategy": "envvar,driver-mounts"}, {}), tmp_path)
    alloc = logic.allocate("nvidia.com/gpu", [UUIDS[0]])
    mounts = {m.container_path: m.host_path for m in alloc.mounts}
    assert mounts["/usr/local/nvidia/lib64/libcuda.so.1"] == f"/usr/lib/{arch}/libcuda.so.{VERSION}"
    assert mounts["/usr/local/nvidia/bin/nvidia-smi"] == "/usr/bin/nvidia-smi"
    assert alloc.envs["NVIDIA_VISIBLE_DEVICES"] == UUIDS[0]  # envvar wins over the void guard


def test_driver_mounts_without_a_driver_refuse_to_start_and_say_where_the_driver_is(tmp_path: Path) -> None:
    # Given a node whose driver is under /usr/local/nvidia, and a plugin told nothing about it,
    lay_out_driver(tmp_path)
    config = resolve_config({"device-list-strategy": "driver-mounts"}, {})
    # then it advertises nothing (its containers could not run CUDA) and says what to pass.
    with pytest.raises(NoDriverFiles) as exc:
        build_logic(H100, config, tmp_path)
    message = str(exc.value)
    assert "\n" not in message
    assert "no libnvidia-ml.so.1 or libcuda.so.1 under" in message
    assert message.endswith("the driver is under /usr/local/nvidia: run with --driver-root /usr/local/nvidia")
    # With no driver anywhere it says what --driver-root means.
    with pytest.raises(NoDriverFiles, match="give --driver-root the directory the driver is installed in"):
        build_logic(H100, config, tmp_path / "empty")


def test_the_global_driver_root_is_the_plugins_driver_root(tmp_path: Path) -> None:
    # `kgpu --driver-root /usr/local/nvidia device-plugin --device-list-strategy driver-mounts`: the global
    # flag is NVIDIA's --driver-root, so the allocation carries the libraries and binaries found there.
    from kgpu.options import GlobalOptions

    lay_out_driver(tmp_path)
    opts = GlobalOptions(flags={"driver-root": "/usr/local/nvidia"})
    config = resolve_config({**opts.flags, "device-list-strategy": "driver-mounts"}, {})
    assert config.driver_root.host == "/usr/local/nvidia" and config.driver_root.explicit
    alloc = build_logic(H100, config, tmp_path).allocate("nvidia.com/gpu", [UUIDS[0]])
    mounts = {m.container_path: m.host_path for m in alloc.mounts}
    assert mounts["/usr/local/nvidia/lib64/libcuda.so.1"] == f"/usr/local/nvidia/lib64/libcuda.so.{VERSION}"
    assert mounts["/usr/local/nvidia/bin/nvidia-smi"] == "/usr/local/nvidia/bin/nvidia-smi"


def test_in_nvidias_daemonset_layout_files_are_read_at_driver_root_and_named_by_host_path(tmp_path: Path) -> None:
    """The host's /run/nvidia/driver is mounted at the plugin's container driver root (/driver-root)."""
    import platform

    arch = {"aarch64": "aarch64-linux-gnu"}.get(platform.machine(), "x86_64-linux-gnu")
    view = tmp_path / "driver-root"
    libdir = view / "usr/lib" / arch
    libdir.mkdir(parents=True)
    (libdir / f"libcuda.so.{VERSION}").write_bytes(b"\x7fELF")
    (libdir / "libcuda.so.1").symlink_to(f"libcuda.so.{VERSION}")
    make_dev(view, "/usr/bin/nvidia-smi", "/dev/nvidiactl", "/dev/nvidia-uvm")
    config = resolve_config({
        "device-list-strategy": "driver-mounts",
        "nvidia-driver-root": "/run/nvidia/driver",
        "container-driver-root": str(view),
    }, {})
    logic = build_logic(H100, config, Path("/"))
    alloc = logic.allocate("nvidia.com/gpu", [UUIDS[1]])
    mounts = {m.container_path: m.host_path for m in alloc.mounts}
    assert mounts["/usr/local/nvidia/lib64/libcuda.so.1"] == f"/run/nvidia/driver/usr/lib/{arch}/libcuda.so.{VERSION}"
    assert mounts["/usr/local/nvidia/bin/nvidia-smi"] == "/run/nvidia/driver/usr/bin/nvidia-smi"
    assert [(d.container_path, d.host_path) for d in alloc.devices] == [
        ("/dev/nvidiactl", "/run/nvidia/driver/dev/nvidiactl"),
        ("/dev/nvidia-uvm", "/run/nvidia/driver/dev/nvidia-uvm"),
        ("/dev/nvidia1", "/run/nvidia/driver/dev/nvidia1"),
    ]


def test_a_driver_root_set_to_the_container_mount_point_is_flagged() -> None:
    config = resolve_config({"nvidia-driver-root": "/driver-root"}, {})
    logic = build_logic(H100, config, EMPTY_HOST)
    assert any("the plugin container's own mount point" in w for w in logic.warnings)


def test_cdi_strategies_refuse_to_start_without_an_nvidia_gpu_cdi_spec(tmp_path: Path) -> None:
    from kgpu.deviceplugin.hostfacts import read_host_facts

    config = resolve_config({"device-list-strategy": "cdi-cri"}, {})
    # The spec directories cannot be seen (a container without them mounted): said, not refused.
    assert any("not checking that a CDI spec" in w for w in read_host_facts(config, tmp_path).warnings)
    # They can, and nothing defines nvidia.com/gpu: every container would fail to start.
    (tmp_path / "etc/cdi").mkdir(parents=True)
    (tmp_path / "etc/cdi/other.yaml").write_text("cdiVersion: 0.5.0\nkind: example.com/fpga\ndevices: []\n")
    with pytest.raises(NoDriverFiles, match=r"no spec under /etc/cdi or /var/run/cdi has kind nvidia\.com/gpu"):
        read_host_facts(config, tmp_path)
    (tmp_path / "etc/cdi/nvidia.yaml").write_text('cdiVersion: 0.5.0\nkind: "nvidia.com/gpu"\ndevices: []\n')
    assert read_host_facts(config, tmp_path).warnings == ()
    (tmp_path / "etc/cdi/nvidia.yaml").unlink()
    (tmp_path / "etc/cdi/nvidia.json").write_text('{"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu", "devices": []}')
    assert read_host_facts(config, tmp_path).warnings == ()


@pytest.mark.parametrize(
    ("given", "kind", "fix"),
    [
        ({"gds-enabled": True}, "nvidia.com/gds", "nvidia-ctk cdi generate --mode gds"),
        ({"mofed-enabled": True}, "nvidia.com/mofed", "nvidia-ctk cdi generate --mode mofed"),
    ],
)
def test_cdi_strategies_refuse_to_start_without_the_spec_of_gds_or_mofed_when_enabled(
        given: dict[str, object], kind: str, fix: str, tmp_path: Path) -> None:
    from kgpu.deviceplugin.hostfacts import read_host_facts

    # Given a node with kgpu's nvidia.com/gpu spec only, and the plugin told to give containers GDS (or MOFED),
    # which under a CDI strategy it names as NVIDIA's plugin does (nvidia.com/gds=all):
    config = resolve_config({"device-list-strategy": "cdi-annotations", **given}, {})
    (tmp_path / "etc/cdi").mkdir(parents=True)
    (tmp_path / "etc/cdi/nvidia.yaml").write_text("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices: []\n")
    # then it refuses to start, naming the kind and how to write its spec, rather than fail every container;
    with pytest.raises(NoDriverFiles, match=rf"has kind {re.escape(kind)}; write one with {re.escape(fix)}"):
        read_host_facts(config, tmp_path)
    # and starts once a spec of that kind is there.
    name = kind.rsplit("/", 1)[1]
    (tmp_path / "var/run/cdi").mkdir(parents=True)
    (tmp_path / f"var/run/cdi/nvidia-{name}.yaml").write_text(f"cdiVersion: 0.5.0\nkind: {kind}\ndevices: []\n")
    assert read_host_facts(config, tmp_path).warnings == ()


@pytest.mark.parametrize(
    ("given", "what"),
    [
        ({"nvidia-cdi-hook-path": "/usr/local/nvidia/toolkit/nvidia-cdi-hook"}, "kgpu cdi generate --nvidia-cdi-hook"),
        ({"cdi-feature-flags": "disable-nvsandboxutils"}, "nvidia-ctk cdi generate --feature-flag"),
        ({"cdi-disable-hooks": "all"}, "kgpu cdi generate --disable-hook"),
    ],
)
def test_settings_for_a_cdi_spec_the_plugin_does_not_write_are_refused_with_cdi_strategies(
        given: dict[str, str], what: str) -> None:
    with pytest.raises(ConfigError) as exc:
        resolve_config({**given, "device-list-strategy": "envvar,cdi-cri"}, {})
    assert "kgpu's device plugin writes no CDI spec" in str(exc.value) and what in str(exc.value)
    # Without a CDI strategy NVIDIA's plugin writes no spec either and the setting changes nothing.
    assert resolve_config(given, {}).flags.plugin.any_cdi is False
