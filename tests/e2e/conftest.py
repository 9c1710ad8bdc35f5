"""Fixtures every e2e module shares: the cluster, kgpu's image on it, the node's driver root, timings.

Modules add their own releases with chart.Release (see tests/e2e/README.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import leftovers
import pytest
from cluster import REPO, Cluster, from_kubeconfig, start_lab
from node import DRIVER_ROOT, lay_out_driver_root, remove_driver_root, reset_events

IMAGE_ARCHIVE = Path(os.environ.get("KGPU_E2E_IMAGE_ARCHIVE", REPO / "build" / "kgpu-image.tar"))
TIMINGS: list[tuple[str, str]] = []
"""(what, value) lines printed at the end of the run: the figures an admin compares."""


NEWEST = "1.36"
"""The lab version every test runs on; on the others (v1.28) a test marked newest_only is skipped."""


def record(what: str, value: str) -> None:
    TIMINGS.append((what, value))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"newest_only(why): runs on the lab v{NEWEST} only, as its subject does not depend on the "
        "Kubernetes version (kgpu's own decisions, not what it asks of the kubelet and API server); CI's 20 minutes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    version = os.environ.get("KGPU_E2E_LAB_VERSION")
    if not version or version == NEWEST:
        return
    for item in items:
        if (mark := item.get_closest_marker("newest_only")) is not None:
            why = mark.args[0] if mark.args else "does not depend on the Kubernetes version"
            item.add_marker(pytest.mark.skip(reason=f"v{NEWEST} only ({why})"))


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    """The lab of KGPU_E2E_LAB_VERSION (default 1.36), or the cluster $KUBECONFIG names when that is set alone."""
    version = os.environ.get("KGPU_E2E_LAB_VERSION")
    if os.environ.get("KUBECONFIG") and not version:
        return from_kubeconfig()
    return start_lab(version or "1.36")


@pytest.fixture(scope="session", autouse=True)
def no_stale_gpu_counts(cluster: Cluster) -> Iterator[bool]:
    """The run starts and ends with no nvidia.com/* count in the Node's status that no device plugin serves
    (leftovers.py says how one stays there for good); the value: whether the cluster serves DRA's API."""
    if gone := leftovers.forget_stale_resources(cluster):
        record(f"v{cluster.version}: at the start, counted with no plugin (removed)", ", ".join(gone))
    yield leftovers.serves_dra(cluster)
    leftovers.forget_stale_resources(cluster)


@pytest.fixture(scope="module", autouse=True)
def leaves_nothing_behind(request: pytest.FixtureRequest, cluster: Cluster, no_stale_gpu_counts: bool
                          ) -> Iterator[None]:
    """Each module leaves the cluster and the node as it found them, after its own teardown. What it left fails
    its last test, naming it all, and is cleaned, so that the next module is judged on its own (leftovers.py)."""
    dra = no_stale_gpu_counts
    before = leftovers.snapshot(cluster, dra)
    yield
    after, left = leftovers.settle(cluster, before, dra)
    if not left:
        return
    leftovers.clean(cluster, before, after)
    still = leftovers.left(before, leftovers.snapshot(cluster, dra))
    pytest.fail(f"{request.module.__name__}.py left on the cluster (node {cluster.node}): " + "; ".join(left)
                + (f". Still there after cleaning: {'; '.join(still)}" if still else
                   ". Cleaned, so the next module starts as this one did."), pytrace=False)


@pytest.fixture(scope="session")
def image(cluster: Cluster) -> str:
    """kgpu's image (make image) imported into the cluster's containerd; the chart's default reference."""
    if cluster.on_lab:
        if not IMAGE_ARCHIVE.exists():
            pytest.fail(f"{IMAGE_ARCHIVE} does not exist: run make image (or make e2e, which builds it)")
        cluster.import_image(IMAGE_ARCHIVE)
    return "local/kgpu"


@pytest.fixture(scope="session")
def driver_root(cluster: Cluster) -> Iterator[Path]:
    """A driver root laid out on the node at lab-values.yaml's driverRoot (node.py says what is in it)."""
    if not cluster.on_lab:
        pytest.skip("the driver root is laid out on the lab's node; another cluster must provide it")
    reset_events()
    yield lay_out_driver_root(DRIVER_ROOT)
    remove_driver_root(DRIVER_ROOT)
    reset_events()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("kgpu e2e figures")
        for what, value in TIMINGS:
            terminalreporter.write_line(f"{what:<58} {value}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """Under a failed test: the cluster's pods, events and kgpu's logs, before teardown removes them."""
    report: pytest.TestReport = yield
    cluster = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and isinstance(cluster, Cluster):
        try:
            report.sections.append(("kgpu e2e: cluster state", cluster.state_report()))
        except Exception as exc:  # a report must never hide the failure itself
            report.sections.append(("kgpu e2e: cluster state", f"unavailable: {exc!r}"))
    return report

