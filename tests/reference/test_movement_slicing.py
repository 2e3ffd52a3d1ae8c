"""StridedSlice-1 and Slice-8: inference, reference results against numpy slicing, masks,
OpenVINO's clamping, and errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpjit import dtypes
from lpjit.attributes import Attributes
from lpjit.errors import BadAttributeError, ShapeError
from lpjit.graph import Constant, Node, Origin, Parameter, Value
from lpjit.ops import slicing as ops
from lpjit.ops.registry import IR_NAMES, lookup
from lpjit.reference import evaluate_node

RNG = np.random.default_rng(13)
X = RNG.uniform(-4, 4, (4, 5, 6)).astype(np.float32)


def origin(ir_type: str, version: str = "opset1") -> Origin:
    return Origin("3", "sl", ir_type, version)


def parameter(shape: tuple[int, ...], dtype: dtypes.DType = dtypes.f32) -> Value:
    return Parameter(origin=origin("Parameter"), inputs=(), element_type=dtype,
                     shape=shape).output


def constant(values: object, dtype: type = np.int64) -> Value:
    return Constant.of(np.array(values, dtype), origin("Const")).output


def strided_slice(x: np.ndarray, begin, end, strides=None, **masks) -> Node:
    masks.setdefault("begin_mask", ())
    masks.setdefault("end_mask", ())
    inputs = [parameter(x.shape), constant(begin), constant(end)]
    if strides is not None:
        inputs.append(constant(strides))
    return ops.StridedSlice(origin=origin("StridedSlice"), inputs=inputs, **masks)


def slice8(x: np.ndarray, start, stop, step, axes=None) -> Node:
    inputs = [parameter(x.shape), constant(start), constant(stop), constant(step)]
    if axes is not None:
        inputs.append(constant(axes))
    return ops.Slice(origin=origin("Slice", "opset8"), inputs=inputs)


def run(node: Node, x: np.ndarray) -> np.ndarray:
    (out,) = evaluate_node(node, [x] + [v.node.data for v in node.inputs[1:]])
    return out


def check(node: Node, x: np.ndarray, expected: np.ndarray) -> None:
    """Inferred shape and reference result both equal ``expected``."""
    assert node.output_types[0].shape == expected.shape
    np.testing.assert_array_equal(run(node, x), expected)


# --- StridedSlice ----------------------------------------------------------------------------


@pytest.mark.parametrize("begin, end, strides, index", [
    ([1, 0], [3, 5], [1, 2], np.s_[1:3, 0:5:2]),
    ([-3, -1], [-1, -5], [1, -1], np.s_[-3:-1, -1:-5:-1]),
    ([3], [0], [-1], np.s_[3:0:-1]),
    ([0, 0, 5], [4, 5, 0], [2, 3, -2], np.s_[0:4:2, 0:5:3, 5:0:-2]),
    ([10, -10], [20, 10], [1, 1], np.s_[10:20, -10:10]),        # clamped like numpy
    ([1], [2], None, np.s_[1:2]),                                 # strides default to 1
    ([2, 1], [2, 4], [1, 1], np.s_[2:2, 1:4]),                    # an empty axis
])
def test_strided_slice_matches_numpy(begin, end, strides, index):
    """Without masks, begin:end:stride per leading axis is numpy basic slicing."""
    check(strided_slice(X, begin, end, strides), X, X[index])


@pytest.mark.parametrize("begin_mask, end_mask, index", [
    ([1, 0], [0, 1], np.s_[:3, 2:]),
    ([0, 1], [1, 0], np.s_[1:, :4]),
    ([1, 1], [1, 1], np.s_[:, :]),
    ([], [], np.s_[1:3, 2:4]),                                     # empty = all zeros
    ([1], [], np.s_[:3, 2:4]),                                     # short masks pad with 0
])
def test_strided_slice_begin_end_masks_ignore_the_values(begin_mask, end_mask, index):
    node = strided_slice(X, [1, 2], [3, 4], [1, 1], begin_mask=begin_mask, end_mask=end_mask)
    check(node, X, X[index])


def test_strided_slice_masks_with_negative_strides():
    """A masked begin/end of a reverse slice is the far end: [::-1] and [::-2]."""
    node = strided_slice(X, [0, 0], [0, 0], [-1, -2], begin_mask=[1, 1], end_mask=[1, 1])
    check(node, X, X[::-1, ::-2])


def test_strided_slice_new_axis_and_shrink():
    node = strided_slice(X, [0, 2, 1], [0, 3, 5], [1, 1, 2], begin_mask=[0, 0, 0],
                         end_mask=[0, 0, 0], new_axis_mask=[1, 0, 0],
                         shrink_axis_mask=[0, 1, 0])
    check(node, X, X[None, 2, 1:5:2])
    node = strided_slice(X, [-1], [0], [1], shrink_axis_mask=[1])
    check(node, X, X[-1])


def test_strided_slice_shrink_with_begin_mask_takes_element_zero():
    """OpenVINO's CPU plugin reads a masked begin as 0 for a shrunk axis, any stride."""
    for stride in (1, -1):
        node = strided_slice(X, [3], [4], [stride], begin_mask=[1], shrink_axis_mask=[1])
        check(node, X, X[0])


