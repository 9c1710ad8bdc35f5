"""runtime.*: the container runtimes and the NVIDIA Container Toolkit between them and the GPU."""

from __future__ import annotations

from kgpu.doctor.facts import NodeFacts
from kgpu.doctor.finding import Outcome, failed, passed, skipped, warned
from kgpu.doctor.fixes import DEV_CHAR_RULE, DEV_CHAR_RULE_FILE, file_block, toolkit_install
from kgpu.host.containerd import ContainerRuntimeEntry
from kgpu.host.nvidia import char_link_exists, device_number
from kgpu.host.paths import under
from kgpu.host.toolkit import BINARY_DIRS, find_binary

_CHAR_DEVICES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")


def _bool_text(value: bool | None) -> str:
    return "unset (false)" if value is None else str(value).lower()


def _installed(facts: NodeFacts) -> list[str]:
    host = facts.host
    return [
        n
        for n, ok in (
            ("containerd", host.containerd.installed),
            ("docker", host.docker.installed),
            ("crio", host.crio.installed),
        )
        if ok
    ]


def _nvidia_entries(facts: NodeFacts) -> list[tuple[str, str, ContainerRuntimeEntry]]:
    """(runtime, config file, entry) for every ``nvidia*`` runtime the installed runtimes are configured
    with."""
    host = facts.host
    out = []
    if host.containerd.installed and host.containerd.config is not None:
        cfg = host.containerd.config
        out += [("containerd", cfg.path, e) for n, e in cfg.runtimes.items() if n.startswith("nvidia")]
    if host.docker.installed:
        cfg_d = host.docker.config
        out += [("docker", cfg_d.path, e) for n, e in cfg_d.runtimes.items() if n.startswith("nvidia")]
    if host.crio.installed:
        cfg_c = host.crio.config
        files = ", ".join(cfg_c.files) or "/etc/crio/crio.conf"
        out += [("crio", files, e) for n, e in cfg_c.runtimes.items() if n.startswith("nvidia")]
    return out


def _binary_exists(facts: NodeFacts, binary: str) -> bool:
    if binary.startswith("/"):
        return under(facts.host.root, binary).is_file()
    return find_binary(facts.host.root, binary, BINARY_DIRS) is not None


def toolkit(facts: NodeFacts) -> Outcome:
    tk = facts.host.toolkit
    runtimes = _installed(facts)
    if not runtimes and not tk.binaries:
        return skipped("no container runtime installed", "no containerd, dockerd or crio binary")
    evidence = [f"{name}: {path}" for name, path in sorted(tk.binaries.items())]
    missing = [f"{b}: not found in {', '.join(BINARY_DIRS)}" for b in tk.missing()]
    broken = []  # what makes containers fail now
    for runtime, path, entry in _nvidia_entries(facts):
        if entry.binary and not _binary_exists(facts, entry.binary):
            broken.append(
                f"{path} ({runtime}) runs '{entry.binary}', which does not exist: containers fail with "
                f"'fork/exec {entry.binary}: no such file or directory'"
            )
    if tk.config is not None and tk.config.error:
        broken.append(f"{tk.config.path}: {tk.config.error}")
    if not missing and not broken:
        return passed("NVIDIA Container Toolkit installed", *evidence)
    if not broken:
        # nothing uses it yet: CDI specs without hooks and kgpu's driver-mounts work without it
        return warned("NVIDIA Container Toolkit not installed (no runtime uses it yet)", missing + evidence,
                      toolkit_install(facts.host.family))
    return failed(
        "NVIDIA Container Toolkit missing or broken: GPU containers fail to start",
        broken + missing + evidence,
        toolkit_install(facts.host.family),
    )


def _kubelet_driver(facts: NodeFacts) -> str | None:
    """The kubelet's cgroup driver, or None when there is no kubelet or k3s/RKE2 choose it with containerd's."""
    k = facts.host.kubelet
    return k.cgroup_driver if k.installed and k.embedded is None else None


def _configure(runtime: str, extra: str = "") -> str:
    restart = {"containerd": "containerd", "docker": "docker", "crio": "crio"}[runtime]
    return (
        f"kgpu runtime configure --runtime {runtime}{extra}   "
        f"(or: nvidia-ctk runtime configure --runtime={runtime}{extra})\n"
        f"systemctl restart {restart}"
    )


