"""The README's cluster commands, taken from the README and run on the cluster as written (issue 16: every README
command block runs in a test; tests/test_readme.py runs the others and names, for each of these, the e2e test).

``readme.command(section, starts_with)`` finds a command in a README section's shell blocks, so a test runs what
the README shows, not a copy that can drift from it. ``readme.run(cluster, line, ...)`` runs it: ``helm install``
and ``helm upgrade`` through Helm's own engine (chart.Release, as `make e2e` installs: no helm binary), anything
else with bash in the checkout, with the cluster's KUBECONFIG and kubectl and the checkout's kgpu. The README's
placeholders for an admin's own cluster (``lab-node``/``GPU-NODE``/``gpu-1``, ``~/.kube/config``,
``registry.example.com/kgpu:0.1.0``) are given this
cluster's node, kubeconfig and kgpu's image.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import yaml
from chart import Release
from cluster import REPO, Cluster

README = REPO / "README.md"


def shell_commands(section: str) -> list[str]:
    """The commands of the shell blocks under the heading ``## section`` (with its ``###`` subsections) or
    ``### section`` (up to the next heading of its level or above): comment lines dropped, a trailing ``# comment``
    cut, continued lines joined, a heredoc kept whole (its body on the following lines)."""
    text = README.read_text()
    heading = re.search(rf"^(##|###) {re.escape(section)}$", text, re.M)
    assert heading, f"README has no section ## {section} or ### {section}"
    after = re.search(rf"^#{{2,{len(heading.group(1))}}} ", text[heading.end():], re.M)  # not a shell "# comment"
    body = text[heading.end():heading.end() + after.start()] if after else text[heading.end():]
    return [c for block in re.findall(r"^```sh\n(.*?)^```", body, re.M | re.S) for c in block_commands(block)]


def block_commands(block: str) -> list[str]:
    """The commands of one shell block: comment lines dropped, a trailing ``# comment`` cut, continued lines
    joined, a heredoc kept whole (its body and terminator on the lines after the command)."""
    out: list[str] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + lines[i].strip()
            i += 1
        line = re.sub(r"\s+#\s.*$", "", line).rstrip()
        heredoc = re.search(r"<<'(\w+)'$", line)
        if heredoc:
            body = []
            while i < len(lines) and lines[i] != heredoc.group(1):
                body.append(lines[i])
                i += 1
            i += 1
            line = "\n".join([line, *body, heredoc.group(1)])
        out.append(line)
    return out


def command(section: str, starts_with: str) -> str:
    """The one command of README section ``section`` that starts with ``starts_with``."""
    found = [c for c in shell_commands(section) if c.startswith(starts_with)]
    assert len(found) == 1, f"README section {section!r}: {len(found)} commands start with {starts_with!r}: {found}"
    return found[0]


def for_cluster(line: str, cluster: Cluster, image: str) -> str:
    """The README's placeholders for an admin's own cluster replaced by this one's."""
    line = re.sub(r"\b(lab-node|GPU-NODE|gpu-1)\b", cluster.node, line)
    line = line.replace("~/.kube/config", str(cluster.kubeconfig))
    return line.replace("registry.example.com/kgpu:0.1.0", f"{image}:0.1.0")


def helm(cluster: Cluster, line: str, cwd: Path = REPO, release: Release | None = None) -> Release:
    """`helm install|upgrade NAME CHART -n NS [-f FILE]... [--set K=V]... [--reuse-values]` through Helm's engine
    (on ``release`` when given: the one the caller uninstalls), files named relative to ``cwd``."""
    parser = argparse.ArgumentParser(prog="helm", exit_on_error=False)
    parser.add_argument("verb", choices=("install", "upgrade"))
    parser.add_argument("name")
    parser.add_argument("chart")
    parser.add_argument("-n", "--namespace", required=True)
    parser.add_argument("-f", "--values", action="append", default=[])
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--reuse-values", action="store_true")
    args = parser.parse_args(shlex.split(line)[1:])
    assert (cwd / args.chart).resolve() == (REPO / "deploy/helm/kgpu").resolve(), f"{line}: not kgpu's chart"
    if release is None:
        release = Release(cluster, args.name, args.namespace)
    assert (release.name, release.namespace) == (args.name, args.namespace), line
    values: dict[str, Any] = release.values() if args.reuse_values else {}
    for path in args.values:
        values = _merge(values, yaml.safe_load((cwd / path).read_text()))
    for assignment in args.set:
        key, _, value = assignment.partition("=")
        *parents, leaf = key.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    if args.verb == "install":
        release.install(values)
    else:
        release.upgrade(values)
    return release


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's values merge: maps merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def run(cluster: Cluster, line: str, image: str, cwd: Path = REPO) -> str:
    """Run one README command (not helm) on the cluster; its output (it must exit 0)."""
    line = for_cluster(line, cluster, image)
    assert not line.startswith("helm "), "helm commands run through helm()"
    # kgpu on PATH as the Quick start's `. .venv/bin/activate` puts it (the lab's kubectl stays the one found)
    env = cluster.env | {"PATH": f"{REPO / '.venv' / 'bin'}:{cluster.env['PATH']}"}
    done = subprocess.run(["bash", "-c", f"set -o pipefail\n{line}"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"README: {line!r} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout + done.stderr
