"""Regression tests for the compiler findings of the fuzzer: each once compiled to a wrong
result, a broken kernel (``VerificationError``), a hang, or a multi-GB allocation.

Each test rebuilds the fuzz case in its simplest form (a model saved by OpenVINO, edited where
OpenVINO would not write the value) and pins either the compiled result (equal to the
reference) or the ``LpjitError`` that now replaces the failure.
"""

from __future__ import annotations

import collections
import math
import re
from pathlib import Path

import lowp_graphs as lg
import numpy as np
import openvino as ov
import oracle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openvino import opset1, opset3, opset4, opset8, opset11

import lpjit
from fuzz import driver, mutations, runner
from lowering.builder import KernelBuilder
from lowering.loop_ir import For, Stmt
from lowering.lower_graph import LoweringOptions, lower_graph_to_loops
from lowering.program_exec import numba_compiler, run_program
from lowering.traversal import children
from lpjit import reference
from lpjit.errors import BadAttributeError
from lpjit.ops import nn
from lpjit.passes import fold_constants

# The reference evaluates overflowing and NaN FakeQuantize ranges on purpose.
pytestmark = [pytest.mark.oracle, pytest.mark.filterwarnings("ignore::RuntimeWarning")]


def compiled_equals_reference(xml: Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs of ``lpjit.compile`` on ``xml``, asserted bit for bit equal (NaN where NaN) to
    the reference executor's, shapes and dtypes included."""
    graph = lpjit.read_ir(xml)
    expected = reference.run(graph, inputs)
    actual = [np.asarray(a) for a in lpjit.compile(graph, threads=1)(*inputs)]
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert (a.shape, a.dtype) == (e.shape, e.dtype)
        np.testing.assert_array_equal(a, e)
    return actual


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


# -- 1. scalar (0-d) constants and parameters --------------------------------------------------

def test_constant_buffer_keeps_a_0d_array_0d():
    """``KernelBuilder.constant`` once turned a 0-d array into shape [1]."""
    data = np.float32(1.25)
    buffer = KernelBuilder.constant("c", np.asarray(data))
    assert buffer.shape == () and buffer.data.shape == ()
    transposed = np.arange(6, dtype=np.int32).reshape(2, 3).T
    buffer = KernelBuilder.constant("t", transposed)
    assert buffer.shape == (3, 2) and buffer.data.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(buffer.data, transposed)


def test_scalar_constant_result_compiles(tmp_path):
    """Was: VerificationError "buffer 'c' has rank 1 but is indexed with 0 indices" in the
    Result's copy kernel."""
    x = opset1.parameter([2, 3], np.float32, name="x")
    c = opset1.constant(np.float32(-2.75), name="c")
    model = ov.Model([opset1.result(c), opset1.relu(x)], [x], "scalar_out")
    data = np.random.default_rng(11).uniform(-3, 3, (2, 3)).astype(np.float32)
    scalar, _ = compiled_equals_reference(oracle.save(model, tmp_path), [data])
    assert scalar.shape == () and scalar == np.float32(-2.75)


def test_scalar_constant_operand_of_elementwise_ops(tmp_path):
    """A 0-d constant broadcast against a [2, 5] tensor and against a 0-d Parameter, on the
    numba loop-IR executor and through ``lpjit.compile`` (LLVM)."""
    rng = np.random.default_rng(12)
    x = opset1.parameter([2, 5], np.float32, name="x")
    s = opset1.parameter([], np.float32, name="s")
    c = opset1.constant(np.float32(0.625), name="c")
    outputs = [opset1.multiply(x, c, name="scaled"), opset1.subtract(c, s, name="minus"),
               opset1.add(opset1.multiply(s, c), x, name="both")]
    xml = oracle.save(ov.Model(outputs, [x, s], "scalar_operand"), tmp_path)
    inputs = [rng.uniform(-3, 3, (2, 5)).astype(np.float32), np.float32(rng.uniform(1, 2))]
    expected = compiled_equals_reference(xml, [np.asarray(a) for a in inputs])
    program = lower_graph_to_loops(lpjit.read_ir(xml), LoweringOptions())
    for got, want in zip(run_program(program, inputs, numba_compiler), expected):
        np.testing.assert_array_equal(got, want)


def test_0d_parameter_returned_and_computed(tmp_path):
    """A 0-d Parameter returned as is (a copy kernel) and squared."""
    s = opset1.parameter([], np.int32, name="s")
    model = ov.Model([opset1.result(s), opset1.multiply(s, s, name="square")], [s], "p0d")
    value = np.asarray(np.random.default_rng(13).integers(-1000, 1000), np.int32)
    same, square = compiled_equals_reference(oracle.save(model, tmp_path), [value])
    assert same.shape == () and square == value * value


# -- 2. window attributes: limits, and lowerings sized by the tensors --------------------------

K24 = 1 << 24


def loop_iterations(stmt: Stmt) -> int:
    """Iterations of every loop body of ``stmt`` if no ``If`` were ever false."""
    own = stmt.extent if isinstance(stmt, For) else 1
    inner = sum(loop_iterations(c) for c in children(stmt) if isinstance(c, Stmt))
    return own * max(inner, 1)


def program_iterations(model: lpjit.CompiledModel) -> int:
    return sum(loop_iterations(step.kernel.body) for step in model.program.steps)


def window_model(tmp_path: Path, kind: str) -> tuple[str, bytes]:
    """x[1, 3, 5, 5] through a Convolution (strides 10, pads 1), a MaxPool-8 (kernel 2,
    explicit pads 1) or an Interpolate-11 (pads 1), saved by OpenVINO."""
    x = opset1.parameter([1, 3, 5, 5], np.float32, name="x")
    if kind == "conv":
        w = np.random.default_rng(21).standard_normal((4, 3, 3, 3)).astype(np.float32)
        y = opset1.convolution(x, opset1.constant(w), [10, 10], [1, 1], [1, 1], [1, 1],
                               name="conv")
    elif kind == "pool":
        y = opset8.max_pool(x, [1, 1], [1, 1], [1, 1], [1, 1], [2, 2], name="mp").output(0)
    else:
        y = opset11.interpolate(x, opset1.constant(np.float32([2.0, 2.0])), "nearest",
                                "scales", axes=opset1.constant(np.int64([2, 3])),
                                pads_begin=[0, 0, 1, 1], pads_end=[0, 0, 1, 1], name="resize")
    xml = oracle.save(ov.Model([y], [x], kind), tmp_path)
    return xml.read_text(), xml.with_suffix(".bin").read_bytes()


@pytest.mark.parametrize("kind, old, new, message", [
    ("conv", 'strides="10, 10"', 'strides="10, 9223372036854775807"',
     "Convolution 'conv' (layer 2): strides=(10, 9223372036854775807) is out of range"),
    ("conv", 'dilations="1, 1"', 'dilations="16777217, 1"',
     "Convolution 'conv' (layer 2): dilations=(16777217, 1) is out of range"),
    ("conv", 'pads_begin="1, 1"', 'pads_begin="1, 16777217"',
     "Convolution 'conv' (layer 2): pads_begin=(1, 16777217) is out of range"),
    ("pool", 'kernel="2, 2"', 'kernel="4294967296, 2"',
     "MaxPool 'mp' (layer 1): kernel=(4294967296, 2) is out of range"),
    ("pool", 'pads_end="1, 1"', 'pads_end="16777217, 1"',
     "MaxPool 'mp' (layer 1): pads_end=(16777217, 1) is out of range"),
    ("pool", 'auto_pad="explicit"',
     'auto_pad="same_upper" dilations="1, 4" kernel="2, 16777216"',
     ("MaxPool 'mp' (layer 1): pads_begin=(0, 33554430) (from auto_pad=same_upper) is out "
      "of range")),
    ("interpolate", 'pads_end="0, 0, 1, 1"', 'pads_end="0, 0, 1, 16777217"',
     "Interpolate 'resize' (layer 3): pads_end=(0, 0, 1, 16777217) is out of range"),
])
def test_window_attribute_past_2_24_is_a_bad_attribute(tmp_path, kind, old, new, message):
    """Was: a compiler hang (conv strides 2^63 - 1: a Python loop over every phase of the
    stride) and a minutes-long run (a 2^32-wide MaxPool window looping over every tap)."""
    text, weights = window_model(tmp_path, kind)
    if "auto_pad" in old:
        text = edit(edit(text, ' kernel="2, 2"', ""), ' dilations="1, 1"', "")
    with pytest.raises(BadAttributeError, match=re.escape(
            f"{message}; lpjit supports values of at most 16777216 (2^24)")):
        lpjit.read_ir(edit(text, old, new), weights)


def test_attributes_at_the_limit_read(tmp_path):
    """2^24 itself is accepted everywhere."""
    for kind, old, new in [("conv", 'strides="10, 10"', 'strides="16777216, 16777216"'),
                           ("pool", 'pads_end="1, 1"', 'pads_end="16777216, 1"'),
                           ("interpolate", 'pads_end="0, 0, 1, 1"',
                            'pads_end="0, 0, 1, 16777216"')]:
        text, weights = window_model(tmp_path / kind, kind)
        graph = lpjit.read_ir(edit(text, old, new), weights)
        assert graph.results[0].inputs[0].shape[:2] == (1, 3 if kind != "conv" else 4)


def quantized_conv_graph(strides, pads_begin, pads_end, shape, kernel, groups: int,
                         seed: int) -> lpjit.Graph:
    """FakeQuantize(x) -> (Group)Convolution with FakeQuantized weights: integer mode
    lowers it to the integer kernels."""
    rng = np.random.default_rng(seed)
    x = lg.parameter(shape)
    channels = shape[1]
    w_shape = (channels, 1, 1, *kernel) if groups > 1 else (4, channels, *kernel)
    weights = lg.fq_weights(rng.standard_normal(w_shape).astype(np.float32))
    cls = nn.GroupConvolution if groups > 1 else nn.Convolution
    y = cls(origin=lg.origin("conv", cls.__name__), inputs=(lg.fake_quantize(x.output, -3, 3),
                                                            weights),
            strides=strides, pads_begin=pads_begin, pads_end=pads_end, dilations=(1, 1))
    return lg.graph([x], y.output)


def float_conv_graph(strides, pads_begin, pads_end, shape, kernel, groups: int,
                     seed: int) -> lpjit.Graph:
    rng = np.random.default_rng(seed)
    x = lg.parameter(shape)
    channels = shape[1]
    w_shape = (channels, 1, 1, *kernel) if groups > 1 else (4, channels, *kernel)
    cls = nn.GroupConvolution if groups > 1 else nn.Convolution
    y = cls(origin=lg.origin("conv", cls.__name__),
            inputs=(x.output, lg.f32(rng.standard_normal(w_shape))),
            strides=strides, pads_begin=pads_begin, pads_end=pads_end, dilations=(1, 1))
    return lg.graph([x], y.output)


@pytest.mark.parametrize("make", [float_conv_graph, quantized_conv_graph])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("strides, pads_begin, pads_end, shape, kernel", [
    ((K24, K24), (1, 1), (1, 1), (1, 3, 5, 5), (3, 3)),          # one window
    ((1, 1000), (0, 0), (0, 3000), (1, 3, 5, 5), (3, 3)),       # 4 columns, 1000 phases
    ((500, 500), (1000, 1000), (1000, 1000), (1, 3, 5, 5), (3, 3)),
    ((1, 1000), (0, 0), (0, 0), (1, 3, 2, 3000), (1, 3)),       # dense copy past 512 bytes
])
def test_conv_with_huge_strides_compiles_to_work_of_the_tensor_sizes(
        make, groups, strides, pads_begin, pads_end, shape, kernel):
    """Was: a hang in the padded copy (``for phase in range(stride)``, one copy per phase
    of the width stride).  An axis with one output uses stride 1; the copy fills only the
    phases the kernel taps read; loop iterations stay within the padded input's size."""
    graph = make(strides, pads_begin, pads_end, shape, kernel, groups, seed=22)
    data = np.random.default_rng(23).uniform(-3, 3, shape).astype(np.float32)
    with runner.time_limit(60):
        model = lpjit.compile(graph, threads=1)
    expected = reference.run(graph, [data])[0]
    np.testing.assert_allclose(model(data)[0], expected, rtol=1e-5, atol=1e-5)
    padded = math.prod(i + b + e for i, b, e in zip(shape[2:], pads_begin, pads_end))
    assert program_iterations(model) <= 4 * 3 * (padded + expected.size * 27)


def pool_graph(cls: type[nn.Pool], kernel: tuple[int, int], extra: dict) -> lpjit.Graph:
    x = lg.parameter((1, 3, 5, 5))
    pool = cls(origin=lg.origin("pool", "Pool"), inputs=(x.output,), kernel=kernel,
               strides=(1, 2), auto_pad="same_upper", **extra)
    return lg.graph([x], *pool.outputs)


@pytest.mark.parametrize("cls, kernel, extra", [
    (nn.MaxPoolV1, (K24, 2), {}),
    (nn.MaxPoolV8, (3, K24), {"dilations": (2, 1), "axis": 2}),
    (nn.AvgPoolV1, (4096, 3), {"exclude_pad": True}),
    (nn.AvgPoolV1, (4096, 3), {"exclude_pad": False}),
])
def test_pool_with_a_huge_window_loops_over_its_in_bounds_taps(cls, kernel, extra):
    """Was: minutes in a MaxPool with a 2^32-wide same_upper window (every output looped
    over every tap, all but a few in the padding).  Tap loops now cover the taps that lie
    inside the input for some output of the loop's range.  (The reference runs max pools
    with a 4097-wide window instead: every window still covers its whole input row, and the
    reference's cost grows with the window.)"""
    graph = pool_graph(cls, kernel, extra)
    data = np.random.default_rng(24).uniform(-3, 3, (1, 3, 5, 5)).astype(np.float32)
    model = lpjit.compile(graph, threads=1)
    assert program_iterations(model) <= 3 * 5 * 5 * 25 * 4
    small = pool_graph(cls, tuple(min(k, 4097) for k in kernel), extra)
    for actual, expected in zip(model(data), reference.run(small, [data])):
        np.testing.assert_allclose(actual, expected, rtol=1e-6)


# -- 3. constant folding within a size limit ---------------------------------------------------

def test_a_large_constant_broadcast_is_computed_at_run_time(tmp_path):
    """Was: fold_constants evaluated every Constant-only node, whatever its size (a Broadcast
    of a small Const to a huge shape allocated gigabytes while compiling).  A 32 MiB
    Broadcast is past the 16 MiB limit: it stays in the graph and its lowering computes it."""
    rng = np.random.default_rng(31)
    row = rng.standard_normal(4096).astype(np.float32)
    x = opset1.parameter([1, 4096], np.float32, name="x")
    wide = opset3.broadcast(opset1.constant(row), opset1.constant(np.int64([2048, 4096])),
                            name="wide")
    model = ov.Model([opset1.add(x, wide, name="sum")], [x], "broadcast")
    compiled = lpjit.compile(oracle.save(model, tmp_path), threads=1)
    assert "BroadcastV3" in [n.kind for n in compiled.graph.nodes]
    data = rng.uniform(-3, 3, (1, 4096)).astype(np.float32)
    np.testing.assert_array_equal(compiled(data)[0], np.broadcast_to(data + row, (2048, 4096)))


# -- 4. FakeQuantize with extreme ranges ------------------------------------------------------

F32_MAX = float(np.finfo(np.float32).max)
SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -3e-39, 1e30, -1e30, 3.4e38,
                    0.5, -0.5, 2.5], np.float32)


