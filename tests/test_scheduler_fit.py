"""Which GPUs a pod's shares go to, by policy, and why a node cannot take a pod."""

from __future__ import annotations

from scheduler_helpers import H100_MIB, gpu_pod, gpus

from kgpu.scheduler.fit import GPUUsage, NodeUsage, Placement, Refusal, node_score, place
from kgpu.scheduler.names import Policy
from kgpu.scheduler.requests import pod_request


def empty_node(count: int = 8, **kwargs: object) -> NodeUsage:
    return NodeUsage("n1", tuple(GPUUsage(g) for g in gpus(count, **kwargs)))  # type: ignore[arg-type]


def place_all(usage: NodeUsage, memories: list[int], policy: Policy) -> tuple[NodeUsage, list[str]]:
    chosen = []
    for i, mib in enumerate(memories):
        pod = gpu_pod(f"p{i}", memory=mib)
        outcome = place(usage, pod_request(pod), policy, {})
        assert isinstance(outcome, Placement), outcome
        chosen.append(outcome.assignment.shares[0].uuid)
        usage = outcome.usage
    return usage, chosen


def test_binpack_puts_20_30_and_25_gb_on_one_gpu() -> None:
    usage, chosen = place_all(empty_node(), [20000, 30000, 25000], "binpack")
    assert len(set(chosen)) == 1
    gpu = usage.gpu(chosen[0])
    assert gpu is not None and (gpu.memory_mib, gpu.clients) == (75000, 3)


def test_spread_puts_them_on_three_gpus() -> None:
    _, chosen = place_all(empty_node(), [20000, 30000, 25000], "spread")
    assert len(set(chosen)) == 3


def test_binpack_moves_on_when_the_busiest_gpu_is_full() -> None:
    _usage, chosen = place_all(empty_node(), [50000, 40000], "binpack")
    assert chosen[0] != chosen[1]


def test_a_pod_larger_than_any_gpu_is_refused_with_the_largest_free_share() -> None:
    usage, _ = place_all(empty_node(2), [20000], "binpack")
    outcome = place(usage, pod_request(gpu_pod("big", memory=90000)), "binpack", {})
    assert isinstance(outcome, Refusal)
    assert outcome.unresolvable  # no GPU of this node is that large: preemption would not help
    assert "container 'main' (90000 MiB, 0 percent of SMs)" in outcome.reason
    assert "2 GPUs: 2 smaller than the request" in outcome.reason
    assert f"largest free share: {H100_MIB} MiB and 100 percent of SMs (GPU 1)" in outcome.reason


def test_reasons_have_no_percent_sign_which_kube_schedulers_events_would_read_as_a_format_verb() -> None:
    usage, _ = place_all(empty_node(1), [60000], "binpack")
    outcome = place(usage, pod_request(gpu_pod("b", memory=30000, cores=20, percent=10)), "binpack", {})
    assert isinstance(outcome, Refusal) and "%" not in outcome.reason


def test_a_pod_that_fits_once_others_leave_is_resolvable() -> None:
    usage, _ = place_all(empty_node(1), [60000], "binpack")
    outcome = place(usage, pod_request(gpu_pod("b", memory=30000)), "binpack", {})
    assert isinstance(outcome, Refusal) and not outcome.unresolvable
    assert "1 too little free memory" in outcome.reason
    assert f"largest free share: {H100_MIB - 60000} MiB" in outcome.reason


def test_compute_shares_never_exceed_the_whole_gpu() -> None:
    usage = empty_node(1)
    for cores in (60, 40):
        outcome = place(usage, pod_request(gpu_pod("c", memory=1000, cores=cores)), "binpack", {})
        assert isinstance(outcome, Placement)
        usage = outcome.usage
    more = place(usage, pod_request(gpu_pod("d", memory=1000, cores=1)), "binpack", {})
    assert isinstance(more, Refusal) and "too little free SMs" in more.reason
    # and a container with no guaranteed SMs is not put where all SMs are promised
    none = place(usage, pod_request(gpu_pod("e", memory=1000, cores=0)), "binpack", {})
    assert isinstance(none, Refusal) and "all SMs promised to others" in none.reason


def test_a_whole_gpu_request_takes_an_idle_gpu_only() -> None:
    usage, chosen = place_all(empty_node(2), [1000], "binpack")
    outcome = place(usage, pod_request(gpu_pod("whole")), "binpack", {})
    assert isinstance(outcome, Placement)
    (share,) = outcome.assignment.shares
    assert share.uuid != chosen[0] and (share.memory_mib, share.cores) == (H100_MIB, 100)
    again = place(outcome.usage, pod_request(gpu_pod("whole2")), "binpack", {})
    assert isinstance(again, Refusal) and "in use, and the request is for the whole GPU" in again.reason


def test_share_slots_limit_the_clients_per_gpu() -> None:
    usage = empty_node(1, shares=2)
    for i in range(2):
        outcome = place(usage, pod_request(gpu_pod(f"s{i}", memory=100)), "binpack", {})
        assert isinstance(outcome, Placement)
        usage = outcome.usage
    third = place(usage, pod_request(gpu_pod("s3", memory=100)), "binpack", {})
    assert isinstance(third, Refusal) and "every share slot in use" in third.reason


def test_unhealthy_gpus_and_hamis_type_and_uuid_annotations_are_honoured() -> None:
    usage = empty_node(3, unhealthy=(0,))
    pod = gpu_pod("t", memory=1000)
    only_2 = place(usage, pod_request(pod), "binpack", {"nvidia.com/use-gpuuuid": "GPU-n1-0002"})
    assert isinstance(only_2, Placement) and only_2.assignment.shares[0].uuid == "GPU-n1-0002"
    not_1 = place(usage, pod_request(pod), "binpack", {"nvidia.com/nouse-gpuuuid": "GPU-n1-0001, GPU-n1-0002"})
    assert isinstance(not_1, Refusal) and not_1.unresolvable
    assert "1 unhealthy" in not_1.reason and "2 excluded by nvidia.com/use-gpuuuid" in not_1.reason
    assert isinstance(place(usage, pod_request(pod), "binpack", {"nvidia.com/use-gputype": "h100"}), Placement)
    a100 = place(usage, pod_request(pod), "binpack", {"nvidia.com/use-gputype": "A100"})
    assert isinstance(a100, Refusal) and "use-gputype" in a100.reason


def test_several_gpus_per_container_only_whole() -> None:
    two_whole = place(empty_node(4), pod_request(gpu_pod("w", count=2)), "spread", {})
    assert isinstance(two_whole, Placement) and len({s.uuid for s in two_whole.assignment.shares}) == 2
    two_parts = place(empty_node(4), pod_request(gpu_pod("p", count=2, memory=1000)), "spread", {})
    assert isinstance(two_parts, Refusal) and "an MPS client reaches one GPU's daemon" in two_parts.reason


def test_assignment_entries_follow_hamis_container_order() -> None:
    outcome = place(empty_node(), pod_request(gpu_pod("i", memory=1000, init=True, extra_container=True)),
                    "binpack", {})
    assert isinstance(outcome, Placement)
    assert [len(c) for c in outcome.assignment.containers] == [0, 1, 0]


def test_node_score_prefers_busy_nodes_under_binpack_and_idle_under_spread() -> None:
    busy, _ = place_all(empty_node(2), [60000, 60000], "spread")
    idle = empty_node(2)
    assert node_score(busy, "binpack") > node_score(idle, "binpack")
    assert node_score(busy, "spread") < node_score(idle, "spread")
    assert 0 <= node_score(busy, "binpack") <= 10
