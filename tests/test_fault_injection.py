"""Fault injection: whatever the disk, the mount or the files do, a node file is fully changed or left as it was.

Disk full at every fill level of a small tmpfs, read-only bind mounts, ``chattr +i``/``+a``, absolute,
relative and escaping symlinks, files in UTF-16 or Latin-1, and long configure/unconfigure sequences.
After each: the node's files are byte-identical to before or exactly what a successful run writes, the
original is recoverable, and the command said what happened in one line, without a traceback.

Mounting and ``chattr`` need root (CI runs as root); those tests skip without it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tomlkit
from cdi_node import make_node
from cli_inproc import Done, kgpu
from doctor_nodes import NODES

from kgpu.gpu import open_backend

FIXTURES = Path(__file__).parent / "fixtures" / "runtime"
PAGE = 4096

Snapshot = dict[str, tuple[str, bytes | str, int]]


def snapshot(root: Path) -> Snapshot:
    """Every directory, file and link under ``root``: kind, content or target, mode (and owner)."""
    out: Snapshot = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = os.lstat(p)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p), 0)
            elif p.is_dir():
                out[rel] = ("dir", b"", st.st_mode & 0o7777)
            else:
                out[rel] = ("file", p.read_bytes(), (st.st_mode & 0o7777) | st.st_uid << 16)
    return out


def _diff(a: Snapshot, b: Snapshot) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def one_line_error(done: Done | subprocess.CompletedProcess[str], code: int | None = None) -> str:
    assert done.returncode != 0, done.stdout
    if code is not None:
        assert done.returncode == code, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if not ln.startswith(("note:", "warning:", '{"ts"'))]
    assert len(lines) == 1 and lines[0].startswith("kgpu: error: "), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


# --- mounts ---------------------------------------------------------------------------------------------


def _can_mount(where: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(where)], capture_output=True,
                          check=False)
    if done.returncode != 0:
        return False
    subprocess.run(["umount", str(where)], check=True)
    return True


@pytest.fixture(scope="module")
def mountable(tmp_path_factory: pytest.TempPathFactory) -> None:
    if not _can_mount(tmp_path_factory.mktemp("probe") / "mnt"):
        pytest.skip("needs root and mount(8) (CI runs as root)")


@contextlib.contextmanager
def tmpfs(where: Path, size_kib: int) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=755", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    subprocess.run(["mount", "--bind", str(directory), str(directory)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(directory)], check=False)


def free_pages(fs: Path) -> int:
    st = os.statvfs(fs)
    return st.f_bavail * st.f_frsize // PAGE


@contextlib.contextmanager
def filled(fs: Path, leave_pages: int) -> Iterator[None]:
    """Fill the tmpfs at ``fs`` so exactly ``leave_pages`` pages stay free."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        pages = free_pages(fs) - leave_pages
        if pages > 0:
            os.posix_fallocate(fd, 0, pages * PAGE)
        assert free_pages(fs) == leave_pages
        yield
    finally:
        os.close(fd)
        filler.unlink()


# --- nodes the operations run on --------------------------------------------------------------------------


def containerd_node(root: Path) -> None:
    (root / "etc/containerd").mkdir(parents=True)
    shutil.copy(FIXTURES / "containerd-v2.toml", root / "etc/containerd/config.toml")
    os.chmod(root / "etc/containerd/config.toml", 0o640)


def configured_containerd_node(root: Path) -> None:
    containerd_node(root)
    assert kgpu("runtime", "configure", "--root", str(root), "--set-as-default", "--cdi").returncode == 0


def docker_node(root: Path) -> None:
    (root / "etc/docker").mkdir(parents=True)
    shutil.copy(FIXTURES / "daemon.json", root / "etc/docker/daemon.json")


def crio_node(root: Path) -> None:
    (root / "etc/crio/crio.conf.d").mkdir(parents=True)
    shutil.copy(FIXTURES / "crio.conf", root / "etc/crio/crio.conf")
    (root / "etc/crio/crio.conf.d/99-nvidia.toml").write_text("# an older drop-in\n")


def gpu_node(root: Path) -> None:
    backend = open_backend(simulate="t4")
    try:
        make_node(root, backend.inventory())
    finally:
        backend.close()
    (root / "etc/cdi").mkdir(parents=True)
    (root / "etc/cdi/nvidia.yaml").write_text("# an old spec\n")


