"""Given files as admins and config-management tools really leave them, kgpu reads and resolves them safely."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from kgpu.errors import ConfigError
from kgpu.fsio import NodeFileError, check_root, describe_os_error, locate, read_text, read_text_or_none


def test_utf8_with_a_byte_order_mark_reads_as_plain_text(tmp_path: Path) -> None:
    f = tmp_path / "config.toml"
    f.write_bytes(b"\xef\xbb\xbfversion = 2\n")
    assert read_text(f) == "version = 2\n"


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ("version = 2\n".encode("utf-16"), "UTF-16 (little-endian)"),
        ("version = 2\n".encode("utf-16-be"), "UTF-16 (big-endian)"),
        ("version = 2\n".encode("utf-16-le"), "UTF-16 (little-endian)"),
        ("version = 2\n".encode("utf-32"), "UTF-32 (little-endian)"),
    ],
)
def test_utf16_and_utf32_are_refused_by_name_with_the_conversion(tmp_path: Path, data: bytes, named: str) -> None:
    f = tmp_path / "daemon.json"
    f.write_bytes(data)
    with pytest.raises(ConfigError) as caught:
        read_text(f)
    message = str(caught.value)
    assert "\n" not in message
    assert f"{f}: the file is {named} text; kgpu reads UTF-8 only" in message
    assert "iconv -f UTF-" in message


def test_other_bytes_name_the_line_and_offset(tmp_path: Path) -> None:
    f = tmp_path / "plugin.yaml"
    f.write_bytes(b"version: v1\nflags: {migStrategy: caf\xe9}\n")
    with pytest.raises(ConfigError, match=r"plugin.yaml:2: not UTF-8 text \(byte 0xe9 at offset 36\)"):
        read_text(f)


def test_a_missing_file_is_none_only_where_absence_is_a_fact(tmp_path: Path) -> None:
    assert read_text_or_none(tmp_path / "absent") is None
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert read_text_or_none(tmp_path / "dangling") is None
    with pytest.raises(ConfigError, match=r"cannot read .*absent: No such file or directory \(ENOENT\)"):
        read_text(tmp_path / "absent")
    with pytest.raises(ConfigError, match=r"Is a directory \(EISDIR\)"):
        read_text_or_none(tmp_path)


def test_a_huge_file_is_refused_before_it_is_read_whole(tmp_path: Path) -> None:
    f = tmp_path / "big.csv"
    f.write_bytes(b"x" * 2048)
    with pytest.raises(ConfigError, match="larger than"):
        read_text(f, limit=1024)


def test_a_root_that_is_not_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--root .*nonexistent: no such directory"):
        check_root(tmp_path / "nonexistent")
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        check_root(tmp_path / "file")
    assert check_root(tmp_path) == tmp_path


def _node(tmp_path: Path) -> Path:
    root = tmp_path / "node"
    (root / "etc/containerd").mkdir(parents=True)
    (root / "opt/cfg").mkdir(parents=True)
    (root / "opt/cfg/config.toml").write_text("the node's file\n")
    return root


def test_an_absolute_link_is_followed_under_the_root_not_on_this_machine(tmp_path: Path) -> None:
    root = _node(tmp_path)
    (root / "etc/containerd/config.toml").symlink_to("/opt/cfg/config.toml")

    where = locate(root, "/etc/containerd/config.toml")

    assert where.real == root / "opt/cfg/config.toml"
    assert where.named == root / "etc/containerd/config.toml"
    assert where.through_link


def test_a_relative_link_and_a_linked_directory_resolve_like_the_kernel_would(tmp_path: Path) -> None:
    root = _node(tmp_path)
    (root / "etc/containerd/config.toml").symlink_to("../../opt/cfg/config.toml")
    (root / "etc/crio").symlink_to("/opt/cfg")

    assert locate(root, "/etc/containerd/config.toml").real == root / "opt/cfg/config.toml"
    assert locate(root, "/etc/crio/config.toml").real == root / "opt/cfg/config.toml"
    assert locate(root, "/etc/crio/crio.conf.d/99-nvidia.toml").real == root / "opt/cfg/crio.conf.d/99-nvidia.toml"


def test_dotdot_in_the_path_given_stops_at_the_root_as_in_a_chroot(tmp_path: Path) -> None:
    root = _node(tmp_path)
    assert locate(root, "/../../opt/cfg/config.toml").real == root / "opt/cfg/config.toml"


def test_a_link_that_leads_outside_the_root_is_refused_in_one_line(tmp_path: Path) -> None:
    root = _node(tmp_path)
    outside = tmp_path / "host-config.toml"
    outside.write_text("the machine's own file\n")
    (root / "etc/containerd/config.toml").symlink_to("../../../host-config.toml")

    with pytest.raises(NodeFileError) as caught:
        locate(root, "/etc/containerd/config.toml")

    message = str(caught.value)
    assert "\n" not in message
    assert "is a symbolic link to ../../../host-config.toml, which leads outside" in message


def test_a_link_loop_is_one_line(tmp_path: Path) -> None:
    root = _node(tmp_path)
    (root / "etc/a").symlink_to("b")
    (root / "etc/b").symlink_to("a")
    with pytest.raises(NodeFileError, match="more than 40 symbolic links"):
        locate(root, "/etc/a")


def test_at_slash_the_kernel_resolves_links_itself(tmp_path: Path) -> None:
    (tmp_path / "target").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    where = locate(Path("/"), str(tmp_path / "link"))
    assert where.real == Path(os.path.realpath(tmp_path / "target"))
    assert where.named.name == "link"


@pytest.mark.parametrize(
    ("code", "cause", "advice"),
    [
        (errno.ENOSPC, "(ENOSPC)", "free space on the filesystem holding"),
        (errno.EDQUOT, "(EDQUOT)", "df -h"),
        (errno.EROFS, "(EROFS)", "mount -o remount,rw"),
        (errno.EACCES, "(EACCES)", "permission denied" if os.geteuid() == 0 else "run as root"),
        (errno.EPERM, "(EPERM)", "lsattr"),
        (errno.EIO, "(EIO)", "dmesg"),
    ],
)
def test_every_os_error_is_one_line_with_the_path_the_cause_and_what_to_do(
    tmp_path: Path, code: int, cause: str, advice: str
) -> None:
    path = tmp_path / "etc/containerd/config.toml"
    message = describe_os_error(OSError(code, os.strerror(code)), "write", path, "/etc/containerd/config.toml")
    assert "\n" not in message
    assert message.startswith(f"cannot write /etc/containerd/config.toml ({path}): {os.strerror(code)} {cause}; ")
    assert advice in message