def fake_quantize_conv(ranges: tuple[float, float, float, float], weight_ranges=None,
                       seed: int = 41) -> lpjit.Graph:
    """FakeQuantize(x, *ranges) -> Convolution with FakeQuantized weights (``weight_ranges``:
    the weight FakeQuantize's four ranges instead of NNCF's symmetric ones)."""
    rng = np.random.default_rng(seed)
    x = lg.parameter((1, 3, 6, 6))
    il, ih, ol, oh = ranges
    activations = lg.fake_quantize(x.output, il, ih, 256, ol, oh)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    if weight_ranges is None:
        weights = lg.fq_weights(w)
    else:
        wl, wh, wol, woh = weight_ranges
        weights = lg.fake_quantize(lg.f32(w), wl, wh, 255, wol, woh, name="w/fq")
    return lg.graph([x], lg.conv(activations, weights))


@pytest.mark.parametrize("ranges, reason", [
    ((-3, 3, -3, 1e30), None),                                     # huge but exact steps
    ((-1e30, 1e30, -3, 3), None),
    ((-3, 3, -F32_MAX, F32_MAX), "output_high - output_low is inf"),
    ((-F32_MAX, F32_MAX, -3, 3), "input_high - input_low is inf"),
    ((np.nan, 3, -3, 3), "input_low has the value nan"),
    ((-3, np.nan, -3, 3), "input_high has the value nan"),
    ((-3, 3, np.nan, 3), "output_low has the value nan"),
    ((-3, 3, -3, np.inf), "output_high has the value inf"),
    ((-np.inf, 3, -3, 3), "input_low has the value -inf"),
    ((-3, 3, 2, 2), "output_high - output_low is 0"),
    ((-1e-39, 1e-39, -3, 3), "input_high - input_low is 2e-39"),
    ((-1e-37, 1e-37, -3, 3), "(levels - 1) / (input_high - input_low) is inf"),
    ((-3, 3, 0, 1e-36), "(output_high - output_low) / (levels - 1) is 3.92e-39"),
])
def test_integer_mode_decomposes_only_finite_nondegenerate_fake_quantize(ranges, reason):
    """Was: compiled output != reference in integer mode for output_high = 3e38 (the output
    step overflows), NaN ranges, an infinite bound.  Such a FakeQuantize now stays float with
    the reason recorded; the result then matches the reference as float code does."""
    graph = fake_quantize_conv(ranges)
    data = np.random.default_rng(42).uniform(-4, 4, (1, 3, 6, 6)).astype(np.float32)
    data.reshape(-1)[:4] = [1e30, -1e30, 1e-40, 0.0]
    expected = reference.run(graph, [data])
    for low_precision in (True, False):
        model = lpjit.compile(graph, threads=1, low_precision=low_precision)
        assert runner.disagreement(list(model(data)), expected) == ""
        if low_precision:
            why = model.precision_report().reason("fq")
    assert why == (None if reason is None else f"non-finite or degenerate range ({reason})")


