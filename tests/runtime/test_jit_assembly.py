"""Assembly inspection: the instructions the schedules and microkernels ask for are emitted."""

from __future__ import annotations

import re

import numpy as np
import pytest

from lowering import examples
from runtime.jit import CPUCodegen, JitEngine, TargetSpec

RNG = np.random.default_rng(31)


def _assembly(kernel, cpu: str | None = None) -> str:
    codegen = JitEngine() if cpu is None else CPUCodegen(TargetSpec.for_cpu(cpu))
    return codegen.compile_kernels([kernel]).assembly()


def _uses(asm: str, mnemonic: str, registers: str) -> bool:
    """True when some instruction ``mnemonic...`` has an operand in ``registers`` (regex)."""
    pattern = re.compile(rf"^\s*{mnemonic}\w*\s.*%(?:{registers})\d+", re.MULTILINE)
    return pattern.search(asm) is not None


def test_float_matmul_uses_fma_on_vector_registers():
    """The 4x16 register tile becomes vfmadd...ps on ymm (8-lane vectors)."""
    kernel = examples.matmul_f32(16, 32, 24, RNG.standard_normal((24, 32)))
    asm = _assembly(kernel)
    assert _uses(asm, r"vfmadd\d+ps", "ymm")


def test_int8_pairs_kernel_uses_vpmaddwd_on_ymm():
    """On an AVX2 CPU without VNNI (znver3) the exact dot step is vpmaddwd on ymm."""
    kernel = examples.matmul_u8i8(4, 16, 32, RNG.integers(-128, 128, (32, 16)), "pairs")
    asm = _assembly(kernel, "znver3")
    assert _uses(asm, "vpmaddwd", "ymm")
    assert "vpmaddubsw" not in asm
    host = _assembly(kernel)          # a VNNI host may fuse vpmaddwd + vpaddd into vpdpwssd
    assert _uses(host, "vpmaddwd", "ymm") or _uses(host, "vpdpwssd", "ymm")


def test_vnni_quad_kernel_uses_vpdpbusd_on_icelake():
    kernel = examples.matmul_u8i8(4, 16, 32, RNG.integers(-128, 128, (32, 16)), "quad")
    assert _uses(_assembly(kernel, "icelake-server"), "vpdpbusd", "ymm|zmm")
    znver3 = _assembly(kernel, "znver3")
    assert "vpdpbusd" not in znver3              # the portable fallback, no VNNI there


def test_saturating_kernel_uses_vpmaddubsw_only_when_asked():
    kernel = examples.matmul_u8i8(4, 16, 32, RNG.integers(-63, 64, (32, 16)), "saturating",
                                  justification="weights in [-63, 63]")
    assert _uses(_assembly(kernel, "znver3"), "vpmaddubsw", "ymm")


@pytest.mark.parametrize("cpu", ["skylake-avx512", "icelake-server"])
def test_sixteen_lane_tiles_use_zmm_on_avx512(cpu):
    """A 16-lane schedule compiled for an AVX-512 CPU works on zmm registers."""
    kernel = examples.matmul_f32(8, 64, 16, RNG.standard_normal((16, 64)), columns=32,
                                 width=16)
    asm = _assembly(kernel, cpu)
    assert _uses(asm, r"vfmadd\d+ps", "zmm")


def test_sixteen_lane_quad_kernel_uses_zmm_vpdpbusd():
    kernel = examples.matmul_u8i8(2, 32, 16, RNG.integers(-128, 128, (16, 32)), "quad", lanes=16)
    assert _uses(_assembly(kernel, "icelake-server"), "vpdpbusd", "zmm")


def test_portable_pair_lowering_still_becomes_vpmaddwd():
    """Without feature-specific intrinsics the plain vector IR is matched to vpmaddwd by LLVM."""
    kernel = examples.matmul_u8i8(4, 16, 32, RNG.integers(-128, 128, (32, 16)), "pairs")
    asm = CPUCodegen(TargetSpec.for_cpu("znver3")).compile_kernels(
        [kernel], features=frozenset()).assembly()
    assert _uses(asm, "vpmaddwd", "ymm")
