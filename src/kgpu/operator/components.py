"""The node DaemonSets, written once: the operator evaluates them, the chart's templates are generated from them.

Each component is one DaemonSet running the kgpu image with ``kgpu <component> ...``, except the two
long-lived daemons whose memory is a guard rail: the device plugin and the exporter run their own entry
points, ``kgpu-device-plugin`` and ``kgpu-exporter`` (same flags, same code, without kgpu's command line
around them: :mod:`kgpu.daemon.entry` says why). Value paths are the
chart's (``deploy/helm/kgpu/values.yaml``); the operator maps a ClusterPolicy onto the same values
(:mod:`kgpu.operator.policy`). ``scripts/gen_chart.py`` writes ``templates/<component>.yaml`` from here.
"""

from __future__ import annotations

from typing import Any

from kgpu.operator.template import (
    SPLICE_KEY,
    Checksum,
    Concat,
    Document,
    Expr,
    Fullname,
    Image,
    Labels,
    Namespace,
    Not,
    Opt,
    Override,
    Quote,
    Ref,
    SelectorLabels,
    Splice,
    Text,
    ToolkitFree,
    When,
    Yaml,
    when_items,
)

# The chart's values section of each component, its DaemonSet name suffix and container name.
COMPONENTS: dict[str, str] = {
    "devicePlugin": "device-plugin",
    "labeler": "labeler",
    "exporter": "exporter",
    "mpsDaemon": "mps-daemon",
    "validator": "validator",
    "migManager": "mig-manager",
    "draPlugin": "dra-plugin",
}

def _security(user: dict[str, Any]) -> dict[str, Any]:
    """``user`` plus what every node component shares: a read-only root filesystem, and either no capability,
    no privilege escalation and the runtime's seccomp profile, or — on a node without the NVIDIA container
    toolkit — privileged, because nothing else gives a pod the GPUs' device nodes that NVML opens (a hostPath
    of a device node is refused by the device cgroup; a device plugin cannot allocate GPUs to itself).
    Privileged grants every capability and unconfined seccomp, so those settings are left out rather than
    shown and ignored; a non-root user still gets no capability."""
    free = ToolkitFree()
    return {
        **user,
        "privileged": When(free, True),
        "allowPrivilegeEscalation": When(Not(free), False),
        "readOnlyRootFilesystem": True,
        "capabilities": When(Not(free), {"drop": ["ALL"]}),
        "seccompProfile": When(Not(free), {"type": "RuntimeDefault"}),
    }


def _root_security() -> dict[str, Any]:
    return _security({"runAsUser": 0, "runAsNonRoot": False})


def _nonroot_security() -> dict[str, Any]:
    return _security({"runAsUser": Ref("nonRootUser"), "runAsGroup": Ref("nonRootUser"), "runAsNonRoot": True})


def _env(section: str, capabilities: str = "utility") -> list[Any]:
    """Environment every kgpu container shares: its node, log level, driver root and the NVIDIA runtime's
    device injection (all GPUs, without requesting one, as NVIDIA's own node components do)."""
    return [
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "KGPU_LOG_LEVEL", "value": Quote(Ref("logLevel"))},
        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
        {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": capabilities},
        when_items(
            Ref("driverRoot"),
            {"name": "NVIDIA_DRIVER_ROOT", "value": Quote(Ref("driverRoot"))},
            {"name": "CONTAINER_DRIVER_ROOT", "value": "/driver-root"},
        ),
        when_items(
            Ref("simulate.fixture"),
            {"name": "KGPU_SIMULATE", "value": Quote(Ref("simulate.fixture"))},
            {"name": "KGPU_SIMULATE_MIG_STATE", "value": "/run/kgpu/simulated-mig.json"},
            # Health events (XIDs) for the simulated GPUs: JSON lines appended to this file on the node.
            {"name": "KGPU_SIMULATE_EVENTS", "value": "/run/kgpu/simulated-events.jsonl"},
        ),
        Splice(Ref(f"{section}.env")),
    ]