def broken_ubuntu_node(root: Path) -> None:
    """ubuntu-h100 that needs five files changed: fstab, modules-load.d, sysctl.d, containerd (two files)."""
    shutil.copytree(NODES / "ubuntu-h100", root, symlinks=True, dirs_exist_ok=True)
    fstab = root / "etc/fstab"
    fstab.write_text(fstab.read_text().replace("#/swap.img", "/swap.img"))
    for rel in ("etc/modules-load.d/k8s.conf", "etc/sysctl.d/k8s.conf", "etc/containerd/conf.d/99-nvidia.toml"):
        (root / rel).unlink()


Build = Callable[[Path], None]

OPERATIONS: list[tuple[str, Build, list[str]]] = [
    ("containerd drop-in + imports", containerd_node, ["runtime", "configure", "--set-as-default", "--cdi"]),
    ("containerd unconfigure", configured_containerd_node, ["runtime", "unconfigure"]),
    ("docker daemon.json", docker_node, ["runtime", "configure", "--runtime", "docker", "--set-as-default"]),
    ("crio drop-in", crio_node, ["runtime", "configure", "--runtime", "crio"]),
    ("cdi generate -o", gpu_node, ["--simulate", "t4", "cdi", "generate", "-o", "/etc/cdi/nvidia.yaml"]),
    ("node prepare --apply", broken_ubuntu_node, ["--simulate", "h100x8", "node", "prepare", "--apply"]),
]


@pytest.mark.parametrize(("name", "build", "args"), OPERATIONS, ids=[o[0] for o in OPERATIONS])
def test_disk_full_at_every_fill_level_leaves_the_files_whole(
    mountable: None, tmp_path: Path, name: str, build: Build, args: list[str]
) -> None:
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    build(pristine)
    with tmpfs(tmp_path / "fs", 2048) as fs:
        node = fs / "node"

        def reset() -> None:
            if node.exists():
                shutil.rmtree(node)
            shutil.copytree(pristine, node, symlinks=True)

        def run() -> Done:
            return kgpu(*args, "--root", str(node))

        reset()
        done = run()
        assert done.returncode == 0, done.stderr
        changed = snapshot(node)
        reset()
        before = snapshot(node)
        assert changed != before
        failures = 0
        for pages in range(0, 64):
            reset()
            with filled(fs, pages):
                done = run()
            after = snapshot(node)
            if done.returncode == 0:
                assert after == changed, (pages, _diff(after, changed))
                break
            failures += 1
            line = one_line_error(done)
            assert "No space left on device (ENOSPC)" in line and "df -h" in line, line
            assert after == before, (pages, line, _diff(after, before))
        else:
            pytest.fail(f"{name}: still failing with 64 free pages")
        assert failures > 0, f"{name}: never ran out of space; the sweep proved nothing"


