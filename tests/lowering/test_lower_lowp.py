"""Integer and weight-only compressed lowerings (``lowering.ops.lowp*``) on both executors.

Each case is a one-op graph of ``lpjit.ops.lowp`` (or a small pipeline), lowered for a target
and run by the numba executor and by LLVM (compiled for that target's CPU: the host has
AVX512-VNNI, ``znver3`` code is AVX2 without VNNI, ``x86-64`` has neither; all run here).
Integer ops are compared with ``lpjit.reference`` *bit for bit*: their f32 epilogue follows the
reference's order of operations, so even the float outputs agree exactly; with step 1, low 0
and scale 1 the output is the i32 accumulator itself.  Data are fresh seeded random level
indices and weights over the full u8/i8 ranges, plus the extremes (all-255 activations times
+-127 weights: 1020 where OpenVINO's saturating AVX2 path gives 516).
"""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
from cpu_targets import AVX2, HOST, SSE, compiler_for
from lowp_graphs import (
    add,
    conv,
    fake_quantize,
    fq_weights,
    graph,
    max_pool,
    origin,
    parameter,
    relu,
    reshape,
)
from lowp_graphs import const as _const

from lowering.loop_ir import PARALLEL, Allocate, For, Kernel
from lowering.lower_graph import LoweringOptions, lower_graph_to_loops
from lowering.microkernels import DotI8Pairs, DotU8I8Quad, DotU8I8Saturating, Microkernel
from lowering.ops.lowp import integer_kernels, max_level, q_conv_schedule
from lowering.ops.lowp_conv import BorderClasses, pack_q_conv_weights, q_conv_geometry
from lowering.ops.lowp_depthwise import Grid, width_vectors
from lowering.ops.lowp_tiles import DotStep, choose_dot_step, integer_tile, saturation_proof
from lowering.program import Program
from lowering.program_exec import llvm_compiler, run_program
from lowering.target import Target
from lowering.traversal import walk
from lpjit import dtypes, reference
from lpjit.errors import LoweringError
from lpjit.graph import Graph, Value
from lpjit.ops import activations, lowp
from lpjit.passes.low_precision import apply_low_precision
from lpjit.reference.lowp import integer_convolution
from runtime.jit import JitEngine

RNG = np.random.default_rng(44)
F32 = np.float32


def lower(g: Graph, target: Target = HOST, threads: int = 1) -> Program:
    return lower_graph_to_loops(g, LoweringOptions(target=target, threads=threads))


def check(g: Graph, inputs: list[np.ndarray], target: Target = HOST, numba: bool = True,
          steps: int | None = 1) -> Program:
    """Lower for ``target``; LLVM (and numba) outputs equal the reference bit for bit."""
    program = lower(g, target)
    if steps is not None:
        assert len(program.steps) == steps, [s.label for s in program.steps]
    expected = reference.run(g, inputs)
    runs = {"LLVM": run_program(program, inputs, compiler_for(target))}
    if numba:
        runs["numba"] = run_program(program, inputs)
    for name, outputs in runs.items():
        for e, actual in zip(expected, outputs, strict=True):
            e = np.asarray(e).astype(actual.dtype)
            np.testing.assert_array_equal(actual, e, err_msg=f"{name} on {target.cpu}")
    return program


def vector(values) -> Value:
    return _const(np.asarray(values, F32).reshape(-1))


def levels_like(shape) -> np.ndarray:
    """Random level indices, a tenth of them at the extremes 0 and 255."""
    q = RNG.integers(0, 256, shape)
    extreme = RNG.random(shape) < 0.1
    return np.where(extreme, RNG.choice([0, 255], shape), q).astype(np.uint8)


def microkernels(program: Program) -> set[type]:
    return {type(n) for s in program.steps for n in walk(s.kernel.body)
            if isinstance(n, Microkernel)}


# -- QConvolution ----------------------------------------------------------------------------

def q_conv(data_shape, weights: np.ndarray, pads_begin, pads_end, strides=None,
           dilations=None, per_channel=False, step=None, low=None, scale=None,
           data: Value | None = None) -> tuple[Graph, list]:
    """``QConvolution`` on a u8 parameter (or ``data``); asymmetric activations by default
    (a negative low: fractional zero point)."""
    rank = len(data_shape) - 2
    x = parameter(data_shape, "x", dtypes.u8) if data is None else None
    channels = data_shape[1] if per_channel else 1
    out = weights.shape[0] * weights.shape[1]
    step = RNG.uniform(0.005, 0.05, channels) if step is None else step
    low = RNG.uniform(-1.2, -0.1, channels) if low is None else low
    scale = RNG.uniform(0.001, 0.02, out) if scale is None else scale
    node = lowp.QConvolution(
        origin=origin("qconv", "Convolution"),
        inputs=(data if data is not None else x.output, _const(weights.astype(np.int8)),
                vector(scale), vector(step), vector(low)),
        strides=strides or (1,) * rank, pads_begin=pads_begin, pads_end=pads_end,
        dilations=dilations or (1,) * rank)
    return node, ([x] if x is not None else [])


def conv_graph(data_shape, weight_shape, pads_begin, pads_end, **kw) -> tuple[Graph, list]:
    weights = RNG.integers(-128, 128, weight_shape)
    node, params = q_conv(data_shape, weights, pads_begin, pads_end, **kw)
    return graph(params, node.output), [levels_like(data_shape)]