def _common_volumes(selects_config: bool = False) -> list[Any]:
    """``selects_config``: a pod with the config-manager sidecar, which writes the config to /etc/kgpu (a
    directory of the pod's own) from the ConfigMap it reads through the API server; the ConfigMap is also
    mounted at /available-configs, what its init container falls back to when the API server cannot be read."""
    if not selects_config:
        return [{"name": "config", "configMap": {"name": Text(Fullname(), "-config")}}, *_other_volumes()]
    return [
        {"name": "config", "emptyDir": {}},
        when_items(Not(CONFIG_MANAGER),
                   {"name": "available-configs", "configMap": {"name": Text(Fullname(), "-config")}}),
        when_items(CONFIG_MANAGER,
                   {"name": "available-configs", "configMap": {"name": Text(Fullname(), "-configs")}}),
        *_other_volumes(),
    ]


def _other_volumes() -> list[Any]:
    return [
        {"name": "tmp", "emptyDir": {}},
        when_items(
            Ref("driverRoot"),
            {"name": "driver-root", "hostPath": {"path": Ref("driverRoot"), "type": "Directory"}},
        ),
    ]


def _common_mounts(selects_config: bool = False) -> list[Any]:
    return [
        {"name": "config", "mountPath": "/etc/kgpu", "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
        when_items(Ref("driverRoot"), {"name": "driver-root", "mountPath": "/driver-root", "readOnly": True}),
    ]


CONFIG_MANAGER = Ref("configManager.enabled")


def _config_manager(section: str, oneshot: bool) -> dict[str, Any]:
    """``kgpu config-manager``, beside the device plugin, the labeler and the MPS daemon (and before them,
    ``oneshot``): it writes /etc/kgpu/config.yaml, which the daemon reads and reloads, from the ConfigMap it
    watches through the API server, so that an edit reaches the daemon within a second (the kubelet refreshes
    a mounted ConfigMap only at its next sync of the pod, 60-90 s later). With ``configManager.enabled``:
    NVIDIA's per-node selection, the node label picks one of ``configs``; otherwise the one config, and no
    label is followed. All three daemons follow the same choice, so a label picking an MPS config gets MPS
    slices advertised, labelled and served by control daemons together. (The exporter reads no config file:
    it follows the device plugin's state file.)"""
    name = "config-manager-init" if oneshot else "config-manager"
    env = [
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "KGPU_LOG_LEVEL", "value": Quote(Ref("logLevel"))},
        {"name": "ONESHOT", "value": "true" if oneshot else "false"},
        {"name": "CONFIG_FILE_SRCDIR", "value": "/available-configs"},
        {"name": "CONFIG_FILE_DST", "value": "/etc/kgpu/config.yaml"},
        when_items(CONFIG_MANAGER,
                   {"name": "KGPU_CONFIG_MAP", "value": Text(Namespace(), "/", Fullname(), "-configs")},
                   {"name": "DEFAULT_CONFIG", "value": Quote(Ref("configManager.defaultConfig"))},
                   {"name": "FALLBACK_STRATEGIES", "value": Quote(Ref("configManager.fallbackStrategies"))}),
        when_items(Not(CONFIG_MANAGER),
                   {"name": "KGPU_CONFIG_MAP", "value": Text(Namespace(), "/", Fullname(), "-config")},
                   {"name": "DEFAULT_CONFIG", "value": "config.yaml"}),
        {"name": "SEND_SIGNAL", "value": "false"},  # kgpu's daemons reload the file when it changes
        Splice(Ref(f"{section}.env")),  # the component's own (e.g. how to reach the API server)
    ]
    return {
        "name": name,
        "image": Image(),
        "imagePullPolicy": Ref("image.pullPolicy"),
        "command": ["kgpu"],
        # Without configManager.enabled no label is followed: a label NVIDIA's config-manager left on a node
        # must not pick a config that does not exist.
        "args": ["config-manager", when_items(Not(CONFIG_MANAGER), "--node-label=")],
        "env": env,
        "securityContext": _nonroot_security(),
        "resources": Yaml(Ref("configManager.resources")),
        "volumeMounts": [
            {"name": "config", "mountPath": "/etc/kgpu"},
            {"name": "available-configs", "mountPath": "/available-configs", "readOnly": True},
        ],
    }


def _host_path(name: str, path: str, kind: str = "DirectoryOrCreate") -> dict[str, Any]:
    return {"name": name, "hostPath": {"path": path, "type": kind}}


