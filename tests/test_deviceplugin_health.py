"""Which events make a GPU unhealthy (NVIDIA's rules and env vars), who may say so, and recovery."""

from __future__ import annotations

import pytest

from kgpu.deviceplugin.health import APPLICATION_XIDS, HealthTracker, XidPolicy, parse_duration, recover_due
from kgpu.errors import ConfigError
from kgpu.gpu.health import HealthEvent, HealthEventKind

GPU = "GPU-aaaa"
MIG = "MIG-bbbb"


def xid(n: int, uuid: str = GPU) -> HealthEvent:
    return HealthEvent(uuid, HealthEventKind.XID, xid=n)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("code", APPLICATION_XIDS)
def test_application_xids_are_not_fatal_by_default(code: int) -> None:
    assert not XidPolicy.from_environ({}).xid_is_fatal(code)


@pytest.mark.parametrize("code", [48, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120])
def test_hardware_xids_are_fatal_by_default(code: int) -> None:
    assert XidPolicy.from_environ({}).xid_is_fatal(code)


def test_disable_list_adds_to_the_application_xids() -> None:
    policy = XidPolicy.from_environ({"DP_DISABLE_HEALTHCHECKS": "48, 79"})
    assert not policy.xid_is_fatal(48) and not policy.xid_is_fatal(79) and not policy.xid_is_fatal(13)
    assert policy.xid_is_fatal(94)


@pytest.mark.parametrize("value", ["all", "xids", "48,XIDS"])
def test_disable_all_turns_every_check_off(value: str) -> None:
    policy = XidPolicy.from_environ({"DP_DISABLE_HEALTHCHECKS": value})
    assert not policy.monitoring
    assert not policy.is_fatal(xid(79))
    assert not policy.is_fatal(HealthEvent(GPU, HealthEventKind.ECC))
    assert not policy.is_fatal(HealthEvent(GPU, HealthEventKind.LOST))


def test_enable_list_overrides_disabled_and_application_xids() -> None:
    policy = XidPolicy.from_environ({"DP_DISABLE_HEALTHCHECKS": "all", "DP_ENABLE_HEALTHCHECKS": "31,79"})
    assert policy.monitoring
    assert policy.xid_is_fatal(31) and policy.xid_is_fatal(79)
    assert not policy.xid_is_fatal(48)
    assert not policy.is_fatal(HealthEvent(GPU, HealthEventKind.ECC))


def test_enable_all_makes_even_application_xids_fatal() -> None:
    policy = XidPolicy.from_environ({"DP_ENABLE_HEALTHCHECKS": "all"})
    assert all(policy.xid_is_fatal(c) for c in APPLICATION_XIDS)


def test_a_malformed_xid_list_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"DP_DISABLE_HEALTHCHECKS='48,foo': 'foo' is not an XID"):
        XidPolicy.from_environ({"DP_DISABLE_HEALTHCHECKS": "48,foo"})


def test_ecc_and_lost_are_fatal_and_recovered_never_is() -> None:
    policy = XidPolicy()
    assert policy.is_fatal(HealthEvent(GPU, HealthEventKind.ECC))
    assert policy.is_fatal(HealthEvent(GPU, HealthEventKind.LOST))
    assert not policy.is_fatal(HealthEvent(GPU, HealthEventKind.RECOVERED))


def test_a_device_is_unhealthy_while_any_source_objects() -> None:
    tracker = HealthTracker()
    tracker.handle_event(xid(79))
    tracker.set_source_state("mps", GPU, False, "MPS control daemon exited")
    healthy, reason = tracker.device_health([GPU])
    assert not healthy
    assert reason == "GPU-aaaa: XID 79; GPU-aaaa: MPS control daemon exited (mps)"
    tracker.handle_event(HealthEvent(GPU, HealthEventKind.RECOVERED))
    assert tracker.device_health([GPU]) == (False, "GPU-aaaa: MPS control daemon exited (mps)")
    tracker.set_source_state("mps", GPU, True)
    assert tracker.device_health([GPU]) == (True, "")


def test_listeners_hear_each_change_once() -> None:
    tracker = HealthTracker()
    heard: list[tuple[str, bool, str]] = []
    tracker.subscribe(lambda c: heard.append((c.uuid, c.healthy, c.reason)))
    tracker.handle_event(xid(79))
    tracker.handle_event(xid(79))  # already unhealthy: no second change
    tracker.handle_event(xid(13))  # not fatal
    tracker.handle_event(HealthEvent(GPU, HealthEventKind.RECOVERED, detail="NVML answers again"))
    assert heard == [(GPU, False, "XID 79"), (GPU, True, "NVML answers again")]


