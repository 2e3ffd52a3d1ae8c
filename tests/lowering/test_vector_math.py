"""``lowering.vector_math``: vectorizable float32 math, compiled by LLVM and compared with numpy.

``exp_nonpositive`` must stay within 2 ulp of numpy's float32 ``exp`` on ``[-87.3, 0]`` (far
inside SoftMax's rtol 1e-4), flush results under ``2^-126`` to 0 and keep NaN.  ``gelu_erf``
must stay within 6e-7 relative (about 10 ulp) of float64 Gelu wherever the result is a normal
float32 (``erfc_scaled`` within 4.5e-7), give -0 below -13.2 and at -inf, inf at inf, NaN for
NaN, on both executors.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from lowering.builder import KernelBuilder
from lowering.loop_ir import f32, vectorized
from lowering.program_exec import llvm_compiler, numba_compiler
from lowering.vector_math import erfc_scaled, exp_nonpositive, gelu_erf
from runtime.jit import CPUCodegen, TargetSpec

RNG = np.random.default_rng(91)


def _run_exp(x: np.ndarray) -> np.ndarray:
    """``exp_nonpositive`` over ``x`` in an 8-lane vectorized loop with a scalar tail."""
    b = KernelBuilder("vexp")
    source = b.input("x", f32, x.shape)
    out = b.output("y", f32, x.shape)
    with b.for_range(x.shape[0], kind=vectorized(8)) as i:
        b.store(out, i, exp_nonpositive(source[i]))
    y = np.zeros_like(x)
    llvm_compiler(b.build())(x, y)
    return y


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))


def test_exp_nonpositive_within_two_ulp():
    x = np.concatenate([RNG.uniform(-87.3, 0.0, 20001), RNG.uniform(-1.0, 0.0, 5003),
                        np.array([0.0, -0.0, -1e-30, -0.34657359, -0.3465736, -87.33])]
                       ).astype(np.float32)
    actual = _run_exp(x)
    expected = np.exp(x)
    assert _ulps(actual, expected).max() <= 2, _ulps(actual, expected).max()


def test_exp_nonpositive_edges():
    x = np.array([-88.0, -100.0, -np.inf, np.nan, -87.0, -5.5, -0.5, 0.0, -1e-3],
                 dtype=np.float32)
    actual = _run_exp(x)
    np.testing.assert_array_equal(actual[:3], 0.0)
    assert np.isnan(actual[3])
    assert _ulps(actual[4:], np.exp(x[4:])).max() <= 2


def _run(function, x: np.ndarray, compiler=llvm_compiler) -> np.ndarray:
    """``function`` over float32 ``x`` in a 16-lane vectorized loop with a scalar tail."""
    b = KernelBuilder("vmath")
    source = b.input("x", f32, x.shape)
    out = b.output("y", f32, x.shape)
    with b.for_range(x.shape[0], kind=vectorized(16)) as i:
        b.store(out, i, function(source[i]))
    y = np.zeros_like(x)
    compiler(b.build())(x, y)
    return y


_ERF = np.frompyfunc(math.erf, 1, 1)
_ERFC = np.frompyfunc(math.erfc, 1, 1)


def _gelu_exact(x: np.ndarray) -> np.ndarray:
    """Gelu in float64 through ``erfc`` (relative accuracy in the negative tail too)."""
    x = x.astype(np.float64)
    z = x / math.sqrt(2.0)
    one_plus_erf = np.where(x < 0, _ERFC(-z).astype(np.float64), 1.0 + _ERF(z).astype(np.float64))
    return 0.5 * x * one_plus_erf


def _grid() -> np.ndarray:
    """Dense float32 ``x`` over [-14, 14], random values, and +-2^-k down to the denormals."""
    powers = np.float32(2.0) ** -np.arange(0, 150, dtype=np.float32)
    return np.concatenate([np.linspace(-14.0, 14.0, 400_001), RNG.normal(0.0, 3.0, 50_001),
                           powers, -powers]).astype(np.float32)


def test_erfc_scaled_relative_error():
    a = np.concatenate([np.linspace(0.0, 13.2, 200_001), RNG.uniform(0.0, 1.0, 20_001)]
                       ).astype(np.float32)
    actual = _run(erfc_scaled, a).astype(np.float64)
    expected = _ERFC(a.astype(np.float64) / math.sqrt(2.0)).astype(np.float64)
    normal = expected >= 2.0 ** -126
    assert (np.abs(actual - expected)[normal] / expected[normal]).max() <= 4.5e-7
    assert np.abs(actual - expected).max() <= 4e-7


def test_gelu_erf_within_ten_ulp_of_float64():
    """Relative error (where the result is a normal float32) and absolute error everywhere
    against float64 Gelu; ``x < -13.2`` gives -0."""
    x = _grid()
    actual = _run(gelu_erf, x).astype(np.float64)
    expected = _gelu_exact(x)
    normal = np.abs(expected) >= 2.0 ** -126
    relative = np.abs(actual - expected)[normal] / np.abs(expected[normal])
    assert relative.max() <= 6e-7, relative.max()
    assert np.abs(actual - expected).max() <= 4e-7
    np.testing.assert_array_equal(np.signbit(actual[x < -13.2]), True)
    np.testing.assert_array_equal(actual[x < -13.2], 0.0)


def test_gelu_erf_special_values_on_both_executors():
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 3e38, -3e38, 1e-40, -1e-40, -13.3, 20.0,
                  -0.5, 1.5], np.float32)
    expected = np.array([np.inf, np.nan, np.nan, 0.0, -0.0, 3e38, -0.0, 5e-41, -5e-41, -0.0, 20.0],
                        np.float32)   # Gelu(-inf) = -inf * 0 = NaN, as the reference
    for compiler in (llvm_compiler, numba_compiler):
        actual = _run(gelu_erf, x, compiler)
        np.testing.assert_array_equal(actual[:11], expected)
        finite = ~np.isnan(expected)
        np.testing.assert_array_equal(np.signbit(actual[:11][finite]), np.signbit(expected[finite]))
        np.testing.assert_allclose(actual[11:], _gelu_exact(x[11:]), rtol=1e-6)


@pytest.mark.parametrize("cpu, register", [("znver4", "zmm"), ("znver3", "ymm")])
def test_gelu_and_exp_compile_to_vector_code_without_calls(cpu, register):
    """No libm call per lane: the vectorized loop's FMAs run on full-width float registers."""
    kernels = []
    for name, function in (("gelu", gelu_erf), ("exp", exp_nonpositive)):
        b = KernelBuilder(f"v{name}")
        source = b.input("x", f32, (256,))
        out = b.output("y", f32, (256,))
        with b.for_range(256, kind=vectorized(16 if register == "zmm" else 8)) as i:
            b.store(out, i, function(source[i]))
        kernels.append(b.build())
    text = CPUCodegen(TargetSpec.for_cpu(cpu)).compile_kernels(kernels).assembly()
    assert not re.search(r"\bcall", text)
    assert re.search(rf"vfmadd\w+ps\s+[^\n]*%{register}", text)
    assert re.search(rf"vpsrlvd\s+[^\n]*%{register}", text)
