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
from openvino import opset1, opset11

import lpjit
from lpjit.errors import ShapeError

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
