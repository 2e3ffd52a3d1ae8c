"""fuse_quantized_operations: Convolution / GroupConvolution / MatMul on a Dequantize with
foldable weights become integer ops; float activations with compressed weights become
Compressed ops.  Then the whole pipeline (apply_low_precision) and its PrecisionReport.
"""

from __future__ import annotations

import numpy as np
import pytest
from lowp_graphs import (
    add,
    compressed_weights,
    const,
    conv,
    fake_quantize,
    fq_weights,
    graph,
    group_conv,
    kinds,
    matmul,
    max_pool,
    origin,
    parameter,
    relu,
    structurally_equal,
)

from lpjit import dtypes, reference
from lpjit.graph import Graph
from lpjit.ops import lowp, movement
from lpjit.passes.decompose_fake_quantize import decompose_fake_quantize
from lpjit.passes.fuse_quantized_operations import (
    fuse_quantized_operations,
    fuse_quantized_operations_with_reasons,
)
from lpjit.passes.low_precision import LowPrecisionOptions, apply_low_precision
from lpjit.passes.propagate_dequantize import propagate_dequantize

RNG = np.random.default_rng(0)


def prepared(g: Graph) -> Graph:
    """The input of the fuse pass: decomposed and propagated."""
    return propagate_dequantize(decompose_fake_quantize(g))


def assert_close_to_float(before: Graph, after: Graph, rtol: float = 1e-5) -> None:
    """Same outputs as the float graph up to float rounding (relative to the output scale)."""
    rng = np.random.default_rng(1)
    data = [rng.uniform(-2, 6, p.output.shape).astype(np.float32) for p in before.parameters]
    for a, b in zip(reference.run(before, data), reference.run(after, data), strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=rtol * np.abs(a).max())


def test_convolution_becomes_q_convolution():
    """Before: Dequantize(Quantize(x)) -> Conv(FQ weights L255).  Expected: QConvolution on
    the u8 indices with i8 weights, per-channel scales, step (6/255) and low 0."""
    x = parameter((1, 3, 8, 8))
    w = RNG.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
    before = graph([x], conv(fake_quantize(x.output, 0, 6), fq_weights(w)))
    after = fuse_quantized_operations(prepared(before))
    quantize = after.results[0].inputs[0].node.inputs[0].node
    node = after.results[0].inputs[0].node
    limit = np.abs(w).reshape(4, -1).max(axis=1).astype(np.float32)
    wq = np.rint(w / (2 * limit[:, None, None, None] / 254)).astype(np.int8)
    scale = (2 * limit.astype(np.float64) / 254).astype(np.float32)
    expected = graph([x], lowp.QConvolution(
        origin=origin("conv", "Convolution"),
        inputs=(quantize.output, const(wq[None]), const(scale), const(np.float32([6 / 255])),
                const(np.float32([0]))),
        strides=(1, 1), pads_begin=(1, 1), pads_end=(1, 1), dilations=(1, 1)).output)
    assert structurally_equal(after, expected)
    assert node.origin is before.results[0].inputs[0].node.origin
    assert_close_to_float(before, after)


def test_depthwise_convolution_keeps_per_channel_ranges():
    x = parameter((1, 4, 6, 6))
    high = np.array([1, 2, 3, 4], np.float32).reshape(1, 4, 1, 1)
    w = fq_weights(RNG.normal(0, 0.3, (4, 1, 1, 3, 3)))
    before = graph([x], group_conv(fake_quantize(x.output, np.zeros_like(high), high), w))
    after = fuse_quantized_operations(prepared(before))
    node = after.results[0].inputs[0].node
    assert isinstance(node, lowp.QConvolution) and node.groups == 4
    np.testing.assert_allclose(node.inputs[3].node.data, [1 / 255, 2 / 255, 3 / 255, 4 / 255],
                               rtol=1e-7)
    assert_close_to_float(before, after)


def test_max_pool_between_fake_quantize_and_convolution():
    """FQ -> MaxPool -> Conv (ResNet's stem): MaxPool on u8 feeds the QConvolution."""
    x = parameter((1, 3, 8, 8))
    pooled = max_pool(fake_quantize(x.output, 0, 6)).outputs[0]
    w = fq_weights(RNG.normal(0, 0.3, (4, 3, 3, 3)))
    before = graph([x], relu(conv(pooled, w)))
    after = fuse_quantized_operations(prepared(before))
    assert kinds(after) == ["Parameter", "Quantize", "MaxPoolV8", "QConvolution", "Relu",
                            "Result"]
    assert_close_to_float(before, after)


@pytest.mark.parametrize("transpose_b", [True, False])
def test_matmul_with_compressed_i8_weights_becomes_q_matmul(transpose_b: bool):
    a = parameter((2, 5, 16))
    shape = (8, 16) if transpose_b else (16, 8)
    q = RNG.integers(-127, 128, shape).astype(np.int8)
    scale_shape = (8, 1) if transpose_b else (1, 8)
    w = compressed_weights(q, dtypes.i8, RNG.uniform(0.01, 0.1, scale_shape).astype(np.float32))
    before = graph([a], matmul(fake_quantize(a.output, -1.2, 0.9), w, transpose_b=transpose_b))
    after = fuse_quantized_operations(prepared(before))
    node = after.results[0].inputs[0].node
    assert isinstance(node, lowp.QMatMul)
    np.testing.assert_array_equal(node.inputs[1].node.data, q if transpose_b else q.T)
    assert_close_to_float(before, after)


