"""Exact fix text per distribution family: package manager, initramfs tool, repository set-up.

Every function returns text an admin can paste; file contents are shown after a
``Create FILE with:`` line, indented by two spaces.
"""

from __future__ import annotations

from kgpu.host.osrelease import OsRelease

BLACKLIST_FILE = "/etc/modprobe.d/blacklist-nouveau.conf"
BLACKLIST_CONTENT = (
    "# Written by kgpu: keep the open-source nouveau and nova drivers off NVIDIA GPUs.\n"
    "blacklist nouveau\n"
    "options nouveau modeset=0\n"
    "blacklist nova_core\n"
    "blacklist nova_drm\n"
)
MODULES_FILE = "/etc/modules-load.d/k8s.conf"
SYSCTL_FILE = "/etc/sysctl.d/99-kubernetes.conf"
DEV_CHAR_RULE_FILE = "/lib/udev/rules.d/71-nvidia-dev-char.rules"
DEV_CHAR_RULE = (
    'ACTION=="add", DEVPATH=="/bus/pci/drivers/nvidia", '
    'RUN+="/usr/bin/nvidia-ctk system create-dev-char-symlinks --create-all"\n'
)


def file_block(path: str, content: str) -> str:
    body = "\n".join("  " + line if line else "" for line in content.rstrip("\n").split("\n"))
    return f"Create {path} with:\n{body}"


def family_of(release: OsRelease | None) -> str:
    return release.family if release is not None else "unknown"


def initramfs_command(family: str) -> str:
    if family == "debian":
        return "update-initramfs -u"
    if family in ("rhel", "suse"):
        return "dracut --force"
    return "update-initramfs -u   # Debian/Ubuntu; on RHEL/SUSE: dracut --force"


def install_command(family: str, *packages: str) -> str:
    names = " ".join(packages)
    if family == "debian":
        return f"apt-get update && apt-get install -y {names}"
    if family == "rhel":
        return f"dnf install -y {names}"
    if family == "suse":
        return f"zypper install -y {names}"
    return f"apt-get install -y {names}   # or: dnf install -y {names}"


def toolkit_install(family: str) -> str:
    """NVIDIA's documented repository set-up and install of nvidia-container-toolkit."""
    if family == "debian":
        return (
            "curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | "
            "gpg --dearmor -o /usr/share/keyrings/nvidia-container-toolkit-keyring.gpg\n"
            "curl -s -L "
            "https://nvidia.github.io/libnvidia-container/stable/deb/nvidia-container-toolkit.list | "
            "sed 's#deb https://#deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] "
            "https://#g' > /etc/apt/sources.list.d/nvidia-container-toolkit.list\n"
            "apt-get update && apt-get install -y nvidia-container-toolkit"
        )
    if family == "rhel":
        return (
            "curl -s -L "
            "https://nvidia.github.io/libnvidia-container/stable/rpm/nvidia-container-toolkit.repo "
            "> /etc/yum.repos.d/nvidia-container-toolkit.repo\n"
            "dnf install -y nvidia-container-toolkit"
        )
    if family == "suse":
        return (
            "zypper ar https://nvidia.github.io/libnvidia-container/stable/rpm/nvidia-container-toolkit.repo\n"
            "zypper --gpg-auto-import-keys install -y nvidia-container-toolkit"
        )
    return "Install nvidia-container-toolkit: https://nvidia.github.io/libnvidia-container (apt, dnf or zypper)"


def cuda_repo_slug(release: OsRelease | None) -> str | None:
    """NVIDIA's repository name for the distribution: ``ubuntu2404``, ``debian12``, ``rhel9``, ``sles15``."""
    if release is None:
        return None
    if release.id == "ubuntu":
        return "ubuntu" + release.version_id.replace(".", "")
    if release.id == "debian":
        return "debian" + release.major_version
    if release.family == "rhel" and release.id not in ("fedora", "amzn"):
        return "rhel" + release.major_version
    if release.id == "fedora":
        return "fedora" + release.major_version
    if release.family == "suse":
        return "sles" + release.major_version
    return None


def driver_install(release: OsRelease | None, arch: str = "x86_64") -> str:
    """Install NVIDIA's open kernel modules driver from NVIDIA's CUDA repository."""
    family = family_of(release)
    slug = cuda_repo_slug(release)
    repo_arch = "sbsa" if arch == "aarch64" else "x86_64"
    base = f"https://developer.download.nvidia.com/compute/cuda/repos/{slug}/{repo_arch}"
    if family == "debian" and slug:
        return (
            f"curl -fsSLO {base}/cuda-keyring_1.1-1_all.deb && dpkg -i cuda-keyring_1.1-1_all.deb\n"
            "apt-get update && apt-get install -y nvidia-open\nreboot"
        )
    if family == "rhel" and slug:
        return f"dnf config-manager --add-repo {base}/cuda-{slug}.repo\ndnf install -y nvidia-open\nreboot"
    if family == "suse" and slug:
        return (
            f"zypper ar {base}/cuda-{slug}.repo\nzypper --gpg-auto-import-keys install -y nvidia-open\nreboot"
        )
    return "Install the NVIDIA data center driver (open kernel modules) for your distribution, then reboot"


def time_sync_install(family: str) -> str:
    if family == "debian":
        return "apt-get update && apt-get install -y chrony && systemctl enable --now chrony"
    if family in ("rhel", "suse"):
        return f"{install_command(family, 'chrony')} && systemctl enable --now chronyd"
    return "Install chrony and enable it: systemctl enable --now chronyd (chrony on Debian/Ubuntu)"
