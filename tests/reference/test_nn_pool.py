"""MaxPool-1/8/14 and AvgPool-1/14: output sizes for floor/ceil/ceil_torch and auto_pad, the
reference against a direct per-window loop (values, indices, divisors), errors and attributes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lpjit import dtypes
from lpjit.attributes import Attributes
from lpjit.errors import BadAttributeError, ShapeError
from lpjit.graph import Node, Origin, Parameter, Value
from lpjit.ops import nn
from lpjit.ops.registry import IR_NAMES, lookup
from lpjit.reference import evaluate_node

RNG = np.random.default_rng(21)
LOWEST = float(np.finfo(np.float32).min)


def origin(ir_type: str, version: str = "opset8") -> Origin:
    return Origin("4", "pool", ir_type, version)


def parameter(shape: tuple[int, ...], dtype: dtypes.DType = dtypes.f32) -> Value:
    return Parameter(origin=origin("Parameter"), inputs=(), element_type=dtype,
                     shape=shape).output


def build(cls: type[Node], shape: tuple[int, ...], **fields: object) -> Node:
    return cls(origin=origin(IR_NAMES[cls][0]), inputs=(parameter(shape),), **fields)


def window_elements(x: np.ndarray, node: nn.Pool, position: tuple[int, ...],
                    dilations: tuple[int, ...]) -> list[tuple[int, ...]]:
    """In-bounds spatial coordinates of one window, in kernel (row-major) order."""
    coordinates = []
    for offset in itertools.product(*(range(k) for k in node.kernel)):
        c = tuple(p * s - b + o * d for p, s, b, o, d in
                  zip(position, node.strides, node.pads_begin, offset, dilations))
        if all(0 <= ci < n for ci, n in zip(c, x.shape[2:])):
            coordinates.append(c)
    return coordinates


def direct_pool(x: np.ndarray, node: nn.Pool, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Max (value, first-max index from dim 0) or average of every window, one at a time."""
    out_shape = node.output_types[0].shape
    dilations = node.window_dilations()
    plane = int(np.prod(x.shape[2:]))
    values, indices = np.zeros(out_shape), np.zeros(out_shape, np.int64)
    has_pads = any(node.pads_begin) or any(node.pads_end)
    for n, c, *position in itertools.product(*(range(d) for d in out_shape)):
        inside = window_elements(x, node, tuple(position), dilations)
        window = [float(x[(n, c, *e)]) for e in inside]
        at = (n, c, *position)
        if kind == "max":
            best = int(np.argmax(window)) if window else None
            values[at] = window[best] if window else LOWEST
            local = int(np.ravel_multi_index(inside[best], x.shape[2:])) if window else 0
            indices[at] = (n * x.shape[1] + c) * plane + local
        else:
            divisor = len(window) if node.exclude_pad or not has_pads else np.prod(node.kernel)
            values[at] = sum(window) / divisor if divisor else np.nan
    return values, indices


# --- output sizes ----------------------------------------------------------------------------