@pytest.mark.parametrize("begin, end, new_axis, shrink, ellipsis, index", [
    ([0, 1], [0, 3], [], [], [1, 0], np.s_[..., 1:3]),
    ([1, 0], [3, 0], [], [], [0, 1], np.s_[1:3, ...]),
    ([0, 0, 1], [0, 0, 3], [0, 1, 0], [], [1, 0, 0], np.s_[..., None, 1:3]),
    ([0, 0, 2], [0, 0, 3], [1, 0, 0], [0, 0, 1], [0, 1, 0], np.s_[None, ..., 2]),
    ([1, 0, 0, 2], [2, 0, 0, 3], [], [], [0, 1, 0, 0], None),     # ellipsis of zero axes
])
def test_strided_slice_ellipsis(begin, end, new_axis, shrink, ellipsis, index):
    """The ellipsis stands for the input axes the other (non-new) entries leave over."""
    node = strided_slice(X, begin, end, [1] * len(begin), begin_mask=[0] * len(begin),
                         end_mask=[0] * len(begin), new_axis_mask=new_axis,
                         shrink_axis_mask=shrink, ellipsis_mask=ellipsis)
    if index is None:      # [1:2, ..., 0:0, 2:3]: the entry after ... is an ordinary slice
        expected = X[1:2, 0:0, 2:3]
    else:
        expected = X[index]
    check(node, X, expected)


def test_strided_slice_reverse_start_below_minus_dim_selects_element_zero():
    """OpenVINO clamps a reverse start to [0, dim-1] (Python would select nothing)."""
    x = np.arange(4, dtype=np.float32)
    check(strided_slice(x, [-10], [-20], [-1]), x, np.array([0], np.float32))
    check(strided_slice(x, [10], [0], [-1]), x, np.array([3, 2, 1], np.float32))


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_strided_slice_agrees_with_python_slices(draw):
    """Random begin/end in [-dim, dim], strides in ±1..3 and masks: numpy basic slicing."""
    begin, end, strides, bmask, emask, index = [], [], [], [], [], []
    for dim in X.shape:
        b = draw.draw(st.integers(-dim, dim))
        e = draw.draw(st.integers(-dim, dim))
        s = draw.draw(st.sampled_from([-3, -2, -1, 1, 2, 3]))
        bm, em = draw.draw(st.booleans()), draw.draw(st.booleans())
        begin.append(b), end.append(e), strides.append(s), bmask.append(int(bm))
        emask.append(int(em))
        index.append(slice(None if bm else b, None if em else e, s))
    node = strided_slice(X, begin, end, strides, begin_mask=bmask, end_mask=emask)
    check(node, X, X[tuple(index)])


@pytest.mark.parametrize("kwargs, message", [
    ({"begin": [0], "end": [1], "strides": [0]}, r"stride 0 is 0; expected a non-zero stride"),
    ({"begin": [0, 0], "end": [1], "strides": [1, 1]},
     r"begin, end and strides have 2, 1 and 2 values; expected the same number"),
    ({"begin": [0] * 4, "end": [1] * 4, "strides": [1] * 4},
     r"4 begin/end entries \(0 new axes\) address more axes than the input shape \(4, 5, 6\)"),
    ({"begin": [4], "end": [5], "strides": [1], "shrink_axis_mask": [1]},
     r"shrink_axis_mask entry 0: begin 4 is out of range for axis 0 of size 4"),
    ({"begin": [0, 0], "end": [1, 1], "strides": [1, 1], "ellipsis_mask": [1, 1]},
     r"ellipsis_mask \(1, 1\) sets 2 entries; at most one is allowed"),
])
def test_strided_slice_errors(kwargs, message):
    with pytest.raises(ShapeError, match=r"StridedSlice 'sl' \(layer 3\): " + message):
        strided_slice(X, **kwargs)


def test_strided_slice_needs_constant_begin():
    node_inputs = [parameter(X.shape), parameter((1,), dtypes.i64), constant([1])]
    with pytest.raises(ShapeError, match=r"input 1 \(begin\) must be a constant; pass shapes= "
                                         r"to resolve dynamic inputs"):
        ops.StridedSlice(origin=origin("StridedSlice"), inputs=node_inputs, begin_mask=(),
                         end_mask=())


