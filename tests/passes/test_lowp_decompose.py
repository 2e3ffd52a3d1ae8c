"""decompose_fake_quantize: an activation FakeQuantize that feeds integer-capable code becomes
Quantize -> Dequantize (same values bit for bit); every other one stays float with a reason.
"""

from __future__ import annotations

import numpy as np
import pytest
from lowp_graphs import (
    add,
    compressed_weights,
    const,
    conv,
    f32,
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
from lpjit.ops.core import Convert
from lpjit.ops.lowp import Dequantize, Quantize
from lpjit.ops.quantize import FakeQuantize
from lpjit.passes.decompose_fake_quantize import (
    decompose_fake_quantize,
    decompose_fake_quantize_with_reasons,
)
from lpjit.passes.low_precision import apply_low_precision

RNG = np.random.default_rng(0)
W = RNG.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)


def conv_model(fq_args=(0.0, 6.0), fq_kwargs=None, weights=None) -> Graph:
    """x -> FakeQuantize -> Convolution(FQ weights)."""
    x = parameter((1, 3, 8, 8))
    w = weights if weights is not None else fq_weights(W)
    return graph([x], conv(fake_quantize(x.output, *fq_args, **(fq_kwargs or {})), w))


def expected_decomposition(before: Graph) -> Graph:
    """``conv_model`` with its activation FakeQuantize as Quantize -> Dequantize."""
    convolution = before.results[0].inputs[0].node
    fq = convolution.inputs[0].node
    x, il, ih, ol, oh = fq.inputs
    q = Quantize(origin=origin("q", "FakeQuantize"), inputs=(x, il, ih), levels=fq.levels)
    low, high = (const(np.float32(v.node.data)) for v in (ol, oh))
    dq = Dequantize(origin=origin("dq", "FakeQuantize"), inputs=(q.output, low, high),
                    levels=fq.levels)
    return graph(list(before.parameters), conv(dq.output, convolution.inputs[1]))


def inputs_for(g: Graph, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(-2, 8, p.output.shape).astype(np.float32) for p in g.parameters]


def assert_same_outputs(before: Graph, after: Graph) -> None:
    data = inputs_for(before)
    for a, b in zip(reference.run(before, data), reference.run(after, data), strict=True):
        np.testing.assert_array_equal(a.view(np.int32), b.view(np.int32))


def reason(g: Graph, name: str = "fq") -> str:
    _, reasons = decompose_fake_quantize_with_reasons(g)
    found = [r.reason for r in reasons if r.origin.name == name]
    assert len(found) == 1, reasons
    return found[0]


def test_fake_quantize_before_convolution_is_decomposed():
    """Before: x -> FQ[0, 6] -> Conv(FQ weights).  After: x -> Quantize -> Dequantize(scalar
    ranges) -> Conv; the weight FakeQuantize is left to the fuse pass; outputs identical."""
    before = conv_model()
    after = decompose_fake_quantize(before)
    assert structurally_equal(after, expected_decomposition(before))
    assert not structurally_equal(before, expected_decomposition(before))
    quantize = next(n for n in after.nodes if isinstance(n, Quantize))
    assert quantize.origin.layer_id == before.results[0].inputs[0].node.inputs[0].node.origin.layer_id
    assert_same_outputs(before, after)


def test_per_channel_range_before_a_depthwise_convolution_is_decomposed():
    """Per-channel [1,C,1,1] ranges are allowed when each group reads one channel."""
    x = parameter((1, 4, 6, 6))
    low = np.zeros((1, 4, 1, 1), np.float32)
    high = np.array([1, 2, 3, 4], np.float32).reshape(1, 4, 1, 1)
    w = fq_weights(RNG.normal(0, 0.3, (4, 1, 1, 3, 3)))
    before = graph([x], group_conv(fake_quantize(x.output, low, high), w))
    after = decompose_fake_quantize(before)
    assert kinds(after) == ["Parameter", "Quantize", "Dequantize", "FakeQuantize",
                            "GroupConvolution", "Result"]
    dequantize = next(n for n in after.nodes if isinstance(n, Dequantize))
    assert dequantize.input_type(2).shape == (1, 4, 1, 1)       # per channel stays as it is
    assert_same_outputs(before, after)


def test_consumers_are_followed_through_precision_preserving_ops():
    """FQ -> MaxPool -> Conv: the MaxPool can run on u8, so the FQ is decomposed."""
    x = parameter((1, 3, 8, 8))
    pooled = max_pool(fake_quantize(x.output, 0, 6)).outputs[0]
    before = graph([x], conv(pooled, fq_weights(W)))
    after = decompose_fake_quantize(before)
    assert "Quantize" in kinds(after) and "FakeQuantize" in kinds(after)   # the weight FQ
    assert_same_outputs(before, after)


@pytest.mark.parametrize("low, high", [(2.0, 2.0), (3.0, -1.0)])
def test_inverted_or_empty_input_range_stays_float(low: float, high: float):
    before = conv_model((low, high))
    assert reason(before) == "inverted or empty input range (input_low >= input_high)"
    assert decompose_fake_quantize(before) is before