CONVOLUTIONS = {
    # data, weights [G, OCg, ICg, k...], pads_begin, pads_end, extra
    "3x3_odd_channels_batch2": ((2, 5, 6, 7), (1, 7, 5, 3, 3), (1, 1), (1, 1), {}),
    "stride2_asymmetric_pads": ((1, 6, 7, 9), (1, 5, 6, 3, 3), (1, 0), (0, 2),
                                {"strides": (2, 2)}),
    "1x1": ((1, 9, 4, 5), (1, 11, 9, 1, 1), (0, 0), (0, 0), {}),
    "grouped_stride_w2": ((1, 6, 5, 7), (3, 2, 2, 3, 3), (1, 1), (1, 1),
                          {"strides": (1, 2)}),
    "dilated": ((1, 4, 7, 8), (1, 3, 4, 3, 2), (2, 0), (1, 1), {"dilations": (2, 3)}),
    "depthwise_per_channel_stride2": ((1, 5, 6, 9), (5, 1, 1, 3, 3), (1, 1), (1, 1),
                                      {"strides": (2, 2), "per_channel": True}),
    "channel_multiplier_per_channel": ((1, 3, 5, 6), (3, 2, 1, 3, 3), (1, 1), (1, 1),
                                       {"per_channel": True}),
    "one_pixel_output": ((1, 5, 3, 3), (1, 6, 5, 3, 3), (0, 0), (0, 0), {}),
    "one_column_one_channel": ((1, 5, 6, 3), (1, 1, 5, 3, 3), (0, 0), (0, 0), {}),
    "conv1d_stride2": ((2, 3, 11), (1, 4, 3, 3), (1,), (2,), {"strides": (2,)}),
    "conv3d": ((1, 2, 4, 5, 6), (1, 3, 2, 2, 3, 2), (1, 0, 1), (0, 1, 0), {}),
    "channels_layout_small_image": ((2, 21, 3, 4), (1, 37, 21, 3, 3), (1, 0), (1, 2), {}),
    "channels_layout_grouped_stride2": ((1, 18, 6, 5), (2, 20, 9, 3, 3), (1, 1), (0, 1),
                                        {"strides": (2, 2)}),
}
CHANNEL_LAYOUT = ("channels_layout_small_image", "channels_layout_grouped_stride2",
                  "one_pixel_output")


@pytest.mark.parametrize("case", CONVOLUTIONS)
def test_q_convolution_on_the_host(case):
    """VNNI (vpdpbusd) tiles on the host (depthwise: over taps along the kernel width);
    numba and LLVM equal the reference bit for bit, borders included (asymmetric
    activations: the zero point is fractional)."""
    data, weights, begin, end, extra = CONVOLUTIONS[case]
    program = check(*conv_graph(data, weights, begin, end, **extra))
    assert microkernels(program) == {DotU8I8Quad}
    by_channels = any(c.name.endswith("_zero_point_by_class") for c in program.constants)
    assert by_channels == (case in CHANNEL_LAYOUT)


@pytest.mark.parametrize("case", ["3x3_odd_channels_batch2", "stride2_asymmetric_pads",
                                  "depthwise_per_channel_stride2",
                                  "channels_layout_grouped_stride2"])
def test_q_convolution_on_avx2(case):
    """Without VNNI: exact vpmaddwd pairs (random +-127 weights cannot be proved safe for
    vpmaddubsw); AVX2 code compiled for znver3."""
    data, weights, begin, end, extra = CONVOLUTIONS[case]
    program = check(*conv_graph(data, weights, begin, end, **extra), AVX2,
                    numba=case == "stride2_asymmetric_pads")
    assert DotU8I8Saturating not in microkernels(program)


@pytest.mark.parametrize("case", ["3x3_odd_channels_batch2", "grouped_stride_w2", "conv3d",
                                  "conv1d_stride2"])
@pytest.mark.parametrize("threads", [1, 2])
def test_outputs_larger_than_the_cache_are_written_block_by_block(monkeypatch, case, threads):
    """Past ``BLOCKS_OUTER_BYTES`` (lowered to 0 here) the output-channel blocks are the
    outer (parallel) loop: same results, batches, groups and outer dims included."""
    from lowering.ops import lowp_conv

    monkeypatch.setattr(lowp_conv, "BLOCKS_OUTER_BYTES", 0)
    data, weights, begin, end, extra = CONVOLUTIONS[case]
    g, inputs = conv_graph(data, weights, begin, end, **extra)
    program = lower(g, threads=threads)
    (step,) = program.steps
    assert "for t in " in str(step.kernel) and "for row in " not in str(step.kernel)
    actual = run_program(program, inputs, llvm_compiler)
    np.testing.assert_array_equal(actual[0], np.asarray(reference.run(g, inputs)[0]))


@pytest.mark.parametrize("target", [HOST, AVX2], ids=lambda t: t.cpu)
@pytest.mark.parametrize("threads", [1, 2])
def test_pointwise_convolution_runs_over_rows_of_whole_vectors(target, threads):
    """A 1x1 convolution sees its 4x28 image as rows of whole vectors (one row of 112 = 7 x
    16 pixels with VNNI; split by output-channel blocks on two threads): with an epilogue of
    per-channel constants, with an f32 residual read per pixel, and with the MobileNetV2
    residual (Dequantize of u8 levels, computed where it is read) whose buffer is seen as the
    same rows.  Exact."""
    shape = (1, 9, 4, 28)
    node, params = q_conv(shape, RNG.integers(-128, 128, (1, 20, 9, 1, 1)), (0, 0), (0, 0))

    def requantize(y: Value, name: str = "requantize") -> Value:
        return lowp.Quantize(origin=origin(name, "Quantize"),
                             inputs=(y, vector([-2.0]), vector([3.0])), levels=256).output

    biased = add(node.output, _const(RNG.uniform(-0.5, 0.5, (1, 20, 1, 1)).astype(F32)))
    residual = parameter((1, 20, 4, 28), "r")
    levels = parameter((1, 20, 4, 28), "levels", dtypes.u8)
    dequantized = lowp.Dequantize(origin=origin("dequantize", "Dequantize"),
                                  inputs=(levels.output, vector([-1.5]), vector([2.0])),
                                  levels=256).output
    cases = ((requantize(relu(biased)), []),
             (add(node.output, residual.output), [residual]),
             (requantize(relu(add(biased, dequantized, "residual"))), [levels]))
    for output, extra in cases:
        g = graph(params + extra, output)
        program = lower(g, target, threads)
        kernel = str(program.steps[0].kernel)
        assert "qconv_output_rows" in kernel
        assert all(f"qconv_{p.origin.name}_rows[" in kernel for p in extra), kernel
        assert ("for t in " in kernel) == (threads == 2)       # 1 row for 2 threads
        inputs = [levels_like(shape)]
        inputs += [RNG.uniform(-1, 1, residual.shape).astype(F32) if p is residual
                   else levels_like(p.shape) for p in extra]
        actual = run_program(program, inputs, compiler_for(target))
        np.testing.assert_array_equal(actual[0], np.asarray(reference.run(g, inputs)[0]))