@pytest.mark.parametrize("weight_ranges, reason", [
    ((-1, 1, np.nan, 1), "output_low has the value nan"),
    ((-1, 1, -1, np.inf), "output_high has the value inf"),
    ((-1, 1, -F32_MAX, F32_MAX), "output_high - output_low is inf"),
    ((-1, 1, -1e-37, 1e-37), "(output_high - output_low) / (levels - 1) is 7.87e-40"),
])
def test_weight_fake_quantize_with_degenerate_ranges_stays_float(weight_ranges, reason):
    """The same rule for weights: their scale is the output step."""
    graph = fake_quantize_conv((-3, 3, -3, 3), weight_ranges)
    data = np.random.default_rng(43).uniform(-4, 4, (1, 3, 6, 6)).astype(np.float32)
    model = lpjit.compile(graph, threads=1)
    assert runner.disagreement(list(model(data)), reference.run(graph, [data])) == ""
    report = model.precision_report()
    assert report.reason("w/fq") == f"non-finite or degenerate range ({reason})"
    assert report.integer_layers() == ()


def test_weight_fake_quantize_whose_zero_point_rounds_output_low_away_stays_float():
    """Was (fuzz seed 12, case 1827): a weight FakeQuantize with ranges [-0.7, 1e30]: the step
    (1e30 / 254) makes -output_low / step = 1.8e-28, 0 within the tolerance of a step, so
    the folded weights were (q - 0) * step = 0 where FakeQuantize gives output_low = -0.7
    at level 0.  Folding must keep output_low itself, not only the step grid."""
    graph = fake_quantize_conv((-3, 3, -3, 3), (-0.7, 1e30, -0.7, 1e30))
    data = np.random.default_rng(45).uniform(-4, 4, (1, 3, 6, 6)).astype(np.float32)
    model = lpjit.compile(graph, threads=1)
    assert runner.disagreement(list(model(data)), reference.run(graph, [data])) == ""
    assert model.precision_report().reason("w/fq") == (
        "weights have a zero point that misses output_low -0.7 (-output_low / step = "
        "1.78e-28 rounds to 0)")