def test_levels_above_256_stay_float():
    before = conv_model((0.0, 6.0), {"levels": 300})
    assert reason(before) == "levels=300 exceeds 256 (no 8-bit level index)"


def test_per_channel_range_on_a_regular_convolution_stays_float():
    low = np.zeros((1, 3, 1, 1), np.float32)
    high = np.array([1, 2, 3], np.float32).reshape(1, 3, 1, 1)
    before = conv_model((low, high))
    assert reason(before).startswith("per-channel activation range on a non-depthwise "
                                     "convolution (Convolution 'conv'")


def test_weights_with_a_non_foldable_zero_point_keep_the_activation_float():
    """Asymmetric weight FQ (fractional zero point) and u8 weights whose zero points push
    q - zp outside i8: the activation FakeQuantize stays float, with the weights' reason."""
    asymmetric = fake_quantize(f32(W), -0.3, 1.7, 255, name="w/fq")
    before = conv_model(weights=asymmetric)
    assert reason(before).startswith("weights have a fractional zero point")
    q = np.full((4, 3, 3, 3), 255, np.uint8)
    shifted = compressed_weights(q, dtypes.u8, np.full((4, 1, 1, 1), 0.01, np.float32),
                                 np.full((4, 1, 1, 1), 3, np.uint8))
    before = conv_model(weights=shifted)
    assert reason(before) == ("weights have a zero point: values minus zero point span "
                              "[0, 252], which does not fit i8")


def test_float_weights_keep_the_activation_float():
    before = conv_model(weights=f32(W))
    assert reason(before).startswith("the weights of Convolution 'conv'")
    assert reason(before).endswith("are not quantized")


def test_consumer_that_is_not_quantizable_keeps_it_float():
    """FQ -> Add (NNCF's residual inputs) and FQ -> model output stay FakeQuantize."""
    x = parameter((1, 3, 4, 4))
    before = graph([x], add(fake_quantize(x.output, -1, 1), x.output))
    assert reason(before).startswith("consumer Add 'add'")
    assert reason(before).endswith("is not a quantizable op")
    before = graph([x], fake_quantize(x.output, -1, 1))
    assert reason(before) == "its output is a model output"


def test_relu_after_a_signed_range_stops_the_walk():
    x = parameter((1, 3, 8, 8))
    before = graph([x], conv(relu(fake_quantize(x.output, -1, 1)), fq_weights(W)))
    assert reason(before).startswith("ReLU after a range with negative levels changes values")


def test_matmul_whose_other_input_is_float_stays_float():
    a, b = parameter((1, 4, 8), "a"), parameter((1, 8, 5), "b")
    before = graph([a, b], matmul(fake_quantize(a.output, -1, 1), b.output, transpose_b=False))
    assert reason(before).startswith("the other input of MatMul 'matmul'")


def test_activation_times_activation_matmul_is_decomposed():
    """Q K^T: both inputs quantized per tensor -> both FakeQuantizes decompose."""
    a, b = parameter((1, 4, 8), "a"), parameter((1, 5, 8), "b")
    before = graph([a, b], matmul(fake_quantize(a.output, -1, 1, name="fa"),
                                  fake_quantize(b.output, -2, 2, name="fb")))
    after, reasons = decompose_fake_quantize_with_reasons(before)
    assert reasons == ()
    assert kinds(after).count("Quantize") == 2
    assert_same_outputs(before, after)


def test_ranges_that_are_not_constants_stay_float():
    x, high = parameter((1, 3, 8, 8)), parameter((), "high")
    zero = const(np.float32(0))
    node = FakeQuantize(origin=origin("fq", "FakeQuantize"),
                        inputs=(x.output, zero, high.output, zero, high.output), levels=256)
    before = graph([x, high], conv(node.output, fq_weights(W)))
    assert reason(before) == "its ranges are not constants"


def test_reasons_reach_the_precision_report():
    """The report of the whole pipeline lists the float FakeQuantize with the same reason."""
    before = conv_model((3.0, -1.0))
    _, report = apply_low_precision(before)
    assert report.reason("fq") == "inverted or empty input range (input_low >= input_high)"
    assert report.reason("w/fq") == "the activation input of Convolution 'conv' (layer " + \
        f"{before.results[0].inputs[0].node.origin.layer_id}) is not quantized"
    assert report.integer_layers() == ()


def test_f16_layers_stay_float():
    """The integer ops produce f32; a layer computing in f16 keeps its FakeQuantize."""
    x = parameter((1, 3, 8, 8), dtype=dtypes.f16)
    ranges = [const(np.float16(v)) for v in (0, 6, 0, 6)]
    fq = FakeQuantize(origin=origin("fq", "FakeQuantize"), inputs=(x.output, *ranges),
                      levels=256)
    w = compressed_weights(RNG.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8), dtypes.i8,
                           np.full((4, 1, 1, 1), 0.01, np.float16), float_type=dtypes.f16)
    w = Convert(origin=origin("w/f16", "Convert"), inputs=(w,),
                destination_type=dtypes.f16).output
    before = graph([x], conv(fq.output, w))
    assert reason(before).startswith("Convolution 'conv'")
    assert reason(before).endswith("computes in f16; integer ops produce f32")