def test_a_subprocess_on_a_full_disk_prints_one_line_and_no_traceback(mountable: None, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", 64) as fs:
        node = fs / "node"
        containerd_node(node)
        before = snapshot(node)
        with filled(fs, 0):
            done = subprocess.run([sys.executable, "-m", "kgpu", "runtime", "configure", "--root", str(node)],
                                  capture_output=True, text=True, timeout=60, check=False)
        assert "nothing was changed" in one_line_error(done, 1)
        assert snapshot(node) == before


@pytest.mark.parametrize(
    ("build", "args", "read_only_dir"),
    [
        (containerd_node, ["runtime", "configure"], "etc/containerd"),
        (containerd_node, ["runtime", "configure", "--no-drop-in"], "etc"),
        (docker_node, ["runtime", "configure", "--runtime", "docker"], "etc/docker"),
        (gpu_node, ["--simulate", "t4", "cdi", "generate", "-o", "/etc/cdi/nvidia.yaml"], "etc/cdi"),
        (broken_ubuntu_node, ["--simulate", "h100x8", "node", "prepare", "--apply"], "etc/sysctl.d"),
    ],
    ids=["containerd", "containerd-no-drop-in", "docker", "cdi", "prepare"],
)
def test_a_read_only_mount_is_one_line_and_nothing_changes(
    mountable: None, tmp_path: Path, build: Build, args: list[str], read_only_dir: str
) -> None:
    node = tmp_path / "node"
    build(node)
    (node / read_only_dir).mkdir(parents=True, exist_ok=True)
    before = snapshot(node)

    with read_only(node / read_only_dir):
        done = kgpu(*args, "--root", str(node))

    line = one_line_error(done, 1)
    assert "Read-only file system (EROFS)" in line and "remount" in line, line
    assert snapshot(node) == before


def _chattr(flag: str, path: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", flag, str(path)], capture_output=True, check=False).returncode == 0


@pytest.fixture
def attrs() -> Iterator[list[Path]]:
    marked: list[Path] = []
    yield marked
    for p in marked:
        _chattr("-ia", p)


@pytest.mark.parametrize(
    ("build", "args", "target", "flag", "what"),
    [
        # the drop-in must not land without the imports line that makes containerd read it
        (containerd_node, ["runtime", "configure"], "etc/containerd/config.toml", "+i", "immutable"),
        (containerd_node, ["runtime", "configure"], "etc/containerd", "+i", "immutable"),
        (configured_containerd_node, ["runtime", "unconfigure"], "etc/containerd/conf.d/99-nvidia.toml", "+i",
         "immutable"),
        (docker_node, ["runtime", "configure", "--runtime", "docker"], "etc/docker/daemon.json", "+a",
         "append-only"),
        (broken_ubuntu_node, ["--simulate", "h100x8", "node", "prepare", "--apply"], "etc/fstab", "+i",
         "immutable"),
    ],
    ids=["containerd-main", "containerd-dir", "unconfigure-drop-in", "docker-append-only", "prepare-fstab"],
)
def test_immutable_files_are_named_and_nothing_is_half_applied(
    mountable: None, tmp_path: Path, attrs: list[Path], build: Build, args: list[str], target: str, flag: str,
    what: str,
) -> None:
    node = tmp_path / "node"
    build(node)
    before = snapshot(node)
    if not _chattr(flag, node / target):
        pytest.skip(f"this filesystem has no chattr {flag}")
    attrs.append(node / target)

    done = kgpu(*args, "--root", str(node))

    line = one_line_error(done, 1)
    assert f"is {what}" in line and f"chattr -{flag[1]}" in line, line
    _chattr("-ia", node / target)
    assert snapshot(node) == before


# --- links, encodings, sequences (no root needed) -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["absolute", "relative", "escaping", "dangling-absolute", "linked-directory"])
def test_links_are_followed_under_the_root_or_refused(tmp_path: Path, kind: str) -> None:
    node = tmp_path / "node"
    (node / "etc/containerd").mkdir(parents=True)
    (node / "srv/cfg").mkdir(parents=True)
    shutil.copy(FIXTURES / "containerd-v2.toml", node / "srv/cfg/config.toml")
    (tmp_path / "outside.toml").write_text("version = 2\n")
    config = node / "etc/containerd/config.toml"
    target = {"absolute": "/srv/cfg/config.toml", "relative": "../../srv/cfg/config.toml",
              "escaping": "../../../outside.toml", "dangling-absolute": "/srv/cfg/new.toml"}.get(kind)
    if kind == "linked-directory":
        shutil.rmtree(node / "etc/containerd")
        (node / "etc/containerd").symlink_to("/srv/cfg")
    else:
        assert target is not None
        config.symlink_to(target)
    before = snapshot(tmp_path)

    done = kgpu("runtime", "configure", "--root", str(node), "--no-drop-in")

    if kind == "escaping":
        assert "leads outside" in one_line_error(done, 1)
        assert snapshot(tmp_path) == before
        return
    assert done.returncode == 0, done.stderr
    real = node / ("srv/cfg/new.toml" if kind == "dangling-absolute" else "srv/cfg/config.toml")
    assert "nvidia" in tomlkit.parse(real.read_text()).unwrap()["plugins"]["io.containerd.grpc.v1.cri"][
        "containerd"]["runtimes"]
    if kind != "linked-directory":
        assert os.readlink(config) == target  # the link stays a link
    assert (tmp_path / "outside.toml").read_text() == "version = 2\n"

    undone = kgpu("runtime", "unconfigure", "--root", str(node), "--no-drop-in")

    assert undone.returncode == 0, undone.stderr
    assert {k: v for k, v in snapshot(tmp_path).items() if ".kgpu." not in k} == before


def _utf16(text: str) -> bytes:
    return text.encode("utf-16")


ENCODINGS: list[tuple[str, str, bytes, list[str]]] = [
    ("containerd config.toml in UTF-16", "etc/containerd/config.toml", _utf16("version = 2\n"),
     ["runtime", "configure", "--root", "{node}"]),
    ("an imported containerd drop-in in Latin-1", "etc/containerd/conf.d/10-mirror.toml",
     b'version = 2\n# caf\xe9\n', ["runtime", "configure", "--root", "{node}"]),
    ("daemon.json in UTF-16 with a BOM", "etc/docker/daemon.json", _utf16('{"log-driver": "json-file"}'),
     ["runtime", "configure", "--runtime", "docker", "--root", "{node}"]),
    ("crio.conf in Latin-1", "etc/crio/crio.conf", b'[crio.runtime]\n# r\xe9seau\n',
     ["runtime", "configure", "--runtime", "crio", "--root", "{node}"]),
    ("a device-plugin config file in UTF-16", "plugin.yaml", _utf16("version: v1\n"),
     ["--simulate", "t4", "labels", "--config-file", "{node}/plugin.yaml"]),
    ("a simulated node fixture in UTF-16", "node.yaml", _utf16("driver_version: 1\n"),
     ["--simulate", "{node}/node.yaml", "gpus"]),
    ("a lint input in Latin-1", "deploy.yaml", b"kind: Pod\n# \xe9\n", ["lint", "{node}/deploy.yaml"]),
    ("a --collect CSV in UTF-16", "counters.csv", _utf16("DCGM_FI_DEV_GPU_TEMP, gauge, t\n"),
     ["--simulate", "t4", "exporter", "--collect", "{node}/counters.csv"]),
    ("a CDI spec in UTF-16", "etc/cdi/nvidia.yaml", _utf16("cdiVersion: 0.5.0\n"),
     ["cdi", "validate", "--root", "{node}", "/etc/cdi/nvidia.yaml"]),
    ("/etc/fstab in Latin-1", "etc/fstab", b"# caf\xe9\n", ["--simulate", "t4", "node", "prepare", "--root",
                                                              "{node}"]),
]


@pytest.mark.parametrize(("case", "rel", "data", "args"), ENCODINGS, ids=[e[0] for e in ENCODINGS])
def test_a_file_that_is_not_utf8_is_one_line_naming_it(tmp_path: Path, case: str, rel: str, data: bytes,
                                                       args: list[str]) -> None:
    node = tmp_path / "node"
    (node / "etc/containerd").mkdir(parents=True)
    if rel.startswith("etc/containerd/conf.d"):
        (node / "etc/containerd/config.toml").write_text('version = 2\nimports = ["/etc/containerd/conf.d/*.toml"]\n')
    (node / rel).parent.mkdir(parents=True, exist_ok=True)
    (node / rel).write_bytes(data)
    before = snapshot(node)

    done = kgpu(*(a.replace("{node}", str(node)) for a in args))

    line = one_line_error(done, 2)
    assert rel.split("/")[-1] in line, line
    assert ("UTF-16" in line and "iconv" in line) if data.startswith(b"\xff\xfe") else "not UTF-8" in line, line
    assert snapshot(node) == before, case


SEQUENCE: list[tuple[str, dict[str, object]]] = [
    ("configure", {}),
    ("configure", {"cdi": True}),
    ("configure", {"set_as_default": True}),
    ("configure", {"runtime_path": "/opt/nvidia/nvidia-container-runtime"}),
    ("configure", {}),
    ("unconfigure", {}),
    ("unconfigure", {}),
    ("configure", {"set_as_default": True, "cdi": True}),
    ("unconfigure", {}),
]


@pytest.mark.parametrize("no_drop_in", [False, True], ids=["drop-in", "main-file"])
def test_repeated_configure_unconfigure_ends_byte_identical_and_containerd_reads_every_step(
    tmp_path: Path, no_drop_in: bool
) -> None:
    from kgpu.runtime import ConfigureRequest, apply_plan, plan_configure, plan_unconfigure

    etc = tmp_path / "etc"
    etc.mkdir()
    shutil.copy(FIXTURES / "containerd-v2.toml", etc / "config.toml")
    (etc / "config.toml").write_text((etc / "config.toml").read_text().replace(
        '        SystemdCgroup = true\n', '        SystemdCgroup = true\n\n# ---- registry: the platform team ----\n'))
    before = snapshot(tmp_path)
    paths = {"config": str(etc / "config.toml"), "drop_in": None if no_drop_in else str(etc / "conf.d/99.toml"),
             "no_drop_in": no_drop_in}
    containerd = shutil.which("containerd")

    for verb, flags in SEQUENCE:
        req = ConfigureRequest(runtime="containerd", **paths, **flags)  # type: ignore[arg-type]
        apply_plan(plan_configure(req, Path("/")) if verb == "configure" else plan_unconfigure(req, Path("/")))
        if containerd:
            dump = subprocess.run([containerd, "--config", str(etc / "config.toml"), "config", "dump"],
                                  capture_output=True, text=True, check=True).stdout
            runtimes = tomlkit.parse(dump).unwrap()["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]
            assert ("nvidia" in runtimes) == (verb == "configure"), (verb, flags)

    # every file as it was (the emptied conf.d directory stays, as nvidia-ctk leaves it)
    after = {k: v for k, v in snapshot(tmp_path).items() if ".kgpu." not in k and k != "etc/conf.d"}
    assert after == before
    assert (etc / "config.toml.kgpu.orig").read_bytes() == before["etc/config.toml"][1]