@pytest.mark.parametrize("activation, weights, name, reason", [
    ((-1e30, 1, -1e30, 1), None, "fq",
     "non-finite or degenerate range (the top level computes as 0, not output_high 1)"),
    ((-3, 3, -3, 3), (-1e30, 0.7, -1e30, 0.7), "w/fq",
     "non-finite or degenerate range (the top level computes as 0, not output_high 0.7)"),
])
def test_fake_quantize_whose_top_level_cancels_stays_float(activation, weights, name, reason):
    """Was (fuzz seed 15, cases 1601 and 528): ranges [-1e30, 1]: FakeQuantize's top level
    is ``fl(fl(1 + 1e30) - 1e30) = 0``, where a level index stands for output_high = 1,
    and the integer output formula adds ``-1e30 * sum(w)`` back: off by ~1e22."""
    graph = fake_quantize_conv(activation, weights)
    data = np.random.default_rng(46).uniform(-4, 4, (1, 3, 6, 6)).astype(np.float32)
    model = lpjit.compile(graph, threads=1)
    assert runner.disagreement(list(model(data)), reference.run(graph, [data])) == ""
    assert model.precision_report().reason(name) == reason


def test_weight_fake_quantize_of_nan_weights_stays_float():
    """Was (fuzz seed 15, case 1604): a NaN weight folded to level 0 (output_low), where
    FakeQuantize keeps NaN, so the float model's outputs are NaN."""
    x = lg.parameter((1, 3, 6, 6))
    w = np.random.default_rng(47).standard_normal((4, 3, 3, 3)).astype(np.float32)
    w[1, 2, 0, 1] = np.nan
    graph = lg.graph([x], lg.conv(lg.fake_quantize(x.output, -3, 3),
                                  lg.fake_quantize(lg.f32(w), -2, 2, 255, name="w/fq")))
    data = np.random.default_rng(48).uniform(-4, 4, (1, 3, 6, 6)).astype(np.float32)
    model = lpjit.compile(graph, threads=1)
    result = model(data)[0]
    assert np.isnan(result[0, 1]).all() and not np.isnan(result[0, 0]).any()
    assert runner.disagreement([result], reference.run(graph, [data])) == ""
    assert model.precision_report().reason("w/fq") == (
        "the weights contain NaN (FakeQuantize keeps it; a level index cannot)")


