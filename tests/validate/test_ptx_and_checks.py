"""The PTX module choice and the element-by-element check, without a GPU."""

from __future__ import annotations

from array import array

from kgpu.validate.cuda import check_sums, format_uuid
from kgpu.validate.ptx import BASELINE, candidates, native_module


def test_baseline_is_sm_50_with_ptx_isa_4_0() -> None:
    assert BASELINE.text.splitlines()[4:6] == [".version 4.0", ".target sm_50"]
    assert ".visible .entry vectorAdd(" in BASELINE.text


def test_hopper_tries_the_baseline_then_sm_90() -> None:
    assert [m.target for m in candidates(9, 0)] == ["sm_50", "sm_90"]
    assert native_module(9, 0).isa_version == "7.8"


def test_unknown_newer_gpu_uses_the_newest_known_target_it_can_run() -> None:
    assert native_module(12, 9).target == "sm_121"
    assert native_module(10, 1).target == "sm_100"
    assert native_module(8, 6).target == "sm_86"


def test_maxwell_has_only_the_baseline() -> None:
    assert candidates(5, 0) == (BASELINE,)


def test_exact_sums_pass_and_one_wrong_element_is_reported() -> None:
    a = array("f", [0.1, 0.25, 3.0e-8])
    b = array("f", [0.2, 0.5, 1.0])
    c = array("f", [x + y for x, y in zip(a, b, strict=True)])
    assert check_sums(a, b, c) == (0, "")
    c[1] = 0.75000006
    count, first = check_sums(a, b, c)
    assert count == 1
    assert first.startswith("first at element 1: 0.25 + 0.5 gave 0.75")


def test_uuid_is_formatted_like_nvidia_smi() -> None:
    raw = bytes.fromhex("c707cd421dcd5307b9cd750818912a76")
    assert format_uuid(raw) == "GPU-c707cd42-1dcd-5307-b9cd-750818912a76"
