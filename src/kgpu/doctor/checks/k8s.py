"""k8s.*: what kubeadm's preflight and every Kubernetes install guide expect of a node."""

from __future__ import annotations

from kgpu.doctor.facts import NodeFacts
from kgpu.doctor.finding import Outcome, failed, passed, skipped, warned
from kgpu.doctor.fixes import MODULES_FILE, SYSCTL_FILE, file_block, time_sync_install
from kgpu.host.facts import K8S_MODULES, K8S_SYSCTLS, TIME_SYNC_UNITS

# Device plugin API v1beta1 with GetPreferredAllocation: kubelet ≥ 1.19. The GPU Operator supports ≥ 1.25.
MIN_KUBERNETES = (1, 19)
GPU_OPERATOR_MIN = (1, 25)


def swap(facts: NodeFacts) -> Outcome:
    host = facts.host
    active = host.swaps or []
    boot = [e for e in host.fstab if e.is_active_swap] if facts.container_note is None else []
    if host.swaps is None and not boot:
        return skipped("swap state unknown", "/proc/swaps is not readable and /etc/fstab has no swap entry")
    if not active and not boot:
        if facts.container_note:
            return passed("swap off (the node's /etc/fstab not visible)", "/proc/swaps: no active swap area",
                          facts.container_note)
        return passed("swap off, and no swap in /etc/fstab", "/proc/swaps: no active swap area")
    evidence = [f"/proc/swaps: {a.line}" for a in active]
    evidence += [f"/etc/fstab:{e.line_no}: {e.text.strip()}" for e in boot]
    steps = []
    if active:
        steps.append("swapoff -a")
    for e in boot:
        steps.append(f"comment out /etc/fstab line {e.line_no}:  #{e.text.strip()}")
        steps.append(f"  sed -i.kgpu.bak '{e.line_no}s/^/#/' /etc/fstab")
    if any(a.filename.startswith("/dev/zram") for a in active):
        steps.append(
            "zram swap comes from zram-generator: systemctl mask dev-zram0.swap "
            "(Fedora: dnf remove zram-generator-defaults)"
        )
    steps.append("(kgpu node prepare --apply comments out the fstab lines)")
    fix = "\n".join(steps)
    if not host.kubelet.fail_swap_on:
        return warned("swap on; the kubelet is configured to tolerate it (failSwapOn: false)", evidence, fix)
    if active:
        return failed("swap is on: the kubelet refuses to start", evidence, fix)
    return warned("swap is off now but /etc/fstab turns it on at boot (the kubelet will not start then)",
                  evidence, fix)


def kernel_modules(facts: NodeFacts) -> Outcome:
    host = facts.host
    if host.loaded_modules is None:
        return skipped("cannot tell which modules are loaded", "/proc/modules is not readable")
    evidence, not_loaded, not_persisted = [], [], []
    builtin = host.installed_modules.builtin if host.installed_modules else frozenset()
    for name in K8S_MODULES:
        now = host.module_available_now(name)
        persisted = host.persisted_modules.get(name)
        if name in builtin:
            evidence.append(f"{name}: built into the kernel")
            continue
        if facts.container_note:
            evidence.append(f"{name}: {'loaded' if now else 'not loaded'}")
        else:
            evidence.append(
                f"{name}: {'loaded' if now else 'not loaded'}; "
                + (f"loaded at boot by {persisted.source}" if persisted else "not in modules-load.d")
            )
        if not now:
            not_loaded.append(name)
        if persisted is None and not facts.container_note:
            not_persisted.append(name)
    if facts.container_note:
        evidence.append(facts.container_note)
    if not not_loaded and not not_persisted:
        if facts.container_note:
            return passed("overlay and br_netfilter loaded (persistence not visible from a container)", *evidence)
        return passed("overlay and br_netfilter loaded and persisted", *evidence)
    steps = []
    if not_persisted:
        steps.append(file_block(MODULES_FILE, "".join(f"{m}\n" for m in K8S_MODULES)))
    if not_loaded:
        steps.append("then load them now: " + " && ".join(f"modprobe {m}" for m in not_loaded))
    steps.append("(kgpu node prepare --apply writes the file)")
    problems = [f"{m} not loaded" for m in not_loaded] + [f"{m} not persisted" for m in not_persisted]
    # the kernel loads overlay on the first overlay mount; what br_netfilter's absence breaks (the bridge
    # sysctls) is k8s.sysctl's finding: here it is a risk with its fix
    return warned(", ".join(problems), evidence, "\n".join(steps))


