"""Float Convolution, GroupConvolution and MatMul lowerings on both executors.

Each case is a small OpenVINO model saved as IR, read by lpjit, lowered, and run by the numba
executor and by LLVM one kernel at a time; both are compared with the reference executor
(rtol 1e-4, atol 1e-5) and with each other.  The geometries are the awkward ones of issue 3:
prime channel counts, 1x1 and 7x7 kernels, stride 2, dilation, asymmetric and auto pads,
batch > 1, groups, depthwise, MatMul transposes / batch broadcasting / 1-D inputs, fused
bias + ReLU and FakeQuantize epilogues; some also lowered for an AVX2 target (8 lanes).
Direct convolutions run under both schedules (``vectorize`` fixture: vectors along the output
width, or along the output channels); depthwise cases cover both layouts (rows of at least a
vector: ``rows``; shorter rows: ``flat``).
"""

from __future__ import annotations

import functools
import math

import attrs
import numpy as np
import openvino as ov
import oracle
import pytest
from openvino import opset1

import lpjit
from lowering.loop_ir import For, Kernel
from lowering.lower_graph import LoweringOptions, lower_graph_to_loops
from lowering.ops.nn_conv import block_starts, pack_conv_weights
from lowering.ops.nn_schedules import conv_schedules
from lowering.ops.nn_tiles import cover_axis
from lowering.program import Program
from lowering.program_exec import llvm_compiler, run_program
from lowering.target import Target
from lowering.traversal import walk
from lpjit import reference
from lpjit.errors import LoweringError
from lpjit.graph import Graph
from runtime.jit import CPU_FEATURES, JitEngine

pytestmark = pytest.mark.oracle

RNG = np.random.default_rng(33)
AVX2 = Target("znver3", CPU_FEATURES["znver3"])
AVX512 = Target("znver4", CPU_FEATURES["znver4"])


def weights(*shape: int) -> ov.Node:
    return opset1.constant(RNG.uniform(-1, 1, shape).astype(np.float32))


def lower(model: ov.Model, tmp_path, target: Target | None = None,
          threads: int = 1) -> tuple[Graph, Program]:
    graph = lpjit.read_ir(oracle.save(model, tmp_path))
    options = LoweringOptions(target=target or Target.host(), threads=threads)
    return graph, lower_graph_to_loops(graph, options)


def check(model: ov.Model, tmp_path, target: Target | None = None, seed: int = 0,
          steps: int | None = 1) -> Program:
    """Lower, run on numba and LLVM, compare with the reference and with each other."""
    graph, program = lower(model, tmp_path, target)
    if steps is not None:
        assert len(program.steps) == steps, [s.label for s in program.steps]
    inputs = oracle.random_inputs(model, seed)
    expected = reference.run(graph, inputs)
    by_numba = run_program(program, inputs)
    by_llvm = run_program(program, inputs, llvm_compiler)
    for e, n, m in zip(expected, by_numba, by_llvm, strict=True):
        np.testing.assert_allclose(n, e, rtol=1e-4, atol=1e-5, err_msg="numba vs reference")
        np.testing.assert_allclose(m, e, rtol=1e-4, atol=1e-5, err_msg="LLVM vs reference")
        np.testing.assert_allclose(m, n, rtol=1e-5, atol=1e-6, err_msg="LLVM vs numba")
    return program


def conv_model(shape, w_shape, strides, dilations, pads_begin, pads_end, auto_pad="explicit",
               groups: bool = False) -> ov.Model:
    x = opset1.parameter(shape, np.float32, name="x")
    op = opset1.group_convolution if groups else opset1.convolution
    conv = op(x, weights(*w_shape), strides, pads_begin, pads_end, dilations, auto_pad=auto_pad)
    return ov.Model([conv], [x])


@pytest.fixture(params=["width", "channels"])
def vectorize(request, monkeypatch) -> str:
    """Force one of the two direct-conv schedules (the default picks by estimated speed)."""
    import lowering.ops.nn as nn_lowering

    def forced(*args):
        return conv_schedules(*args)[request.param][0]

    monkeypatch.setattr(nn_lowering, "default_conv_schedule", forced)
    return request.param


