"""Build the ``nvidia.com/gpu`` CDI spec from the GPU inventory and the driver files on the host.

What goes in, as ``nvidia-ctk cdi generate`` emits it:

- one device per GPU (``/dev/nvidiaN``) and per MIG device (its parent's ``/dev/nvidiaN`` plus the
  ``/dev/nvidia-caps/nvidia-capM`` of its GPU and compute instance, read from
  ``/proc/driver/nvidia-caps/mig-minors``), named by index (``0``, ``0:1``) and/or UUID, plus ``all``;
- spec-wide: ``/dev/nvidiactl``, ``/dev/nvidia-uvm``, ``/dev/nvidia-uvm-tools``, ``/dev/nvidia-modeset``;
  the driver's libraries (every ``lib*.so.<driver version>``), GSP firmware and binaries
  (nvidia-smi, nvidia-debugdump, nvidia-persistenced, MPS control and server) as read-only bind mounts,
  the persistenced / fabric-manager sockets and the MPS pipe directory when present;
  ``NVIDIA_VISIBLE_DEVICES=void`` so the legacy runtime hook does not inject devices a second time;
- ``NVIDIA_CTK_LIBCUDA_DIR`` (where libcuda is in the container) and the ``nvidia-cdi-hook`` hooks,
  in nvidia-ctk's order, each with ``NVIDIA_CTK_DEBUG=false``: ``create-symlinks`` (``libcuda.so``),
  ``enable-cuda-compat --host-driver-version=…``, ``update-ldcache``,
  ``disable-device-node-modification`` and ``update-application-profile`` — each only when the hook
  binary on the node has that subcommand (an older toolkit would fail every container on an
  unknown one) and it is not switched off with ``--disable-hook``.

Device nodes are looked for under ``--dev-root``, which defaults to the driver root (as nvidia-ctk;
a driver root without a ``/dev`` of its own, as GKE's ``/usr/local/nvidia``, uses the node's ``/dev``).
Container paths are host paths with the driver root taken off, as nvidia-ctk does: with the driver
under ``/usr/local/nvidia``, ``/usr/local/nvidia/lib64/libcuda.so.580.95.05`` appears in the
container as ``/lib64/libcuda.so.580.95.05``. Without ``nvidia-cdi-hook`` on the host the hooks are
left out (a spec naming a missing hook fails every container) and the soname links are mounted
as files instead, so ``libcuda.so.1`` still resolves in the container.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kgpu.cdi.spec import ContainerEdits, Device, DeviceNode, Hook, Mount, Spec
from kgpu.errors import KgpuError
from kgpu.fsio import locate, read_text
from kgpu.gpu.model import GPU, Inventory, MigDevice
from kgpu.host.driverfiles import DriverFiles, discover_driver_files

KIND = "nvidia.com/gpu"
STRATEGIES = ("index", "uuid")
NVIDIA_CDI_HOOK = "/usr/bin/nvidia-cdi-hook"
COMMON_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
REQUIRED_DEVICE_NODES = ("/dev/nvidiactl",)
IPC_PATHS = ("/run/nvidia-persistenced/socket", "/run/nvidia-fabricmanager/socket", "/tmp/nvidia-mps")
MIG_MINORS = "/proc/driver/nvidia-caps/mig-minors"
IPC_OPTIONS = ("nosuid", "nodev", "rbind", "rprivate", "noexec")
HOOK_ENV = ("NVIDIA_CTK_DEBUG=false",)
HOOKS = ("create-symlinks", "enable-cuda-compat", "update-ldcache", "disable-device-node-modification",
         "update-application-profile")
"""nvidia-cdi-hook's subcommands kgpu emits, in nvidia-ctk's order."""
_BASE_HOOKS = frozenset({"create-symlinks", "update-ldcache"})
"""What every nvidia-cdi-hook (toolkit ≥ 1.16) has; assumed when the binary names none of HOOKS."""
_HOOK_BINARY_LIMIT = 256 * 1024 * 1024


class CdiError(KgpuError):
    """The spec cannot be generated for this node; the message says what is missing."""


@dataclass(frozen=True, slots=True)
class CdiOptions:
    root: Path = Path("/")
    """Filesystem root every host path is read under; paths in the spec are as the node sees them."""
    driver_root: str = "/"
    dev_root: str | None = None
    """Root of the /dev holding the device nodes; None: the driver root (nvidia-ctk's default)."""
    strategies: tuple[str, ...] = ("index", "uuid")
    """Device names: ``index`` (``0``, ``0:1``) and/or ``uuid``; both by default, so the spec answers
    ``nvidia.com/gpu=0`` as well as ``nvidia.com/gpu=GPU-…`` (the device plugin's default ID strategy)."""
    hook_path: str = NVIDIA_CDI_HOOK
    disabled_hooks: frozenset[str] = frozenset()
    """nvidia-ctk's ``--disable-hook``: hook names to leave out, or ``all``."""
    kind: str = "nvidia.com/gpu"


@dataclass(frozen=True, slots=True)
class GeneratedSpec:
    spec: Spec
    driver_version: str | None
    notes: tuple[str, ...]
    left_out: tuple[str, ...]
    """Driver-looking files found beside the driver's that the spec does not mount (for review)."""


def _node(root: Path, p: Path) -> str:
    return "/" + str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


def _under(root: Path, node_path: str) -> Path:
    return locate(root, node_path).real


def hook_commands(root: Path, hook_path: str) -> frozenset[str]:
    """The subcommands of ``nvidia-cdi-hook`` (of HOOKS) the binary on the node has, read from its bytes.

    Nothing is run (the node may be mounted under --root, or another architecture). A binary naming
    none of them (a wrapper script, say) is taken to have the two every version has.
    """
    path = _under(root, hook_path)
    try:
        with open(path, "rb") as f:
            data = f.read(_HOOK_BINARY_LIMIT)
    except OSError:
        return frozenset()
    found = frozenset(h for h in HOOKS if h.encode() in data)
    return found or _BASE_HOOKS


def _join(base: str, path: str) -> str:
    return str(PurePosixPath(base) / path.lstrip("/"))


def _container_path(driver_root: str, node_path: str) -> str:
    base = driver_root.rstrip("/")
    if base and node_path.startswith(base + "/"):
        return node_path[len(base) :]
    return node_path


def read_mig_minors(text: str) -> dict[str, int]:
    """``gpu0/gi2/access 21`` lines → ``{"gpu0/gi2/access": 21}``."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _device_names(gpu: GPU, mig: MigDevice | None, strategies: tuple[str, ...]) -> list[str]:
    names = []
    for strategy in strategies:
        if strategy == "index":
            names.append(str(gpu.index) if mig is None else f"{gpu.index}:{mig.index}")
        elif strategy == "uuid":
            names.append(gpu.uuid if mig is None else mig.uuid)
        else:
            raise CdiError(f"--device-name-strategy {strategy!r}: allowed index, uuid, both")
    return names


def generate_spec(inventory: Inventory, options: CdiOptions = CdiOptions()) -> GeneratedSpec:
    """The CDI spec for ``inventory``'s GPUs and the driver under ``options.driver_root``."""
    root = options.root
    notes: list[str] = []
    dev_root = options.dev_root if options.dev_root is not None else options.driver_root
    if options.dev_root is None and not _under(root, _join(dev_root, "/dev/nvidiactl")).exists():
        # the driver alone under its root (GKE's /usr/local/nvidia, which may hold a /dev of its own
        # without the device nodes): its device nodes are the node's
        notes.append(f"no /dev/nvidiactl under the driver root {dev_root}: device nodes are looked for in /dev "
                     f"(--dev-root chooses another)")
        dev_root = "/"

    def device_node(path: str, required: bool, what: str) -> DeviceNode | None:
        host = _join(dev_root, path)
        if _under(root, host).exists():
            return DeviceNode(path, host)
        if required:
            raise CdiError(f"{host} does not exist ({what}); is the nvidia kernel module loaded?")
        return None

    # --- devices ---
    devices: list[Device] = []
    all_nodes: list[DeviceNode] = []
    minors: dict[str, int] | None = None
    for gpu in inventory.gpus:
        gpu_node = device_node(gpu.device_node, True, f"GPU {gpu.index} {gpu.uuid}")
        assert gpu_node is not None
        for name in _device_names(gpu, None, options.strategies):
            devices.append(Device(name, ContainerEdits(device_nodes=(gpu_node,))))
        all_nodes.append(gpu_node)
        for mig in gpu.mig_devices:
            if minors is None:
                text = _under(root, MIG_MINORS)
                if not text.is_file():
                    raise CdiError(f"{MIG_MINORS} is missing: cannot map MIG devices to /dev/nvidia-caps nodes")
                minors = read_mig_minors(read_text(text, MIG_MINORS))
            nodes = [gpu_node]
            for key in (
                f"gpu{gpu.minor}/gi{mig.gpu_instance_id}/access",
                f"gpu{gpu.minor}/gi{mig.gpu_instance_id}/ci{mig.compute_instance_id}/access",
            ):
                if key not in minors:
                    raise CdiError(f"{MIG_MINORS} has no {key} (MIG device {mig.uuid})")
                cap = device_node(f"/dev/nvidia-caps/nvidia-cap{minors[key]}", True, f"MIG {mig.uuid} {key}")
                assert cap is not None
                nodes.append(cap)
            for name in _device_names(gpu, mig, options.strategies):
                devices.append(Device(name, ContainerEdits(device_nodes=tuple(nodes))))
            all_nodes.extend(nodes)
    if not devices:
        raise CdiError("no GPUs in the inventory: nothing to describe")
    unique_nodes = tuple(dict.fromkeys(all_nodes))
    devices.append(Device("all", ContainerEdits(device_nodes=unique_nodes)))

    # --- common edits: device nodes ---
    common_nodes = []
    for path in COMMON_DEVICE_NODES:
        common = device_node(path, path in REQUIRED_DEVICE_NODES, "the NVIDIA control device")
        if common is not None:
            common_nodes.append(common)

    # --- driver files ---
    files = discover_driver_files(_under(root, options.driver_root))
    if not files.found:
        raise CdiError(
            f"no NVIDIA driver libraries (libnvidia-ml.so.1 or libcuda.so.1) under {options.driver_root}; "
            f"pass --driver-root (e.g. /usr/local/nvidia, /run/nvidia/driver)"
        )
    if files.version and inventory.driver_version and files.version != inventory.driver_version:
        notes.append(f"driver files are version {files.version} but the GPUs report {inventory.driver_version}")
    mounts: list[Mount] = []
    libraries = [_node(root, p) for p in (*files.libraries, *_vdpau(files))]
    for lib in libraries:
        mounts.append(Mount(lib, _container_path(options.driver_root, lib)))
    for fw in files.firmware:
        if fw.name.startswith("gsp") and fw.name.endswith(".bin"):
            fw_path = _node(root, fw)
            mounts.append(Mount(fw_path, _container_path(options.driver_root, fw_path)))
    for ipc in IPC_PATHS:
        for base in dict.fromkeys((options.driver_root, "/")):
            host = _join(base, ipc)
            if _under(root, host).exists():
                mounts.append(Mount(host, ipc, IPC_OPTIONS))
                break
    for binary in files.binaries:
        bin_path = _node(root, binary)
        mounts.append(Mount(bin_path, _container_path(options.driver_root, bin_path)))

    # --- hooks, or soname links as mounts when there is no hook binary ---
    hooks: list[Hook] = []
    env = ["NVIDIA_VISIBLE_DEVICES=void"]
    lib_dirs = list(dict.fromkeys(str(PurePosixPath(_container_path(options.driver_root, lib)).parent)
                                  for lib in libraries))
    cuda = [lib for lib in libraries if PurePosixPath(lib).name.startswith("libcuda.so.")]
    cuda_dir = str(PurePosixPath(_container_path(options.driver_root, cuda[0])).parent) if cuda else None
    if cuda_dir is not None:
        env.insert(0, f"NVIDIA_CTK_LIBCUDA_DIR={cuda_dir}")
    available = hook_commands(root, options.hook_path)
    if available:
        wanted = set() if "all" in options.disabled_hooks else available - options.disabled_hooks
        base = PurePosixPath(options.hook_path).name
        args: dict[str, list[str]] = {
            "create-symlinks": ["--link", f"libcuda.so.1::{cuda_dir}/libcuda.so"] if cuda_dir else [],
            "enable-cuda-compat": [f"--host-driver-version={files.version}"] if files.version else [],
            "update-ldcache": [a for d in lib_dirs for a in ("--folder", d)],
            "disable-device-node-modification": [],
            "update-application-profile": [],
        }
        needs_args = {"create-symlinks", "enable-cuda-compat", "update-ldcache"}
        for name in HOOKS:
            if name in wanted and (args[name] or name not in needs_args):
                hooks.append(Hook("createContainer", options.hook_path, (base, name, *args[name]), HOOK_ENV))
    else:
        notes.append(
            f"{options.hook_path} is not installed (nvidia-container-toolkit ≥ 1.16 ships it): the spec has no "
            f"ldcache/symlink hooks and mounts the soname links instead; libraries are in {', '.join(lib_dirs)} "
            f"in the container"
        )
        for link in files.library_links:
            host = _node(root, link.path)
            mounts.append(Mount(host, _container_path(options.driver_root, host)))

    edits = ContainerEdits(
        env=tuple(env),
        device_nodes=tuple(common_nodes),
        mounts=tuple(mounts),
        hooks=tuple(hooks),
    )
    spec = Spec(kind=options.kind, devices=tuple(devices), edits=edits)
    return GeneratedSpec(spec, files.version, tuple(notes), _left_out(root, files, {m.host_path for m in mounts}))


def _vdpau(files: DriverFiles) -> tuple[Path, ...]:
    """The driver's VDPAU library, kept in a ``vdpau`` directory beside the others (nvidia-ctk mounts it)."""
    if files.library_dir is None or files.version is None:
        return ()
    directory = files.library_dir / "vdpau"
    if not directory.is_dir():
        return ()
    suffix = f".so.{files.version}"
    return tuple(sorted(p for p in directory.iterdir()
                        if p.name.endswith(suffix) and p.is_file() and not p.is_symlink()))


def _left_out(root: Path, files: DriverFiles, mounted: set[str]) -> tuple[str, ...]:
    """Driver-looking files beside the driver's own that the spec does not carry, for a human to review.

    Links that resolve to a mounted library (``libnvidia-ml.so``) and the container toolkit's own
    binaries (nvidia-ctk, nvidia-cdi-hook, nvidia-container-*) are not the driver's and are not listed.
    """
    mounted_real = {(root / m.lstrip("/")).resolve() for m in mounted}
    out = []
    if files.library_dir is not None:
        linked = {_node(root, link.path) for link in files.library_links}
        for p in sorted(files.library_dir.iterdir()):
            node = _node(root, p)
            looks = "nvidia" in p.name or p.name.startswith(("libcuda", "libnvcuvid", "libnvoptix"))
            if not looks or ".so" not in p.name or p.is_dir() or node in mounted or node in linked:
                continue
            if p.is_symlink() and p.resolve() in mounted_real:
                continue
            out.append(node)
    for directory in sorted({b.parent for b in files.binaries}):
        for p in sorted(directory.iterdir()):
            node = _node(root, p)
            toolkit = p.name.startswith(("nvidia-container", "nvidia-ctk", "nvidia-cdi-hook"))
            if p.name.startswith("nvidia-") and not toolkit and node not in mounted and p.is_file():
                out.append(node)
    return tuple(out)