def sysctl(facts: NodeFacts) -> Outcome:
    host = facts.host
    if facts.container_note:
        return skipped("inside a container: its network sysctls and /etc are its own", facts.container_note)
    evidence, wrong_live, wrong_boot = [], [], []
    for key in K8S_SYSCTLS:
        live = host.sysctl_live.get(key)
        boot = host.sysctl_persisted.get(key)
        if live is None:
            live_text = "absent (br_netfilter not loaded)" if "bridge" in key else "not readable"
        else:
            live_text = live
        boot_text = f"{boot.value} ({boot.source})" if boot else "not set in sysctl.d or /etc/sysctl.conf"
        evidence.append(f"{key}: live {live_text}; at boot {boot_text}")
        if live != "1":
            wrong_live.append(key)
        if boot is None or boot.value != "1":
            wrong_boot.append(key)
    if not wrong_live and not wrong_boot:
        return passed("ip_forward and bridge-nf-call-iptables/ip6tables are 1, now and at boot", *evidence)
    content = "".join(f"{k} = 1\n" for k in K8S_SYSCTLS)
    fix = [file_block(SYSCTL_FILE, content), "then apply it: sysctl --system"]
    overridden = [
        host.sysctl_persisted[k].source
        for k in wrong_boot
        if k in host.sysctl_persisted and host.sysctl_persisted[k].value != "1"
    ]
    if overridden:
        fix.append(
            f"and change the later assignment(s) that set 0: {', '.join(overridden)} "
            "(files apply in name order; /etc/sysctl.conf last)"
        )
    if any("bridge" in k and host.sysctl_live.get(k) is None for k in K8S_SYSCTLS):
        fix.append("the bridge keys exist only with br_netfilter loaded: modprobe br_netfilter")
    fix.append("(kgpu node prepare --apply writes the file)")
    problems = []
    if wrong_live:
        problems.append(f"not 1 now: {', '.join(wrong_live)}")
    if wrong_boot:
        problems.append(f"not 1 at boot: {', '.join(wrong_boot)}")
    if wrong_live and host.kubelet.installed:
        return failed("; ".join(problems) + " (pod networking is broken now)", evidence, "\n".join(fix))
    # only after the next boot, or no kubelet yet: a risk with its fix
    return warned("; ".join(problems), evidence, "\n".join(fix))


def selinux(facts: NodeFacts) -> Outcome:
    se = facts.host.selinux
    evidence = [
        f"/sys/fs/selinux/enforce: {se.live}"
        if se.live != "disabled"
        else "SELinux not active (no selinuxfs)"
    ]
    if se.config_line:
        evidence.append(se.config_line)
    if se.live != "enforcing" and se.configured != "enforcing":
        return passed(f"SELinux {se.live}", *evidence)
    title = "SELinux enforcing" if se.live == "enforcing" else "SELinux enforcing after the next boot"
    return warned(
        title,
        evidence,
        "Choose one:\n"
        "1. keep enforcing (recommended on RHEL): install container-selinux and let containers use the GPU "
        "device nodes: setsebool -P container_use_devices on\n"
        "2. permissive, as kubeadm's guide does: setenforce 0 && "
        "sed -i 's/^SELINUX=enforcing$/SELINUX=permissive/' /etc/selinux/config",
    )


def firewall(facts: NodeFacts) -> Outcome:
    if facts.container_note:
        return skipped("inside a container: the node's services are not visible", facts.container_note)
    unit = facts.host.units.get("firewalld.service")
    if unit is None or not (unit.enabled or unit.running):
        return passed("firewalld not active", unit.evidence if unit else "firewalld.service: not installed")
    return warned(
        "firewalld is active: it blocks Kubernetes ports unless opened",
        unit.evidence,
        "Open the ports (worker: 10250/tcp, 10256/tcp, 30000-32767/tcp; control plane also 6443/tcp, "
        "2379-2380/tcp, 10257/tcp, 10259/tcp) plus your CNI's:\n"
        "firewall-cmd --permanent --add-port=10250/tcp --add-port=10256/tcp --add-port=30000-32767/tcp && "
        "firewall-cmd --reload\n"
        "or, where the network is protected elsewhere: systemctl disable --now firewalld",
    )


def time_sync(facts: NodeFacts) -> Outcome:
    host = facts.host
    if facts.container_note:
        return skipped("inside a container: the node's services are not visible", facts.container_note)
    units = [host.units[u] for u in TIME_SYNC_UNITS if u in host.units]
    good = [u for u in units if u.enabled or u.running]
    if good:
        return passed(f"time sync by {good[0].name}", *(u.evidence for u in good))
    if not host.systemd:
        return skipped(
            "systemd is not running here (a container?): time sync is the host's job",
            "/run/systemd/system is not a directory",
        )
    return warned(
        "no time sync service enabled: certificates and leases break when clocks drift",
        [u.evidence for u in units if u.installed]
        or ["none of chronyd, chrony, systemd-timesyncd, ntpd installed"],
        time_sync_install(host.family),
    )


def version_compat(facts: NodeFacts) -> Outcome:
    kubelet = facts.host.kubelet
    if not kubelet.installed:
        return skipped("no kubelet on this node", "no kubelet binary and no kubelet config")
    if kubelet.version is None:
        return warned(
            "kubelet version unknown",
            f"{kubelet.binary or 'kubelet'} --version did not answer",
            "Check the kubelet install: kubelet --version",
        )
    v = kubelet.version
    text = f"kubelet v{v[0]}.{v[1]}.{v[2]} ({kubelet.binary} --version: {kubelet.version_text})"
    if v[:2] < MIN_KUBERNETES:
        return failed(
            f"Kubernetes {v[0]}.{v[1]} is too old",
            text,
            "kgpu's device plugin and NVIDIA's need kubelet ≥ 1.19 (GetPreferredAllocation); "
            "upgrade the cluster (kubeadm upgrade), one minor version at a time",
        )
    if v[:2] < GPU_OPERATOR_MIN:
        return warned(
            f"Kubernetes {v[0]}.{v[1]}: device plugin works, GPU Operator needs ≥ 1.25",
            text,
            "Upgrade to Kubernetes ≥ 1.25 to use the GPU Operator (kubeadm upgrade, one minor at a time)",
        )
    return passed(f"Kubernetes {v[0]}.{v[1]} supported", text)
