"""``lowering.vector_math``: vectorizable float32 math, compiled by LLVM and compared with numpy.

``exp_nonpositive`` must stay within 2 ulp of numpy's float32 ``exp`` on ``[-87.3, 0]`` (far
inside SoftMax's rtol 1e-4), flush results under ``2^-126`` to 0 and keep NaN.
"""

from __future__ import annotations

import numpy as np

from lowering.builder import KernelBuilder
from lowering.loop_ir import f32, vectorized
from lowering.program_exec import llvm_compiler
from lowering.vector_math import exp_nonpositive

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