def test_q_convolution_without_avx2():
    """The portable multiply-add on a baseline x86-64 (4 lanes)."""
    data, weights, begin, end, extra = CONVOLUTIONS["3x3_odd_channels_batch2"]
    program = check(*conv_graph(data, weights, begin, end, **extra), SSE, numba=False)
    assert microkernels(program) == set()


@pytest.mark.parametrize("target", [HOST, AVX2, SSE], ids=lambda t: t.cpu)
def test_all_255_times_127_is_exact(target):
    """1x1 conv, 4 channels, every activation 255, every weight 127, step 1, low 0, scale 1:
    the accumulator 4 * 255 * 127 = 129540 (1020 after the 1/127 weight scale; OpenVINO on
    AVX2 gives 516).  3x3 with 3 channels and mixed signs: exact too."""
    node, params = q_conv((1, 4, 2, 3), np.full((1, 5, 4, 1, 1), 127), (0, 0), (0, 0),
                          step=[1.0], low=[0.0], scale=np.ones(5))
    ones = np.full((1, 4, 2, 3), 255, np.uint8)
    check(graph(params, node.output), [ones], target, numba=target is HOST)
    (out,) = run_program(lower(graph(params, node.output), target), [ones],
                         compiler_for(target))
    assert (out == 129540).all() and (out / 127 == 1020).all()
    signs = np.where(RNG.random((1, 2, 3, 3, 3)) < 0.5, -128, 127)
    node, params = q_conv((1, 3, 4, 5), signs, (1, 1), (1, 1), step=[1.0], low=[0.0],
                          scale=np.ones(2))
    check(graph(params, node.output), [np.full((1, 3, 4, 5), 255, np.uint8)], target,
          numba=False)


@pytest.mark.parametrize("target", [HOST, AVX2, SSE], ids=lambda t: t.cpu)
def test_accumulator_equals_the_integer_convolution(target):
    """Step 1, low 0, scale 1: the output is the i32 accumulator (|acc| < 2^24, exact in f32),
    equal to an int64 numpy convolution over the valid taps, on random full-range data."""
    weights = RNG.integers(-128, 128, (1, 6, 7, 3, 3))
    node, params = q_conv((2, 7, 5, 8), weights, (1, 2), (2, 0), strides=(1, 2), step=[1.0],
                          low=[0.0], scale=np.ones(6))
    data = levels_like((2, 7, 5, 8))
    (out,) = run_program(lower(graph(params, node.output), target), [data],
                         compiler_for(target))
    expected = integer_convolution(node, data.astype(np.int64), weights.astype(np.int64))
    np.testing.assert_array_equal(out.astype(np.int64), expected)


def test_proven_vpmaddubsw_on_avx2():
    """Activations from a Quantize with 128 levels (max index 127) times +-127 weights: every
    pair is within 127 * 254 = 32258, so AVX2 uses vpmaddubsw, says why in the node, and the
    result is still exact.  255-level activations with the same weights get exact pairs."""
    x = parameter((1, 8, 5, 9), "x")
    ranges = (vector([-1.0]), vector([1.0]))
    quantized = lowp.Quantize(origin=origin("q", "Quantize"), inputs=(x.output, *ranges),
                              levels=128).output
    assert max_level(quantized) == 127
    weights = RNG.choice([-127, 127, 5, -3], (1, 6, 8, 3, 3))
    node, _ = q_conv((1, 8, 5, 9), weights, (1, 1), (1, 1), data=quantized)
    g = graph([x], node.output)
    program = check(g, [RNG.uniform(-1.2, 1.2, (1, 8, 5, 9)).astype(F32)], AVX2, numba=False)
    assert DotU8I8Saturating in microkernels(program)
    (conv_kernel,) = integer_kernels(program)
    assert conv_kernel.microkernels == ("dot_u8i8_saturating",)
    assert "activations <= 127" in conv_kernel.justifications[0]
    assert "[-32258, 32258]" in conv_kernel.justifications[0]
    node, params = q_conv((1, 8, 5, 9), weights, (1, 1), (1, 1))
    program = lower(graph(params, node.output), AVX2)
    assert microkernels(program) == {DotI8Pairs}


def test_requantizing_epilogue_writes_u8():
    """QConvolution -> bias Add -> ReLU -> Quantize: one kernel whose epilogue writes the
    next layer's u8 level indices, equal to the reference's."""
    node, params = q_conv((1, 5, 6, 7), RNG.integers(-128, 128, (1, 6, 5, 3, 3)), (1, 1),
                          (1, 1))
    y = relu(add(node.output, _const(RNG.uniform(-0.5, 0.5, (1, 6, 1, 1)).astype(F32))))
    q = lowp.Quantize(origin=origin("requantize", "Quantize"),
                      inputs=(y, vector([0.0]), vector([3.0])), levels=256).output
    program = check(graph(params, q), [levels_like((1, 5, 6, 7))])
    assert program.outputs[0].dtype.name == "u8"