def _daemonset(
    section: str,
    *,
    comment: str,
    container: dict[str, Any],
    volumes: list[Any],
    service_account: Expr | Text,
    automount_token: bool,
    checksum: bool = True,
    selects_config: bool = False,
) -> Document:
    component = COMPONENTS[section]
    annotations: Any = Opt(Ref("daemonsets.annotations"))
    if checksum:
        annotations = {"checksum/config": Checksum(Ref("config")), SPLICE_KEY: Splice(Ref("daemonsets.annotations"))}
    pod: dict[str, Any] = {"serviceAccountName": service_account}
    if not automount_token and not selects_config:
        pod["automountServiceAccountToken"] = False
    pod |= {
        # NVIDIA's per-component hostNetwork: for clusters whose pods reach the API server only from the host
        # network (the lab); dnsPolicy then keeps cluster DNS.
        "hostNetwork": Opt(Ref(f"{section}.hostNetwork"), scalar=True),
        "dnsPolicy": When(Ref(f"{section}.hostNetwork"), "ClusterFirstWithHostNet"),
        "priorityClassName": Opt(Ref("priorityClassName"), scalar=True),
        "imagePullSecrets": Opt(Ref("imagePullSecrets")),
        "runtimeClassName": Opt(Ref("runtimeClassName"), scalar=True),
        "nodeSelector": Opt(Override(section, "nodeSelector", "nodeSelector")),
        "affinity": Opt(Override(section, "affinity", "affinity")),
        "tolerations": Opt(Ref("tolerations")),
        **({"initContainers": [_config_manager(section, oneshot=True)]} if selects_config else {}),
        "containers": [container, _config_manager(section, oneshot=False)] if selects_config else [container],
        "volumes": volumes,
    }
    body = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": Text(Fullname(), f"-{component}"),
            "namespace": Namespace(),
            "labels": Yaml(Labels(component)),
        },
        "spec": {
            "selector": {"matchLabels": Yaml(SelectorLabels(component))},
            "updateStrategy": Yaml(Ref("updateStrategy")),
            "template": {
                "metadata": {
                    "labels": {
                        SPLICE_KEY: [Splice(SelectorLabels(component)), Splice(Ref("daemonsets.labels"))],
                    },
                    "annotations": annotations,
                },
                "spec": pod,
            },
        },
    }
    return Document(name=component, enabled=Ref(f"{section}.enabled"), body=body, comment=comment)


def _container(section: str, *, security: dict[str, Any], capabilities: str = "utility",
               extra: dict[str, Any] | None = None, command: str = "kgpu") -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": COMPONENTS[section],
        "image": Image(),
        "imagePullPolicy": Ref("image.pullPolicy"),
        "command": [command],
        "args": Yaml(Concat((Ref(f"{section}.args"), Ref(f"{section}.extraArgs")))),
        "env": _env(section, capabilities),
    }
    container |= extra or {}
    container |= {"securityContext": security, "resources": Yaml(Ref(f"{section}.resources"))}
    return container


def device_plugin() -> Document:
    container = _container(
        "devicePlugin",
        security=_root_security(),
        command="kgpu-device-plugin",
        extra={"ports": [{"name": "healthz", "containerPort": Ref("devicePlugin.healthPort"), "protocol": "TCP"}]},
    )
    container |= {
        "livenessProbe": Opt(Ref("devicePlugin.livenessProbe")),
        "readinessProbe": Opt(Ref("devicePlugin.readinessProbe")),
        "volumeMounts": [
            *_common_mounts(selects_config=True),
            {"name": "device-plugins", "mountPath": "/var/lib/kubelet/device-plugins"},
            {"name": "run-kgpu", "mountPath": "/run/kgpu"},
        ],
    }
    return _daemonset(
        "devicePlugin",
        comment="The device plugin serves GPUs to the kubelet over unix sockets in /var/lib/kubelet/device-plugins, a\n"
        "root-owned host directory: it runs as root, with every capability dropped.",
        container=container,
        volumes=[
            *_common_volumes(selects_config=True),
            _host_path("device-plugins", "/var/lib/kubelet/device-plugins", "Directory"),
            _host_path("run-kgpu", "/run/kgpu"),
        ],
        # its own account: a token only with dynamic GPU shares (config sharing.mps.dynamic), whose Allocate reads
        # the node's pods (templates/serviceaccount.yaml and device-plugin-rbac.yaml)
        service_account=Text(Fullname(), "-device-plugin"),
        automount_token=True,
        selects_config=True,
    )


