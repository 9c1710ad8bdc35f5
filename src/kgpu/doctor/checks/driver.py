"""driver.nouveau, driver.loaded, driver.nvml, driver.device-nodes: is the NVIDIA driver in charge?"""

from __future__ import annotations

from kgpu.doctor.facts import NodeFacts
from kgpu.doctor.finding import Outcome, failed, passed, skipped, warned
from kgpu.doctor.fixes import BLACKLIST_CONTENT, BLACKLIST_FILE, driver_install, file_block, initramfs_command
from kgpu.host.paths import under

OPEN_SOURCE_DRIVERS = ("nouveau", "nova_core", "nova_drm")


def nouveau(facts: NodeFacts) -> Outcome:
    host = facts.host
    if host.loaded_modules is None:
        return skipped("cannot tell which modules are loaded", "/proc/modules is not readable")
    family = host.family
    blacklist_fix = (
        f"{file_block(BLACKLIST_FILE, BLACKLIST_CONTENT)}\n"
        f"then run: {initramfs_command(family)} && reboot\n"
        f"(or: kgpu node prepare --apply writes the file)"
    )
    loaded = [host.loaded_modules[m] for m in OPEN_SOURCE_DRIVERS if m in host.loaded_modules]
    if loaded:
        return failed(
            f"{', '.join(m.name for m in loaded)} loaded: it holds the GPU, the NVIDIA driver cannot",
            [f"/proc/modules: {m.line}" for m in loaded],
            blacklist_fix,
        )
    installed = host.installed_modules
    if facts.container_note:
        return passed("nouveau/nova not loaded", "/proc/modules: no nouveau, nova_core or nova_drm",
                      "blacklist not judged: " + facts.container_note)
    present = [m for m in OPEN_SOURCE_DRIVERS if installed is not None and installed.has(m)]
    unblocked = [m for m in present if m not in host.blacklist]
    blocked = [f"{s.source}: {s.value}" for m, s in host.blacklist.items() if m in OPEN_SOURCE_DRIVERS]
    if installed is None or not installed.directory_found:
        return passed(
            "nouveau/nova not loaded",
            "/proc/modules: no nouveau, nova_core or nova_drm",
            *blocked,
            "kernel modules directory not readable here, blacklist not judged",
        )
    if not unblocked:
        if not present:
            return passed(
                "nouveau/nova not loaded", f"no nouveau or nova module in /lib/modules/{installed.release}"
            )
        return passed("nouveau/nova not loaded and blacklisted", *blocked)
    return warned(
        f"{', '.join(unblocked)} not loaded now, but not blacklisted: it may take the GPU at the next boot",
        [
            f"/lib/modules/{installed.release}: {installed.loadable.get(m, m + ' (built in)')}"
            for m in unblocked
        ]
        + [
            "no 'blacklist' line for it in /etc/modprobe.d, /usr/lib/modprobe.d, /lib/modprobe.d or "
            "/proc/cmdline"
        ],
        blacklist_fix,
    )


def _driver_fix(facts: NodeFacts) -> str:
    installed = facts.host.installed_modules
    if installed is not None and installed.has("nvidia"):
        return (
            "The module is installed but not loaded: modprobe nvidia && modprobe nvidia_uvm\n"
            "If that fails, read why: dmesg | grep -iE 'nvrm|nvidia' (Secure Boot needs the module signed; "
            "a kernel update needs the module rebuilt: dkms autoinstall)"
        )
    return driver_install(facts.host.os_release, facts.host.arch)


def loaded(facts: NodeFacts) -> Outcome:
    host = facts.host
    module = host.loaded_modules.get("nvidia") if host.loaded_modules is not None else None
    version = host.kernel_driver
    if version is not None:
        evidence = [f"/proc/driver/nvidia/version: {version.first_line}"]
        if module is not None:
            evidence.insert(0, f"/proc/modules: {module.line}")
        return passed(f"NVIDIA kernel driver {version.version or '?'} loaded", *evidence)
    evidence = ["/proc/driver/nvidia/version is missing"]
    if module is not None:
        evidence.insert(0, f"/proc/modules: {module.line}")
        return failed("nvidia module listed but the driver is not initialised", evidence, _driver_fix(facts))
    if host.loaded_modules is None:
        return skipped("cannot tell whether the driver is loaded",
                       "/proc/modules is not readable and /proc/driver/nvidia/version is missing (no /proc "
                       "under the root?)")
    evidence.insert(
        0,
        "/proc/modules: no 'nvidia' module"
        if host.loaded_modules is not None
        else "/proc/modules is not readable",
    )
    return failed("NVIDIA kernel driver not loaded", evidence, _driver_fix(facts))


