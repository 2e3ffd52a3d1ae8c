"""Reference semantics of the integer ops (QConvolution, QMatMul, QActivationMatMul) and the
weight-only ops (CompressedMatMul, CompressedConvolution).

Integer sums are exact: all-255 activations times +-127 weights give the exact sum (1020 for
4 channels, where OpenVINO's saturating AVX2 path gives 516).  Against the float op on the
dequantized values, results agree to float rounding everywhere, borders included, for
asymmetric ranges with a fractional zero point: the bound is a few f32 ulps of
``sum |x| |w|`` (each term's magnitude), the error any f32 evaluation order may make.
"""

from __future__ import annotations

import numpy as np
import pytest
from lowp_graphs import const, origin, parameter

from lpjit import dtypes
from lpjit.errors import ShapeError
from lpjit.graph import Node, Value
from lpjit.ops import lowp, nn
from lpjit.reference import evaluate_node

EPS = float(np.finfo(np.float32).eps)


def run(node: Node, *arrays: np.ndarray) -> np.ndarray:
    """``node`` evaluated with ``arrays`` for its non-constant inputs (constants as stored)."""
    supplied = iter(arrays)
    inputs = [v.node.data if hasattr(v.node, "data") else next(supplied) for v in node.inputs]
    return evaluate_node(node, inputs)[0]


def vector(values) -> Value:
    return const(np.asarray(values, np.float32).reshape(-1))


def q_convolution(data_shape, weights: np.ndarray, scale, step, low, pads=(1, 1),
                  strides=(1, 1), dilations=(1, 1)) -> lowp.QConvolution:
    x = parameter(data_shape, dtype=dtypes.u8)
    return lowp.QConvolution(origin=origin("qconv", "Convolution"),
                             inputs=(x.output, const(weights.astype(np.int8)), vector(scale),
                                     vector(step), vector(low)),
                             strides=strides, pads_begin=pads, pads_end=pads,
                             dilations=dilations)