def test_activation_times_activation_becomes_q_activation_matmul():
    a, b = parameter((1, 2, 4, 8), "a"), parameter((1, 2, 5, 8), "b")
    before = graph([a, b], matmul(fake_quantize(a.output, -1, 1, name="fa"),
                                  fake_quantize(b.output, -2, 3, name="fb")))
    after = fuse_quantized_operations(prepared(before))
    assert kinds(after) == ["Parameter", "Parameter", "Quantize", "Quantize",
                            "QActivationMatMul", "Result"]
    assert_close_to_float(before, after)


def test_float_activations_with_compressed_weights_become_compressed_ops():
    """Weight-only: grouped i4 MatMul -> CompressedMatMul(group 16); u8 + zp conv ->
    CompressedConvolution; outputs equal the float graph to f16 rounding of its literal
    decompression (the Compressed ops decompress in f32)."""
    a = parameter((3, 32))
    q = RNG.integers(-8, 8, (6, 2, 16)).astype(np.int8)
    scale = RNG.uniform(0.01, 0.1, (6, 2, 1)).astype(np.float16)
    w = compressed_weights(q, dtypes.i4, scale, float_type=dtypes.f16, final_shape=(6, 32))
    before = graph([a], matmul(a.output, w))
    after, reasons = fuse_quantized_operations_with_reasons(before)
    node = after.results[0].inputs[0].node
    assert isinstance(node, lowp.CompressedMatMul) and reasons == ()
    assert node.group_size == 16 and node.input_type(1).dtype == dtypes.i4
    assert_close_to_float(before, after, rtol=1e-3)

    x = parameter((1, 3, 5, 5))
    q = RNG.integers(0, 256, (4, 3, 3, 3)).astype(np.uint8)
    w = compressed_weights(q, dtypes.u8, RNG.uniform(0.001, 0.01, (4, 1, 1, 1)).astype(
        np.float16), np.full((4, 1, 1, 1), 128, np.uint8), dtypes.f16)
    before = graph([x], conv(x.output, w))
    after = fuse_quantized_operations(before)
    node = after.results[0].inputs[0].node
    assert isinstance(node, lowp.CompressedConvolution) and len(node.inputs) == 4
    assert_close_to_float(before, after, rtol=1e-3)


def test_fake_quantize_weights_on_float_activations_stay_float_with_a_reason():
    x = parameter((1, 3, 8, 8))
    before = graph([x], conv(x.output, fq_weights(RNG.normal(0, 0.3, (4, 3, 3, 3)))))
    after, reasons = fuse_quantized_operations_with_reasons(before)
    assert after is before
    assert [r.what for r in reasons] == ["FakeQuantize"]
    assert reasons[0].reason.startswith("the activation input of Convolution 'conv'")


# ------------------------------------------------------------------------------------------
# The pipeline and the report


def tiny_cnn() -> Graph:
    """x -> FQ -> conv -> ReLU -> FQ -> MaxPool -> conv -> +residual(FQ) -> Reshape -> MatMul,
    with one compressed weight that feeds a Gather (an embedding: not a weight input)."""
    x = parameter((1, 3, 8, 8))
    y = relu(conv(fake_quantize(x.output, -1, 1, name="fq_in"),
                  fq_weights(RNG.normal(0, 0.3, (4, 3, 3, 3)), name="conv1/w"), name="conv1"))
    y = max_pool(fake_quantize(y, 0, 4, name="fq_relu")).outputs[0]
    z = conv(y, fq_weights(RNG.normal(0, 0.3, (4, 4, 3, 3)), name="conv2/w"), name="conv2")
    z = add(fake_quantize(z, -3, 3, name="fq_residual"), y, name="residual")
    z = matmul(relu(z, "relu2"), fq_weights(RNG.normal(0, 0.3, (5, 4)), name="fc/w"),
               name="fc")
    table = compressed_weights(RNG.integers(-127, 128, (10, 4)).astype(np.int8), dtypes.i8,
                               np.full((10, 1), 0.1, np.float32), name="embedding")
    gather = movement.GatherV8(origin=origin("lookup", "Gather"),
                               inputs=(table, const(np.array([1, 3], np.int64)),
                                       const(np.int64(0))))
    return graph([x], z, gather.output)


def test_pipeline_on_a_tiny_cnn():
    """Both convolutions become QConvolution (the second through the u8 MaxPool); the MatMul
    after the residual stays float (its input FQ feeds an Add); the report says why."""
    before = tiny_cnn()
    after, report = apply_low_precision(before, LowPrecisionOptions(verify=True))
    assert [layer.origin.name for layer in report.integer_layers()] == ["conv1", "conv2"]
    assert report.integer_layers()[0].precision == "u8 x i8 -> i32 -> f32"
    assert report.reason("fq_residual").startswith("consumer Add 'residual'")
    assert report.reason("fc/w").startswith("the activation input of MatMul 'fc'")
    assert report.reason("embedding/q") == ("not the weight input of a Convolution, "
                                            "GroupConvolution or MatMul")
    assert report.reason("fq_in") is None and report.reason("conv1/w") is None
    assert {entry.origin.name for entry in report.kept_float} == {
        "fq_residual", "fc/w", "embedding/q"}
    precisions = {layer.origin.name: layer.precision for layer in report.layers}
    assert precisions["pool"] == "u8" and precisions["fq_in/quantize"] == "f32 -> u8"
    assert precisions["residual"] == "f32"
    assert "left in float:" in report.format()
    assert_close_to_float(before, after)


def test_pipeline_keeps_a_graph_without_fake_quantize():
    x = parameter((1, 3, 4, 4))
    before = graph([x], relu(x.output))
    after, report = apply_low_precision(before)
    assert after is before and report.kept_float == () and report.integer_layers() == ()