# -- helpers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("extent, lanes, vectors", [(56, 16, 4), (56, 8, 3), (7, 16, 2),
                                                    (1, 8, 2), (37, 8, 2), (64, 16, 4)])
def test_cover_axis_covers_every_column_once_or_with_equal_overlap(extent, lanes, vectors):
    """Vectors stay in bounds and together cover [0, extent)."""
    cover = cover_axis(extent, lanes, vectors)
    seen = np.zeros(extent, int)
    starts = [cover.full_tile(t).start(v) for t in range(cover.full_tiles)
              for v in range(vectors)]
    if cover.remainder_count:
        tile = cover.remainder_tile()
        starts += [tile.start(v) for v in range(tile.count)]
        assert tile.lanes <= extent and tile.count <= max(vectors, 2)
    for start, width in zip(starts, [lanes] * (len(starts) - cover.remainder_count)
                            + [cover.remainder_lanes] * cover.remainder_count):
        assert 0 <= start and start + width <= extent
        seen[start:start + width] += 1
    assert seen.min() >= 1


def test_packed_conv_weights_hold_each_block_of_output_channels():
    """Block b, row r of the packed weights is output channel block_starts[b] + r."""
    w = RNG.standard_normal((2, 7, 3, 2, 3)).astype(np.float32)
    packed = pack_conv_weights(w, 3)
    assert block_starts(7, 3) == [0, 3, 4]
    assert packed.shape == (2, 3, 3, 2, 3, 3)
    np.testing.assert_array_equal(packed[1, 2, :, :, :, 1], w[1, 5])


# -- convolution -----------------------------------------------------------------------------

CONVOLUTIONS = {
    # data, weights, strides, dilations, pads_begin, pads_end
    "stride2_prime_asymmetric_batch2": ((2, 5, 9, 8), (7, 5, 3, 3), (2, 2), (1, 1), (1, 0),
                                        (0, 2)),
    "7x7_stride2_stem": ((1, 3, 11, 21), (5, 3, 7, 7), (2, 2), (1, 1), (3, 3), (3, 2)),
    "1x1_prime_stride_h2": ((2, 7, 6, 5), (11, 7, 1, 1), (2, 1), (1, 1), (0, 0), (0, 0)),
    "1x1_gemm_wide_rows": ((1, 13, 3, 37), (17, 13, 1, 1), (1, 1), (1, 1), (0, 0), (0, 0)),
    "dilation": ((1, 4, 10, 9), (3, 4, 3, 2), (1, 2), (2, 3), (2, 0), (1, 1)),
    "stride2_wide_rows_deinterleaved": ((1, 3, 4, 45), (4, 3, 3, 3), (2, 2), (1, 1), (1, 1),
                                        (1, 0)),
}


@pytest.mark.parametrize("case", CONVOLUTIONS)
def test_convolution(tmp_path, case, vectorize):
    check(conv_model(*CONVOLUTIONS[case]), tmp_path)


@pytest.mark.parametrize("auto_pad, shape", [("same_upper", (1, 3, 9, 10)),
                                             ("same_lower", (2, 3, 8, 11))])
def test_convolution_auto_pad(tmp_path, auto_pad, shape):
    """Resolved same_upper/same_lower pads (odd sizes, stride 2: the pads differ)."""
    model = conv_model(shape, (5, 3, 3, 3), (2, 2), (1, 1), (0, 0), (0, 0), auto_pad)
    check(model, tmp_path)


def test_convolution_1d_and_3d(tmp_path, vectorize):
    check(conv_model((2, 3, 13), (4, 3, 4), (3,), (2,), (1,), (2,)), tmp_path / "1d")
    check(conv_model((1, 2, 5, 6, 4), (3, 2, 2, 3, 2), (1, 2, 1), (2, 1, 1), (1, 0, 1),
                     (0, 1, 0)), tmp_path / "3d")


