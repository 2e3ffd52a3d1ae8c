"""Reduce* ops: reference vs float64 numpy, axes handling, integer wrap-around, errors."""

from __future__ import annotations

import numpy as np
import pytest

from lpjit import dtypes
from lpjit.attributes import Attributes
from lpjit.errors import ShapeError, UnsupportedOpError
from lpjit.graph import Constant, Origin, Parameter, Value
from lpjit.ops import reductions as red
from lpjit.ops.registry import IR_NAMES, lookup
from lpjit.reference import evaluate_node


def parameter(shape: tuple[int, ...], dtype: dtypes.DType = dtypes.f32) -> Value:
    return Parameter(origin=Origin("0", "x", "Parameter", "opset1"), inputs=(),
                     element_type=dtype, shape=shape).output


def constant(array: np.ndarray) -> Value:
    return Constant.of(array, Origin("1", "axes", "Const", "opset1")).output


def reduce_node(cls: type[red.Reduce], shape: tuple[int, ...], axes: np.ndarray,
                keep_dims: bool, dtype: dtypes.DType = dtypes.f32) -> red.Reduce:
    origin = Origin("7", "red", IR_NAMES[cls][0], "opset4")
    return cls(origin=origin, inputs=(parameter(shape, dtype), constant(axes)),
               keep_dims=keep_dims)


def evaluate(node: red.Reduce, x: np.ndarray) -> np.ndarray:
    (out,) = evaluate_node(node, [x, node.inputs[1].node.data])
    return out


NUMPY64 = {
    red.ReduceSum: np.sum, red.ReduceMean: np.mean, red.ReduceMax: np.max,
    red.ReduceMin: np.min, red.ReduceProd: np.prod,
    red.ReduceL2: lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims)),
}

AXES = [
    (np.array([1], np.int64), (1,)),
    (np.array([-1, 0], np.int64), (0, 2)),
    (np.array([0, 1, 2], np.int32), (0, 1, 2)),
    (np.array(-2, np.int64), (1,)),          # scalar axes input
    (np.array([2, -1], np.int32), (2,)),     # a repeated axis counts once
]


@pytest.mark.parametrize("cls", list(NUMPY64), ids=lambda c: c.__name__)
@pytest.mark.parametrize("axes, normalized", AXES, ids=lambda a: str(a))
@pytest.mark.parametrize("keep_dims", [False, True])
def test_reduce_matches_float64_numpy(cls, axes, normalized, keep_dims):
    x = np.random.default_rng(9).uniform(0.5, 1.5, (2, 3, 4)).astype(np.float32)
    x *= np.where(np.random.default_rng(10).random(x.shape) < 0.5, -1, 1).astype(np.float32)
    node = reduce_node(cls, x.shape, axes, keep_dims)
    assert node.axes == normalized
    y = evaluate(node, x)
    expected = NUMPY64[cls](x.astype(np.float64), axis=normalized, keepdims=keep_dims)
    assert node.output_types[0].shape == expected.shape == y.shape
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls", list(NUMPY64), ids=lambda c: c.__name__)
@pytest.mark.parametrize("keep_dims", [False, True])
def test_empty_axes_reduce_each_element_alone(cls, keep_dims):
    """No axes: every element is its own group, so the result is x (|x| for ReduceL2)."""
    x = np.random.default_rng(11).normal(size=(2, 3)).astype(np.float32)
    node = reduce_node(cls, x.shape, np.array([], np.int64), keep_dims)
    assert node.output_types[0].shape == (2, 3)
    expected = np.abs(x) if cls is red.ReduceL2 else x
    np.testing.assert_array_equal(evaluate(node, x), expected)


def test_integer_sum_and_product_wrap_in_the_element_type():
    x = np.array([[100, 100], [-100, -100]], np.int8)
    total = evaluate(reduce_node(red.ReduceSum, x.shape, np.array([1]), False, dtypes.i8), x)
    np.testing.assert_array_equal(total, np.array([-56, 56], np.int8))  # 200, -200 mod 256
    product = evaluate(reduce_node(red.ReduceProd, x.shape, np.array([1]), False, dtypes.i8), x)
    np.testing.assert_array_equal(product, np.array([16, 16], np.int8))  # 10000 mod 256


def test_integer_mean_truncates_toward_zero():
    x = np.array([[-3, 0], [1, 2], [-7, -6]], np.int32)
    y = evaluate(reduce_node(red.ReduceMean, x.shape, np.array([1]), False, dtypes.i32), x)
    np.testing.assert_array_equal(y, np.array([-1, 1, -6], np.int32))


def test_max_min_on_integers_keep_the_type():
    x = np.array([[3, -9, 4], [0, 7, -2]], np.int64)
    node = reduce_node(red.ReduceMax, x.shape, np.array([0]), True, dtypes.i64)
    np.testing.assert_array_equal(evaluate(node, x), [[3, 7, 4]])


# --- errors and attributes ---------------------------------------------------------------------


def test_axes_must_be_a_constant():
    origin = Origin("7", "red", "ReduceSum", "opset1")
    with pytest.raises(ShapeError, match=r"^ReduceSum 'red' \(layer 7\): axes \(input 1\) must "
                                         r"be a constant; it is produced by Parameter 'x' "
                                         r"\(layer 0\)$"):
        red.ReduceSum(origin=origin, inputs=(parameter((2, 3)), parameter((1,), dtypes.i64)))


@pytest.mark.parametrize("axes", [np.array([3]), np.array([-4]), np.array([0, 5])])
def test_axis_out_of_range(axes):
    bad = int(axes[-1])
    with pytest.raises(ShapeError, match=rf"ReduceMean 'red' \(layer 7\): axis {bad} is out of "
                                         r"range for rank 3; expected -3\.\.2"):
        reduce_node(red.ReduceMean, (2, 3, 4), axes, False)


def test_axes_must_be_integers():
    with pytest.raises(ShapeError, match=r"axes \(input 1\) has element type f32; expected i32 "
                                         r"or i64"):
        reduce_node(red.ReduceMax, (2, 3), np.array([1.0], np.float32), False)


def test_axes_must_be_at_most_1d():
    with pytest.raises(ShapeError, match=r"axes \(input 1\) has shape \(1, 1\); expected a "
                                         r"scalar or a 1-D tensor"):
        reduce_node(red.ReduceMin, (2, 3), np.array([[1]]), False)


def test_reduce_l2_needs_floats():
    with pytest.raises(ShapeError, match=r"input 0 has element type i32; expected a float type"):
        reduce_node(red.ReduceL2, (2, 3), np.array([1]), False, dtypes.i32)


@pytest.mark.parametrize("text, value", [("true", True), ("false", False)])
def test_keep_dims_round_trip(text, value):
    origin = Origin("7", "red", "ReduceMean", "opset1")
    fields = red.ReduceMean.from_ir(Attributes({"keep_dims": text}, origin))
    assert fields == {"keep_dims": value}
    node = reduce_node(red.ReduceMean, (2, 3), np.array([1]), **fields)
    assert node.to_ir() == {"keep_dims": text}


def test_reduce_l2_dispatch_starts_at_opset4():
    assert lookup(Origin("1", "n", "ReduceL2", "opset4")) is red.ReduceL2
    assert lookup(Origin("1", "n", "ReduceMean", "opset13")) is red.ReduceMean
    with pytest.raises(UnsupportedOpError, match=r"ReduceL2 is not defined in opset1"):
        lookup(Origin("1", "n", "ReduceL2", "opset1"))
