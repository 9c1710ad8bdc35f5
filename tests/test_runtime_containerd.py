"""Given a node's containerd config, `kgpu runtime configure` adds the nvidia runtime the way nvidia-ctk does."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomlkit
from typer.testing import CliRunner

from kgpu.cli import app
from kgpu.errors import ConfigError
from kgpu.runtime import ConfigureRequest, apply_plan, plan_configure, plan_unconfigure

FIXTURES = Path(__file__).parent / "fixtures" / "runtime"
MAIN = "etc/containerd/config.toml"
DROP_IN = "etc/containerd/conf.d/99-nvidia.toml"
V2 = "io.containerd.grpc.v1.cri"
V3 = "io.containerd.cri.v1.runtime"


def _node(tmp_path: Path, fixture: str | None = "containerd-v2.toml") -> Path:
    root = tmp_path / "node"
    (root / "etc/containerd").mkdir(parents=True)
    if fixture:
        shutil.copy(FIXTURES / fixture, root / MAIN)
    return root


def _load(path: Path) -> dict:  # type: ignore[type-arg]
    return tomlkit.parse(path.read_text()).unwrap()


def _cli(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


def test_default_writes_a_drop_in_carrying_the_whole_cri_section_and_imports_it(tmp_path: Path) -> None:
    root = _node(tmp_path)
    original = (root / MAIN).read_text()

    apply_plan(plan_configure(ConfigureRequest(runtime="containerd"), root))

    drop_in = _load(root / DROP_IN)
    assert drop_in["version"] == 2
    cri = drop_in["plugins"][V2]
    # containerd < 2.1 replaces the main file's CRI table with this one: everything must be carried over
    assert cri["sandbox_image"] == "registry.k8s.io/pause:3.9"
    assert cri["registry"]["config_path"] == "/etc/containerd/certs.d"
    assert cri["containerd"]["snapshotter"] == "overlayfs"
    nvidia = cri["containerd"]["runtimes"]["nvidia"]
    assert nvidia["runtime_type"] == "io.containerd.runc.v2"
    assert nvidia["options"] == {"SystemdCgroup": True, "BinaryName": "/usr/bin/nvidia-container-runtime"}
    assert cri["containerd"]["default_runtime_name"] == "runc"
    assert "enable_cdi" not in cri

    main_text = (root / MAIN).read_text()
    assert _load(root / MAIN)["imports"] == ["/etc/containerd/conf.d/*.toml"]
    # the main file only gained the imports line: comments, order and values are as the admin left them
    assert main_text.replace('imports = ["/etc/containerd/conf.d/*.toml"]\n', "") == original
    assert (root / (MAIN + ".kgpu.bak")).read_text() == original


def test_a_second_run_changes_nothing_and_says_so(tmp_path: Path) -> None:
    root = _node(tmp_path)
    first = _cli("runtime", "configure", "--runtime", "containerd", "--set-as-default", "--cdi", "--root", str(root))
    assert first.exit_code == 0, first.output  # type: ignore[attr-defined]
    stamps = {p: p.stat().st_mtime_ns for p in (root / MAIN, root / DROP_IN)}

    second = _cli("runtime", "configure", "--runtime", "containerd", "--set-as-default", "--cdi", "--root", str(root))

    assert second.exit_code == 0
    assert "already configured" in second.output  # type: ignore[attr-defined]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_dry_run_prints_the_diff_and_writes_nothing(tmp_path: Path) -> None:
    root = _node(tmp_path)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    original = (root / MAIN).read_bytes()

    result = _cli("runtime", "configure", "--root", str(root), "--set-as-default", "--dry-run")

    assert result.exit_code == 0
    out = result.output  # type: ignore[attr-defined]
    assert "+++ b/etc/containerd/conf.d/99-nvidia.toml" in out
    assert '+imports = ["/etc/containerd/conf.d/*.toml"]' in out
    assert '+    default_runtime_name = "nvidia"' in out
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    assert (root / MAIN).read_bytes() == original


def test_unparseable_config_is_refused_with_line_and_column_and_left_untouched(tmp_path: Path) -> None:
    root = _node(tmp_path, None)
    broken = 'version = 2\n\n[plugins."io.containerd.grpc.v1.cri"\n  sandbox_image = "x"\n'
    (root / MAIN).write_text(broken)

    with pytest.raises(ConfigError, match=r"/etc/containerd/config.toml:3:\d+: not valid TOML"):
        plan_configure(ConfigureRequest(runtime="containerd"), root)

    result = subprocess.run(
        [sys.executable, "-m", "kgpu", "runtime", "configure", "--root", str(root)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert "config.toml:3:" in result.stderr
    assert (root / MAIN).read_text() == broken
    assert not (root / DROP_IN).exists()
    assert not (root / (MAIN + ".kgpu.bak")).exists()


def test_version_3_no_drop_in_sets_default_and_cdi_under_the_containerd_2_plugin(tmp_path: Path) -> None:
    root = _node(tmp_path, "containerd-v3.toml")
    req = ConfigureRequest(runtime="containerd", no_drop_in=True, set_as_default=True, cdi=True)

    apply_plan(plan_configure(req, root))

    doc = _load(root / MAIN)
    cri = doc["plugins"][V3]
    assert cri["containerd"]["default_runtime_name"] == "nvidia"
    assert cri["containerd"]["runtimes"]["nvidia"]["options"]["BinaryName"] == "/usr/bin/nvidia-container-runtime"
    assert cri["containerd"]["runtimes"]["nvidia"]["options"]["SystemdCgroup"] is True
    assert cri["enable_cdi"] is True
    assert cri["cdi_spec_dirs"] == ["/etc/cdi", "/var/run/cdi"]
    assert V2 not in doc["plugins"]
    assert "# containerd 2.0 config (version 3)" in (root / MAIN).read_text()
    assert not (root / DROP_IN).exists()


def test_a_missing_config_is_created_minimal_and_valid(tmp_path: Path) -> None:
    root = _node(tmp_path, None)

    apply_plan(plan_configure(ConfigureRequest(runtime="containerd", config_version=3), root))

    assert _load(root / MAIN) == {"version": 3, "imports": ["/etc/containerd/conf.d/*.toml"]}
    nvidia = _load(root / DROP_IN)["plugins"][V3]["containerd"]["runtimes"]["nvidia"]
    assert nvidia == {"runtime_type": "io.containerd.runc.v2",
                      "options": {"BinaryName": "/usr/bin/nvidia-container-runtime"}}


def test_the_drop_in_copies_the_cri_section_as_earlier_drop_ins_left_it(tmp_path: Path) -> None:
    root = _node(tmp_path, None)
    (root / MAIN).write_text('version = 2\nimports = ["/etc/containerd/conf.d/*.toml"]\n')
    (root / "etc/containerd/conf.d").mkdir()
    (root / "etc/containerd/conf.d/10-mirror.toml").write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\n  sandbox_image = "mirror.local/pause:3.10"\n'
    )

    apply_plan(plan_configure(ConfigureRequest(runtime="containerd"), root))

    assert _load(root / DROP_IN)["plugins"][V2]["sandbox_image"] == "mirror.local/pause:3.10"
    assert _load(root / MAIN)["imports"] == ["/etc/containerd/conf.d/*.toml"]


def test_an_existing_nvidia_runtime_gets_runcs_cgroup_driver(tmp_path: Path) -> None:
    root = _node(tmp_path)
    text = (root / MAIN).read_text() + (
        '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]\n'
        '      runtime_type = "io.containerd.runc.v2"\n'
        '      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]\n'
        '        BinaryName = "/usr/bin/nvidia-container-runtime"\n'
        "        SystemdCgroup = false\n"
    )
    (root / MAIN).write_text(text)

    apply_plan(plan_configure(ConfigureRequest(runtime="containerd", no_drop_in=True), root))

    options = _load(root / MAIN)["plugins"][V2]["containerd"]["runtimes"]["nvidia"]["options"]
    assert options["SystemdCgroup"] is True


@pytest.mark.parametrize("no_drop_in", [False, True])
def test_unconfigure_restores_the_original_file(tmp_path: Path, no_drop_in: bool) -> None:
    root = _node(tmp_path)
    original = (root / MAIN).read_text()
    req = ConfigureRequest(runtime="containerd", no_drop_in=no_drop_in, set_as_default=True)
    apply_plan(plan_configure(req, root))
    assert (root / MAIN).read_text() != original

    apply_plan(plan_unconfigure(ConfigureRequest(runtime="containerd", no_drop_in=no_drop_in), root))

    assert _load(root / MAIN) == tomlkit.parse(original).unwrap()
    if not no_drop_in:
        assert (root / MAIN).read_text() == original
        assert not (root / DROP_IN).exists()
        assert (root / (DROP_IN + ".kgpu.bak")).exists()
    assert not plan_unconfigure(ConfigureRequest(runtime="containerd", no_drop_in=no_drop_in), root).changed


def test_docker_packaged_config_with_cri_disabled_gets_a_warning(tmp_path: Path) -> None:
    root = _node(tmp_path, None)
    (root / MAIN).write_text('#   Docker ships this\ndisabled_plugins = ["cri"]\n')

    plan = plan_configure(ConfigureRequest(runtime="containerd"), root)

    assert any("disables the CRI plugin" in n for n in plan.notes)


def test_version_1_config_is_refused_with_the_way_out(tmp_path: Path) -> None:
    root = _node(tmp_path, None)
    (root / MAIN).write_text('[plugins.cri]\n  sandbox_image = "k8s.gcr.io/pause:3.2"\n')

    with pytest.raises(ConfigError, match="version 1"):
        plan_configure(ConfigureRequest(runtime="containerd"), root)


def test_driver_root_is_recorded_for_the_toolkit(tmp_path: Path) -> None:
    root = _node(tmp_path)

    apply_plan(plan_configure(ConfigureRequest(runtime="containerd", driver_root="/run/nvidia/driver"), root))

    toolkit = _load(root / "etc/nvidia-container-runtime/config.toml")
    assert toolkit == {"nvidia-container-cli": {"root": "/run/nvidia/driver"}}


@pytest.mark.skipif(shutil.which("containerd") is None, reason="containerd is not installed (.ci/run installs it)")
@pytest.mark.parametrize("no_drop_in", [False, True])
def test_real_containerd_accepts_the_result_and_shows_the_nvidia_runtime(tmp_path: Path, no_drop_in: bool) -> None:
    # Real paths (root "/"), since the imports entry names the drop-in's absolute path.
    config = tmp_path / "config.toml"
    shutil.copy(FIXTURES / "containerd-v2.toml", config)
    req = ConfigureRequest(
        runtime="containerd", config=str(config), drop_in=None if no_drop_in else str(tmp_path / "conf.d/99.toml"),
        no_drop_in=no_drop_in, set_as_default=True,
    )
    apply_plan(plan_configure(req, Path("/")))

    dump = subprocess.run(
        ["containerd", "--config", str(config), "config", "dump"], capture_output=True, text=True, check=True
    ).stdout

    effective = tomlkit.parse(dump).unwrap()["plugins"][V2]
    assert effective["containerd"]["default_runtime_name"] == "nvidia"
    nvidia = effective["containerd"]["runtimes"]["nvidia"]
    assert nvidia["options"]["BinaryName"] == "/usr/bin/nvidia-container-runtime"
    assert nvidia["options"]["SystemdCgroup"] is True
    # what the drop-in replaced wholesale is still there
    assert effective["sandbox_image"] == "registry.k8s.io/pause:3.9"
    assert effective["registry"]["config_path"] == "/etc/containerd/certs.d"
