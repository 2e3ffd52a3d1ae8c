"""``lowering.vector_math``: vectorizable float32 math, compiled by LLVM and compared with numpy.

``exp_nonpositive`` must stay within 2 ulp of numpy's float32 ``exp`` on ``[-87.3, 0]`` (far
inside SoftMax's rtol 1e-4), flush results under ``2^-126`` to 0 and keep NaN.  ``erf_f64``
must stay within 2e-15 of libm's ``erf`` and give Gelu's float32 results bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from lowering.builder import KernelBuilder
from lowering.loop_ir import f32, f64, vectorized
from lowering.program_exec import llvm_compiler
from lowering.vector_math import erf_f64, exp_nonpositive

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


def _run_f64(function, x: np.ndarray) -> np.ndarray:
    """``function`` over float64 ``x`` in a 4-lane vectorized loop with a scalar tail."""
    b = KernelBuilder("vmath64")
    source = b.input("x", f64, x.shape)
    out = b.output("y", f64, x.shape)
    with b.for_range(x.shape[0], kind=vectorized(4)) as i:
        b.store(out, i, function(source[i]))
    y = np.zeros_like(x)
    llvm_compiler(b.build())(x, y)
    return y


def test_erf_f64_close_to_libm():
    x = np.concatenate([RNG.normal(0.0, 2.0, 20001), RNG.uniform(-7.0, 7.0, 5003),
                        [0.0, -0.0, 0.75, -0.75, 6.0, -6.0, 1e-300, np.inf, -np.inf]])
    actual = _run_f64(erf_f64, x)
    expected = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(actual, expected, rtol=0.0, atol=2e-15)
    assert np.isnan(_run_f64(erf_f64, np.array([np.nan, 1.0]))[0])


def test_gelu_from_erf_f64_rounds_like_the_reference():
    """``0.5 x (1 + erf(x / sqrt 2))`` in float64, rounded to float32: bit for bit."""
    x = np.concatenate([RNG.normal(0.0, 3.0, 30001), RNG.uniform(-12.0, 12.0, 10001)]
                       ).astype(np.float32).astype(np.float64)
    z = x / math.sqrt(2.0)
    erf = _run_f64(erf_f64, z)
    reference = np.array([math.erf(v) for v in z])
    actual = (0.5 * x * (1.0 + erf)).astype(np.float32)
    expected = (0.5 * x * (1.0 + reference)).astype(np.float32)
    np.testing.assert_array_equal(actual.view(np.int32), expected.view(np.int32))