def labeler() -> Document:
    container = _container(
        "labeler",
        security=_nonroot_security(),
        extra={"ports": [{"name": "healthz", "containerPort": Ref("labeler.healthPort"), "protocol": "TCP"}]},
    )
    container |= {
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "healthz"}, "initialDelaySeconds": 30,
                          "periodSeconds": 30, "failureThreshold": 4},
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "healthz"}, "periodSeconds": 10},
        "volumeMounts": [*_common_mounts(selects_config=True),
                         {"name": "run-kgpu", "mountPath": "/run/kgpu", "readOnly": True}],
    }
    return _daemonset(
        "labeler",
        comment="The labeler only reads the GPUs and patches its own Node: it runs as a non-root user.",
        container=container,
        volumes=[*_common_volumes(selects_config=True), _host_path("run-kgpu", "/run/kgpu")],
        service_account=Text(Fullname(), "-labeler"),
        automount_token=True,
        selects_config=True,
    )


def exporter() -> Document:
    container = _container(
        "exporter",
        security=_root_security(),
        command="kgpu-exporter",
        extra={"ports": [{"name": "metrics", "containerPort": Ref("exporter.port"), "protocol": "TCP"}]},
    )
    container |= {
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "initialDelaySeconds": 15,
                          "periodSeconds": 30},
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 10},
        "volumeMounts": [
            *_common_mounts(),
            {"name": "pod-resources", "mountPath": "/var/lib/kubelet/pod-resources", "readOnly": True},
            {"name": "run-kgpu", "mountPath": "/run/kgpu", "readOnly": True},
        ],
    }
    return _daemonset(
        "exporter",
        comment="The exporter attributes GPUs to pods through the kubelet's PodResources socket, which only root may\n"
        "connect to: it runs as root, with every capability dropped.",
        container=container,
        volumes=[
            *_common_volumes(),
            _host_path("pod-resources", "/var/lib/kubelet/pod-resources"),
            _host_path("run-kgpu", "/run/kgpu"),
        ],
        service_account=Fullname(),
        automount_token=False,
        checksum=False,
    )


def mps_daemon() -> Document:
    container = _container(
        "mpsDaemon",
        security=_root_security(),
        capabilities="compute,utility",
        extra={"ports": [{"name": "healthz", "containerPort": Ref("mpsDaemon.healthPort"), "protocol": "TCP"}]},
    )
    container |= {
        # 503 once checking the control daemons has been failing or stuck for a while: the kubelet restarts it.
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "healthz"}, "initialDelaySeconds": 10,
                          "periodSeconds": 30, "failureThreshold": 4},
        "readinessProbe": {"exec": {"command": ["sh", "-c", "test -f /run/kgpu/mps/.ready"]}, "periodSeconds": 10},
        "volumeMounts": [
            *_common_mounts(selects_config=True),
            {"name": "run-kgpu", "mountPath": "/run/kgpu"},
            {"name": "mps-shm", "mountPath": "/dev/shm"},
        ],
    }
    return _daemonset(
        "mpsDaemon",
        comment="One CUDA MPS control daemon per shared GPU. MPS clients in other pods reach it through its pipe\n"
        "directory under /run/kgpu/mps and a /dev/shm they share with it: the daemon's /dev/shm is the host's\n"
        "/run/kgpu/mps/shm, which the device plugin's Allocate mounts at /dev/shm in every client (as NVIDIA's\n"
        "mps-control-daemon does with <mpsRoot>/shm). The daemon must run as root to serve clients of every\n"
        "user. Every capability is dropped.",
        container=container,
        volumes=[*_common_volumes(selects_config=True), _host_path("run-kgpu", "/run/kgpu"),
                 _host_path("mps-shm", "/run/kgpu/mps/shm")],
        # its own account: a token for its config-manager, which reads the config ConfigMap (and, with
        # configManager.enabled, its Node's config label) so the daemons follow the config the plugin follows
        service_account=Text(Fullname(), "-mps-daemon"),
        automount_token=True,
        selects_config=True,
    )


def validator() -> Document:
    container = _container("validator", security=_root_security())
    container |= {
        "volumeMounts": [
            *_common_mounts(),
            {"name": "host", "mountPath": "/host", "readOnly": True},
            {"name": "run-kgpu", "mountPath": "/run/kgpu", "readOnly": True},
        ],
    }
    return _daemonset(
        "validator",
        comment="kgpu node report: every interval, kgpu validate's node steps and kgpu doctor's checks, reported as\n"
        "conditions on this Node (nodes/status patch). It reads the host's files read-only under /host, as\n"
        "root (driver, runtime and kubelet files are root-owned), with every capability dropped.",
        container=container,
        volumes=[*_common_volumes(), _host_path("host", "/", "Directory"), _host_path("run-kgpu", "/run/kgpu")],
        service_account=Text(Fullname(), "-validator"),
        automount_token=True,
    )