def containerd(facts: NodeFacts) -> Outcome:
    c = facts.host.containerd
    if not c.installed or c.config is None:
        return skipped("containerd not installed", "no containerd binary or config")
    cfg = c.config
    if cfg.error:
        return failed(
            f"{cfg.path} does not parse",
            f"{cfg.path}: {cfg.error}",
            f"Fix the TOML syntax in {cfg.path}, then: systemctl restart containerd",
        )
    evidence = [f"{cfg.path}: " + (f"version {cfg.version}" if cfg.exists else "missing (built-in defaults)")]
    evidence += [f"imported: {p}" for p in cfg.imported]
    kubelet = facts.host.kubelet
    uses_containerd = kubelet.runtime_name in (None, "containerd")
    if cfg.cri_disabled and not (kubelet.installed and uses_containerd):
        return skipped("containerd serves only Docker here (its CRI plugin is disabled)",
                       *evidence, f"disabled_plugins = {list(cfg.disabled_plugins)}")
    if cfg.cri_disabled:
        return failed(
            "containerd's CRI plugin is disabled: the kubelet cannot use it",
            [*evidence, f"disabled_plugins = {list(cfg.disabled_plugins)}"],
            f'Remove "cri" from disabled_plugins in {cfg.path} (Docker\'s containerd.io package '
            "ships it disabled), or regenerate it: containerd config default > "
            f"{cfg.path}; then systemctl restart containerd",
        )
    nvidia = cfg.nvidia
    if nvidia is None:
        fix = (
            _configure("containerd")
            if cfg.flavour == "containerd"
            else f"{cfg.flavour} adds the nvidia runtime itself when it finds the toolkit at start: install "
            f"nvidia-container-toolkit, then systemctl restart {cfg.flavour}"
            + ("-agent" if cfg.flavour == "rke2" else "")
        )
        return failed(
            "containerd has no nvidia runtime",
            [*evidence, "no runtimes.nvidia table under the CRI plugin"],
            fix,
        )
    nv_systemd = bool(nvidia.systemd_cgroup)
    evidence.append(
        f"runtimes.nvidia: BinaryName={nvidia.binary or '(default runc)'}, "
        f"SystemdCgroup={_bool_text(nvidia.systemd_cgroup)}"
    )
    evidence.append(f"default_runtime_name = {cfg.default_runtime!r}")
    want = _kubelet_driver(facts)
    if want is not None and (want == "systemd") != nv_systemd:
        return failed(
            f"nvidia runtime uses {'systemd' if nv_systemd else 'cgroupfs'} cgroups, the kubelet {want}",
            [*evidence, f"kubelet cgroupDriver: {want} ({kubelet.cgroup_driver_source})"],
            f"Make them agree (GPU containers otherwise crash now and then): in {cfg.path} set "
            f"SystemdCgroup = {'true' if want == 'systemd' else 'false'} in the options of both runc "
            f"and nvidia, "
            "then systemctl restart containerd",
        )
    runc = cfg.runtimes.get("runc")
    if want is None and runc is not None and bool(runc.systemd_cgroup) != nv_systemd:
        return warned(
            "nvidia and runc runtimes disagree on SystemdCgroup",
            evidence,
            f"Copy runc's SystemdCgroup value to runtimes.nvidia.options in {cfg.path}",
        )
    return passed("containerd has the nvidia runtime", *evidence)


def _docker_default_driver(facts: NodeFacts) -> str:
    return "systemd" if facts.host.cgroup_v2 else "cgroupfs"


