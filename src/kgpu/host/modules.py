"""Kernel modules: what is loaded (``/proc/modules``), built in or installed (``/lib/modules``),
persisted for boot (``modules-load.d``, Debian's ``/etc/modules``) and blacklisted (``modprobe.d``,
the kernel command line).

Example::

    loaded = read_loaded_modules(Path("/"))
    "nvidia" in loaded
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kgpu.host.confdirs import conf_files, read_conf
from kgpu.host.paths import read_text, strip_comment

_MODULE_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
_BLOCKING_INSTALL = ("/bin/false", "/usr/bin/false", "/bin/true", "/usr/bin/true", "false", "true")


def normalize(name: str) -> str:
    """The kernel treats ``-`` and ``_`` in module names alike; ``/proc/modules`` uses ``_``."""
    return name.replace("-", "_")


@dataclass(frozen=True, slots=True)
class LoadedModule:
    """One line of ``/proc/modules``: ``nvidia 54001664 2 nvidia_uvm,nvidia_modeset, Live 0x0 (POE)``."""

    name: str
    size: int
    refcount: int
    used_by: tuple[str, ...]
    state: str
    line: str


@dataclass(frozen=True, slots=True)
class Setting:
    """A value found in a configuration file, and where: ``/etc/modules-load.d/k8s.conf:2``."""

    value: str
    source: str


def read_loaded_modules(root: Path) -> dict[str, LoadedModule] | None:
    """Modules in ``/proc/modules`` by name; ``None`` when the file cannot be read."""
    text = read_text(root, "/proc/modules")
    if text is None:
        return None
    out: dict[str, LoadedModule] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        used = tuple(u for u in fields[3].split(",") if u and u != "-")
        try:
            size, refs = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        out[fields[0]] = LoadedModule(fields[0], size, refs, used, fields[4], line.strip())
    return out


def kernel_release(root: Path) -> str | None:
    """``uname -r`` of the running kernel, read from ``/proc/sys/kernel/osrelease``."""
    text = read_text(root, "/proc/sys/kernel/osrelease")
    if text is None or not text.strip():
        return None
    return text.strip()


@dataclass(frozen=True, slots=True)
class InstalledModules:
    """What ``/lib/modules/<release>`` offers: loadable modules (name → path) and built-in ones."""

    release: str
    directory_found: bool
    loadable: dict[str, str]
    builtin: frozenset[str]

    def has(self, name: str) -> bool:
        return normalize(name) in self.loadable or normalize(name) in self.builtin


def _module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    for suffix in _MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return normalize(base)


def read_installed_modules(root: Path, release: str | None) -> InstalledModules | None:
    """Parse ``modules.dep`` and ``modules.builtin`` of the running kernel (``None`` without a release)."""
    if release is None:
        return None
    base = f"/lib/modules/{release}"
    dep = read_text(root, f"{base}/modules.dep")
    builtin_text = read_text(root, f"{base}/modules.builtin")
    loadable: dict[str, str] = {}
    for line in (dep or "").splitlines():
        path, _, _ = line.partition(":")
        if path:
            loadable[_module_name(path)] = f"{base}/{path}"
    builtin = frozenset(_module_name(p) for p in (builtin_text or "").split())
    return InstalledModules(release, dep is not None or builtin_text is not None, loadable, builtin)


def read_persisted_modules(root: Path) -> dict[str, Setting]:
    """Modules loaded at boot by ``systemd-modules-load`` (``modules-load.d``) or Debian's
    ``/etc/modules``."""
    out: dict[str, Setting] = {}
    for shown, real in conf_files(root, "modules-load.d"):
        for number, line in enumerate(read_conf(real).splitlines(), 1):
            name = strip_comment(line, "#;")
            if name:
                out.setdefault(normalize(name), Setting(name, f"{shown}:{number}"))
    etc_modules = read_text(root, "/etc/modules")
    for number, line in enumerate((etc_modules or "").splitlines(), 1):
        words = strip_comment(line, "#").split()
        if words:
            out.setdefault(normalize(words[0]), Setting(line.strip(), f"/etc/modules:{number}"))
    return out


def read_blacklist(root: Path) -> dict[str, Setting]:
    """Modules kept from loading: ``blacklist X`` / ``install X /bin/false`` in ``modprobe.d``,
    ``modprobe.blacklist=`` / ``rd.driver.blacklist=`` / ``module_blacklist=`` on the kernel command line."""
    out: dict[str, Setting] = {}
    for shown, real in conf_files(root, "modprobe.d"):
        for number, line in enumerate(read_conf(real).splitlines(), 1):
            words = strip_comment(line, "#").split()
            if (len(words) >= 2 and words[0] == "blacklist") or (
                len(words) >= 3 and words[0] == "install" and words[2] in _BLOCKING_INSTALL
            ):
                out.setdefault(normalize(words[1]), Setting(line.strip(), f"{shown}:{number}"))
    cmdline = read_text(root, "/proc/cmdline") or ""
    for arg in cmdline.split():
        key, _, value = arg.partition("=")
        if key in ("modprobe.blacklist", "rd.driver.blacklist", "module_blacklist"):
            for name in value.split(","):
                if name:
                    out.setdefault(normalize(name), Setting(arg, "/proc/cmdline"))
    return out