def test_strided_slice_attributes_round_trip():
    """Masks read from "0, 1" lists (empty = none) and are written back the same way."""
    raw = {"begin_mask": "0, 1", "end_mask": "1, 0", "new_axis_mask": "",
           "shrink_axis_mask": "", "ellipsis_mask": ""}
    fields = ops.StridedSlice.from_ir(Attributes(raw, origin("StridedSlice")))
    assert fields == {"begin_mask": (0, 1), "end_mask": (1, 0), "new_axis_mask": (),
                      "shrink_axis_mask": (), "ellipsis_mask": ()}
    node = strided_slice(X, [0, 1], [2, 3], [1, 1], **fields)
    assert node.to_ir() == raw
    minimal = ops.StridedSlice.from_ir(Attributes({"begin_mask": "1", "end_mask": "0"},
                                                  origin("StridedSlice")))
    assert minimal["ellipsis_mask"] == ()
    with pytest.raises(BadAttributeError, match=r"StridedSlice 'sl' \(layer 3\): attribute "
                                                r"begin_mask=\"0, x\" is invalid"):
        ops.StridedSlice.from_ir(Attributes({"begin_mask": "0, x", "end_mask": ""},
                                            origin("StridedSlice")))


@pytest.mark.parametrize("dtype", [dtypes.f16, dtypes.i64, dtypes.u8, dtypes.boolean])
def test_strided_slice_any_element_type_and_i32_indices(dtype):
    x = RNG.integers(0, 2, (3, 4)).astype(dtype.numpy)
    node = ops.StridedSlice(origin=origin("StridedSlice"),
                            inputs=[parameter(x.shape, dtype), constant([1, -1], np.int32),
                                    constant([3, 0], np.int32), constant([1, -2], np.int32)],
                            begin_mask=(), end_mask=())
    out = run(node, x)
    assert out.dtype == dtype.numpy
    np.testing.assert_array_equal(out, x[1:3, -1:0:-2])


# --- Slice-8 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("start, stop, step, axes, index", [
    ([1], [3], [1], None, np.s_[1:3]),
    ([0, 4], [4, 0], [2, -1], None, np.s_[0:4:2, 4:0:-1]),
    ([5, -1], [0, -10], [-2, -1], [-1, 1], np.s_[:, -1:-10:-1, 5:0:-2]),
    ([1], [100], [1], [2], np.s_[:, :, 1:100]),
    ([-100], [100], [3], [1], np.s_[:, -100:100:3]),
])
def test_slice_matches_numpy(start, stop, step, axes, index):
    check(slice8(X, start, stop, step, axes), X, X[index])


def test_slice_reverse_start_below_minus_dim_selects_element_zero():
    x = np.arange(4, dtype=np.int32)
    check(slice8(x, [-10], [-20], [-1]), x, np.array([0], np.int32))


@pytest.mark.parametrize("start, stop, step, axes, message", [
    ([0], [1], [0], None, r"step for axis 0 is 0; expected a non-zero step"),
    ([0], [1, 2], [1], None, r"start, stop, step and axes have 1, 2, 1 and 1 values"),
    ([0, 0], [1, 1], [1, 1], [1, -2], r"axes \(1, -2\) repeat an axis"),
    ([0], [1], [1], [3], r"axes 3 is out of range for rank 3"),
])
def test_slice_errors(start, stop, step, axes, message):
    with pytest.raises(ShapeError, match=r"Slice 'sl' \(layer 3\): " + message):
        slice8(X, start, stop, step, axes)


def test_slice_on_integer_shape_tensor():
    """Shape subgraphs slice i64 ShapeOf results: [1, 3, 8, 8][2:] = [8, 8]."""
    shape = np.array([1, 3, 8, 8], np.int64)
    node = ops.Slice(origin=origin("Slice", "opset8"),
                     inputs=[parameter((4,), dtypes.i64), constant([2]), constant([10]),
                             constant([1])])
    assert run(node, shape).tolist() == [8, 8]


@pytest.mark.parametrize("ir_type, version, cls", [
    ("StridedSlice", "opset1", ops.StridedSlice), ("StridedSlice", "opset13", ops.StridedSlice),
    ("Slice", "opset8", ops.Slice), ("Slice", "opset15", ops.Slice),
])
def test_dispatch_on_type_and_version(ir_type, version, cls):
    assert lookup(Origin("1", "n", ir_type, version)) is cls
    assert IR_NAMES[cls][0] == ir_type
