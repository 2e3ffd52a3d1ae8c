"""Weight folding (lpjit.passes.weights): quantized weight subgraphs become integers + scales.

Rule: the folded integers and scales reproduce the float weights the reference computes for
the original subgraph.  Compressed chains with decompression math in f32 (facts 3.1, pitfall
12): bit for bit equal to the same chain evaluated in f32, and within half an f16 ulp of the
literal f16 evaluation.  FakeQuantize on a constant: the integers are FakeQuantize's level
indices minus the integer zero point, equal to its output to f32 rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
from lowp_graphs import (
    compressed_weights,
    conv,
    f32,
    fake_quantize,
    fq_weights,
    graph,
    group_conv,
    matmul,
    parameter,
)

from lpjit import dtypes, reference
from lpjit.graph import Value
from lpjit.passes.weights import (
    CompressedWeights,
    IntegerWeights,
    QuantizedWeights,
    WeightRejection,
    compressed_convolution_weights,
    compressed_matmul_weights,
    compressed_weight_constants,
    integer_convolution_weights,
    integer_matmul_weights,
    match_weights,
)


def evaluate(value: Value) -> np.ndarray:
    """The reference value of a constant subgraph."""
    return reference.run(graph([], value), [])[0]


def conv_node(weights: Value, channels: int = 3):
    """A Convolution reading ``weights`` (so the layout helpers see a real consumer)."""
    x = parameter((1, channels, 6, 6))
    return conv(x.output, weights).node


def he_weights(rng, shape) -> np.ndarray:
    return rng.normal(0, 0.3, shape).astype(np.float32)


# ------------------------------------------------------------------------------------------
# FakeQuantize on a float constant


@pytest.mark.parametrize("scale, limit", [(1.0, 127), (2.0, 63)])
def test_fake_quantize_levels_255_symmetric_fold_to_i8(scale: float, limit: int):
    """Levels 255 on +-max|w| give wq in [-127, 127] with each channel's extreme weight at
    +-127; NNCF's first-layer overflow fix (range doubled) gives [-63, 63]."""
    rng = np.random.default_rng(0)
    w = he_weights(rng, (8, 3, 3, 3))
    value = fq_weights(w, 255, scale)
    weights = match_weights(value)
    assert isinstance(weights, QuantizedWeights) and weights.storage == dtypes.u8
    folded = integer_convolution_weights(weights, conv_node(value))
    assert isinstance(folded, IntegerWeights)
    assert folded.values.dtype == np.int8 and folded.values.shape == (1, 8, 3, 3, 3)
    extremes = np.abs(folded.values.astype(int)).reshape(8, -1).max(axis=1)
    np.testing.assert_array_equal(extremes, limit)
    expected = evaluate(value)
    actual = folded.values[0] * folded.scale[:, None, None, None]
    np.testing.assert_allclose(actual, expected, rtol=0, atol=2 * np.spacing(np.abs(w).max()))


def test_fake_quantize_levels_256_symmetric_uses_minus_128():
    """Range [-128 s, 127 s] with 256 levels: zero point 128, wq in [-128, 127]."""
    rng = np.random.default_rng(1)
    w = he_weights(rng, (4, 16))
    s = (np.abs(w).max(axis=1, keepdims=True) / 127.5).astype(np.float32)
    value = fake_quantize(f32(w), -128 * s, 127 * s, 256)
    folded = integer_matmul_weights(match_weights(value), transpose_b=True)
    assert isinstance(folded, IntegerWeights)
    assert folded.values.min() == -128 or folded.values.max() == 127
    assert -128 <= folded.values.min() and folded.values.max() <= 127
    np.testing.assert_allclose(folded.values * folded.scale[:, None], evaluate(value), rtol=0,
                               atol=2 * np.spacing(np.abs(w).max()))


def test_fake_quantize_weights_with_a_fractional_zero_point_stay_float():
    """[-0.3, 1.7] per tensor with 255 levels: -ol/step = 38.1 steps, not an integer."""
    value = fake_quantize(f32(np.linspace(-0.5, 2, 24).reshape(4, 6)), -0.3, 1.7, 255)
    rejection = match_weights(value)
    assert isinstance(rejection, WeightRejection)
    assert rejection.reason.startswith("weights have a fractional zero point")


def test_fake_quantize_weights_with_levels_above_256_stay_float():
    value = fake_quantize(f32(np.linspace(-1, 1, 12).reshape(3, 4)), -1, 1, 300)
    rejection = match_weights(value)
    assert isinstance(rejection, WeightRejection)
    assert rejection.reason == "levels=300 exceeds 256: no 8-bit weights"