@pytest.mark.parametrize("size, k, s, d, pads, rounding, auto_pad, out, resolved", [
    (9, 3, 2, 1, (0, 0), "floor", "explicit", 4, (0, 0)),
    (8, 3, 2, 1, (0, 0), "floor", "explicit", 3, (0, 0)),
    (8, 3, 2, 1, (0, 0), "ceil", "explicit", 4, (0, 0)),
    (8, 3, 2, 1, (0, 0), "ceil_torch", "explicit", 4, (0, 0)),
    (4, 2, 2, 1, (0, 1), "ceil", "explicit", 3, (0, 1)),       # last window starts in the pad
    (4, 2, 2, 1, (0, 1), "ceil_torch", "explicit", 2, (0, 1)),  # ... torch drops it
    (5, 2, 3, 1, (1, 0), "ceil", "explicit", 3, (1, 0)),
    (5, 2, 3, 1, (1, 0), "ceil_torch", "explicit", 2, (1, 0)),
    (8, 3, 1, 2, (0, 0), "floor", "explicit", 4, (0, 0)),       # dilated kernel 5
    (7, 3, 2, 1, (0, 0), "floor", "same_upper", 4, (1, 1)),
    (6, 3, 2, 1, (0, 0), "ceil", "same_upper", 3, (0, 1)),
    (6, 3, 2, 1, (0, 0), "floor", "same_lower", 3, (1, 0)),
    (9, 3, 2, 1, (2, 2), "ceil", "valid", 4, (0, 0)),
])
def test_output_size_and_resolved_pads(size, k, s, d, pads, rounding, auto_pad, out, resolved):
    pool = build(nn.MaxPoolV14, (2, 3, size, 5), kernel=(k, 1), strides=(s, 1), dilations=(d, 1),
                 pads_begin=(pads[0], 0), pads_end=(pads[1], 0), rounding_type=rounding,
                 auto_pad=auto_pad)
    assert pool.output_types[0].shape == (2, 3, out, 5)
    assert pool.output_types[1] == nn.TensorType(dtypes.i64, (2, 3, out, 5))
    assert (pool.pads_begin[0], pool.pads_end[0]) == resolved


def test_empty_pads_and_strides_default_to_zeros_and_ones():
    pool = build(nn.AvgPoolV1, (1, 2, 7), kernel=(3,))
    assert (pool.strides, pool.pads_begin, pool.pads_end) == ((1,), (0,), (0,))
    assert pool.output_types[0].shape == (1, 2, 5)


# --- reference -------------------------------------------------------------------------------

POOL_CASES = [
    # data shape, kernel, strides, dilations, pads_begin, pads_end, rounding
    ((2, 3, 9, 8), (3, 3), (2, 2), (1, 1), (0, 0), (0, 0), "floor"),
    ((1, 2, 8, 8), (2, 2), (2, 2), (1, 1), (0, 0), (1, 1), "ceil"),   # windows wholly in pad
    ((1, 3, 7, 6), (3, 2), (2, 1), (2, 1), (1, 0), (1, 1), "ceil"),
    ((2, 2, 6, 7), (3, 3), (2, 2), (1, 2), (1, 1), (2, 0), "ceil_torch"),
    ((1, 2, 11), (4,), (3,), (2,), (1,), (2,), "floor"),
    ((1, 2, 5, 4, 6), (2, 2, 3), (1, 2, 2), (1, 1, 2), (1, 0, 1), (0, 1, 1), "ceil"),
]


@pytest.mark.parametrize("shape, kernel, strides, dilations, pb, pe, rounding", POOL_CASES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_max_pool_values_and_indices_match_direct_windows(shape, kernel, strides, dilations, pb,
                                                          pe, rounding, axis):
    """Index = flat position of the first maximum, modulo the size of dims ``axis``...; a window
    wholly in the padding gives the lowest float and spatial index 0 (OpenVINO's CPU plugin)."""
    pool = build(nn.MaxPoolV14, shape, kernel=kernel, strides=strides, dilations=dilations,
                 pads_begin=pb, pads_end=pe, rounding_type=rounding, axis=axis)
    x = RNG.uniform(-3, 3, shape).astype(np.float32)
    values, indices = evaluate_node(pool, [x])
    expected_values, expected_indices = direct_pool(x, pool, "max")
    np.testing.assert_array_equal(values, expected_values.astype(np.float32))
    limit = int(np.prod(shape[pool.flatten_axis:]))
    np.testing.assert_array_equal(indices, expected_indices % limit)
    assert indices.dtype == np.int64


def test_max_pool_v1_has_one_output_and_ties_pick_the_first_maximum():
    pool = build(nn.MaxPoolV1, (1, 1, 4), kernel=(2,), strides=(2,))
    assert len(pool.output_types) == 1
    x = np.array([[[5, 5, -1, 2]]], np.float32)
    np.testing.assert_array_equal(evaluate_node(pool, [x])[0], [[[5, 2]]])
    v8 = build(nn.MaxPoolV8, (1, 1, 4), kernel=(2,), strides=(2,), index_element_type=dtypes.i32)
    values, indices = evaluate_node(v8, [x])
    np.testing.assert_array_equal(values, [[[5, 2]]])
    np.testing.assert_array_equal(indices, [[[0, 3]]])
    assert indices.dtype == np.int32


@pytest.mark.parametrize("shape, kernel, strides, dilations, pb, pe, rounding", POOL_CASES)
@pytest.mark.parametrize("exclude_pad", [True, False])
def test_avg_pool_matches_direct_windows(shape, kernel, strides, dilations, pb, pe, rounding,
                                         exclude_pad):
    """exclude-pad divides by the in-bounds count; include-pad by the kernel size when there are
    pads (also for ceil windows past them), by the in-bounds count when there are none."""
    if rounding == "ceil_torch":
        rounding = "ceil"
    pool = build(nn.AvgPoolV14, shape, kernel=kernel, strides=strides, pads_begin=pb,
                 pads_end=pe, rounding_type=rounding, exclude_pad=exclude_pad)
    x = RNG.uniform(-3, 3, shape).astype(np.float32)
    (y,) = evaluate_node(pool, [x])
    expected, _ = direct_pool(x, pool, "avg")
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-7)