def mig_manager() -> Document:
    container = _container("migManager", security=_root_security(), capabilities="compute,utility")
    namespace = {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}
    container["env"].insert(1, namespace)  # the pods it restarts after a change live in its namespace
    container |= {
        "volumeMounts": [
            *_common_mounts(),
            {"name": "mig-parted-config", "mountPath": "/etc/kgpu/mig", "readOnly": True},
            {"name": "run-kgpu", "mountPath": "/run/kgpu"},
        ],
    }
    return _daemonset(
        "migManager",
        comment="kgpu mig-manager applies the MIG layout its Node's nvidia.com/mig.config label names, from a\n"
        "mig-parted config (ConfigMap), and reports nvidia.com/mig.config.state. Changing MIG mode and GPU\n"
        "instances is an NVML call that needs root; every capability is dropped.",
        container=container,
        volumes=[
            *_common_volumes(),
            {"name": "mig-parted-config", "configMap": {"name": Text(Fullname(), "-mig-parted-config")}},
            _host_path("run-kgpu", "/run/kgpu"),
        ],
        service_account=Text(Fullname(), "-mig-manager"),
        automount_token=True,
        checksum=False,
    )


def dra_plugin() -> Document:
    container = _container(
        "draPlugin",
        security=_root_security(),
        capabilities="compute,utility",
        extra={"ports": [{"name": "healthz", "containerPort": Ref("draPlugin.healthPort"), "protocol": "TCP"}]},
    )
    # The driver name, share mode and health mode are also the DeviceClasses' (dra-deviceclasses.yaml): one value each.
    container["env"] = [
        *container["env"][:-1],
        {"name": "KGPU_DRA_DRIVER_NAME", "value": Quote(Ref("draPlugin.driverName"))},
        {"name": "CONSUMABLE_SHARES", "value": Quote(Ref("draPlugin.consumableShares"))},
        {"name": "KGPU_DRA_UNHEALTHY_DEVICES", "value": Quote(Ref("draPlugin.unhealthyDevices"))},
        container["env"][-1],
    ]
    container |= {
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "healthz"}, "initialDelaySeconds": 30,
                          "periodSeconds": 30},
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "healthz"}, "periodSeconds": 10},
        "volumeMounts": [
            *_common_mounts(),
            {"name": "plugins-registry", "mountPath": "/var/lib/kubelet/plugins_registry"},
            {"name": "plugins", "mountPath": "/var/lib/kubelet/plugins"},
            {"name": "cdi", "mountPath": "/var/run/cdi"},
            {"name": "run-kgpu", "mountPath": "/run/kgpu"},
            {"name": "mps-shm", "mountPath": "/dev/shm"},
            {"name": "host-root", "mountPath": "/host-root", "readOnly": True, "mountPropagation": "HostToContainer"},
        ],
    }
    return _daemonset(
        "draPlugin",
        comment="The DRA kubelet plugin: registers in /var/lib/kubelet/plugins_registry, serves its socket and\n"
        "keeps its checkpoint in /var/lib/kubelet/plugins/<driver>, writes a CDI spec per prepared claim to\n"
        "/var/run/cdi, and runs the MPS control daemons of shared GPUs under /run/kgpu/mps with /run/kgpu/mps/shm\n"
        "as their /dev/shm (the directory MPS clients get as /dev/shm). It reads the driver's files and sysfs\n"
        "under /host-root to describe the GPUs to the container runtime. Root, with every capability dropped.",
        container=container,
        volumes=[
            *_common_volumes(),
            _host_path("plugins-registry", "/var/lib/kubelet/plugins_registry", "Directory"),
            _host_path("plugins", "/var/lib/kubelet/plugins"),
            _host_path("cdi", "/var/run/cdi"),
            _host_path("run-kgpu", "/run/kgpu"),
            _host_path("mps-shm", "/run/kgpu/mps/shm"),
            _host_path("host-root", "/", "Directory"),
        ],
        service_account=Text(Fullname(), "-dra-plugin"),
        automount_token=True,
        checksum=False,
    )


def documents() -> list[Document]:
    """Every node DaemonSet, in the order the chart lists them."""
    return [device_plugin(), labeler(), exporter(), mps_daemon(), validator(), mig_manager(), dra_plugin()]
