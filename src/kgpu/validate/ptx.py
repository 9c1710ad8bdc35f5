"""The vectorAdd kernel as hand-written PTX, for the driver to JIT-compile (no CUDA toolkit needed).

The baseline module targets ``sm_50`` with PTX ISA 4.0, so any driver from CUDA 6.0 on understands
it and PTX's forward compatibility lets the JIT compile it for every later GPU. CUDA 13 dropped
*offline* compilation for pre-Turing GPUs, not JIT of old PTX: ptxas 13.5 compiles this module for
``sm_90`` cleanly. Should a future driver refuse the old target, :func:`candidates` adds the
GPU's own target with the lowest PTX ISA that knows it, and the CUDA step says which one loaded.

The kernel is ``C[i] = A[i] + B[i]`` for ``i < n``, one thread per element, exactly the CUDA
sample's ``vectorAdd``; parameters are three global pointers and an int, in that order.
"""

from __future__ import annotations

from dataclasses import dataclass

KERNEL_NAME = "vectorAdd"

_BODY = """\
.address_size 64

.visible .entry vectorAdd(
\t.param .u64 vectorAdd_a,
\t.param .u64 vectorAdd_b,
\t.param .u64 vectorAdd_c,
\t.param .u32 vectorAdd_n
)
{
\t.reg .pred \t%p<2>;
\t.reg .f32 \t%f<4>;
\t.reg .b32 \t%r<6>;
\t.reg .b64 \t%rd<11>;

\tld.param.u64 \t%rd1, [vectorAdd_a];
\tld.param.u64 \t%rd2, [vectorAdd_b];
\tld.param.u64 \t%rd3, [vectorAdd_c];
\tld.param.u32 \t%r2, [vectorAdd_n];
\tmov.u32 \t%r3, %ntid.x;
\tmov.u32 \t%r4, %ctaid.x;
\tmov.u32 \t%r5, %tid.x;
\tmad.lo.s32 \t%r1, %r3, %r4, %r5;
\tsetp.ge.s32 \t%p1, %r1, %r2;
\t@%p1 bra \tDONE;
\tcvta.to.global.u64 \t%rd4, %rd1;
\tcvta.to.global.u64 \t%rd5, %rd2;
\tcvta.to.global.u64 \t%rd6, %rd3;
\tmul.wide.s32 \t%rd7, %r1, 4;
\tadd.s64 \t%rd8, %rd4, %rd7;
\tadd.s64 \t%rd9, %rd5, %rd7;
\tadd.s64 \t%rd10, %rd6, %rd7;
\tld.global.f32 \t%f1, [%rd8];
\tld.global.f32 \t%f2, [%rd9];
\tadd.rn.f32 \t%f3, %f1, %f2;
\tst.global.f32 \t[%rd10], %f3;
DONE:
\tret;
}
"""


@dataclass(frozen=True, slots=True)
class PtxModule:
    isa_version: str
    """PTX ISA version for the ``.version`` directive, e.g. ``4.0``."""
    target: str
    """``.target``, e.g. ``sm_50``."""

    @property
    def text(self) -> str:
        header = "//\n// kgpu validate: vectorAdd\n//\n\n"
        return f"{header}.version {self.isa_version}\n.target {self.target}\n{_BODY}"

    def __str__(self) -> str:
        return f".target {self.target} (PTX ISA {self.isa_version})"


BASELINE = PtxModule("4.0", "sm_50")

# Compute capability → the target naming it and the first PTX ISA version that knows that target.
_TARGETS: tuple[tuple[tuple[int, int], PtxModule], ...] = (
    ((5, 0), PtxModule("4.0", "sm_50")),
    ((5, 2), PtxModule("4.1", "sm_52")),
    ((5, 3), PtxModule("4.2", "sm_53")),
    ((6, 0), PtxModule("5.0", "sm_60")),
    ((6, 1), PtxModule("5.0", "sm_61")),
    ((6, 2), PtxModule("5.0", "sm_62")),
    ((7, 0), PtxModule("6.0", "sm_70")),
    ((7, 2), PtxModule("6.1", "sm_72")),
    ((7, 5), PtxModule("6.3", "sm_75")),
    ((8, 0), PtxModule("7.0", "sm_80")),
    ((8, 6), PtxModule("7.1", "sm_86")),
    ((8, 7), PtxModule("7.4", "sm_87")),
    ((8, 9), PtxModule("7.8", "sm_89")),
    ((9, 0), PtxModule("7.8", "sm_90")),
    ((10, 0), PtxModule("8.6", "sm_100")),
    ((10, 3), PtxModule("8.8", "sm_103")),
    ((11, 0), PtxModule("9.0", "sm_110")),
    ((12, 0), PtxModule("8.7", "sm_120")),
    ((12, 1), PtxModule("8.8", "sm_121")),
)


def native_module(major: int, minor: int) -> PtxModule:
    """The newest known target a GPU of compute capability ``major.minor`` can run (PTX runs forward)."""
    best = BASELINE
    for cc, module in _TARGETS:
        if cc <= (major, minor):
            best = module
    return best


def candidates(major: int, minor: int) -> tuple[PtxModule, ...]:
    """Modules to try in order: the portable baseline, then the GPU's own target if different."""
    native = native_module(major, minor)
    return (BASELINE,) if native == BASELINE else (BASELINE, native)
