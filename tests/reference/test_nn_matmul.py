"""MatMul-1: transposes, numpy batch broadcasting, the 1-D rules, errors and attributes."""

from __future__ import annotations

import numpy as np
import pytest

from lpjit import dtypes
from lpjit.attributes import Attributes
from lpjit.errors import ShapeError
from lpjit.graph import Origin, Parameter, Value
from lpjit.ops import nn
from lpjit.reference import evaluate_node

RNG = np.random.default_rng(22)


def origin(ir_type: str) -> Origin:
    return Origin("9", "fc", ir_type, "opset1")


def parameter(shape: tuple[int, ...], dtype: dtypes.DType = dtypes.f32) -> Value:
    return Parameter(origin=origin("Parameter"), inputs=(), element_type=dtype,
                     shape=shape).output


def matmul(a: tuple[int, ...], b: tuple[int, ...], transpose_a: bool = False,
           transpose_b: bool = False, dtype: dtypes.DType = dtypes.f32) -> nn.MatMul:
    return nn.MatMul(origin=origin("MatMul"), inputs=(parameter(a, dtype), parameter(b, dtype)),
                     transpose_a=transpose_a, transpose_b=transpose_b)


def einsum_reference(a: np.ndarray, b: np.ndarray, transpose_a: bool, transpose_b: bool
                     ) -> np.ndarray:
    """The product written out with einsum over explicitly broadcast float64 operands."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    a2 = a64[None] if a.ndim == 1 else np.swapaxes(a64, -1, -2) if transpose_a else a64
    b2 = b64[:, None] if b.ndim == 1 else np.swapaxes(b64, -1, -2) if transpose_b else b64
    batch = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    a2 = np.broadcast_to(a2, (*batch, *a2.shape[-2:]))
    b2 = np.broadcast_to(b2, (*batch, *b2.shape[-2:]))
    y = np.einsum("...mk,...kn->...mn", a2, b2)
    if a.ndim == 1:
        y = y[..., 0, :]
    if b.ndim == 1:
        y = y[..., 0]
    return y


CASES = [
    # a, b, transpose_a, transpose_b, output
    ((3, 4), (4, 5), False, False, (3, 5)),
    ((4, 3), (4, 5), True, False, (3, 5)),
    ((3, 4), (5, 4), False, True, (3, 5)),
    ((4, 3), (5, 4), True, True, (3, 5)),
    ((2, 1, 3, 4), (3, 5, 4), False, True, (2, 3, 3, 5)),    # batch dims broadcast
    ((7, 1, 2, 3), (1, 5, 3, 2), False, False, (7, 5, 2, 2)),
    ((4,), (4, 5), False, False, (5,)),                        # 1-D a: [1, K], then squeezed
    ((4,), (2, 4, 3), True, False, (2, 3)),                    # transposes skip 1-D inputs
    ((3, 4), (4,), False, True, (3,)),
    ((2, 3, 4), (4,), False, False, (2, 3)),
    ((4,), (4,), True, True, ()),
    ((1, 13, 11), (11, 17), False, False, (1, 13, 17)),        # prime sizes
]


@pytest.mark.parametrize("a, b, transpose_a, transpose_b, out", CASES)
def test_shape_and_reference(a, b, transpose_a, transpose_b, out):
    node = matmul(a, b, transpose_a, transpose_b)
    assert node.output_types[0] == nn.TensorType(dtypes.f32, out)
    x = RNG.uniform(-2, 2, a).astype(np.float32)
    y = RNG.uniform(-2, 2, b).astype(np.float32)
    (result,) = evaluate_node(node, [x, y])
    expected = einsum_reference(x, y, transpose_a, transpose_b)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-6)


def test_integer_matmul_is_exact():
    node = matmul((2, 3), (3, 2), dtype=dtypes.i32)
    x = np.array([[1, -2, 3], [4, 5, -6]], np.int32)
    y = np.array([[7, 8], [9, -10], [11, 12]], np.int32)
    np.testing.assert_array_equal(evaluate_node(node, [x, y])[0], x.astype(np.int64) @ y)


@pytest.mark.parametrize("a, b, transpose_a, transpose_b, message", [
    ((3, 4), (5, 4), False, False, (r"inner dimensions differ: input shapes \(3, 4\) and "
                                   r"\(5, 4\) give K=4 and K=5 \(transpose_a=False, "
                                   r"transpose_b=False\)")),
    ((2, 3, 4), (3, 4, 5), False, False, r"input shapes \(2,\) and \(3,\) do not broadcast"),
    ((), (4,), False, False, r"input 0 is a scalar; MatMul needs inputs of rank >= 1"),
])
def test_bad_shapes_name_the_layer(a, b, transpose_a, transpose_b, message):
    with pytest.raises(ShapeError, match=r"^MatMul 'fc' \(layer 9\): " + message):
        matmul(a, b, transpose_a, transpose_b)


def test_element_types_must_match():
    with pytest.raises(ShapeError, match=r"inputs have element types f32, f16"):
        nn.MatMul(origin=origin("MatMul"),
                  inputs=(parameter((2, 3)), parameter((3, 2), dtypes.f16)))


def test_attributes_round_trip():
    raw = {"transpose_a": "false", "transpose_b": "true"}
    fields = nn.MatMul.from_ir(Attributes(raw, origin("MatMul")))
    assert fields == {"transpose_a": False, "transpose_b": True}
    assert matmul((3, 4), (5, 4), **fields).to_ir() == raw
    assert nn.MatMul.from_ir(Attributes({}, origin("MatMul"))) == {"transpose_a": False,
                                                                   "transpose_b": False}