def test_recovered_on_a_gpu_also_clears_its_mig_devices() -> None:
    tracker = HealthTracker(parents={MIG: GPU})
    tracker.handle_event(xid(79, MIG))
    assert tracker.device_health([MIG, GPU])[0] is False
    tracker.handle_event(HealthEvent(GPU, HealthEventKind.RECOVERED))
    assert tracker.device_health([MIG, GPU]) == (True, "")


def test_recovery_waits_for_the_window_and_restarts_it_on_each_new_fatal_event() -> None:
    clock = Clock()
    tracker = HealthTracker(recovery_window=300, clock=clock)
    probes: list[str] = []

    def probe(uuid: str) -> bool:
        probes.append(uuid)
        return True

    tracker.handle_event(xid(79))
    clock.now += 200
    tracker.handle_event(xid(79))  # a new fatal event: the quiet window starts again
    clock.now += 200
    assert recover_due(tracker, probe) == [] and probes == []
    clock.now += 100
    changes = recover_due(tracker, probe)
    assert [(c.uuid, c.healthy) for c in changes] == [(GPU, True)]
    assert probes == [GPU]
    assert tracker.device_health([GPU]) == (True, "")


def test_recovery_needs_a_successful_probe_of_the_parent_gpu() -> None:
    clock = Clock()
    tracker = HealthTracker(parents={MIG: GPU}, recovery_window=10, clock=clock)
    tracker.handle_event(xid(79, MIG))
    clock.now += 11
    probed: list[str] = []
    assert recover_due(tracker, lambda u: probed.append(u) or False) == []
    assert probed == [GPU]
    assert not tracker.device_health([MIG])[0]


def test_recovery_never_clears_another_sources_verdict() -> None:
    clock = Clock()
    tracker = HealthTracker(recovery_window=1, clock=clock)
    tracker.set_source_state("mps", GPU, False, "daemon down")
    clock.now += 5
    assert recover_due(tracker, lambda u: True) == []
    assert not tracker.device_health([GPU])[0]


class _Health:
    def __init__(self, **kw: object) -> None:
        self.disabled = kw.get("disabled", False)
        self.event_types = kw.get("event_types", ())
        self.ignored_xids = kw.get("ignored_xids", ())
        self.critical_xids = kw.get("critical_xids")


def test_config_health_block_replaces_the_default_ignore_list() -> None:
    policy = XidPolicy.from_environ({}, _Health(ignored_xids=(13,), critical_xids="all"))  # type: ignore[arg-type]
    assert not policy.xid_is_fatal(13)
    assert policy.xid_is_fatal(31)  # no longer ignored: the file's list replaced NVIDIA's default


def test_config_critical_list_makes_only_those_xids_fatal_and_env_still_adds_ignores() -> None:
    health = _Health(critical_xids=(48, 79))
    policy = XidPolicy.from_environ({"DP_DISABLE_HEALTHCHECKS": "79"}, health)  # type: ignore[arg-type]
    assert policy.xid_is_fatal(48)
    assert not policy.xid_is_fatal(79) and not policy.xid_is_fatal(94)


def test_config_event_types_without_double_bit_ecc_ignore_ecc() -> None:
    policy = XidPolicy.from_environ({}, _Health(event_types=("EventTypeXidCriticalError",)))  # type: ignore[arg-type]
    assert not policy.is_fatal(HealthEvent(GPU, HealthEventKind.ECC))
    assert policy.is_fatal(xid(79))


def test_env_disable_all_wins_over_a_config_that_enables_checks() -> None:
    policy = XidPolicy.from_environ({"DP_DISABLE_HEALTHCHECKS": "all"}, _Health(disabled=False))  # type: ignore[arg-type]
    assert not policy.monitoring


@pytest.mark.parametrize(
    ("text", "seconds"), [("300", 300), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25)]
)
def test_recovery_window_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "--health-recovery-window") == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "m5", "5x"])
def test_a_bad_duration_names_the_flag_and_the_accepted_forms(text: str) -> None:
    with pytest.raises(ConfigError, match=r"--health-recovery-window=.* is not a duration; use seconds"):
        parse_duration(text, "--health-recovery-window")