def test_convolution_wide_kernel_loops_over_its_taps(tmp_path, vectorize):
    """A 1-D kernel of 19 taps (wider than the unrolled limit) runs its taps as a loop."""
    check(conv_model((1, 2, 45), (3, 2, 19), (2,), (1,), (4,), (3,)), tmp_path)


def test_group_convolution(tmp_path, vectorize):
    """3 groups of 2 -> 4 channels, stride (1, 2), asymmetric pads."""
    check(conv_model((2, 6, 7, 7), (3, 4, 2, 3, 3), (1, 2), (1, 1), (1, 1), (1, 0),
                     groups=True), tmp_path)


@pytest.mark.parametrize("shape, strides, dilations, auto_pad", [
    ((2, 7, 9, 20), (1, 1), (1, 1), "explicit"),
    ((1, 5, 8, 7), (2, 2), (1, 2), "same_lower"),
    ((1, 3, 6, 6), (1, 1), (1, 1), "valid"),
    ((1, 3, 5, 41), (2, 2), (1, 1), "explicit"),
])
def test_depthwise_convolution(tmp_path, shape, strides, dilations, auto_pad):
    channels = shape[1]
    model = conv_model(shape, (channels, 1, 1, 3, 3), strides, dilations, (1, 1), (1, 1),
                       auto_pad, groups=True)
    check(model, tmp_path)


def test_depthwise_with_channel_multiplier(tmp_path, vectorize):
    """One input channel per group, three outputs each (the general grouped path)."""
    check(conv_model((1, 5, 6, 9), (5, 3, 1, 3, 3), (1, 1), (1, 1), (1, 1), (1, 1),
                     groups=True), tmp_path)


def test_convolution_with_fused_bias_and_relu(tmp_path, vectorize):
    """Conv + per-channel bias Add + ReLU run in one kernel."""
    x = opset1.parameter((1, 11, 7, 19), np.float32, name="x")
    conv = opset1.convolution(x, weights(13, 11, 3, 3), (1, 1), (1, 1), (1, 1), (1, 1))
    out = opset1.relu(opset1.add(conv, weights(1, 13, 1, 1)))
    check(ov.Model([out], [x]), tmp_path, steps=1)


def test_convolution_with_fused_fake_quantize(tmp_path, vectorize):
    """Conv + FakeQuantize (256 levels) in one kernel; outputs on the quantization grid."""
    x = opset1.parameter((1, 4, 6, 9), np.float32, name="x")
    conv = opset1.convolution(x, weights(5, 4, 3, 3), (1, 1), (1, 1), (1, 1), (1, 1))
    limits = [opset1.constant(np.float32(v)) for v in (-3.0, 3.0, -3.0, 3.0)]
    out = opset1.fake_quantize(conv, *limits, 256)
    check(ov.Model([out], [x]), tmp_path, steps=1)


def test_avx2_target_convolutions(tmp_path, vectorize):
    """8-lane code (AVX2 tiles) lowered for znver3 runs right on this host."""
    check(conv_model(*CONVOLUTIONS["stride2_prime_asymmetric_batch2"]), tmp_path / "conv",
          AVX2)
    check(conv_model((1, 3, 7, 19), (3, 1, 1, 3, 3), (1, 1), (1, 1), (1, 1), (1, 1),
                     groups=True), tmp_path / "dw", AVX2)


def test_convolution_weights_must_be_constant(tmp_path):
    x = opset1.parameter((1, 2, 5, 5), np.float32, name="x")
    w = opset1.parameter((3, 2, 3, 3), np.float32, name="w")
    conv = opset1.convolution(x, w, (1, 1), (0, 0), (0, 0), (1, 1))
    with pytest.raises(LoweringError, match="weights must be constants"):
        lower(ov.Model([conv], [x, w]), tmp_path)


# -- MatMul ----------------------------------------------------------------------------------