@pytest.mark.parametrize("ranges", [
    (-3, 3, -3, 3), (np.nan, 3, -3, 3), (-3, np.nan, -3, 3), (np.nan, np.nan, -3, 3),
    (-3, 3, np.nan, 3), (-3, 3, -3, np.nan), (3, -3, -3, 3), (np.inf, -np.inf, -3, 3),
    (-1e30, 1e30, -1e30, 1e30), (-3e38, 3e38, -3e38, 3e38), (-1e-39, 1e-39, -1e-40, 1e-40),
    (0, 0, -3, 3), (-np.inf, np.inf, 0, 1), (-3, 3, 1e30, -1e30),
])
@pytest.mark.parametrize("low_precision", [True, False])
def test_fake_quantize_is_bit_exact_for_extreme_ranges_and_inputs(ranges, low_precision):
    """Was (NaN range bounds): the emitter took ``max(il, ih)`` as ``il > ih ? il : ih``,
    which drops a NaN ``il``; the reference's ``np.maximum`` keeps it, so no ``x`` is above
    the range.  Float FakeQuantize now equals the reference bit for bit on NaN, +-inf,
    +-0, subnormal and huge inputs, whatever the ranges."""
    x = lg.parameter((2, 13))
    graph = lg.graph([x], lg.fake_quantize(x.output, *ranges[:2], 256, *ranges[2:]))
    data = np.random.default_rng(44).uniform(-4, 4, (2, 13)).astype(np.float32)
    data[0] = SPECIAL
    expected = reference.run(graph, [data])[0]
    actual = lpjit.compile(graph, threads=1, low_precision=low_precision)(data)[0]
    np.testing.assert_array_equal(actual.view(np.uint32) & ~np.isnan(actual),
                                  expected.view(np.uint32) & ~np.isnan(expected))
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))


