"""Given a driver laid out under a root as real installers do, discovery finds exactly its files."""

from __future__ import annotations

from pathlib import Path

from kgpu.host.driverfiles import discover_driver_files

VERSION = "580.95.05"


def _lay_out(lib_dir: Path, bin_dir: Path, version: str | None = VERSION) -> None:
    lib_dir.mkdir(parents=True)
    bin_dir.mkdir(parents=True)
    for stem in ("libnvidia-ml.so", "libcuda.so", "libnvidia-ptxjitcompiler.so", "libGLX_nvidia.so"):
        if version:
            (lib_dir / f"{stem}.{version}").write_bytes(b"\x7fELF")
            (lib_dir / f"{stem}.1").symlink_to(f"{stem}.{version}")
        else:
            (lib_dir / f"{stem}.1").write_bytes(b"\x7fELF")
    (lib_dir / "libunrelated.so.1.2.3").write_bytes(b"\x7fELF")
    for name in ("nvidia-smi", "nvidia-cuda-mps-control"):
        (bin_dir / name).write_text("#!/bin/sh\n")


def test_gke_style_root_with_lib64_and_bin(tmp_path: Path) -> None:
    root = tmp_path / "usr/local/nvidia"
    _lay_out(root / "lib64", root / "bin")
    files = discover_driver_files(root)
    assert files.version == VERSION
    assert files.library_dir == root / "lib64"
    assert [p.name for p in files.libraries] == [
        f"libGLX_nvidia.so.{VERSION}",
        f"libcuda.so.{VERSION}",
        f"libnvidia-ml.so.{VERSION}",
        f"libnvidia-ptxjitcompiler.so.{VERSION}",
    ]
    assert {(link.path.name, link.target) for link in files.library_links} == {
        ("libcuda.so.1", f"libcuda.so.{VERSION}"),
        ("libnvidia-ml.so.1", f"libnvidia-ml.so.{VERSION}"),
        ("libnvidia-ptxjitcompiler.so.1", f"libnvidia-ptxjitcompiler.so.{VERSION}"),
        ("libGLX_nvidia.so.1", f"libGLX_nvidia.so.{VERSION}"),
    }
    assert [b.name for b in files.binaries] == ["nvidia-smi", "nvidia-cuda-mps-control"]


def test_distro_layout_under_usr_lib_multiarch_with_firmware(tmp_path: Path) -> None:
    import platform

    arch = {"aarch64": "aarch64-linux-gnu"}.get(platform.machine(), "x86_64-linux-gnu")
    _lay_out(tmp_path / f"usr/lib/{arch}", tmp_path / "usr/bin")
    fw = tmp_path / f"lib/firmware/nvidia/{VERSION}"
    fw.mkdir(parents=True)
    (fw / "gsp_ga10x.bin").write_bytes(b"")
    files = discover_driver_files(tmp_path)
    assert files.library_dir == tmp_path / f"usr/lib/{arch}"
    assert "libunrelated.so.1.2.3" not in {p.name for p in files.libraries}
    assert [p.name for p in files.firmware] == ["gsp_ga10x.bin"]


def test_unversioned_copies_fall_back_to_known_library_names(tmp_path: Path) -> None:
    root = tmp_path / "drv"
    _lay_out(root / "lib64", root / "bin", version=None)
    files = discover_driver_files(root)
    assert files.version is None
    assert {p.name for p in files.libraries} == {"libnvidia-ml.so.1", "libcuda.so.1", "libnvidia-ptxjitcompiler.so.1"}


def test_no_driver_under_root(tmp_path: Path) -> None:
    files = discover_driver_files(tmp_path)
    assert not files.found
    assert files.libraries == ()
