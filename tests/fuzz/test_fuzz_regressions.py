"""Regression tests for the crashes the fuzzer found: each once raised a non-lpjit exception.

Each test reproduces the fuzz case in its simplest form (an IR saved by OpenVINO, then edited)
and pins the LpjitError that replaces the crash.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import openvino as ov
import oracle
import pytest
from openvino import opset1, opset8, opset11

import lpjit
from fuzz import runner
from lpjit import reference
from lpjit.errors import BadAttributeError, IRReadError, ShapeError

pytestmark = pytest.mark.oracle


def saved(model: ov.Model, tmp_path: Path) -> tuple[str, bytes]:
    xml = oracle.save(model, tmp_path)
    return xml.read_text(), xml.with_suffix(".bin").read_bytes()


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


@pytest.fixture
def add_const(tmp_path: Path) -> tuple[str, bytes]:
    """x[2, 3] + c[2, 3] with c a seeded random f32 Const."""
    x = opset1.parameter([2, 3], np.float32, name="x")
    c = opset1.constant(np.random.default_rng(3).standard_normal((2, 3)).astype(np.float32),
                        name="c")
    return saved(ov.Model([opset1.add(x, c, name="add")], [x], "add_const"), tmp_path)


def test_constant_of_rank_65_is_a_shape_error(add_const):
    """Was: numpy ValueError 'maximum supported dimension for an ndarray is currently 64'."""
    text, weights = add_const
    with pytest.raises(ShapeError, match=re.escape(
            "Const 'c' (layer 1): a tensor of rank 65 is not supported; lpjit supports at most "
            "64 dimensions")):
        lpjit.read_ir(edit(text, 'shape="2, 3"', 'shape="' + "1, " * 64 + '1"'), weights)


def test_parameter_of_rank_65_is_a_shape_error(add_const):
    """Was: numpy ValueError in shape inference (np.broadcast_shapes) of the Add."""
    text, weights = add_const
    with pytest.raises(ShapeError, match=re.escape(
            "Parameter 'x' (layer 0): a tensor of rank 65 is not supported; lpjit supports at "
            "most 64 dimensions")):
        lpjit.read_ir(edit(text, 'shape="2,3"', 'shape="' + "1," * 64 + '1"'), weights)


def test_parameter_too_large_to_address_is_a_shape_error(add_const):
    """A size that overflows int64 byte offsets (TensorType.numel used to wrap around)."""
    text, weights = add_const
    with pytest.raises(ShapeError, match=re.escape(
            "Parameter 'x' (layer 0): a f32 tensor of shape [4294967296, 4294967296] would "
            "take 73786976294838206464 bytes; lpjit supports tensors of at most 2^63 - 1 "
            "bytes")):
        lpjit.read_ir(edit(text, 'shape="2,3"', 'shape="4294967296,4294967296"'), weights)


def test_large_but_addressable_parameter_reads_without_allocating(add_const):
    """2^32 f32 elements (16 GiB) is a valid shape: reading allocates nothing for it."""
    text, weights = add_const
    text = edit(edit(text, 'shape="2,3"', 'shape="65536,65536"'), 'shape="2, 3"', 'shape="1, 1"')
    text = edit(text, 'size="24"', 'size="4"')
    graph = lpjit.read_ir(text, weights)
    assert graph.results[0].inputs[0].shape == (65536, 65536)


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_interpolate_non_finite_scale_is_a_shape_error(tmp_path, value):
    """Was: OverflowError 'cannot convert float infinity to integer' in scaled_dim."""
    x = opset1.parameter([1, 2, 3, 4], np.float32, name="x")
    scales = opset1.constant(np.float32([1.0, 1.5]), name="scales")
    axes = opset1.constant(np.int64([2, 3]), name="axes")
    y = opset11.interpolate(x, scales, "nearest", "scales", axes=axes, name="resize")
    text, weights = saved(ov.Model([y], [x], "resize"), tmp_path)
    patched = weights.replace(np.float32([1.0, 1.5]).tobytes(),
                              np.float32([1.0, value]).tobytes())
    assert patched != weights
    with pytest.raises(ShapeError, match=re.escape(
            f"Interpolate 'resize' (layer 3): scales [1.0, {float(value)}] has the non-finite "
            f"value {float(value)} on axis 3")):
        lpjit.read_ir(text, patched)


@pytest.mark.parametrize("encoding, reason", [
    ("ut-8", "unknown encoding: ut-8"),
    ("utf-32", "multi-byte encodings are not supported"),
    ("rot13", "'rot13' is not a text encoding; use codecs.decode() to handle arbitrary codecs"),
    ("undefined", "decoding with 'undefined' codec failed (UnicodeError: undefined encoding)"),
])
def test_xml_in_an_encoding_expat_cannot_use_is_an_ir_read_error(add_const, encoding, reason):
    """Was: LookupError / ValueError / UnicodeError out of the XML parser."""
    text, weights = add_const
    text = edit(text, '<?xml version="1.0"?>', f'<?xml version="1.0" encoding="{encoding}"?>')
    with pytest.raises(IRReadError, match=re.escape(
            f"the XML cannot be decoded ({reason}); IR files are UTF-8")):
        lpjit.read_ir(text, weights)


@pytest.fixture
def fake_quantize_ir(tmp_path: Path) -> tuple[str, bytes]:
    """FakeQuantize(x, -1, 1, -1, 1, levels=256) on x[2, 3]."""
    x = opset1.parameter([2, 3], np.float32, name="x")
    low, high = opset1.constant(np.float32(-1)), opset1.constant(np.float32(1))
    fq = opset1.fake_quantize(x, low, high, low, high, 256, name="fq")
    return saved(ov.Model([fq], [x], "fq"), tmp_path)


@pytest.mark.parametrize("levels", ["18446744073709551616", "1" * 400])
def test_fake_quantize_levels_past_size_t_is_a_bad_attribute(fake_quantize_ir, levels):
    """Was: OverflowError 'int too large to convert to float' in the reference."""
    text, weights = fake_quantize_ir
    with pytest.raises(BadAttributeError, match=re.escape(
            f"FakeQuantize 'fq' (layer 3): levels={levels} is invalid; expected levels <= "
            "18446744073709551615 (a size_t)")):
        lpjit.read_ir(edit(text, 'levels="256"', f'levels="{levels}"'), weights)


def test_fake_quantize_levels_of_size_t_max_runs(fake_quantize_ir):
    """The largest valid levels quantizes so finely that the output is the clipped input."""
    text, weights = fake_quantize_ir
    graph = lpjit.read_ir(edit(text, 'levels="256"', 'levels="18446744073709551615"'), weights)
    data = np.random.default_rng(5).uniform(-2, 2, (2, 3)).astype(np.float32)
    np.testing.assert_allclose(reference.run(graph, [data])[0], np.clip(data, -1, 1), rtol=1e-6)


def test_pool_of_a_constant_with_a_huge_window_is_not_folded_while_reading(tmp_path):
    """Was: MemoryError (96 GiB) while reading an 8 kB IR: shape-subgraph folding ran the
    reference MaxPool-1 of an i32 Const, which pads the input by the 2^32-wide same_upper
    window.  Pools never fold now, and a kernel past 2^24 is refused (``WINDOW_LIMIT``); a
    2^24-wide window reads at once."""
    c = opset1.constant(np.arange(25, dtype=np.int32).reshape(1, 1, 5, 5), name="c")
    pool = opset1.max_pool(c, [1, 1], [0, 0], [0, 0], [2, 2], "floor", "same_upper", name="mp")
    text, weights = saved(ov.Model([pool], [], "pool"), tmp_path)
    with runner.address_space_limit(1 << 30):
        with pytest.raises(BadAttributeError, match=re.escape(
                "MaxPool 'mp' (layer 1): kernel=(4294967296, 2) is out of range; lpjit "
                "supports values of at most 16777216 (2^24)")):
            lpjit.read_ir(edit(text, 'kernel="2, 2"', 'kernel="4294967296, 2"'), weights)
        graph = lpjit.read_ir(edit(text, 'kernel="2, 2"', 'kernel="16777216, 2"'), weights)
    assert [n.kind for n in graph.nodes] == ["Constant", "MaxPoolV1", "Result"]
    assert graph.nodes[1].pads_begin == (2 ** 23 - 1, 0)


@pytest.mark.parametrize("stride", ["9223372036854775808", "18446744073709551616"])
def test_convolution_with_a_stride_past_int64_is_a_bad_attribute(tmp_path, stride):
    """Was: OverflowError 'Python int too large to convert to C long' from the reference's
    strided window view; then (strides past 2^24 accepted) a compiler hang."""
    x = opset1.parameter([1, 3, 5, 5], np.float32, name="x")
    w = opset1.constant(np.random.default_rng(9).standard_normal((4, 3, 3, 3)).astype(np.float32))
    conv = opset1.convolution(x, w, [10, 10], [1, 1], [1, 1], [1, 1], name="conv")
    text, weights = saved(ov.Model([conv], [x], "conv"), tmp_path)
    with pytest.raises(BadAttributeError, match=re.escape(
            f"Convolution 'conv' (layer 2): strides=({stride}, {stride}) is out of range")):
        lpjit.read_ir(edit(text, 'strides="10, 10"', f'strides="{stride}, {stride}"'), weights)


def test_convolution_with_a_stride_at_the_limit_runs_its_single_window(tmp_path):
    """A stride larger than the input gives one window, as stride 10 does."""
    rng = np.random.default_rng(9)
    x = opset1.parameter([1, 3, 5, 5], np.float32, name="x")
    w = opset1.constant(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    conv = opset1.convolution(x, w, [10, 10], [1, 1], [1, 1], [1, 1], name="conv")
    text, weights = saved(ov.Model([conv], [x], "conv"), tmp_path)
    data = rng.uniform(-2, 2, (1, 3, 5, 5)).astype(np.float32)
    expected = reference.run(lpjit.read_ir(text, weights), [data])[0]
    huge = lpjit.read_ir(edit(text, 'strides="10, 10"', 'strides="16777216, 16777216"'),
                         weights)
    np.testing.assert_array_equal(reference.run(huge, [data])[0], expected)


def test_max_pool_8_with_huge_stride_and_dilation_runs(tmp_path):
    """The indices output of MaxPool-8 with a stride and a (kernel-1) dilation of 2^24."""
    x = opset1.parameter([1, 2, 4, 4], np.float32, name="x")
    pool = opset8.max_pool(x, [10, 10], [1, 1], [0, 0], [0, 0], [2, 1], name="mp")
    text, weights = saved(ov.Model(pool.outputs(), [x], "pool"), tmp_path)
    data = np.random.default_rng(4).uniform(-2, 2, (1, 2, 4, 4)).astype(np.float32)
    expected = reference.run(lpjit.read_ir(text, weights), [data])
    text = edit(text, 'strides="10, 10"', 'strides="16777216, 10"')
    text = edit(text, 'dilations="1, 1"', 'dilations="1, 16777216"')
    for actual, wanted in zip(reference.run(lpjit.read_ir(text, weights), [data]), expected):
        np.testing.assert_array_equal(actual, wanted)