# -- 5. f16 decompression overflow: compared with the folded graph ----------------------------

def f16_decompression_case(tmp_path: Path, scale: float) -> mutations.Case:
    """x[2, 8] @ W^T with W = Convert(f32)(Convert(f16)(Const u8[4, 8]) * Const f16 scale):
    a u8 weight-decompression chain, the scale ``scale`` on its first row."""
    rng = np.random.default_rng(51)
    q = rng.integers(200, 256, (4, 8), dtype=np.uint8)
    scales = np.float16([[scale], [0.01], [0.02], [0.03]])
    weights = opset1.convert(opset1.multiply(opset1.convert(opset1.constant(q), "f16"),
                                             opset1.constant(scales)), "f32")
    x = opset1.parameter([2, 8], np.float32, name="x")
    y = opset1.matmul(x, weights, False, True, name="mm")
    xml = oracle.save(ov.Model([y], [x], "f16_chain"), tmp_path)
    return mutations.Case("f16_chain", xml.read_bytes(), xml.with_suffix(".bin").read_bytes(),
                          ())


def test_f16_decompression_overflow_is_checked_against_the_folded_graph(tmp_path):
    """Was: a compiler finding.  q * 400 passes 65504 (f16's largest) for q >= 164: the
    reference, rounding every f16 step, gives inf; compiled code (and OpenVINO's CPU
    plugin) decompresses in f32.  The harness now compares such a case with the reference of
    ``fold_constants(graph)``, which applies the same rule, and accepts it as that."""
    case = f16_decompression_case(tmp_path, 400.0)
    outcome = runner.run_case(case, input_seed=3, compile_model=True)
    assert str(outcome) == "compile: ok, as f32 decompression"
    assert outcome.detail.startswith("output 0 differs at 2 of 8 elements")
    graph = lpjit.read_ir(case.xml, case.weights)
    inputs = runner.random_inputs(graph, 3)
    compiled = list(lpjit.compile(graph, threads=1)(*inputs))
    assert np.all(np.isfinite(compiled[0]))
    assert not np.all(np.isfinite(reference.run(graph, inputs)[0]))   # inf * x: inf or nan
    assert runner.disagreement(compiled, reference.run(fold_constants(graph), inputs)) == ""