def quantized_input(shape, low: float, high: float, per_channel: bool = False,
                    levels: int = 256) -> tuple[Value, list, np.ndarray]:
    """An f32 parameter through a stand-alone ``Quantize`` (per-tensor or per-channel
    ranges), and f32 data that hits every region: below, above, on the bounds and on the
    rounding ties ``low + (k + 0.5) * step`` of the level function."""
    x = parameter(shape, "x")
    channels = shape[1] if per_channel else 1
    lows = np.asarray(low + RNG.uniform(-0.2, 0.0, channels) * per_channel, F32)
    highs = np.asarray(high + RNG.uniform(0.0, 0.2, channels) * per_channel, F32)
    range_shape = (1, channels) + (1,) * (len(shape) - 2)
    q = lowp.Quantize(origin=origin("input_quantize", "FakeQuantize"),
                      inputs=(x.output, _const(lows.reshape(range_shape)),
                              _const(highs.reshape(range_shape))), levels=levels).output
    data = RNG.uniform(low - 0.5, high + 0.5, shape).astype(F32)
    width = F32(F32(high) - F32(low))
    ties = F32(low) + (RNG.integers(0, levels - 1, shape) + F32(0.5)) * width / (levels - 1)
    special = RNG.choice([0.0, 1.0, 2.0, 3.0], shape, p=[0.6, 0.1, 0.1, 0.2])
    data = np.select([special == 1, special == 2, special == 3],
                     [F32(low), F32(high), ties.astype(F32)], data).astype(F32)
    return q, [x], data


FUSED_INPUTS = {
    # data, weights [G, OCg, ICg, k...], pads_begin, pads_end, extra, per-channel range
    "3x3_padded_odd_channels": ((2, 5, 6, 7), (1, 7, 5, 3, 3), (1, 1), (1, 1), {}, False),
    "stride2_asymmetric_pads": ((1, 6, 7, 9), (1, 5, 6, 3, 3), (1, 0), (0, 2),
                                {"strides": (2, 2)}, False),
    "wide_rows_per_channel_range": ((1, 8, 5, 37), (1, 6, 8, 3, 3), (1, 1), (1, 1), {}, True),
    "stem_7x7_stride2_three_channels": ((1, 3, 19, 21), (1, 8, 3, 7, 7), (3, 3), (3, 3),
                                        {"strides": (2, 2)}, False),
    "channels_layout_grouped": ((1, 18, 6, 5), (2, 20, 9, 3, 3), (1, 1), (0, 1),
                                {"strides": (2, 2)}, False),
    "conv1d": ((2, 3, 11), (1, 4, 3, 3), (1,), (2,), {"strides": (2,)}, False),
}


@pytest.mark.parametrize("case", FUSED_INPUTS)
def test_input_quantize_is_computed_by_the_blocked_copy(case):
    """f32 -> Quantize (asymmetric range) -> QConvolution: one kernel (the Quantize inlined
    into the conv's blocked copy, listed among its layers), bit-identical to the reference,
    borders and padding included."""
    shape, weight_shape, pads_begin, pads_end, extra, per_channel = FUSED_INPUTS[case]
    q, params, data = quantized_input(shape, -0.37, 1.9, per_channel)
    weights = RNG.integers(-128, 128, weight_shape)
    node, _ = q_conv(shape, weights, pads_begin, pads_end, data=q, **extra)
    program = check(graph(params, node.output), [data])
    assert [o.name for o in program.steps[0].layers] == ["input_quantize", "qconv"]
    inputs = [p for p in program.steps[0].kernel.params if p.role == "input"]
    assert [p.dtype.name for p in inputs] == ["f32"]


@pytest.mark.parametrize("target", [AVX2, SSE], ids=lambda t: t.cpu)
def test_input_quantize_fused_on_narrower_targets(target):
    """The fused blocked copy with AVX2 (vpmaddwd pairs) and SSE vectors."""
    q, params, data = quantized_input((1, 6, 5, 23), -1.1, 0.4)
    node, _ = q_conv((1, 6, 5, 23), RNG.integers(-128, 128, (1, 5, 6, 3, 3)), (1, 1), (1, 1),
                     data=q)
    check(graph(params, node.output), [data], target, numba=False)


