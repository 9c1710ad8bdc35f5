"""Given node configs laid out as real nodes have them, `kgpu runtime configure|unconfigure` never loses one.

Links as config management leaves them, the original kept for good, values the runtime would refuse,
comments that belong to the next table, repeated configure/unconfigure sequences.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import tomlkit
from cli_inproc import Done, kgpu

from kgpu.errors import ConfigError
from kgpu.runtime import ConfigureRequest, apply_plan, plan_configure, plan_unconfigure

FIXTURES = Path(__file__).parent / "fixtures" / "runtime"
MAIN = "etc/containerd/config.toml"
DROP_IN = "etc/containerd/conf.d/99-nvidia.toml"
V2 = "io.containerd.grpc.v1.cri"


def _node(tmp_path: Path) -> Path:
    root = tmp_path / "node"
    (root / "etc/containerd").mkdir(parents=True)
    return root


def _snapshot(root: Path) -> dict[str, tuple[str, bytes | str, int]]:
    """Every file and link under ``root``: its kind, its bytes or target, its mode."""
    out: dict[str, tuple[str, bytes | str, int]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p), 0)
            elif p.is_file():
                out[rel] = ("file", p.read_bytes(), st.st_mode & 0o7777)
    return out


def _kgpu(*args: str) -> Done:
    return kgpu(*args)


def _load(path: Path) -> dict:  # type: ignore[type-arg]
    return tomlkit.parse(path.read_text()).unwrap()


# --- links -----------------------------------------------------------------------------------------


def test_an_absolute_link_is_followed_under_the_root_and_stays_a_link(tmp_path: Path) -> None:
    root = _node(tmp_path)
    (root / "opt/cfg").mkdir(parents=True)
    shutil.copy(FIXTURES / "containerd-v2.toml", root / "opt/cfg/config.toml")
    (root / MAIN).symlink_to("/opt/cfg/config.toml")  # as config management lays it out
    original = (root / "opt/cfg/config.toml").read_bytes()

    done = _kgpu("runtime", "configure", "--root", str(root))

    assert done.returncode == 0, done.stderr
    assert os.readlink(root / MAIN) == "/opt/cfg/config.toml"
    assert _load(root / "opt/cfg/config.toml")["imports"] == ["/etc/containerd/conf.d/*.toml"]
    assert _load(root / DROP_IN)["plugins"][V2]["containerd"]["runtimes"]["nvidia"]["options"]["SystemdCgroup"]
    # the paths printed are the paths written, and where the link took the write
    assert f"updated {root}/{MAIN} → {root}/opt/cfg/config.toml" in done.stdout
    assert (root / (MAIN + ".kgpu.orig")).read_bytes() == original

    undone = _kgpu("runtime", "unconfigure", "--root", str(root))

    assert undone.returncode == 0, undone.stderr
    assert os.readlink(root / MAIN) == "/opt/cfg/config.toml"
    assert (root / "opt/cfg/config.toml").read_bytes() == original
    assert not (root / DROP_IN).exists()


def test_dry_run_through_an_absolute_link_reads_the_nodes_file_not_this_machines(tmp_path: Path) -> None:
    root = _node(tmp_path)
    (root / "etc/containerd/real").mkdir()
    (root / "etc/containerd/real/config.toml").write_text('version = 2\nroot = "/the/nodes/own"\n')
    (root / MAIN).symlink_to("/etc/containerd/real/config.toml")

    done = _kgpu("runtime", "configure", "--root", str(root), "--no-drop-in", "--dry-run")

    assert done.returncode == 0, done.stderr
    assert ' root = "/the/nodes/own"' in done.stdout


def test_a_relative_link_stays_a_link_through_configure_and_unconfigure(tmp_path: Path) -> None:
    root = _node(tmp_path)
    shutil.copy(FIXTURES / "containerd-v2.toml", root / "etc/containerd/config.real.toml")
    (root / MAIN).symlink_to("config.real.toml")
    before = _snapshot(root)

    apply_plan(plan_configure(ConfigureRequest(runtime="containerd", no_drop_in=True, set_as_default=True), root))
    assert (root / MAIN).is_symlink()
    apply_plan(plan_unconfigure(ConfigureRequest(runtime="containerd", no_drop_in=True), root))

    after = _snapshot(root)
    assert {k: v for k, v in after.items() if ".kgpu." not in k} == before


def test_a_link_escaping_the_root_is_refused_in_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    root = _node(tmp_path)
    host_file = tmp_path / "host-config.toml"
    host_file.write_text("version = 2\n")
    (root / MAIN).symlink_to("../../../host-config.toml")
    before = _snapshot(tmp_path)

    done = _kgpu("runtime", "configure", "--root", str(root))

    assert done.returncode == 1
    assert len(done.stderr.splitlines()) == 1 and "leads outside" in done.stderr and "Traceback" not in done.stderr
    assert _snapshot(tmp_path) == before


# --- the original, kept for good ----------------------------------------------------------------------


def test_three_configures_with_other_flags_then_unconfigure_give_back_the_original_byte_for_byte(
    tmp_path: Path,
) -> None:
    root = _node(tmp_path)
    shutil.copy(FIXTURES / "containerd-v2.toml", root / MAIN)
    os.chmod(root / MAIN, 0o600)
    original = (root / MAIN).read_bytes()

    for flags in ({"cdi": True}, {"set_as_default": True}, {"runtime_path": "/opt/nvidia/runtime"}):
        for no_drop_in in (True, False):
            apply_plan(plan_configure(ConfigureRequest(runtime="containerd", no_drop_in=no_drop_in, **flags), root))
    assert (root / (MAIN + ".kgpu.orig")).read_bytes() == original  # written once, never replaced
    assert (root / (MAIN + ".kgpu.bak")).read_bytes() != original  # the rolling backup moved on

    apply_plan(plan_unconfigure(ConfigureRequest(runtime="containerd", no_drop_in=True), root))
    apply_plan(plan_unconfigure(ConfigureRequest(runtime="containerd"), root))

    assert (root / MAIN).read_bytes() == original
    assert os.stat(root / MAIN).st_mode & 0o777 == 0o600
    assert not (root / DROP_IN).exists()


def test_unconfigure_keeps_an_edit_made_after_configure(tmp_path: Path) -> None:
    root = _node(tmp_path)
    shutil.copy(FIXTURES / "containerd-v2.toml", root / MAIN)
    apply_plan(plan_configure(ConfigureRequest(runtime="containerd", no_drop_in=True, cdi=True), root))
    (root / MAIN).write_text((root / MAIN).read_text().replace('"overlayfs"', '"zfs"'))

    apply_plan(plan_unconfigure(ConfigureRequest(runtime="containerd", no_drop_in=True), root))

    cri = _load(root / MAIN)["plugins"][V2]
    assert cri["containerd"]["snapshotter"] == "zfs"
    assert "nvidia" not in cri["containerd"]["runtimes"]
    assert "enable_cdi" not in cri and "cdi_spec_dirs" not in cri  # kgpu's keys go, as the original had none


def test_a_config_kgpu_created_is_removed_again(tmp_path: Path) -> None:
    root = _node(tmp_path)
    apply_plan(plan_configure(ConfigureRequest(runtime="containerd"), root))
    assert (root / MAIN).exists()

    apply_plan(plan_unconfigure(ConfigureRequest(runtime="containerd"), root))

    assert not (root / MAIN).exists() and not (root / DROP_IN).exists()


def test_owner_and_mode_are_kept(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    root = _node(tmp_path)
    shutil.copy(FIXTURES / "containerd-v2.toml", root / MAIN)
    os.chown(root / MAIN, 1234, 5678)
    os.chmod(root / MAIN, 0o640)

    apply_plan(plan_configure(ConfigureRequest(runtime="containerd", no_drop_in=True), root))

    st = os.stat(root / MAIN)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 5678, 0o640)
    bak = os.stat(root / (MAIN + ".kgpu.bak"))
    assert (bak.st_uid, bak.st_gid, bak.st_mode & 0o7777) == (1234, 5678, 0o640)


# --- values the runtime itself would refuse --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("version = 2\nplugins = 5\n", "plugins = 5"),
        ('version = 2\nimports = "notalist"\n', 'imports = "notalist"'),
        ('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\nruntime_type = 7\n',
         'plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.runtime_type = 7'),
        ('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\nSystemdCgroup = "yes"\n',
         'runtimes.runc.options.SystemdCgroup = "yes": containerd expects true or false'),
        ('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\ndefault_runtime_name = 1\n',
         "containerd.default_runtime_name = 1"),
    ],
)
def test_containerd_values_containerd_refuses_are_refused_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    root = _node(tmp_path)
    (root / MAIN).write_text(text)
    before = _snapshot(root)

    for no_drop_in in ("--no-drop-in", "--dry-run"):
        done = _kgpu("runtime", "configure", "--root", str(root), no_drop_in)
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and key in done.stderr and "nothing was changed" in done.stderr
    assert _snapshot(root) == before


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ('{"default-shm-size": NaN}', "NaN is not a JSON number"),
        ('{"max-concurrent-downloads": Infinity}', "Infinity is not a JSON number"),
        ('{"x": 1e999}', "1e999 is not a JSON number"),
        ('{"runtimes": {"runc": {"path": 5}}}', "runtimes.runc.path = 5: dockerd expects a string"),
        ('{"runtimes": []}', "runtimes = []: dockerd expects an object"),
        ('{"features": {"cdi": "yes"}}', 'features.cdi = "yes": dockerd expects true or false'),
    ],
)
def test_daemon_json_is_read_and_written_strictly(tmp_path: Path, text: str, what: str) -> None:
    daemon = tmp_path / "etc/docker/daemon.json"
    daemon.parent.mkdir(parents=True)
    daemon.write_text(text)

    with pytest.raises(ConfigError, match=what.replace("[", r"\[").replace("]", r"\]")):
        plan_configure(ConfigureRequest(runtime="docker"), tmp_path)
    assert daemon.read_text() == text


def test_crio_values_crio_refuses_are_refused(tmp_path: Path) -> None:
    conf = tmp_path / "etc/crio/crio.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text('[crio.runtime.runtimes.runc]\nruntime_path = ["/usr/bin/runc"]\n')

    with pytest.raises(ConfigError, match=r'crio.runtime.runtimes.runc.runtime_path = \["/usr/bin/runc"\]: CRI-O'):
        plan_configure(ConfigureRequest(runtime="crio"), tmp_path)


# --- what nvidia-ctk does ----------------------------------------------------------------------------


def test_runc_with_an_empty_runtime_type_gives_nvidia_the_runc_shim(tmp_path: Path) -> None:
    root = _node(tmp_path)
    (root / MAIN).write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n  runtime_type = ""\n'
    )

    apply_plan(plan_configure(ConfigureRequest(runtime="containerd", no_drop_in=True), root))

    runtimes = _load(root / MAIN)["plugins"][V2]["containerd"]["runtimes"]
    assert runtimes["nvidia"]["runtime_type"] == "io.containerd.runc.v2"
    assert runtimes["runc"]["runtime_type"] == ""  # runc is left as the admin wrote it


def test_configuring_without_set_as_default_removes_a_default_naming_nvidia(tmp_path: Path) -> None:
    root = _node(tmp_path)
    shutil.copy(FIXTURES / "containerd-v2.toml", root / MAIN)
    apply_plan(plan_configure(ConfigureRequest(runtime="containerd", no_drop_in=True, set_as_default=True), root))
    assert _load(root / MAIN)["plugins"][V2]["containerd"]["default_runtime_name"] == "nvidia"

    apply_plan(plan_configure(ConfigureRequest(runtime="containerd", no_drop_in=True), root))

    assert "default_runtime_name" not in _load(root / MAIN)["plugins"][V2]["containerd"]


def test_comments_after_runcs_options_stay_once_above_the_table_they_describe(tmp_path: Path) -> None:
    root = _node(tmp_path)
    text = (
        'version = 2\n'
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
        '  runtime_type = "io.containerd.runc.v2"\n'
        '  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
        '    SystemdCgroup = true\n'
        '\n'
        '# ---- registry mirrors: managed by the platform team ----\n'
        '[plugins."io.containerd.grpc.v1.cri".registry]\n'
        '  config_path = "/etc/containerd/certs.d"\n'
    )
    (root / MAIN).write_text(text)

    apply_plan(plan_configure(ConfigureRequest(runtime="containerd", no_drop_in=True), root))

    new = (root / MAIN).read_text()
    assert new.count("# ---- registry mirrors") == 1
    assert new.index("runtimes.nvidia.options]") < new.index("# ---- registry mirrors") < new.index(".registry]")

    apply_plan(plan_unconfigure(ConfigureRequest(runtime="containerd", no_drop_in=True), root))
    assert (root / MAIN).read_text() == text


def test_a_custom_runtime_name_is_used_everywhere_and_unconfigured_by_name(tmp_path: Path) -> None:
    daemon = tmp_path / "etc/docker/daemon.json"
    daemon.parent.mkdir(parents=True)
    daemon.write_text('{"log-driver": "json-file"}\n')

    apply_plan(plan_configure(ConfigureRequest(runtime="docker", runtime_name="gpu", set_as_default=True), tmp_path))
    data = json.loads(daemon.read_text())
    assert data["runtimes"] == {"gpu": {"args": [], "path": "nvidia-container-runtime"}}
    assert data["default-runtime"] == "gpu"

    apply_plan(plan_unconfigure(ConfigureRequest(runtime="docker", runtime_name="gpu"), tmp_path))
    assert daemon.read_text() == '{"log-driver": "json-file"}\n'


def test_nvidia_ctk_flag_spellings_are_accepted(tmp_path: Path) -> None:
    root = _node(tmp_path)
    done = _kgpu("runtime", "configure", "--root", str(root), "--runtime", "containerd",
                 "--nvidia-runtime-name", "nv", "--runtime-path", "/opt/nv/runtime", "--nvidia-set-as-default",
                 "--cdi.enabled", "--config-mode", "config-file", "--config-source", "file", "--drop-in-config", "")
    assert done.returncode == 0, done.stderr
    cri = _load(root / MAIN)["plugins"][V2]
    assert cri["containerd"]["default_runtime_name"] == "nv"
    assert cri["containerd"]["runtimes"]["nv"]["options"]["BinaryName"] == "/opt/nv/runtime"
    assert cri["enable_cdi"] is True
    assert not (root / DROP_IN).exists()  # an empty --drop-in-config edits the main file, as nvidia-ctk

    for flag in ("--cdi.enable", "--enable-cdi", "--set-as-default", "--nvidia-runtime-path=/x/y"):
        assert _kgpu("runtime", "configure", "--root", str(root), "--dry-run", flag).returncode == 0, flag
    hook = _kgpu("runtime", "configure", "--root", str(root), "--config-mode", "oci-hook")
    assert hook.returncode == 2 and "oci-hook" in hook.stderr