def nvml(facts: NodeFacts) -> Outcome:
    gpu = facts.gpu
    inv = gpu.inventory
    if inv is None:
        error = gpu.error or "unknown error"
        if "mismatch" in error.lower():
            fix = (
                "The kernel module and the user-space libraries are different versions (a driver upgrade "
                "without reboot): reboot, or unload and reload the modules: "
                "rmmod nvidia_uvm nvidia_drm nvidia_modeset nvidia && modprobe nvidia"
            )
        elif facts.host.kernel_driver is None:
            fix = "Load the kernel driver first (see driver.loaded), then check again: nvidia-smi"
        else:
            fix = (
                "Point kgpu at the driver's libraries: kgpu --driver-root DIR doctor (DIR holds lib64/ or "
                "usr/lib/…/libnvidia-ml.so.1, e.g. /usr/local/nvidia or /run/nvidia/driver), or install the "
                "user-space driver matching the kernel module"
            )
        return failed("NVML does not initialise", f"{gpu.backend}: {error}", fix)
    if gpu.backend == "simulated":
        return passed(
            f"simulated node ({gpu.library}): NVML not used",
            f"driver {inv.driver_version}, CUDA {inv.cuda_driver_version}, {len(inv.gpus)} GPU(s)",
        )
    evidence = [
        f"NVML from {gpu.library}: driver {inv.driver_version}, CUDA {inv.cuda_driver_version}, "
        f"{len(inv.gpus)} GPU(s)"
    ]
    kernel = facts.host.kernel_driver
    if kernel is not None and kernel.version and kernel.version != inv.driver_version:
        evidence.append(f"/proc/driver/nvidia/version says {kernel.version}")
    on_bus = {d.address for d in facts.pci_gpus}
    seen = {g.sysfs_bus_id for g in inv.gpus}
    missing = sorted(on_bus - seen)
    if missing:
        evidence.append(f"on the PCI bus but not seen by NVML: {', '.join(missing)}")
        return warned(
            f"NVML sees {len(seen)} of {len(on_bus)} GPUs",
            evidence,
            "A GPU on the bus that NVML does not list has usually fallen off the bus or failed to "
            "initialise: "
            "dmesg | grep -iE 'NVRM|Xid' (Xid 79 = fallen off the bus); a reboot or a reset of that GPU "
            "is needed",
        )
    return passed(f"NVML works: {len(inv.gpus)} GPU(s), driver {inv.driver_version}", *evidence)


def device_nodes(facts: NodeFacts) -> Outcome:
    if facts.gpu_count == 0:
        return skipped("no GPU known to need device nodes", "neither NVML nor the PCI bus shows a GPU")
    present = set(facts.host.device_nodes)
    if not present and not under(facts.host.root, "/dev").is_dir():
        return skipped("cannot see the device nodes", "no /dev under the root")
    minors = [g.minor for g in facts.gpus] if facts.gpus else list(range(len(facts.pci_gpus)))
    wanted = ["nvidiactl", "nvidia-uvm", *(f"nvidia{m}" for m in minors)]
    if any(g.mig_enabled for g in facts.gpus):
        wanted.append("nvidia-caps")
    missing = [w for w in wanted if w not in present]
    if not missing:
        return passed(f"{len(wanted)} device nodes present", "/dev: " + " ".join(f"{w}" for w in wanted))
    evidence = [f"/dev/{m} is missing" for m in missing]
    evidence.append("/dev has: " + (" ".join(sorted(present)) or "no nvidia* entries"))
    fix = (
        "Create the nodes (as root): nvidia-modprobe -u -c=0   (repeat -c=N for each GPU), or\n"
        "nvidia-ctk system create-device-nodes --control-devices --load-kernel-modules\n"
        "Running nvidia-smi once as root also creates them; to have them at every boot enable "
        "nvidia-persistenced (systemctl enable --now nvidia-persistenced)."
    )
    if "nvidia-uvm" in missing:
        fix += "\n/dev/nvidia-uvm needs the nvidia_uvm module: modprobe nvidia_uvm"
    return failed(f"{len(missing)} NVIDIA device node(s) missing", evidence, fix)