def test_shared_pointwise_and_depthwise_input_quantize_stay_stand_alone():
    """A Quantize read by two layers, or by a pointwise (regrouped rows) or a depthwise
    (read per tap) convolution, is computed once by its own kernel."""
    shape = (1, 6, 5, 7)
    q, params, data = quantized_input(shape, -0.5, 2.0)
    node, _ = q_conv(shape, RNG.integers(-128, 128, (1, 4, 6, 3, 3)), (1, 1), (1, 1), data=q)
    program = check(graph(params, node.output, q), [data], steps=2)
    assert [o.name for o in program.steps[0].layers] == ["input_quantize"]
    for weight_shape, per_channel in (((1, 4, 6, 1, 1), False), ((6, 1, 1, 3, 3), True)):
        q, params, data = quantized_input(shape, -0.5, 2.0)
        pads = (weight_shape[-1] // 2,) * 2
        node, _ = q_conv(shape, RNG.integers(-128, 128, weight_shape), pads, pads, data=q,
                         per_channel=per_channel)
        check(graph(params, node.output), [data], steps=2)


@pytest.mark.parametrize("channels, size, layout", [(64, 56, "width"), (512, 7, "channels"),
                                                    (256, 14, "channels"), (3, 112, "width")])
def test_layout_follows_the_feature_map(channels, size, layout):
    """VNNI: vectors along the width for large feature maps, along the output channels for
    small ones with many channels (7x7x512: 7 of 8 lanes and a reload of every activation
    per few pixels otherwise)."""
    node, _ = q_conv((1, channels, size, size), np.ones((1, channels, channels, 3, 3)),
                     (1, 1), (1, 1))
    chosen, tile = q_conv_schedule(HOST, DotStep("quad"), q_conv_geometry(node))
    assert chosen == layout and tile.rows * tile.vectors >= 12


def test_conv_weights_are_packed_by_channel_blocks_and_groups():
    """Block b, row r, channel group cb, element t of the packed weights is output channel
    block_starts[b] + r, input channel cb*4 + t (zero past the input channels)."""
    w = RNG.integers(-128, 128, (2, 5, 3, 2, 3)).astype(np.int8)
    packed = pack_q_conv_weights(w, rows=2, group=4)
    assert packed.shape == (2, 3, 1, 2, 3, 2, 4)
    np.testing.assert_array_equal(packed[1, 2, 0, 1, 2, :, 1], w[1, 3:5, 1, 1, 2])
    assert (packed[..., 3] == 0).all()


def test_border_classes_of_a_padded_strided_convolution():
    """Rows 0 and last miss a tap (pads 1/1, 3 taps); width classes likewise; interior is the
    common width class."""
    node, _ = q_conv((1, 2, 6, 7), np.ones((1, 1, 2, 3, 3)), (1, 1), (1, 1), strides=(1, 2))
    classes = BorderClasses.of(q_conv_geometry(node))
    assert classes.outer_of.tolist() == [0, 1, 1, 1, 1, 2]
    assert [len(s[0]) for s in classes.outer] == [2, 3, 2]
    assert classes.width_of == (0, 1, 1, 2)      # columns -1..1, 1..3, 3..5, 5..7
    assert classes.border_columns() == [(0, 0), (3, 2)]


# -- MatMul ----------------------------------------------------------------------------------

def q_matmul_graph(a_shape, columns: int, transpose_a=False) -> tuple[Graph, list]:
    a = parameter(a_shape, "a", dtypes.u8)
    depth = a_shape[-2] if transpose_a else a_shape[-1]
    node = lowp.QMatMul(origin=origin("qmatmul", "MatMul"),
                        inputs=(a.output, _const(RNG.integers(-128, 128, (columns, depth))
                                                 .astype(np.int8)),
                                vector(RNG.uniform(0.001, 0.02, columns)), vector([0.013]),
                                vector([-0.61])),
                        transpose_a=transpose_a)
    return graph([a], node.output), [levels_like(a_shape)]


MATMULS = {
    "batch_k13_n21": ((2, 5, 13), 21, False),
    "k16_n37": ((9, 16), 37, False),
    "transpose_a_one_column": ((7, 3), 1, True),
}


@pytest.mark.parametrize("target", [HOST, AVX2, SSE], ids=lambda t: t.cpu)
@pytest.mark.parametrize("case", MATMULS)
def test_q_matmul(case, target):
    """K not a multiple of 4 (a K-padded copy of A), N = 1 (two lanes, one stored)."""
    check(*q_matmul_graph(*MATMULS[case]), target, numba=target is HOST)


def activation_matmul_graph(a_shape, b_shape, transpose_a=False, transpose_b=False
                            ) -> tuple[Graph, list]:
    a, b = parameter(a_shape, "a", dtypes.u8), parameter(b_shape, "b", dtypes.u8)
    node = lowp.QActivationMatMul(
        origin=origin("scores", "MatMul"),
        inputs=(a.output, b.output, vector([0.031]), vector([-0.7]), vector([0.011]),
                vector([0.25])),
        transpose_a=transpose_a, transpose_b=transpose_b)
    return graph([a, b], node.output), [levels_like(a_shape), levels_like(b_shape)]


@pytest.mark.parametrize("target", [HOST, AVX2], ids=lambda t: t.cpu)
def test_q_activation_matmul(target):
    """u8 x u8 with the row/column-sum compensation: batch broadcast with a transposed B
    (attention's Q K^T), and a plain one with K = 13."""
    check(*activation_matmul_graph((3, 6, 8), (1, 19, 8), transpose_b=True), target,
          numba=target is HOST)
    check(*activation_matmul_graph((2, 13, 5), (2, 13, 9), transpose_a=True), target,
          numba=False)


@pytest.mark.parametrize("target", [HOST, AVX2, SSE], ids=lambda t: t.cpu)
@pytest.mark.parametrize("a_shape, b_shape", [((2, 5, 40), (2, 21, 40)),
                                              ((1, 12, 7, 64), (1, 12, 50, 64))],
                         ids=["k40", "attention_k64"])
def test_q_activation_matmul_vector_sums_and_packing(target, a_shape, b_shape):
    """Q K^T with K = 40 (two 16-byte vector sums and eight bytes one at a time) and the
    attention's K = 64: the row and column sums add whole vectors, B is packed four bytes at
    a time (panels of contiguous columns and the shifted-back last one); exact, and with
    every level at 255."""
    g, inputs = activation_matmul_graph(a_shape, b_shape, transpose_b=True)
    program = check(g, inputs, target, numba=target is HOST and a_shape[-1] == 40)
    kernel = str(program.steps[0].kernel)
    assert "reduce_add(" in kernel
    assert target is SSE or re.search(r"ramp\(kg\d* \* (\d+), 1, \1\)", kernel)  # SSE: bytes
    full = [np.full(a_shape, 255, np.uint8), np.full(b_shape, 255, np.uint8)]
    check(g, full, target, numba=False)


def test_q_activation_matmul_extremes():
    """All-255 inputs: s_ab = 255 * 255 * K exactly (VNNI packs B as qb - 128)."""
    g, _ = activation_matmul_graph((4, 12), (12, 3))
    check(g, [np.full((4, 12), 255, np.uint8), np.full((12, 3), 255, np.uint8)], numba=False)


# -- weight-only compression -----------------------------------------------------------------

def compressed_matmul_graph(shape, columns, storage, group_size, zero_point: bool,
                            transpose_a=False) -> tuple[Graph, list]:
    a = parameter(shape, "a")
    depth = shape[-2] if transpose_a else shape[-1]
    low, high = (-8, 8) if storage.name == "i4" else (0, 16) if storage.name == "u4" else (
        (-128, 128) if storage.name == "i8" else (0, 256))
    values = RNG.integers(low, high, (columns, depth))
    groups = (columns, depth // group_size)
    inputs = [a.output, _const(values, "w", storage),
              _const(RNG.uniform(0.01, 0.1, groups).astype(F32))]
    if zero_point:
        inputs.append(_const(RNG.integers(low, high, groups), "zp", storage))
    node = lowp.CompressedMatMul(origin=origin("fc", "MatMul"), inputs=tuple(inputs),
                                 group_size=group_size, transpose_a=transpose_a)
    return graph([a], node.output), [RNG.uniform(-2, 2, shape).astype(F32)]


COMPRESSED = {
    "i8_per_row": ((2, 5, 12), 10, dtypes.i8, 12, False, False),
    "u8_zero_point_groups_of_4": ((6, 12), 9, dtypes.u8, 4, True, False),
    "i4_groups_transpose_a": ((16, 3), 17, dtypes.i4, 8, False, True),
    "u4_zero_point_one_column": ((3, 8), 1, dtypes.u4, 8, True, False),
}


@pytest.mark.parametrize("case", COMPRESSED)
def test_compressed_matmul(case):
    """f32 x decompressed weights (rtol 1e-5: f32 sums in another order than the reference's
    float64); weights stay 8-bit in the program's constants."""
    g, inputs = compressed_matmul_graph(*COMPRESSED[case])
    program = lower(g)
    expected = reference.run(g, inputs)
    for outputs in (run_program(program, inputs), run_program(program, inputs, llvm_compiler)):
        np.testing.assert_allclose(outputs[0], expected[0], rtol=1e-5, atol=1e-5)
    weights = [c for c in program.constants if c.name.endswith("_weights")]
    assert [c.dtype.name for c in weights] in (["i8"], ["u8"])


def test_compressed_convolution():
    """u8 weights with a per-channel zero point, decompressed at compile time."""
    x = parameter((1, 3, 5, 6), "x")
    values = RNG.integers(0, 256, (1, 4, 3, 3, 3))
    node = lowp.CompressedConvolution(
        origin=origin("conv", "Convolution"),
        inputs=(x.output, _const(values, "w", dtypes.u8),
                _const(RNG.uniform(0.01, 0.1, 4).astype(F32)),
                _const(RNG.integers(0, 256, 4), "zp", dtypes.u8)),
        strides=(1, 1), pads_begin=(1, 1), pads_end=(1, 0), dilations=(1, 1))
    g = graph([x], node.output)
    inputs = [RNG.uniform(-1, 1, (1, 3, 5, 6)).astype(F32)]
    program = lower(g)
    (expected,) = reference.run(g, inputs)
    (actual,) = run_program(program, inputs, llvm_compiler)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_compressed_matmul_needs_f32_activations():
    a = parameter((2, 4), "a", dtypes.f16)
    node = lowp.CompressedMatMul(origin=origin("fc", "MatMul"),
                                 inputs=(a.output, _const(np.ones((3, 4), np.int8)),
                                         _const(np.ones((3, 1), F32))),
                                 group_size=4)
    with pytest.raises(LoweringError, match="needs f32 activations, got f16"):
        lower(graph([a], node.output))


# -- Quantize / Dequantize emitters ----------------------------------------------------------

def test_quantize_is_the_fake_quantize_level_index():
    """Per-channel ranges, ties, both boundaries, +-inf and NaN (-> 0), 255 and 16 levels."""
    x = parameter((2, 3, 4, 9), "x")
    low = np.array([-1.0, 0.0, -0.3], F32).reshape(1, 3, 1, 1)
    high = np.array([1.0, 2.55, 0.7], F32).reshape(1, 3, 1, 1)
    data = RNG.uniform(-1.5, 3.0, (2, 3, 4, 9)).astype(F32)
    data[0, 1, 0, :6] = [0.5, 1.5, 2.55, 0.0, -0.0, 2.5500002]
    data[1, :, 1, :3] = [np.nan, np.inf, -np.inf]
    data[0, 0] = np.linspace(-1, 1, 36, dtype=F32).reshape(4, 9)
    for levels in (256, 16):
        q = lowp.Quantize(origin=origin("q", "Quantize"),
                          inputs=(x.output, _const(low), _const(high)), levels=levels)
        check(graph([x], q.output), [data])


def test_dequantize_returns_the_fake_quantize_values():
    """Every level of a signed range (ol -> q 0, oh -> q L-1 exactly) and of a ReLU range;
    Dequantize(Quantize(x)) equals FakeQuantize(x) where the reference says it does."""
    q = parameter((2, 256), "q", dtypes.u8)
    low = np.array([[-0.731], [0.0]], F32)
    high = np.array([[1.913], [6.0]], F32)
    node = lowp.Dequantize(origin=origin("dq", "Dequantize"),
                           inputs=(q.output, _const(low), _const(high)), levels=256)
    levels = np.tile(np.arange(256, dtype=np.uint8), (2, 1))
    program = check(graph([q], node.output), [levels])
    (values,) = run_program(program, [levels], llvm_compiler)
    assert values[0, 0] == low[0, 0] and values[0, 255] == high[0, 0]
    x = parameter((64,), "x")
    quantized = lowp.Quantize(origin=origin("q", "Quantize"),
                              inputs=(x.output, vector([0.0]), vector([6.0])), levels=256)
    roundtrip = lowp.Dequantize(origin=origin("dq", "Dequantize"),
                                inputs=(quantized.output, vector([0.0]), vector([6.0])),
                                levels=256)
    data = RNG.uniform(-1, 7, 64).astype(F32)
    fake = fake_quantize(x.output, 0.0, 6.0)
    expected, = reference.run(graph([x], fake), [data])
    actual, = run_program(lower(graph([x], roundtrip.output)), [data], llvm_compiler)
    np.testing.assert_array_equal(actual, expected)


# -- the pipeline, threads, choices ----------------------------------------------------------

def test_low_precision_pipeline_runs_in_integer_kernels():
    """FQ -> conv -> bias -> ReLU -> FQ -> conv after apply_low_precision: the first
    QConvolution (its input Quantize computed by its blocked copy) requantizing to u8, the
    second QConvolution; the program equals the transformed graph's reference bit for bit."""
    x = parameter((1, 3, 6, 8), "x")
    y = conv(fake_quantize(x.output, -1.0, 1.0), fq_weights(RNG.normal(0, 0.3, (5, 3, 3, 3))))
    y = relu(add(y, _const(RNG.normal(0, 0.1, (1, 5, 1, 1)).astype(F32))))
    y = conv(fake_quantize(y, 0.0, 2.0, name="fq2"),
             fq_weights(RNG.normal(0, 0.3, (4, 5, 3, 3)), name="w2"), name="conv2")
    transformed, report = apply_low_precision(graph([x], y))
    assert len(report.integer_layers()) == 2
    data = [RNG.uniform(-1.2, 1.2, (1, 3, 6, 8)).astype(F32)]
    program = check(transformed, data, steps=2)
    assert [k.microkernels for k in integer_kernels(program)] == [("dot_u8i8_quad",)] * 2


def test_two_threads():
    """Parallel copy, packing and tile loops on two OpenMP threads give the same results."""
    engine = JitEngine()

    def two(kernel: Kernel):
        return functools.partial(engine.compile_kernels([kernel]).get_function(kernel.name),
                                 threads=2)

    for g, inputs in (conv_graph((2, 6, 7, 9), (1, 5, 6, 3, 3), (1, 1), (1, 1)),
                      q_matmul_graph((3, 9, 13), 40),
                      activation_matmul_graph((2, 6, 8), (2, 19, 8), transpose_b=True)):
        program = lower(g, threads=2)
        (expected,) = reference.run(g, inputs)
        (actual,) = run_program(program, inputs, two)
        np.testing.assert_array_equal(actual, expected)


def test_max_level_follows_level_preserving_ops():
    """The Quantize's levels - 1 through Reshape and MaxPool; 255 for a u8 parameter."""
    x = parameter((1, 4, 4, 4), "x")
    q = lowp.Quantize(origin=origin("q", "Quantize"),
                      inputs=(x.output, vector([0.0]), vector([1.0])), levels=100).output
    pooled = max_pool(reshape(q, (1, 4, 4, 4))).outputs[0]
    assert max_level(q) == 99 and max_level(pooled) == 99
    assert max_level(parameter((2,), "y", dtypes.u8).output) == 255


def test_saturation_proof_bounds():
    """Pair sums at the extremes: 255 * 254 saturates, 255 * 126 and 127 * 254 do not."""
    pairs = np.array([[[127, 127]], [[63, 63]], [[-128, -128]], [[-64, -64]]])
    proof = saturation_proof(pairs, 255)
    assert proof.safe.tolist() == [False, True, False, True]
    assert (proof.low, proof.high) == (-65280, 64770)
    assert saturation_proof(pairs[:1], 127).holds
    assert saturation_proof(np.array([[[-128, 127]]]), 255).holds


def test_dot_step_follows_the_target():
    safe = lambda: np.array([[[10, -10]]])
    unsafe = lambda: np.array([[[127, 127]]])
    assert choose_dot_step(HOST, unsafe, 255).kind == "quad"      # this host has VNNI
    assert choose_dot_step(AVX2, safe, 255).kind == "saturating"
    step = choose_dot_step(AVX2, unsafe, 255)
    assert step.kind == "pairs" and "could saturate in 1 of 1" in step.describe()
    assert choose_dot_step(AVX2, None, 255).kind == "pairs"
    assert choose_dot_step(SSE, safe, 255).kind == "mac"


@pytest.mark.parametrize("target", [HOST, AVX2, SSE], ids=lambda t: t.cpu)
@pytest.mark.parametrize("kind", ["quad", "pairs", "saturating", "mac"])
def test_integer_tiles_fit_the_register_file(target, kind):
    """Accumulators, one operand per vector and the step's temporaries (the broadcast
    operand; a product for pairs/mac; products and the ones vector for saturating)."""
    temporaries = {"quad": 1, "pairs": 2, "saturating": 3, "mac": 2}[kind]
    registers = 32 if target.has_avx512 else 16
    for rows, columns in [(64, 56), (128, 768), (7, 9), (512, 7)]:
        tile = integer_tile(target, DotStep(kind, "proof"), rows, columns)
        assert tile.rows * tile.vectors + tile.vectors + temporaries <= registers
        assert tile.lanes == target.f32_lanes or (target.has_avx512 and tile.lanes == 8)


@pytest.mark.parametrize("target", [HOST, AVX2], ids=lambda t: t.cpu)
@pytest.mark.parametrize("width, strides", [(14, (1, 1)), (14, (1, 2)), (6, (2, 1))])
def test_q_depthwise_odd_output_widths(target, width, strides):
    """Depthwise output widths 14, 7 and 6: the tap layout copies power-of-two vectors of
    pixels (the last one shifted back over the previous one); bit-exact, borders included."""
    data, weights = (1, 3, 5, width), (3, 1, 1, 3, 3)
    check(*conv_graph(data, weights, (1, 1), (1, 1), strides=strides, per_channel=True),
          target, numba=False)


@pytest.mark.parametrize("target", [HOST, AVX2, SSE], ids=lambda t: t.cpu)
@pytest.mark.parametrize("data, weights, begin, end, extra", [
    ((1, 2, 4, 58), (2, 1, 1, 3, 3), (1, 1), (1, 1), {}),                  # 16+16+16+8 lanes
    ((1, 3, 6, 45), (3, 1, 1, 3, 3), (0, 1), (1, 0), {"strides": (2, 2)}),  # shifted-back last
    ((1, 2, 9, 11), (2, 1, 1, 5, 5), (2, 3), (1, 2), {"dilations": (2, 1)}),  # two tap groups
    ((1, 3, 5, 3), (3, 1, 1, 3, 3), (1, 0), (1, 0), {}),                    # one output column
], ids=["wide", "stride2_shifted", "5x5_dilated", "one_column"])
def test_q_depthwise_row_vectors(target, data, weights, begin, end, extra):
    """Depthwise rows covered by fixed vectors (full, a narrower power of two or a full one
    shifted back, two lanes for one column), windows shuffled into the dot step's layout;
    bit-exact against the reference, borders included (on numba too, but for the 5x5 kernel
    whose numba compile takes about a minute)."""
    check(*conv_graph(data, weights, begin, end, per_channel=True, **extra), target,
          numba=target is HOST and weights[-1] == 3)


def test_depthwise_width_vectors():
    """Vectors of a row: full ones, then a narrower power of two or a full one shifted back."""
    def spans(width, lanes):
        return [(v.start, v.lanes, v.stored) for v in width_vectors(width, lanes)]

    assert spans(56, 16) == [(0, 16, 16), (16, 16, 16), (32, 16, 16), (48, 8, 8)]
    assert spans(28, 16) == [(0, 16, 16), (12, 16, 16)]
    assert spans(7, 16) == [(0, 4, 4), (3, 4, 4)]
    assert spans(1, 16) == [(0, 2, 1)]


@pytest.mark.parametrize("target", [HOST, AVX2], ids=lambda t: t.cpu)
@pytest.mark.parametrize("activation, quantize_range, lean", [
    ((0.0, 6.0), (0.0, 6.0), True),          # ReLU6 -> [0, 6]: the MobileNetV2 block
    (None, (-1.0, 3.0), True),               # ReLU -> a range below and above it
    ((1.0, 4.0), (0.0, 6.0), True),          # a clamp inside the range
    ((-2.0, 8.0), (0.5, 6.0), True),         # a clamp wider than the range
    ((0.0, 6.0), None, False),               # no requantization: the generic chain
])
def test_q_depthwise_requantizing_epilogue(target, activation, quantize_range, lean):
    """Depthwise + per-channel bias + ReLU/Clamp + Quantize: the lean epilogue (two clamps,
    the reference's f32 formula) writes the reference's level indices bit for bit; values
    span the whole range, both clamps included.  numba runs the MobileNetV2 case and the
    generic chain (each of these kernels takes it 10-20 s to compile)."""
    channels = 3
    check_requantizing_depthwise((1, channels, 6, 21), (1, 1), (1, 1), {}, activation,
                                 quantize_range, lean, target,
                                 numba=activation == (0.0, 6.0))


@pytest.mark.parametrize("target", [HOST, AVX2, SSE], ids=lambda t: t.cpu)
@pytest.mark.parametrize("shape, begin, end, extra", [
    ((1, 3, 7, 7), (1, 1), (1, 1), {}),
    ((1, 2, 14, 14), (1, 1), (1, 1), {}),
    ((1, 2, 9, 8), (2, 0), (1, 2), {"dilations": (2, 2)}),
    ((1, 2, 30, 9), (1, 1), (1, 1), {}),
], ids=["7x7", "14x14", "dilated_asymmetric", "tall_copied_plane"])
def test_q_depthwise_grid(target, shape, begin, end, extra):
    """Stride-1 planes narrower than a vector (8 lanes or more: not 14 wide on AVX2, none on
    SSE, where rows and the lean epilogue run) run on the padded grid (vectors across rows,
    the junk columns dropped when the rows are stored; the padded plane in registers, or
    copied through memory when tall), with the lean epilogue; bit-exact, borders included.
    numba runs the two small planes: the 14x14 and tall planes' unrolled grids take it minutes
    to compile."""
    program = check_requantizing_depthwise(shape, begin, end, extra, (0.0, 6.0), (0.0, 6.0),
                                           True, target, numba=shape[-1] * shape[-2] < 100)
    narrow = program.outputs[0].shape[-1] < target.f32_lanes
    assert (Grid.of(grid_geometry(shape, begin, end, extra), target.f32_lanes) is not None
            ) == (narrow and target.f32_lanes >= 8)


@pytest.mark.parametrize("shape, strides", [((1, 6, 9, 40), (2, 2)), ((1, 5, 30, 9), (1, 1))],
                         ids=["rows", "tall_grid"])
def test_q_depthwise_padded_plane_per_iteration(shape, strides):
    """The padded plane is allocated per (n, c) iteration of the parallel loop, on the
    running thread's stack, not a shared scratch array (whose lines the other core may hold
    from another step: the MobileNetV2 depthwise layers did not scale to 2 threads): no
    kernel parameter holds it; two threads are bit-exact against the reference."""
    channels = shape[1]
    g, inputs = conv_graph(shape, (channels, 1, 1, 3, 3), (1, 1), (1, 1), strides=strides,
                           per_channel=True)
    program = lower(g, HOST, threads=2)
    kernel = program.steps[0].kernel
    assert not [p for p in kernel.params if "_padded" in getattr(p, "name", "")]
    loops = [n for n in walk(kernel.body) if isinstance(n, For) and n.kind == PARALLEL]
    assert loops and any(isinstance(n, Allocate) and "_padded" in n.buffer.name
                         for n in walk(loops[0].body))
    expected = reference.run(g, inputs)
    actual = run_program(program, inputs, compiler_for(HOST))
    np.testing.assert_array_equal(actual[0], np.asarray(expected[0]).astype(actual[0].dtype))


def grid_geometry(shape, begin, end, extra):
    """The geometry of a depthwise 3x3 ``QConvolution`` on ``shape``."""
    node, _ = q_conv(shape, np.ones((shape[1], 1, 1, 3, 3)), begin, end, per_channel=True,
                     **extra)
    return q_conv_geometry(node)


def check_requantizing_depthwise(shape, begin, end, extra, activation, quantize_range, lean,
                                 target, numba: bool = True) -> Program:
    """Depthwise + bias + ReLU (``activation`` None) or Clamp + [Quantize] against the
    reference (on numba too when ``numba`` and ``target`` is the host); whether the lean
    epilogue ran (its per-channel bias constant)."""
    channels = shape[1]
    node, params = q_conv(shape, RNG.integers(-128, 128, (channels, 1, 1, 3, 3)),
                          begin, end, per_channel=True, step=np.full(channels, 0.02),
                          low=np.full(channels, -0.5), scale=np.full(channels, 0.01), **extra)
    y = add(node.output, _const(RNG.uniform(-0.5, 0.5, (1, channels, 1, 1)).astype(F32)))
    if activation is None:
        y = relu(y)
    else:
        y = activations.Clamp(origin=origin("clamp", "Clamp"), inputs=(y,),
                              min=activation[0], max=activation[1]).output
    if quantize_range is not None:
        y = lowp.Quantize(origin=origin("requantize", "Quantize"),
                          inputs=(y, vector([quantize_range[0]]), vector([quantize_range[1]])),
                          levels=256).output
    program = check(graph(params, y), [levels_like(shape)], target,
                    numba=numba and target is HOST)
    lean_constants = [c for c in program.constants if "_lean" in c.name]
    assert bool(lean_constants) == lean
    return program