def docker(facts: NodeFacts) -> Outcome:
    d = facts.host.docker
    if not d.installed:
        return skipped("Docker Engine not installed", "no dockerd binary")
    cfg = d.config
    if cfg.error:
        return failed(
            f"{cfg.path} is not valid JSON",
            f"{cfg.path}: {cfg.error}",
            f"Fix the JSON in {cfg.path}, then: systemctl restart docker",
        )
    if not cfg.exists or "nvidia" not in cfg.runtimes:
        return failed(
            "docker has no nvidia runtime",
            f"{cfg.path}: " + ("missing" if not cfg.exists else "no runtimes.nvidia"),
            _configure("docker", " --set-as-default"),
        )
    nv = cfg.runtimes["nvidia"]
    evidence = [
        f"{cfg.path}: runtimes.nvidia.path = {nv.binary}",
        f"default-runtime = {cfg.default_runtime!r}",
    ]
    driver = cfg.cgroup_driver or _docker_default_driver(facts)
    evidence.append(
        "exec-opts native.cgroupdriver = "
        + (
            cfg.cgroup_driver
            or f"unset (docker picks {driver} on cgroup {'v2' if facts.host.cgroup_v2 else 'v1'})"
        )
    )
    want = _kubelet_driver(facts)
    if want is not None and facts.host.kubelet.runtime_name in ("cri-dockerd", "docker") and want != driver:
        return failed(
            f"docker uses {driver} cgroups, the kubelet {want}",
            evidence,
            f'Set "exec-opts": ["native.cgroupdriver={want}"] in {cfg.path}, then systemctl restart docker',
        )
    if cfg.default_runtime != "nvidia":
        outcome = failed if facts.host.kubelet.runtime_name == "cri-dockerd" else warned
        return outcome(
            "nvidia is not docker's default runtime: pods get no GPU through cri-dockerd",
            evidence,
            _configure("docker", " --set-as-default"),
        )
    return passed("docker has the nvidia runtime as default", *evidence)


def crio(facts: NodeFacts) -> Outcome:
    c = facts.host.crio
    if not c.installed:
        return skipped("CRI-O not installed", "no crio binary")
    cfg = c.config
    if cfg.error:
        return failed(
            "CRI-O config does not parse", cfg.error, "Fix the TOML syntax, then systemctl restart crio"
        )
    evidence = [f"read: {', '.join(cfg.files) or 'no config files (defaults)'}"]
    nv = cfg.runtimes.get("nvidia")
    if nv is not None:
        evidence.append(f"crio.runtime.runtimes.nvidia: runtime_path = {nv.binary}")
        return passed("CRI-O has the nvidia runtime", *evidence)
    if c.nvidia_hooks:
        evidence += [f"OCI hook: {h}" for h in c.nvidia_hooks]
        return passed("CRI-O injects GPUs through the NVIDIA OCI hook", *evidence)
    return failed(
        "CRI-O has no nvidia runtime",
        [*evidence, "no [crio.runtime.runtimes.nvidia] drop-in, no NVIDIA OCI hook"],
        _configure("crio"),
    )


def visible_all(facts: NodeFacts) -> Outcome:
    host = facts.host
    if not _installed(facts):
        return skipped("no container runtime installed", "nothing runs containers here")
    defaults = []
    if (
        host.containerd.installed
        and host.containerd.config
        and host.containerd.config.default_runtime == "nvidia"
    ):
        defaults.append(f'containerd ({host.containerd.config.path}: default_runtime_name = "nvidia")')
    if host.docker.installed and host.docker.config.default_runtime == "nvidia":
        defaults.append(f'docker ({host.docker.config.path}: default-runtime = "nvidia")')
    if host.crio.installed and host.crio.config.default_runtime == "nvidia":
        defaults.append('crio ([crio.runtime] default_runtime = "nvidia")')
    if not defaults:
        return passed("nvidia is not the default runtime", "only pods that ask for it get the NVIDIA hook")
    cfg = host.toolkit.config
    accepts = cfg.accepts_envvar_unprivileged if cfg else True
    evidence = [f"nvidia is the default runtime of {d}" for d in defaults]
    where = cfg.path if cfg else "/etc/nvidia-container-runtime/config.toml (missing: defaults apply)"
    evidence.append(
        f"{where}: accept-nvidia-visible-devices-envvar-when-unprivileged = "
        f"{str(accepts).lower()}"
        + (
            ""
            if cfg and "accept-nvidia-visible-devices-envvar-when-unprivileged" in cfg.data
            else " (default)"
        )
    )
    if cfg is not None and cfg.mode == "cdi":
        evidence.append(f'{cfg.path}: mode = "cdi"')
        return passed("nvidia runtime in CDI mode: devices come only from CDI requests", *evidence)
    if not accepts:
        return passed("unprivileged pods cannot request GPUs through NVIDIA_VISIBLE_DEVICES", *evidence)
    return warned(
        "every pod sees every GPU: CUDA images set NVIDIA_VISIBLE_DEVICES=all",
        evidence,
        f"In {cfg.path if cfg else '/etc/nvidia-container-runtime/config.toml'} set:\n"
        "  accept-nvidia-visible-devices-envvar-when-unprivileged = false\n"
        "  accept-nvidia-visible-devices-as-volume-mounts = true\n"
        "and run the device plugin with deviceListStrategy volume-mounts (or cdi-cri / CDI "
        "annotations), so only "
        "the devices the kubelet allocated reach a container. Privileged pods still see all GPUs.",
    )