def test_unsigned_fake_quantize_weights_do_not_fit_i8():
    """[0, max] with 256 levels: zero point 0, integers up to 255, outside i8."""
    w = np.linspace(0, 1, 32, dtype=np.float32).reshape(4, 8)
    value = fake_quantize(f32(w), 0, 1, 256)
    weights = match_weights(value)
    assert isinstance(weights, QuantizedWeights)
    reason = integer_matmul_weights(weights, transpose_b=True)
    assert reason == ("weights have a zero point: values minus zero point span [0, 255], "
                      "which does not fit i8")


def test_plain_float_weights_are_not_quantized():
    assert match_weights(f32(np.ones((3, 4)))) is None


# ------------------------------------------------------------------------------------------
# Compressed chains


def test_i8_chain_without_zero_point_folds_exactly():
    """NNCF INT8 IR: Const(i8) -> Convert(f32) -> Multiply(f32 [OC,1,1,1])."""
    rng = np.random.default_rng(2)
    q = rng.integers(-127, 128, (6, 3, 3, 3)).astype(np.int8)
    scale = rng.uniform(0.001, 0.01, (6, 1, 1, 1)).astype(np.float32)
    value = compressed_weights(q, dtypes.i8, scale)
    weights = match_weights(value)
    assert isinstance(weights, QuantizedWeights) and weights.zero_point is None
    folded = integer_convolution_weights(weights, conv_node(value))
    np.testing.assert_array_equal(folded.values[0], q)
    np.testing.assert_array_equal(folded.values[0] * folded.scale[:, None, None, None],
                                  evaluate(value))


def f32_variant(q, storage, scale, zero_point=None, **kwargs) -> Value:
    """The same chain with f16 constants converted (exactly) to f32 and f32 arithmetic."""
    zero_point_type = kwargs.pop("zero_point_type", None)
    return compressed_weights(q, storage, np.asarray(scale, np.float32), zero_point,
                              dtypes.f32, zero_point_type, **kwargs)


def test_u8_chain_with_zero_point_128_folds_to_i8():
    """INT8_ASYM per channel, f16 chain: u8 - u8 zp (128) times f16 scale, Convert(f32).  The
    integers are q - 128; the weights equal the f32-math chain bit for bit and the literal f16
    chain to half an f16 ulp."""
    rng = np.random.default_rng(3)
    q = rng.integers(0, 256, (5, 12)).astype(np.uint8)
    zp = np.full((5, 1), 128, np.uint8)
    scale = rng.uniform(0.001, 0.01, (5, 1)).astype(np.float16)
    value = compressed_weights(q, dtypes.u8, scale, zp, dtypes.f16)
    weights = match_weights(value)
    assert isinstance(weights, QuantizedWeights) and weights.storage == dtypes.u8
    folded = integer_matmul_weights(weights, transpose_b=True)
    np.testing.assert_array_equal(folded.values, q.astype(int) - 128)
    dequantized = folded.values * folded.scale[:, None]
    np.testing.assert_array_equal(dequantized, evaluate(f32_variant(q, dtypes.u8, scale, zp)))
    literal = evaluate(value)
    assert not np.array_equal(dequantized, literal)      # f16 rounding is really avoided
    half_ulp = 0.5 * np.spacing(np.abs(literal).astype(np.float16)).astype(np.float32)
    assert np.all(np.abs(dequantized - literal) <= half_ulp)


def test_per_channel_zero_points_that_overflow_i8_stay_compressed():
    """u8 weights with zero points 20..60: q - zp reaches 235, outside i8 -> no integer
    MatMul; the CompressedMatMul form keeps u8 weights and zero points."""
    rng = np.random.default_rng(4)
    q = rng.integers(0, 256, (4, 8)).astype(np.uint8)
    q[:, 0], q[:, 1] = 255, 0
    zp = np.array([[20], [35], [50], [60]], np.uint8)
    scale = rng.uniform(0.01, 0.1, (4, 1)).astype(np.float16)
    value = compressed_weights(q, dtypes.u8, scale, zp, dtypes.f16)
    weights = match_weights(value)
    reason = integer_matmul_weights(weights, transpose_b=True)
    assert reason == ("weights have a zero point: values minus zero point span [-60, 235], "
                      "which does not fit i8")
    compressed = compressed_matmul_weights(weights, transpose_b=True)
    assert isinstance(compressed, CompressedWeights)
    assert compressed.group_size == 8 and compressed.storage == dtypes.u8
    np.testing.assert_array_equal(compressed.zero_point, zp)
    assert compressed.zero_point.dtype == np.uint8


