"""kubelet.device-plugins and kubelet.cgroup-driver: can a device plugin register, and do cgroups agree?"""

from __future__ import annotations

from kgpu.doctor.checks.runtime import runtime_cgroup_driver
from kgpu.doctor.facts import NodeFacts
from kgpu.doctor.finding import Outcome, failed, passed, skipped
from kgpu.host.kubelet import DEVICE_PLUGIN_DIR, KUBELET_SOCKET


def device_plugins(facts: NodeFacts) -> Outcome:
    k = facts.host.kubelet
    if not k.installed:
        return skipped("no kubelet on this node", "no kubelet binary and no kubelet config")
    if not k.device_plugin_dir:
        return failed(
            f"{DEVICE_PLUGIN_DIR} is missing",
            f"{DEVICE_PLUGIN_DIR}: no such directory",
            "The kubelet creates it when it starts: systemctl enable --now kubelet; "
            "if the kubelet runs with another --root-dir, mount that directory's device-plugins/ into "
            "the device plugin at /var/lib/kubelet/device-plugins",
        )
    if not k.socket_present:
        return failed(
            "kubelet.sock missing: device plugins cannot register",
            f"{KUBELET_SOCKET}: missing",
            "The kubelet is not running (systemctl status kubelet; journalctl -u kubelet) or uses "
            "another --root-dir",
        )
    return passed("kubelet's device-plugin socket present", f"{KUBELET_SOCKET}: present")


def cgroup_driver(facts: NodeFacts) -> Outcome:
    k = facts.host.kubelet
    if not k.installed:
        return skipped("no kubelet on this node", "no kubelet binary and no kubelet config")
    if k.config_error:
        return failed(
            f"{k.config_path} does not parse",
            f"{k.config_path}: {k.config_error}",
            f"Fix the YAML in {k.config_path}, then systemctl restart kubelet",
        )
    if k.embedded:
        return skipped(f"{k.embedded} sets the kubelet's and containerd's cgroup driver together",
                       f"kubelet embedded in {k.binary}, no kubelet config file")
    runtime = runtime_cgroup_driver(facts)
    if runtime is None:
        return skipped("no container runtime to compare with", f"kubelet cgroupDriver {k.cgroup_driver}")
    evidence = [f"kubelet: {k.cgroup_driver} ({k.cgroup_driver_source})", runtime[1]]
    if runtime[0] == k.cgroup_driver:
        return passed(f"kubelet and runtime both use {k.cgroup_driver}", *evidence)
    return failed(
        f"kubelet uses {k.cgroup_driver}, the runtime {runtime[0]}",
        evidence,
        f"Use systemd on both (kubeadm's default): cgroupDriver: systemd in {k.config_path}, and in the "
        f"runtime "
        "containerd: SystemdCgroup = true in runc's (and nvidia's) options; CRI-O: cgroup_manager = "
        '"systemd"; '
        'docker: "exec-opts": ["native.cgroupdriver=systemd"]. Then restart the runtime and the kubelet.',
    )