def float_convolution(node: lowp.QConvolution, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The float Convolution / GroupConvolution with ``node``'s attributes on ``x``, ``w``
    (``w`` as ``[G, OC/G, IC/G, k...]``)."""
    p = parameter(x.shape)
    groups = w.shape[0]
    cls = nn.GroupConvolution if groups > 1 else nn.Convolution
    weights = w if groups > 1 else w[0]
    conv = cls(origin=origin("conv", "Convolution"), inputs=(p.output, const(weights)),
               strides=node.strides, pads_begin=node.pads_begin, pads_end=node.pads_end,
               dilations=node.dilations)
    return run(conv, x)


def dequantized(q: np.ndarray, step, low, axis: int | None = None) -> np.ndarray:
    """``low + q * step`` (f64, rounded once), per tensor or per channel along ``axis``."""
    step, low = np.asarray(step, np.float64), np.asarray(low, np.float64)
    if axis is not None:
        shape = [1] * q.ndim
        shape[axis] = -1
        step, low = step.reshape(shape), low.reshape(shape)
    return (low + q * step).astype(np.float32)


def check_against_float(node: lowp.QConvolution, q: np.ndarray, wq: np.ndarray, scale, step,
                        low, axis: int | None = None) -> None:
    """QConvolution output vs the float convolution of the dequantized values."""
    actual = run(node, q)
    w = (wq * np.asarray(scale, np.float32).reshape(-1, *(1,) * (wq.ndim - 1)).reshape(
        wq.shape[:2] + (1,) * (wq.ndim - 2))).astype(np.float32)
    expected = float_convolution(node, dequantized(q, step, low, axis), w)
    magnitude = float_convolution(node, np.abs(dequantized(q, step, 0 * np.asarray(low), axis))
                                  + np.abs(dequantized(0 * q, step, low, axis)), np.abs(w))
    np.testing.assert_array_less(np.abs(actual - expected), 4 * EPS * magnitude + 1e-30)


# ------------------------------------------------------------------------------------------
# QConvolution


def test_all_255_activations_times_127_weights_give_the_exact_sum():
    """1x1 conv, C=4, all q=255, wq=+-127, scale 1/127: 4*255*127/127 = 1020 exactly (OV on
    AVX2 gives 516, facts 5.2); 3x3 with C=3 gives the exact 9*3*255 in the interior."""
    w = np.full((1, 2, 4, 1, 1), 127, np.int64)
    w[0, 1] = -127
    node = q_convolution((1, 4, 3, 3), w, [1 / 127] * 2, [1.0], [0.0], pads=(0, 0))
    y = run(node, np.full((1, 4, 3, 3), 255, np.uint8))
    np.testing.assert_array_equal(y[0, 0], 1020)
    np.testing.assert_array_equal(y[0, 1], -1020)
    w = np.full((1, 1, 3, 3, 3), 127, np.int64)
    node = q_convolution((1, 3, 5, 5), w, [1.0], [1.0], [0.0])
    y = run(node, np.full((1, 3, 5, 5), 255, np.uint8))
    assert y[0, 0, 2, 2] == 9 * 3 * 255 * 127
    assert y[0, 0, 0, 0] == 4 * 3 * 255 * 127          # a corner sees 2x2 taps


@pytest.mark.parametrize("pads, strides, dilations", [
    ((1, 1), (1, 1), (1, 1)), ((2, 1), (2, 1), (1, 2)), ((0, 2), (1, 2), (2, 1))])
def test_asymmetric_activations_exact_at_the_borders(pads, strides, dilations):
    """Range [-0.73, 1.91] (zero point 70.51, fractional): padding is 0.0 in float, not a
    level, so border outputs use the valid taps' weight sums; equal to the float conv of the
    dequantized values to float rounding, borders included."""
    rng = np.random.default_rng(1)
    low, high = -0.73, 1.91
    step = (high - low) / 255
    wq = rng.integers(-127, 128, (1, 5, 3, 3, 3))
    scale = rng.uniform(0.001, 0.02, 5)
    node = q_convolution((2, 3, 9, 8), wq, scale, [step], [low], pads, strides, dilations)
    q = rng.integers(0, 256, (2, 3, 9, 8)).astype(np.uint8)
    check_against_float(node, q, wq, scale, [step], [low])


def test_padding_is_not_level_zero():
    """With low != 0 a padded tap is 0.0, not ``low``: all-zero-level input (value low
    everywhere) gives smaller sums at the corners than inside."""
    w = np.ones((1, 1, 1, 3, 3), np.int64)
    node = q_convolution((1, 1, 4, 4), w, [1.0], [0.5], [-2.0])
    y = run(node, np.zeros((1, 1, 4, 4), np.uint8))
    assert y[0, 0, 1, 1] == -18.0 and y[0, 0, 0, 0] == -8.0 and y[0, 0, 0, 1] == -12.0


def test_depthwise_per_channel_ranges():
    """Depthwise [C,1,1,3,3] with a step and low per channel (NNCF's per-channel FQ before a
    depthwise conv), stride 2: each channel uses its own dequantization."""
    rng = np.random.default_rng(2)
    channels = 6
    step = rng.uniform(0.005, 0.05, channels)
    low = -rng.uniform(0, 0.5, channels)
    wq = rng.integers(-127, 128, (channels, 1, 1, 3, 3))
    scale = rng.uniform(0.01, 0.1, channels)
    node = q_convolution((1, channels, 7, 7), wq, scale, step, low, strides=(2, 2))
    q = rng.integers(0, 256, (1, channels, 7, 7)).astype(np.uint8)
    check_against_float(node, q, wq, scale, step, low, axis=1)


def test_grouped_convolution_and_odd_channel_counts():
    """G=3 groups of 3 input channels, 2 outputs each, odd spatial sizes."""
    rng = np.random.default_rng(4)
    wq = rng.integers(-128, 128, (3, 2, 3, 3, 3))
    scale = rng.uniform(0.01, 0.1, 6)
    node = q_convolution((1, 9, 5, 7), wq, scale, [0.03], [-1.1])
    q = rng.integers(0, 256, (1, 9, 5, 7)).astype(np.uint8)
    check_against_float(node, q, wq, scale, [0.03], [-1.1])


def test_q_convolution_checks_its_inputs():
    """Errors name the layer: per-channel ranges need IC/G == 1, weights must be constant
    i8, data u8, and the i32 accumulator must not overflow."""
    w = np.ones((1, 2, 3, 3, 3), np.int64)
    with pytest.raises(ShapeError, match="'qconv' .*input 3 \\(input_step\\) has 3 values; "
                                         "expected 1"):
        q_convolution((1, 3, 5, 5), w, [1, 1], [1, 1, 1], [0, 0, 0])
    x = parameter((1, 3, 5, 5), dtype=dtypes.u8)
    weights = parameter((1, 2, 3, 3, 3), dtype=dtypes.i8)
    with pytest.raises(ShapeError, match="input 1 \\(weights\\) must be a constant"):
        lowp.QConvolution(origin=origin("qconv", "Convolution"),
                          inputs=(x.output, weights.output, vector([1, 1]), vector([1]),
                                  vector([0])), strides=(1, 1), pads_begin=(1, 1),
                          pads_end=(1, 1), dilations=(1, 1))
    f32 = parameter((1, 3, 5, 5))
    with pytest.raises(ShapeError, match="input 0 \\(data\\) has element type f32; expected u8"):
        lowp.QConvolution(origin=origin("qconv", "Convolution"),
                          inputs=(f32.output, const(w.astype(np.int8)), vector([1, 1]),
                                  vector([1]), vector([0])), strides=(1, 1), pads_begin=(1, 1),
                          pads_end=(1, 1), dilations=(1, 1))
    huge = np.full((1, 1, 8300, 8, 8), 127, np.int64)
    with pytest.raises(ShapeError, match="i32 accumulator could overflow"):
        q_convolution((1, 8300, 8, 8), huge, [1], [1], [0], pads=(0, 0))


# ------------------------------------------------------------------------------------------
# QMatMul / QActivationMatMul


def q_matmul(data_shape, weights: np.ndarray, scale, step, low, transpose_a=False
             ) -> lowp.QMatMul:
    x = parameter(data_shape, dtype=dtypes.u8)
    return lowp.QMatMul(origin=origin("qmatmul", "MatMul"),
                        inputs=(x.output, const(weights.astype(np.int8)), vector(scale),
                                vector(step), vector(low)), transpose_a=transpose_a)


def test_q_matmul_all_255_times_127_is_exact():
    """K=4, q=255, wq=127, scale 1/127: 1020 (OV's jit_gemm_I8 saturates to 516)."""
    node = q_matmul((1, 4), np.full((3, 4), 127), [1 / 127] * 3, [1.0], [0.0])
    np.testing.assert_array_equal(run(node, np.full((1, 4), 255, np.uint8)), 1020)


@pytest.mark.parametrize("transpose_a", [False, True])
def test_q_matmul_matches_float_matmul(transpose_a: bool):
    """Batched u8 x i8 [N, K] with an asymmetric range, vs float MatMul (transpose_b)."""
    rng = np.random.default_rng(6)
    batch, m, k, n = (2, 3), 5, 37, 7
    wq = rng.integers(-127, 128, (n, k))
    scale = rng.uniform(0.001, 0.05, n)
    step, low = 0.0123, -1.57
    shape = (*batch, k, m) if transpose_a else (*batch, m, k)
    q = rng.integers(0, 256, shape).astype(np.uint8)
    actual = run(q_matmul(shape, wq, scale, [step], [low], transpose_a), q)
    x = dequantized(q, step, low)
    w = (wq * scale[:, None].astype(np.float32)).astype(np.float32)
    xm = np.swapaxes(x, -1, -2) if transpose_a else x
    expected = (xm.astype(np.float64) @ w.T.astype(np.float64)).astype(np.float32)
    magnitude = (np.abs(np.swapaxes(dequantized(q, step, 0), -1, -2) if transpose_a else
                        dequantized(q, step, 0)) + abs(low)) @ np.abs(w.T)
    np.testing.assert_array_less(np.abs(actual - expected), 4 * EPS * magnitude)


def q_activation_matmul(a_shape, b_shape, params, transpose_a=False, transpose_b=False):
    a, b = parameter(a_shape, "a", dtypes.u8), parameter(b_shape, "b", dtypes.u8)
    return lowp.QActivationMatMul(origin=origin("qk", "MatMul"),
                                  inputs=(a.output, b.output, *(vector([p]) for p in params)),
                                  transpose_a=transpose_a, transpose_b=transpose_b)


def test_q_activation_matmul_extremes_are_exact():
    """qa = qb = 255, K = 16, unit steps: 16 * 255 * 255 exactly."""
    node = q_activation_matmul((1, 2, 16), (1, 16, 3), (1.0, 0.0, 1.0, 0.0))
    y = run(node, np.full((1, 2, 16), 255, np.uint8), np.full((1, 16, 3), 255, np.uint8))
    np.testing.assert_array_equal(y, 16 * 255 * 255)


def test_q_activation_matmul_matches_float_matmul():
    """Signed asymmetric ranges on both sides (zero points 127.9 and 113.2), batch
    broadcasting [2,1] x [1,3], b transposed as in Q K^T."""
    rng = np.random.default_rng(8)
    sa, la, sb, lb = 0.0157, -2.01, 0.031, -3.51
    qa = rng.integers(0, 256, (2, 1, 6, 16)).astype(np.uint8)
    qb = rng.integers(0, 256, (1, 3, 5, 16)).astype(np.uint8)
    node = q_activation_matmul(qa.shape, qb.shape, (sa, la, sb, lb), transpose_b=True)
    actual = run(node, qa, qb)
    a, b = dequantized(qa, sa, la), dequantized(qb, sb, lb)
    expected = (a.astype(np.float64) @ np.swapaxes(b, -1, -2)).astype(np.float32)
    magnitude = (qa * sa + abs(la)) @ np.swapaxes(qb * sb + abs(lb), -1, -2)
    np.testing.assert_array_less(np.abs(actual - expected), 6 * EPS * magnitude)


def test_q_matmul_checks_its_inputs():
    with pytest.raises(ShapeError, match="inner dimensions differ"):
        q_matmul((2, 5), np.ones((3, 4)), [1] * 3, [1], [0])
    with pytest.raises(ShapeError, match="input 3 \\(input_step\\) has 2 values; expected 1"):
        q_matmul((2, 4), np.ones((3, 4)), [1] * 3, [1, 2], [0])
    with pytest.raises(ShapeError, match="i32 accumulator could overflow"):
        q_matmul((1, 66400), np.full((1, 66400), 127), [1], [1], [0])
    with pytest.raises(ShapeError, match="inner dimensions differ: K=16 and K=15"):
        q_activation_matmul((1, 2, 16), (1, 15, 3), (1.0, 0.0, 1.0, 0.0))


# ------------------------------------------------------------------------------------------
# Weight-only compression


def test_compressed_matmul_is_the_f32_decompressed_matmul():
    """i4 weights in groups of 8 along K with u4 zero points and f32 scales per group: the
    float MatMul with weights ``(f32(q) - f32(zp)) * scale`` computed here, bit for bit."""
    rng = np.random.default_rng(9)
    n, k, g = 6, 32, 8
    wq = rng.integers(-8, 8, (n, k)).astype(np.int8)
    zp = rng.integers(0, 16, (n, k // g)).astype(np.uint8)
    scale = rng.uniform(0.01, 0.1, (n, k // g)).astype(np.float32)
    a = parameter((3, k))
    node = lowp.CompressedMatMul(origin=origin("fc", "MatMul"),
                                 inputs=(a.output, const(wq, element_type=dtypes.i4),
                                         const(scale), const(zp, element_type=dtypes.u4)),
                                 group_size=g)
    x = rng.standard_normal((3, k)).astype(np.float32)
    w = ((wq.astype(np.float32) - np.repeat(zp, g, 1).astype(np.float32))
         * np.repeat(scale, g, 1)).astype(np.float32)
    matmul = nn.MatMul(origin=origin("mm", "MatMul"), inputs=(a.output, const(w)),
                       transpose_b=True)
    np.testing.assert_array_equal(run(node, x), run(matmul, x))
    assert node.output_types[0].shape == (3, n)


def test_compressed_convolution_is_the_f32_decompressed_convolution():
    """u8 weights with a per-channel u8 zero point (INT8_ASYM) and per-channel scales."""
    rng = np.random.default_rng(10)
    wq = rng.integers(0, 256, (1, 4, 3, 3, 3)).astype(np.uint8)
    zp = rng.integers(100, 156, 4).astype(np.uint8)
    scale = rng.uniform(0.001, 0.01, 4).astype(np.float32)
    x = parameter((1, 3, 6, 6))
    node = lowp.CompressedConvolution(
        origin=origin("conv", "Convolution"),
        inputs=(x.output, const(wq), const(scale), const(zp)),
        strides=(1, 1), pads_begin=(1, 1), pads_end=(1, 1), dilations=(1, 1))
    w = ((wq[0].astype(np.float32) - zp.astype(np.float32)[:, None, None, None])
         * scale[:, None, None, None]).astype(np.float32)
    conv = nn.Convolution(origin=origin("c", "Convolution"), inputs=(x.output, const(w)),
                          strides=(1, 1), pads_begin=(1, 1), pads_end=(1, 1), dilations=(1, 1))
    data = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(run(node, data), run(conv, data))


def test_compressed_matmul_checks_groups():
    a = parameter((3, 32))
    with pytest.raises(ShapeError, match="group_size=5 does not divide K=32"):
        lowp.CompressedMatMul(origin=origin("fc", "MatMul"),
                              inputs=(a.output, const(np.ones((4, 32), np.int8)),
                                      const(np.ones((4, 6), np.float32))), group_size=5)
    with pytest.raises(ShapeError, match="input 2 \\(scale\\) has shape \\(4, 2\\); expected "
                                         "\\(4, 4\\)"):
        lowp.CompressedMatMul(origin=origin("fc", "MatMul"),
                              inputs=(a.output, const(np.ones((4, 32), np.int8)),
                                      const(np.ones((4, 2), np.float32))), group_size=8)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.int64])
def test_accumulator_bound_is_the_largest_absolute_sum_at_every_weight_width(dtype):
    """The bound is max over outputs of sum |wq| times the top level, for every width (the
    narrow ones are widened to i32 only): checked against Python integers."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(7)
    low, high = max(info.min, -(2**40)), min(info.max, 2**40)
    weights = rng.integers(low, high, (3, 5, 2, 2), dtype=dtype, endpoint=True)
    weights.flat[0] = info.min if dtype != np.int64 else -(2**40)
    expected = max(sum(abs(int(v)) for v in weights[o].flat) for o in range(3)) * 255
    assert lowp.accumulator_bound(weights, (1, 2, 3)) == expected
    assert lowp.accumulator_bound(weights, (0,), max_activation=3) == 3 * max(
        sum(abs(int(weights[o, c, i, j])) for o in range(3))
        for c in range(5) for i in range(2) for j in range(2))