def test_a_chain_that_does_not_overflow_is_an_ordinary_ok(tmp_path):
    outcome = runner.run_case(f16_decompression_case(tmp_path, 0.04), input_seed=3,
                              compile_model=True)
    assert str(outcome) == "compile: ok"


def test_outputs_the_folded_graph_does_not_explain_are_a_mismatch(tmp_path):
    """Wrong outputs stay a mismatch, with or without a decompression chain."""
    case = f16_decompression_case(tmp_path, 400.0)
    graph = lpjit.read_ir(case.xml, case.weights)
    inputs = runner.random_inputs(graph, 4)
    expected = reference.run(graph, inputs)
    wrong = [np.asarray(lpjit.compile(graph, threads=1)(*inputs)[0]) + np.float32(1.0)]
    assert not runner.agrees_with_f32_decompression(graph, inputs, wrong, expected)
    x = lg.parameter((2, 3))
    plain = lg.graph([x], lg.relu(x.output))
    data = [np.random.default_rng(5).uniform(-1, 1, (2, 3)).astype(np.float32)]
    assert not runner.agrees_with_f32_decompression(plain, data, [data[0]],
                                                    reference.run(plain, data))


@pytest.mark.parametrize("result", ["mismatch", "VerificationError"])
def test_compiler_findings_fail_the_fuzz_property(monkeypatch, result):
    """The fuzz tests fail on compiler findings, not only on crashes."""
    case = mutations.Case("seed", b"", b"", ("step",))
    monkeypatch.setattr(driver.conftest, "TALLY", collections.Counter())  # not the session's
    monkeypatch.setattr(driver.mutations, "make_case", lambda *args, **kwargs: case)
    monkeypatch.setattr(driver.runner, "run_case",
                        lambda *args, **kwargs: runner.Outcome("compile", result, "why"))

    @settings(max_examples=1, database=None)
    @given(data=st.data())
    def property_(data):
        driver.check([], None, data, (), compile_model=True)

    with pytest.raises(AssertionError, match=re.escape(
            f"seed seed: step: compile: {result}: why")):
        property_()