def test_avg_pool_window_with_no_input_element_is_nan():
    """A ceil-mode window that starts past the input (no pads) averages nothing: 0/0."""
    pool = build(nn.AvgPoolV1, (1, 1, 6), kernel=(2,), strides=(3,), rounding_type="ceil")
    y = evaluate_node(pool, [np.arange(6, dtype=np.float32).reshape(1, 1, 6)])[0]
    np.testing.assert_array_equal(y, [[[0.5, 3.5, np.nan]]])


# --- errors and attributes -------------------------------------------------------------------


@pytest.mark.parametrize("cls, shape, fields, message", [
    (nn.MaxPoolV1, (4, 9), {"kernel": (3,)},
     r"data input has shape \(4, 9\) \(rank 2\); expected rank 3, 4 or 5"),
    (nn.MaxPoolV1, (1, 2, 9, 9), {"kernel": (3,)}, r"kernel=\(3,\) has 1 entries; expected 2"),
    (nn.AvgPoolV1, (1, 2, 9, 9), {"kernel": (3, 0)}, r"kernel=\(3, 0\) must be positive"),
    (nn.MaxPoolV8, (1, 2, 9, 9), {"kernel": (3, 3), "axis": 4},
     r"axis 4 is out of range for rank 4; expected -4..3"),
    (nn.MaxPoolV8, (1, 2, 9, 9), {"kernel": (3, 3), "index_element_type": dtypes.f32},
     r"index_element_type f32 is invalid; expected i32 or i64"),
    (nn.MaxPoolV8, (1, 2, 9, 9), {"kernel": (3, 3), "rounding_type": "ceil_torch"},
     r"rounding_type 'ceil_torch' is invalid; expected one of floor, ceil"),
    (nn.AvgPoolV1, (1, 2, 3, 9), {"kernel": (5, 3)},
     r"spatial axis 0: the dilated kernel \(5\) is larger than the padded input"),
    (nn.AvgPoolV1, (1, 2, 9, 9), {"kernel": (2, 3), "pads_end": (0, 3), "exclude_pad": True},
     (r"spatial axis 1: with exclude-pad the kernel \(3\) must be larger than both pads "
     r"\(0, 3\)")),
])
def test_bad_pools_are_rejected_naming_the_layer(cls, shape, fields, message):
    with pytest.raises(ShapeError, match=rf"^{IR_NAMES[cls][0]} 'pool' \(layer 4\): {message}"):
        build(cls, shape, **fields)


