"""LLVM vs numba on canonical kernels: bit-exact for integers, tight for float."""

from __future__ import annotations

import numpy as np
import pytest
from differential import garbage, run_both, run_llvm

from lowering import examples


@pytest.fixture
def rng(request) -> np.random.Generator:
    return np.random.default_rng(abs(hash(request.node.name)) % 2**32)


@pytest.mark.parametrize("n", [7, 37])
def test_elementwise_with_vector_tail(n, rng):
    """``max(x*s + b, 0)`` agrees bit for bit, including the scalar tail (n % 8 != 0)."""
    kernel = examples.scale_bias_relu(n)
    x = rng.standard_normal(n).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    args = [x, bias, garbage((n,), np.float32, rng), 1.75]
    (llvm_y,), (numba_y,) = run_both(kernel, args)
    np.testing.assert_array_equal(llvm_y, numba_y)
    np.testing.assert_array_equal(llvm_y, np.maximum(x * np.float32(1.75) + bias, 0))


@pytest.mark.parametrize("m, n, k", [(9, 37, 13), (1, 5, 1)])
def test_float_matmul_register_tile_on_odd_sizes(m, n, k, rng):
    """The 4x16 FMA tile with tails in m and n matches numba and float64 numpy."""
    weights = rng.standard_normal((k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    kernel = examples.matmul_f32(m, n, k, weights, bias)
    a = rng.standard_normal((m, k)).astype(np.float32)
    (llvm_c,), (numba_c,) = run_both(kernel, [a, garbage((m, n), np.float32, rng)])
    expected = a.astype(np.float64) @ weights + bias
    np.testing.assert_allclose(llvm_c, numba_c, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(llvm_c, expected, rtol=1e-5, atol=1e-5)


def _int8_case(m, n, k, rng, extreme=False):
    if extreme:
        a = np.full((m, k), 255, np.uint8)
        w = np.full((k, n), 127, np.int8)
    else:
        a = rng.integers(0, 256, (m, k), dtype=np.uint8)
        w = rng.integers(-128, 128, (k, n), dtype=np.int8)
    return a, w, a.astype(np.int32) @ w.astype(np.int32)


@pytest.mark.parametrize("microkernel", ["pairs", "quad"])
@pytest.mark.parametrize("m, n, k", [(5, 13, 7), (2, 8, 33)])
def test_exact_int8_dot_is_bit_exact(microkernel, m, n, k, rng):
    """u8 x i8 -> i32 through the exact microkernels equals numpy's int32 product."""
    a, w, expected = _int8_case(m, n, k, rng)
    kernel = examples.matmul_u8i8(m, n, k, w, microkernel)
    (llvm_c,), (numba_c,) = run_both(kernel, [a, garbage((m, n), np.int32, rng)])
    np.testing.assert_array_equal(numba_c, expected)
    np.testing.assert_array_equal(llvm_c, expected)


@pytest.mark.parametrize("microkernel", ["pairs", "quad"])
def test_all_255_times_127_gives_the_exact_sum(microkernel, rng):
    """4 x 255 x 127 = 129540 (dequantized: 1020), never the saturated 65534 (516)."""
    a, w, expected = _int8_case(2, 8, 4, rng, extreme=True)
    kernel = examples.matmul_u8i8(2, 8, 4, w, microkernel)
    (llvm_c,), (numba_c,) = run_both(kernel, [a, garbage((2, 8), np.int32, rng)])
    assert (expected == 4 * 255 * 127).all()
    np.testing.assert_array_equal(llvm_c, expected)
    np.testing.assert_array_equal(numba_c, expected)
    assert llvm_c[0, 0] / 127 == 1020


def test_saturating_microkernel_saturates_where_documented(rng):
    """``dot_u8i8_saturating`` clamps each pair at 32767, on both executors alike."""
    a, w, _ = _int8_case(2, 8, 4, rng, extreme=True)
    kernel = examples.matmul_u8i8(2, 8, 4, w, "saturating", justification="test of saturation")
    (llvm_c,), (numba_c,) = run_both(kernel, [a, garbage((2, 8), np.int32, rng)])
    np.testing.assert_array_equal(llvm_c, np.full((2, 8), 2 * 32767))
    np.testing.assert_array_equal(numba_c, llvm_c)


def test_saturating_microkernel_is_exact_on_7_bit_weights(rng):
    """With weights in [-63, 63] no pair can saturate: the result is exact."""
    a = rng.integers(0, 256, (3, 21), dtype=np.uint8)
    w = rng.integers(-63, 64, (21, 16), dtype=np.int8)
    kernel = examples.matmul_u8i8(3, 16, 21, w, "saturating", justification="weights in [-63, 63]")
    (llvm_c,), (numba_c,) = run_both(kernel, [a, garbage((3, 16), np.int32, rng)])
    expected = a.astype(np.int32) @ w.astype(np.int32)
    np.testing.assert_array_equal(llvm_c, expected)
    np.testing.assert_array_equal(numba_c, expected)


@pytest.mark.parametrize("microkernel", ["pairs", "quad", "saturating"])
def test_portable_fallbacks_equal_the_intrinsics(microkernel, rng):
    """Without x86 features the portable IR gives the same integers as the intrinsics."""
    low = microkernel == "saturating"
    a = rng.integers(0, 256, (3, 12), dtype=np.uint8)
    w = rng.integers(-63 if low else -128, 64 if low else 128, (12, 16), dtype=np.int8)
    kernel = examples.matmul_u8i8(3, 16, 12, w, microkernel, justification="7-bit weights")
    args = [a, garbage((3, 16), np.int32, rng)]
    with_intrinsics, = run_llvm(kernel, args)
    portable, = run_llvm(kernel, args, features=frozenset())
    np.testing.assert_array_equal(portable, with_intrinsics)
    np.testing.assert_array_equal(portable, a.astype(np.int32) @ w.astype(np.int32))


def _requantize_reference(acc, scale, zero_point):
    y = acc.astype(np.float32) * scale + np.float32(zero_point)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("saturating_cast", [True, False])
def test_requantization_epilogue_rounds_half_to_even_and_clamps(saturating_cast, rng):
    """i32 -> f32 * scale + zp -> round half even -> clamp -> u8, ties included."""
    m, n = 5, 19
    scale = np.where(np.arange(n) % 2 == 0, 0.5, rng.uniform(0.01, 0.2, n)).astype(np.float32)
    acc = rng.integers(-3000, 3000, (m, n), dtype=np.int32)
    acc[0, :8] = [1, 3, 5, 7, -1, 509, 511, 513]            # ties at even columns: x.5
    kernel = examples.requantize_u8(m, n, scale, saturating_cast=saturating_cast)
    args = [acc, garbage((m, n), np.uint8, rng), 2.0]
    (llvm_q,), (numba_q,) = run_both(kernel, args)
    expected = _requantize_reference(acc, scale, 2.0)
    np.testing.assert_array_equal(numba_q, expected)
    np.testing.assert_array_equal(llvm_q, expected)
    assert list(expected[0, [0, 2, 4]]) == [2, 4, 2]        # 2.5 -> 2, 4.5 -> 4, 1.5 -> 2
    assert (expected == 0).any() and (expected == 255).any()


def test_parallel_loop_gives_the_same_result_on_two_threads(rng):
    """The parallel m loop of the float matmul: threads=2 equals threads=1 bit for bit."""
    m, n, k = 23, 40, 17
    weights = rng.standard_normal((k, n)).astype(np.float32)
    kernel = examples.matmul_f32(m, n, k, weights)
    args = [rng.standard_normal((m, k)).astype(np.float32), garbage((m, n), np.float32, rng)]
    (one,), (reference,) = run_both(kernel, args, threads=1)
    two, = run_llvm(kernel, args, threads=2)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_allclose(one, reference, rtol=1e-6, atol=1e-6)