@pytest.mark.parametrize("storage, zero_point", [(dtypes.i4, False), (dtypes.u4, True)])
def test_grouped_int4_chain_with_reshape(storage, zero_point: bool):
    """INT4 group 32: Const([N, K/32, 32]) -> Convert(f16) -> [Subtract u4 zp] -> Multiply(f16
    [N, K/32, 1]) -> Reshape([N, K]) -> Convert(f32): groups recovered, scales per group,
    weights equal to the f32-math chain bit for bit; no integer MatMul (per-group scales)."""
    rng = np.random.default_rng(5)
    n, k, g = 6, 64, 32
    low, high = (-8, 8) if storage == dtypes.i4 else (0, 16)
    q = rng.integers(low, high, (n, k // g, g)).astype(storage.numpy)
    zp = rng.integers(0, 16, (n, k // g, 1)).astype(np.uint8) if zero_point else None
    scale = rng.uniform(0.01, 0.1, (n, k // g, 1)).astype(np.float16)
    value = compressed_weights(q, storage, scale, zp, dtypes.f16, dtypes.u4, final_shape=(n, k))
    weights = match_weights(value)
    assert isinstance(weights, QuantizedWeights) and weights.values.shape == (n, k)
    compressed = compressed_matmul_weights(weights, transpose_b=True)
    assert compressed.group_size == g and compressed.scale.shape == (n, k // g)
    assert compressed.values.shape == (n, k) and compressed.storage == storage
    expected = evaluate(f32_variant(q, storage, scale, zp, final_shape=(n, k),
                                    zero_point_type=dtypes.u4))
    np.testing.assert_array_equal(weights.dequantized(), expected)
    assert integer_matmul_weights(weights, transpose_b=True) == (
        "weight scales vary along the reduction axes (per-group scales)")


def test_fractional_compressed_zero_point_is_rejected():
    q = np.arange(12, dtype=np.uint8).reshape(3, 4)
    value = compressed_weights(q, dtypes.u8, np.full((3, 1), 0.1, np.float32),
                               np.full((3, 1), 127.5, np.float32), zero_point_type=dtypes.f32)
    rejection = match_weights(value)
    assert isinstance(rejection, WeightRejection)
    assert rejection.reason == "weights have a fractional zero point"


def test_group_convolution_and_untransposed_matmul_layouts():
    """Depthwise [G,1,1,3,3] weights with [G,1,1,1,1] scales become [G,1,1,3,3] + [G];
    MatMul weights [K, N] (transpose_b false) with [1, N] scales become [N, K] + [N]."""
    rng = np.random.default_rng(6)
    q = rng.integers(-127, 128, (4, 1, 1, 3, 3)).astype(np.int8)
    scale = rng.uniform(0.01, 0.1, (4, 1, 1, 1, 1)).astype(np.float32)
    value = compressed_weights(q, dtypes.i8, scale)
    node = group_conv(parameter((1, 4, 5, 5)).output, value).node
    folded = integer_convolution_weights(match_weights(value), node)
    np.testing.assert_array_equal(folded.values, q)
    np.testing.assert_array_equal(folded.scale, scale.reshape(4))
    compressed = compressed_convolution_weights(match_weights(value), node)
    assert compressed.scale.shape == (4,) and compressed.zero_point is None

    q = rng.integers(-127, 128, (8, 3)).astype(np.int8)
    scale = rng.uniform(0.01, 0.1, (1, 3)).astype(np.float32)
    folded = integer_matmul_weights(match_weights(compressed_weights(q, dtypes.i8, scale)),
                                    transpose_b=False)
    np.testing.assert_array_equal(folded.values, q.T)
    np.testing.assert_array_equal(folded.scale, scale.reshape(3))


def test_compressed_weight_constants_exclude_zero_points():
    q = np.arange(12, dtype=np.uint8).reshape(3, 4)
    value = compressed_weights(q, dtypes.u8, np.full((3, 1), 0.1, np.float16),
                               np.full((3, 1), 3, np.uint8), dtypes.f16)
    g = graph([p := parameter((2, 4))], matmul(p.output, value))
    found = compressed_weight_constants(g)
    assert [c.origin.name for c in found] == ["w/q"]