# -- further findings of the fuzz runs ---------------------------------------------------------

def test_reduce_l2_of_values_past_the_f32_square_root_of_max(tmp_path):
    """Was (fuzz seed 12, case 26): ReduceL2 of values near 1.4e19 gave inf (an f32 sum of
    squares overflows past 1.8e19) where the reference, accumulating in f64, gives 2.7e19.
    The compiled squares and sum are f64 too now, rounded once, as the reference's."""
    x = opset1.parameter([2, 3, 5], np.float32, name="x")
    norm = opset4.reduce_l2(x, opset1.constant(np.int64([2])), True, name="l2")
    xml = oracle.save(ov.Model([norm], [x], "l2"), tmp_path)
    data = np.random.default_rng(61).uniform(-3, 3, (2, 3, 5)).astype(np.float32)
    (result,) = compiled_equals_reference(xml, [data * np.float32(1e19)])
    assert np.all(np.isfinite(result))
    compiled_equals_reference(xml, [data])


def test_reduce_l2_vector_path_accumulates_in_f64(tmp_path):
    """A 67-long reduced axis: f64 vector accumulators, a scalar tail, one rounding."""
    x = opset1.parameter([3, 67], np.float32, name="x")
    norm = opset4.reduce_l2(x, opset1.constant(np.int64([1])), False, name="l2")
    graph = lpjit.read_ir(oracle.save(ov.Model([norm], [x], "l2"), tmp_path))
    data = np.random.default_rng(62).uniform(-3, 3, (3, 67)).astype(np.float32)
    model = lpjit.compile(graph, threads=1)
    for scale in (1.0, 1e19, 1e-20):
        scaled = data * np.float32(scale)
        np.testing.assert_allclose(model(scaled)[0], reference.run(graph, [scaled])[0],
                                   rtol=2e-7)


def test_matmul_of_a_vector_with_compressed_weights_stays_float():
    """Was (fuzz seed 13, case 3376): a MatMul whose activation is 1-D (legal: it reads as
    [1, K]) with u8-compressed weights became a CompressedMatMul, whose type inference
    needs rank >= 2: a ShapeError at compile time.  It stays float, with the reason."""
    rng = np.random.default_rng(63)
    x = lg.parameter((8,))
    weights = lg.compressed_weights(rng.integers(0, 256, (5, 8), dtype=np.uint8),
                                    lpjit.dtypes.u8, rng.uniform(0.01, 0.1, (5, 1)),
                                    zero_point=np.full((5, 1), 128, np.uint8))
    graph = lg.graph([x], lg.matmul(x.output, weights, name="fc"))
    data = rng.uniform(-3, 3, (8,)).astype(np.float32)
    model = lpjit.compile(graph, threads=1)
    assert runner.disagreement(list(model(data)), reference.run(graph, [data])) == ""
    assert model.precision_report().reason("w/q") == (
        f"input 0 of {graph.results[0].inputs[0].node.origin.describe()} is 1-D")
