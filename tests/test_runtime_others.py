"""Docker, CRI-O and k3s/RKE2 nodes get the nvidia runtime where each of them reads it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tomlkit

from kgpu.errors import ConfigError
from kgpu.runtime import ConfigureRequest, apply_plan, plan_configure, plan_unconfigure

FIXTURES = Path(__file__).parent / "fixtures" / "runtime"
DAEMON = "etc/docker/daemon.json"
CRIO_MAIN = "etc/crio/crio.conf"
CRIO_DROP_IN = "etc/crio/crio.conf.d/99-nvidia.toml"
K3S = "var/lib/rancher/k3s/agent/etc/containerd"


def _put(root: Path, rel: str, fixture: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURES / fixture, path)
    return path


# --- docker ---------------------------------------------------------------------------------------


def test_docker_gets_the_nvidia_runtime_and_keeps_every_other_key(tmp_path: Path) -> None:
    daemon = _put(tmp_path, DAEMON, "daemon.json")
    original = json.loads(daemon.read_text())
    req = ConfigureRequest(runtime="docker", set_as_default=True, cdi=True)

    apply_plan(plan_configure(req, tmp_path))

    text = daemon.read_text()
    data = json.loads(text)
    assert data["runtimes"] == {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}
    assert data["default-runtime"] == "nvidia"
    assert data["features"] == {"cdi": True}
    assert {k: data[k] for k in original} == original
    assert list(data)[: len(original)] == list(original)  # the admin's keys stay where they were
    assert '\n    "exec-opts": [\n        "native.cgroupdriver=systemd"\n    ],' in text  # 4 spaces, as nvidia-ctk
    assert not plan_configure(req, tmp_path).changed


def test_docker_unconfigure_round_trip(tmp_path: Path) -> None:
    daemon = _put(tmp_path, DAEMON, "daemon.json")
    original = json.loads(daemon.read_text())
    apply_plan(plan_configure(ConfigureRequest(runtime="docker", set_as_default=True), tmp_path))

    apply_plan(plan_unconfigure(ConfigureRequest(runtime="docker"), tmp_path))

    assert json.loads(daemon.read_text()) == original


def test_docker_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    daemon = tmp_path / DAEMON
    daemon.parent.mkdir(parents=True)
    daemon.write_text('{\n  "log-driver": "json-file",\n  "runtimes": {,}\n}\n')

    with pytest.raises(ConfigError, match=r"/etc/docker/daemon.json:3:16: not valid JSON"):
        plan_configure(ConfigureRequest(runtime="docker"), tmp_path)


def test_docker_without_daemon_json_gets_one(tmp_path: Path) -> None:
    apply_plan(plan_configure(ConfigureRequest(runtime="docker"), tmp_path))

    assert json.loads((tmp_path / DAEMON).read_text()) == {
        "runtimes": {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}
    }


# --- CRI-O ----------------------------------------------------------------------------------------


def test_crio_drop_in_copies_the_default_runtime_and_points_at_nvidia(tmp_path: Path) -> None:
    _put(tmp_path, CRIO_MAIN, "crio.conf")
    main_before = (tmp_path / CRIO_MAIN).read_text()

    apply_plan(plan_configure(ConfigureRequest(runtime="crio", set_as_default=True), tmp_path))

    doc = tomlkit.parse((tmp_path / CRIO_DROP_IN).read_text()).unwrap()
    assert doc["crio"]["runtime"]["default_runtime"] == "nvidia"
    assert doc["crio"]["runtime"]["runtimes"]["nvidia"] == {
        "runtime_path": "/usr/bin/nvidia-container-runtime",
        "runtime_type": "oci",
        "runtime_root": "/run/crun",
        "monitor_path": "/usr/libexec/crio/conmon",
        "allowed_annotations": ["io.containers.trace-syscall"],
    }
    assert (tmp_path / CRIO_MAIN).read_text() == main_before
    assert not plan_configure(ConfigureRequest(runtime="crio", set_as_default=True), tmp_path).changed


def test_crio_unconfigure_removes_the_drop_in_and_keeps_its_backup_out_of_crio_conf_d(tmp_path: Path) -> None:
    _put(tmp_path, CRIO_MAIN, "crio.conf")
    apply_plan(plan_configure(ConfigureRequest(runtime="crio"), tmp_path))
    drop_in = (tmp_path / CRIO_DROP_IN).read_text()

    apply_plan(plan_unconfigure(ConfigureRequest(runtime="crio"), tmp_path))

    assert not (tmp_path / CRIO_DROP_IN).exists()
    # CRI-O reads every file in crio.conf.d: a backup there would bring the nvidia runtime back
    assert not list((tmp_path / "etc/crio/crio.conf.d").iterdir())
    backup = tmp_path / "var/lib/kgpu/backup" / (CRIO_DROP_IN + ".kgpu.bak")
    assert backup.read_text() == drop_in


def test_crio_no_drop_in_edits_crio_conf_in_place(tmp_path: Path) -> None:
    _put(tmp_path, CRIO_MAIN, "crio.conf")
    req = ConfigureRequest(runtime="crio", no_drop_in=True)

    apply_plan(plan_configure(req, tmp_path))

    text = (tmp_path / CRIO_MAIN).read_text()
    assert text.startswith("# CRI-O main config (excerpt)\n")
    runtimes = tomlkit.parse(text).unwrap()["crio"]["runtime"]["runtimes"]
    assert runtimes["nvidia"]["runtime_path"] == "/usr/bin/nvidia-container-runtime"
    assert runtimes["crun"]["runtime_path"] == "/usr/bin/crun"


# --- k3s / RKE2 -----------------------------------------------------------------------------------


def test_k3s_gets_its_v3_template_never_the_generated_config(tmp_path: Path) -> None:
    generated = _put(tmp_path, f"{K3S}/config.toml", "k3s-config-v3.toml")
    before = generated.read_text()

    plan = plan_configure(ConfigureRequest(runtime="containerd"), tmp_path)
    apply_plan(plan)

    template = (tmp_path / K3S / "config-v3.toml.tmpl").read_text()
    assert template.startswith('{{ template "base" . }}\n')
    assert generated.read_text() == before
    assert not (tmp_path / "etc/containerd/config.toml").exists()
    assert plan.restart_command and "systemctl restart k3s" in plan.restart_command
    # what k3s renders: its base config followed by our block, which must be valid TOML on its own
    rendered = before + template.split("\n", 1)[1]
    nvidia = tomlkit.parse(rendered).unwrap()["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]
    assert nvidia["nvidia"] == {
        "runtime_type": "io.containerd.runc.v2",
        "options": {"BinaryName": "/usr/bin/nvidia-container-runtime", "SystemdCgroup": True},
    }
    assert not plan_configure(ConfigureRequest(runtime="containerd"), tmp_path).changed


def test_k3s_that_found_the_nvidia_runtime_itself_is_left_alone(tmp_path: Path) -> None:
    generated = _put(tmp_path, f"{K3S}/config.toml", "k3s-config-v3.toml")
    generated.write_text(
        generated.read_text()
        + "\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.'nvidia']\n"
        + '  runtime_type = "io.containerd.runc.v2"\n'
    )

    plan = plan_configure(ConfigureRequest(runtime="containerd"), tmp_path)

    assert not plan.changed
    assert any("already has the nvidia runtime" in n for n in plan.notes)


def test_k3s_v2_template_and_unconfigure(tmp_path: Path) -> None:
    template = tmp_path / K3S / "config.toml.tmpl"
    template.parent.mkdir(parents=True)
    mine = '{{ template "base" . }}\n\n[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/x"\n'
    template.write_text(mine)

    apply_plan(plan_configure(ConfigureRequest(runtime="containerd"), tmp_path))
    text = template.read_text()
    assert text.startswith(mine)
    assert "[plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.'nvidia']" in text

    apply_plan(plan_unconfigure(ConfigureRequest(runtime="containerd"), tmp_path))
    assert template.read_text() == mine


def test_rke2_template_created_by_kgpu_is_removed_on_unconfigure(tmp_path: Path) -> None:
    (tmp_path / "var/lib/rancher/rke2/agent/etc/containerd").mkdir(parents=True)
    plan = plan_configure(ConfigureRequest(runtime="containerd"), tmp_path)
    apply_plan(plan)
    template = tmp_path / "var/lib/rancher/rke2/agent/etc/containerd/config-v3.toml.tmpl"
    assert template.exists()
    assert plan.restart_command and "rke2-server" in plan.restart_command

    apply_plan(plan_unconfigure(ConfigureRequest(runtime="containerd"), tmp_path))

    assert not template.exists()