def _cgroup_driver(facts: NodeFacts) -> tuple[str, str] | None:
    """The cgroup driver in use (the kubelet's, else the runtime's), and where it was read."""
    k = facts.host.kubelet
    if k.installed and not k.config_error and k.embedded is None:
        return k.cgroup_driver, f"kubelet cgroupDriver {k.cgroup_driver} ({k.cgroup_driver_source})"
    return runtime_cgroup_driver(facts)


def runtime_cgroup_driver(facts: NodeFacts) -> tuple[str, str] | None:
    """The cgroup driver of the runtime the kubelet uses (or the only one installed), and where it was
    read."""
    host = facts.host
    name = host.kubelet.runtime_name
    if name is None:
        installed = _installed(facts)
        name = installed[0] if installed else None
    if name == "containerd" and host.containerd.config is not None:
        cfg = host.containerd.config
        entry = cfg.runtimes.get(cfg.default_runtime)
        systemd = bool(entry.systemd_cgroup) if entry else False
        return (
            "systemd" if systemd else "cgroupfs",
            f"containerd {cfg.path}: runtimes.{cfg.default_runtime}.options.SystemdCgroup = "
            f"{str(systemd).lower()}" + ("" if entry and entry.systemd_cgroup is not None else " (default)"),
        )
    if name == "crio":
        return host.crio.config.cgroup_manager, f"crio: cgroup_manager = {host.crio.config.cgroup_manager!r}"
    if name in ("docker", "cri-dockerd") and host.docker.installed:
        explicit = host.docker.config.cgroup_driver
        driver = explicit or _docker_default_driver(facts)
        return driver, f"docker {host.docker.config.path}: native.cgroupdriver = {driver}" + (
            "" if explicit else " (default)"
        )
    return None


def systemd_cgroup_devices(facts: NodeFacts) -> Outcome:
    host = facts.host
    if not _installed(facts):
        return skipped("no container runtime installed", "nothing runs containers here")
    driver = _cgroup_driver(facts)
    if driver is None:
        return skipped("cgroup driver unknown", "no kubelet config and no runtime the kubelet uses")
    if driver[0] != "systemd":
        return passed("cgroupfs driver: not affected by systemctl daemon-reload", driver[1])
    nodes = [n for n in host.device_nodes if n in _CHAR_DEVICES or n.removeprefix("nvidia").isdigit()]
    if not nodes:
        return skipped("no /dev/nvidia* nodes to check", "see driver.device-nodes")
    evidence = [driver[1]]
    nvidia_specs = [s for s in host.cdi_specs if s.kind == "nvidia.com/gpu" and not s.error]
    cdi_mode = host.toolkit.config is not None and host.toolkit.config.mode == "cdi"
    if cdi_mode and nvidia_specs:
        return passed(
            "CDI mode: device access does not depend on /dev/char links",
            *evidence,
            f'{host.toolkit.config.path if host.toolkit.config else ""}: mode = "cdi"; '
            f"spec {nvidia_specs[0].path}",
        )
    missing = []
    for name in nodes:
        number = device_number(host.root, name, host.char_majors)
        if number is None:
            missing.append(f"/dev/{name}: device number unknown (/proc/devices has no NVIDIA entry)")
        elif not char_link_exists(host.root, number):
            missing.append(f"/dev/char/{number[0]}:{number[1]} -> ../{name} is missing")
    if not missing:
        return passed(
            "/dev/char links present for every NVIDIA device",
            *evidence,
            f"checked: {', '.join('/dev/' + n for n in nodes)}",
        )
    # GPU pods run now; the next `systemctl daemon-reload` takes their devices away: a risk, not a failure
    return warned(
        "systemd cgroups without /dev/char links: running GPU containers lose their devices on the next "
        "systemctl daemon-reload",
        evidence
        + missing
        + ["symptom: 'Failed to initialize NVML: Unknown Error' inside running containers"],
        "Create the links now and at every driver load:\n"
        "nvidia-ctk system create-dev-char-symlinks --create-all\n"
        f"{file_block(DEV_CHAR_RULE_FILE, DEV_CHAR_RULE)}\n"
        "or switch the toolkit to CDI (kgpu cdi generate --output /etc/cdi/nvidia.yaml; "
        'mode = "cdi" in /etc/nvidia-container-runtime/config.toml)',
    )