def test_integer_avg_pool_rounds_half_to_even():
    """Means 1.5, 2.5, 3.5, 4.5 and -1.5, -2.5 round to 2, 2, 4, 4 and -2, -2 (OpenVINO CPU)."""
    pool = nn.AvgPoolV1(origin=origin("AvgPool"), inputs=(parameter((1, 1, 12), dtypes.i32),),
                        kernel=(2,), strides=(2,))
    x = np.array([[[1, 2, 2, 3, 3, 4, 4, 5, -1, -2, -2, -3]]], np.int32)
    (y,) = evaluate_node(pool, [x])
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, [[[2, 2, 4, 4, -2, -2]]])


def test_ceil_torch_is_a_v14_attribute_value():
    raw = {"kernel": "2", "rounding_type": "CEIL_TORCH"}
    assert nn.MaxPoolV14.from_ir(Attributes(raw, origin("MaxPool")))["rounding_type"] == \
        "ceil_torch"
    for cls in (nn.MaxPoolV1, nn.MaxPoolV8, nn.AvgPoolV1):
        with pytest.raises(BadAttributeError, match=r"rounding_type=\"CEIL_TORCH\" is invalid"):
            cls.from_ir(Attributes(raw, origin(IR_NAMES[cls][0])))


@pytest.mark.parametrize("cls, raw", [
    (nn.MaxPoolV1, {"strides": "2, 2", "pads_begin": "0, 1", "pads_end": "1, 0",
                    "kernel": "3, 3", "rounding_type": "ceil", "auto_pad": "explicit"}),
    (nn.MaxPoolV8, {"strides": "2, 2", "dilations": "1, 2", "pads_begin": "0, 0",
                    "pads_end": "0, 0", "kernel": "3, 3", "rounding_type": "floor",
                    "auto_pad": "same_upper", "index_element_type": "i32", "axis": "2"}),
    (nn.MaxPoolV14, {"strides": "2, 2", "dilations": "1, 1", "pads_begin": "1, 1",
                     "pads_end": "1, 1", "kernel": "3, 3", "rounding_type": "ceil_torch",
                     "auto_pad": "explicit", "index_element_type": "i64", "axis": "0"}),
    (nn.AvgPoolV1, {"kernel": "3, 3", "strides": "2, 2", "pads_begin": "0, 0",
                    "pads_end": "0, 0", "exclude-pad": "true", "auto_pad": "same_lower",
                    "rounding_type": "floor"}),
    (nn.AvgPoolV14, {"kernel": "2, 2", "strides": "1, 1", "pads_begin": "1, 0",
                     "pads_end": "0, 1", "exclude-pad": "false", "auto_pad": "explicit",
                     "rounding_type": "ceil_torch"}),
])
def test_to_ir_is_the_inverse_of_from_ir(cls, raw):
    """Written as OpenVINO writes them: hyphenated exclude-pad, zero pads for auto_pad."""
    pool = build(cls, (1, 2, 9, 10), **cls.from_ir(Attributes(raw, origin(IR_NAMES[cls][0]))))
    assert pool.to_ir() == raw
    assert list(pool.to_ir()) == list(raw)


@pytest.mark.parametrize("ir_type, opset, cls", [
    ("MaxPool", "opset1", nn.MaxPoolV1), ("MaxPool", "opset7", nn.MaxPoolV1),
    ("MaxPool", "opset8", nn.MaxPoolV8), ("maxpool", "opset13", nn.MaxPoolV8),
    ("MaxPool", "opset14", nn.MaxPoolV14), ("AvgPool", "opset13", nn.AvgPoolV1),
    ("AvgPool", "opset14", nn.AvgPoolV14), ("Convolution", "opset11", nn.Convolution),
    ("GroupConvolution", "opset1", nn.GroupConvolution), ("MatMul", "opset13", nn.MatMul),
])
def test_layers_dispatch_on_type_and_opset(ir_type, opset, cls):
    assert lookup(Origin("1", "op", ir_type, opset)) is cls