def matmul_model(a_shape, b_shape, transpose_a=False, transpose_b=False,
                 b_constant=True) -> ov.Model:
    a = opset1.parameter(a_shape, np.float32, name="a")
    params = [a]
    if b_constant:
        b = weights(*b_shape)
    else:
        b = opset1.parameter(b_shape, np.float32, name="b")
        params.append(b)
    return ov.Model([opset1.matmul(a, b, transpose_a, transpose_b)], params)


MATMULS = {
    "constant_b_transposed_batch": ((3, 5, 7), (9, 7), False, True, True),
    "constant_b_wide_tail": ((13, 20), (20, 37), False, False, True),
    "transpose_a_constant_batched_b": ((2, 6, 4), (2, 6, 33), True, False, True),
    "activations_transposed_b_broadcast": ((2, 3, 5, 7), (3, 19, 7), False, True, False),
    "activations_direct_b": ((4, 9, 11), (4, 11, 18), False, False, False),
    "1d_a": ((7,), (7, 20), False, False, True),
    "1d_b": ((2, 4, 7), (7,), False, False, False),
    "1d_both": ((6,), (6,), False, False, False),
}


@pytest.mark.parametrize("case", MATMULS)
def test_matmul(tmp_path, case):
    check(matmul_model(*MATMULS[case]), tmp_path)


def test_matmul_in_row_blocks(tmp_path, monkeypatch):
    """Rows of A in blocks of 4 tiles (a short last block is skipped tile by tile)."""
    from lowering.ops import nn_matmul

    default = nn_matmul.default_matmul_schedule
    monkeypatch.setattr(nn_matmul, "default_matmul_schedule",
                        lambda *a: attrs.evolve(default(*a), row_block_bytes=4 * 20 * 6 * 4))
    check(matmul_model((2, 37, 20), (20, 37)), tmp_path)


def test_matmul_with_fused_bias_and_relu_on_avx2(tmp_path):
    a = opset1.parameter((10, 24), np.float32, name="a")
    mm = opset1.matmul(a, weights(24, 21), False, False)
    out = opset1.relu(opset1.add(mm, weights(21)))
    model = ov.Model([out], [a])
    check(model, tmp_path / "host", steps=1)
    check(model, tmp_path / "avx2", AVX2, steps=1)


# -- parallel loops --------------------------------------------------------------------------

def _outer_kinds(kernel: Kernel) -> list[str]:
    return [s.kind.name for s in walk(kernel.body) if isinstance(s, For)]


def _two_threads(kernel: Kernel):
    return functools.partial(JitEngine().compile_kernels([kernel]).get_function(kernel.name),
                             threads=2)


def test_threads_mark_the_outermost_loop_parallel(tmp_path):
    """threads != 1 marks one outer loop PARALLEL per nest (run on 2 OpenMP threads)."""
    model = conv_model((1, 3, 8, 8), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), (1, 1))
    graph, serial = lower(model, tmp_path / "1", threads=1)
    _, parallel = lower(model, tmp_path / "2", threads=2)
    assert "parallel" not in _outer_kinds(serial.steps[0].kernel)
    kinds = _outer_kinds(parallel.steps[0].kernel)
    assert kinds.count("parallel") == 2        # the padded copy and the convolution
    inputs = oracle.random_inputs(model)
    (expected,) = reference.run(graph, inputs)
    (actual,) = run_program(parallel, inputs, _two_threads)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("target, pixels, rows", [
    (AVX512, (7, 7), 5), (AVX512, (14, 14), 6), (AVX512, (56, 56), 6), (AVX512, (2, 3), 6),
    (AVX2, (7, 7), 5), (AVX2, (28, 28), 6)])
def test_the_channel_layout_tile_has_the_rows_that_waste_least_of_the_pixels(target, pixels,
                                                                           rows):
    """49 pixels in 6-row blocks compute 54 (the last block overlaps); 5-row blocks 50.  Rows
    that waste under 2 % stay at 6; fewer pixels than rows: one block of them all."""
    schedule = conv_schedules(target, 512, pixels, 512 * 9, 1)["channels"][0]
    assert schedule.tile.rows == min(rows, math.prod(pixels))