def dockershim(facts: NodeFacts) -> Outcome:
    host = facts.host
    k = host.kubelet
    if not k.installed:
        return skipped("no kubelet on this node", "dockershim only matters to a kubelet")
    rt = k.runtime_name
    version = k.version
    vtext = f"kubelet v{'.'.join(map(str, version))}" if version else "kubelet version unknown"
    if rt in ("containerd", "crio"):
        return passed(
            f"kubelet talks CRI to {rt}", f"{vtext}; --container-runtime-endpoint {k.runtime_endpoint}"
        )
    if rt == "docker" or (
        rt is None and host.docker.installed and not host.containerd.installed and not host.crio.installed
    ):
        if version is not None and version[:2] < (1, 24):
            return passed("kubelet < 1.24 still has dockershim", vtext)
        return failed(
            "kubelet ≥ 1.24 has no dockershim, and cri-dockerd is not configured",
            [vtext, "kubelet flags: " + (" ".join(f"--{a}={b}" for a, b in k.flags.items()) or "none found")],
            "Install cri-dockerd (https://github.com/Mirantis/cri-dockerd) and point the kubelet at it: "
            "--container-runtime-endpoint=unix:///var/run/cri-dockerd.sock; or move to containerd",
        )
    if rt == "cri-dockerd":
        cri = host.docker.cri_dockerd
        if cri.binary is None:
            return failed(
                "kubelet points at cri-dockerd, which is not installed",
                f"--container-runtime-endpoint {k.runtime_endpoint}",
                "Install cri-dockerd and enable it: systemctl enable --now cri-docker.socket cri-docker",
            )
        image = cri.pause_image
        evidence = [
            vtext,
            f"cri-dockerd: {cri.binary}; {cri.unit.evidence}",
            f"ExecStart: {cri.exec_start or '(unit not found)'}",
        ]
        kubelet_pause = k.flags.get("pod-infra-container-image")
        if image is None:
            return warned(
                "cri-dockerd pulls its built-in default pause image",
                evidence,
                "Pin it to an image your nodes can pull (the one 'kubeadm config images list' names, or your "
                "mirror's copy): add --pod-infra-container-image=registry.k8s.io/pause:3.10 to ExecStart in "
                "a drop-in /etc/systemd/system/cri-docker.service.d/10-pause.conf, then systemctl "
                "daemon-reload "
                "&& systemctl restart cri-docker",
            )
        if "k8s.gcr.io" in image or (kubelet_pause and kubelet_pause != image):
            evidence.append(
                f"kubelet --pod-infra-container-image={kubelet_pause}"
                if kubelet_pause
                else "k8s.gcr.io is frozen: new pause tags are only on registry.k8s.io"
            )
            return warned(
                "cri-dockerd's pause image may be unreachable",
                [*evidence, f"pause image: {image}"],
                "Use registry.k8s.io (or your mirror) in --pod-infra-container-image, then "
                "systemctl daemon-reload && systemctl restart cri-docker",
            )
        return passed("kubelet uses cri-dockerd", *evidence)
    return skipped(
        "kubelet's container runtime unknown", "no --container-runtime-endpoint in the kubelet's flags"
    )
