"""Interpolate-4/11: output shapes (sizes, scales with OpenVINO's epsilon, pads, axes), errors,
attributes, and the reference on closed-form cases (repeats, ramps, ties, corners)."""

from __future__ import annotations

import numpy as np
import pytest

from lpjit import dtypes
from lpjit.attributes import Attributes
from lpjit.errors import ShapeError, UnsupportedOpError
from lpjit.graph import Constant, Node, Origin, Parameter, Value
from lpjit.ops import interpolate as ops
from lpjit.ops.registry import lookup
from lpjit.reference import evaluate_node

RNG = np.random.default_rng(23)


def origin(ir_type: str, version: str = "opset11") -> Origin:
    return Origin("6", "resize", ir_type, version)


def parameter(shape: tuple[int, ...], dtype: dtypes.DType = dtypes.f32) -> Value:
    return Parameter(origin=origin("Parameter"), inputs=(), element_type=dtype,
                     shape=shape).output


def constant(values: object, dtype: type) -> Value:
    return Constant.of(np.array(values, dtype), origin("Const")).output


def v11(shape: tuple[int, ...], target: list, axes: list | None = None, **fields: object
        ) -> ops.InterpolateV11:
    """Interpolate-11; ``target`` holds sizes (ints) or scales (floats)."""
    scales = isinstance(target[0], float)
    fields.setdefault("mode", "nearest")
    fields.setdefault("shape_calculation_mode", "scales" if scales else "sizes")
    inputs = [parameter(shape), constant(target, np.float32 if scales else np.int64)]
    if axes is not None:
        inputs.append(constant(axes, np.int64))
    return ops.InterpolateV11(origin=origin("Interpolate"), inputs=inputs, **fields)


def v4(shape: tuple[int, ...], sizes: Value, scales: Value, axes: list | None,
       **fields: object) -> ops.InterpolateV4:
    inputs = [parameter(shape), sizes, scales]
    if axes is not None:
        inputs.append(constant(axes, np.int64))
    return ops.InterpolateV4(origin=origin("Interpolate", "opset4"), inputs=inputs, **fields)


def resize(node: Node, x: np.ndarray) -> np.ndarray:
    (y,) = evaluate_node(node, [x] + [v.node.data for v in node.inputs[1:]])
    return y


# --- output shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape, target, axes, out", [
    ((2, 3, 5, 7), [10, 14], [2, 3], (2, 3, 10, 14)),
    ((2, 3, 5, 7), [3], [3], (2, 3, 5, 3)),
    ((2, 3, 5, 7), [2.0, 0.5], [2, 3], (2, 3, 10, 3)),       # floor(7 * 0.5)
    ((1, 1, 11), [13 / 11], [2], (1, 1, 13)),                 # 11 * float32(13/11) < 13: +1e-6
    ((1, 15), [4.2], [1], (1, 63)),
    ((2, 3, 4), [1.0, 1.0, 2.5], None, (2, 3, 10)),           # no axes input: every axis
    ((4, 6), [3, 8], [1, 0], (8, 3)),                         # axes in any order
])
def test_output_shape(shape, target, axes, out):
    assert v11(shape, target, axes).output_types[0].shape == out


def test_pads_are_resized_to_the_rank_and_widen_the_input():
    node = v11((1, 2, 5, 7), [2.0, 2.0], [2, 3], pads_begin=(0, 0, 1), pads_end=(0, 0, 0, 2))
    assert (node.pads_begin, node.pads_end) == ((0, 0, 1, 0), (0, 0, 0, 2))
    assert node.padded_shape == (1, 2, 6, 9)
    assert node.output_types[0].shape == (1, 2, 12, 18)


def test_v4_uses_the_input_the_mode_names_and_sizes_give_out_over_in_scales():
    """In scales mode the sizes input may be anything (here a Parameter), and vice versa."""
    by_scales = v4((1, 3, 8), parameter((1,), dtypes.i64), constant([0.5], np.float32), [2],
                   mode="linear", shape_calculation_mode="scales")
    assert by_scales.output_types[0].shape == (1, 3, 4)
    assert by_scales.scales == (np.float32(0.5),)
    by_sizes = v4((1, 3, 8), constant([6], np.int64), parameter((1,)), [2], mode="linear",
                  shape_calculation_mode="sizes")
    assert by_sizes.output_types[0].shape == (1, 3, 6)
    assert by_sizes.axes == (2,)
    assert by_sizes.scales == (np.float32(6) / np.float32(8),)


# --- errors ----------------------------------------------------------------------------------


def test_non_constant_sizes_scales_or_axes_are_reported():
    with pytest.raises(ShapeError, match=r"^Interpolate 'resize' \(layer 6\): input 1 \(sizes\) "
                                         r"must be a constant"):
        v4((1, 3, 8), parameter((1,), dtypes.i64), constant([0.5], np.float32), [2],
           mode="nearest", shape_calculation_mode="sizes")
    with pytest.raises(ShapeError, match=r"input 2 \(scales\) must be a constant"):
        v4((1, 3, 8), constant([4], np.int64), parameter((1,)), [2], mode="nearest",
           shape_calculation_mode="scales")
    with pytest.raises(ShapeError, match=r"input 2 \(axes\) must be a constant"):
        ops.InterpolateV11(origin=origin("Interpolate"), inputs=(
            parameter((1, 3, 8)), constant([4], np.int64), parameter((1,), dtypes.i64)),
            mode="nearest", shape_calculation_mode="sizes")


@pytest.mark.parametrize("target, axes, fields, error, message", [
    ([4], [-1], {}, ShapeError, (r"axes \(-1,\) are invalid for data of rank 3; expected "
                                r"distinct axes in 0..2")),
    ([4, 4], [2, 2], {}, ShapeError, r"axes \(2, 2\) are invalid"),
    ([4], [1, 2], {}, ShapeError, r"input 1 \(sizes\) has 1 values for 2 axes \(1, 2\)"),
    ([0.1], [2], {}, ShapeError, r"scales \[0.1.*\] give output length 0 on axis 2"),
    ([4], [2], {"mode": "bicubic_pillow"}, UnsupportedOpError,
     (r"mode 'bicubic_pillow' is not supported by lpjit; supported modes: nearest, linear, "
     r"linear_onnx, cubic")),
    ([4], [2], {"mode": "linear", "antialias": True}, UnsupportedOpError,
     r"antialias=true is not supported"),
])
def test_bad_interpolates_are_rejected_naming_the_layer(target, axes, fields, error, message):
    with pytest.raises(error, match=r"^Interpolate 'resize' \(layer 6\): " + message):
        v11((1, 3, 8), target, axes, **fields)


def test_input_types_are_checked():
    with pytest.raises(ShapeError, match=r"input 1 \(scales\) has element type i64; expected a "
                                         r"float type"):
        ops.InterpolateV11(origin=origin("Interpolate"), inputs=(
            parameter((1, 3, 8)), constant([2], np.int64)), mode="nearest",
            shape_calculation_mode="scales")
    with pytest.raises(ShapeError, match=r"input 1 \(sizes\) has shape \(1, 1\); expected 1-D"):
        v11((1, 3, 8), [[4]], None)
    with pytest.raises(ShapeError, match=r"mode 'bilinear_pillow' does not exist in "
                                         r"Interpolate-4"):
        v4((1, 3, 8), constant([4], np.int64), constant([0.5], np.float32), [2],
           mode="bilinear_pillow", shape_calculation_mode="sizes")


# --- attributes ------------------------------------------------------------------------------


def test_attributes_round_trip_as_openvino_writes_them():
    raw = {"mode": "linear_onnx", "shape_calculation_mode": "scales",
           "coordinate_transformation_mode": "align_corners", "nearest_mode": "round_prefer_ceil",
           "antialias": "false", "pads_begin": "0, 0, 1, 0", "pads_end": "0, 0, 0, 0",
           "cube_coeff": "-0.5"}
    fields = ops.InterpolateV11.from_ir(Attributes(raw, origin("Interpolate")))
    node = v11((1, 2, 5, 7), [2.0, 2.0], [2, 3], **fields)
    assert node.to_ir() == raw
    assert list(node.to_ir()) == list(raw)
    upper = {**raw, "mode": "NEAREST", "coordinate_transformation_mode": "HALF_PIXEL"}
    assert ops.InterpolateV11.from_ir(Attributes(upper, origin("Interpolate")))["mode"] == \
        "nearest"


@pytest.mark.parametrize("opset, cls", [("opset4", ops.InterpolateV4),
                                        ("opset10", ops.InterpolateV4),
                                        ("opset11", ops.InterpolateV11),
                                        ("opset15", ops.InterpolateV11)])
def test_dispatch_by_opset(opset, cls):
    assert lookup(Origin("1", "r", "Interpolate", opset)) is cls


# --- reference -------------------------------------------------------------------------------


def test_nearest_asymmetric_floor_upsampling_repeats():
    x = RNG.uniform(-2, 2, (2, 3, 4, 5)).astype(np.float32)
    node = v11(x.shape, [2.0, 3.0], [2, 3], coordinate_transformation_mode="asymmetric",
               nearest_mode="floor")
    np.testing.assert_array_equal(resize(node, x), x.repeat(2, axis=2).repeat(3, axis=3))


@pytest.mark.parametrize("nearest_mode, picked", [
    ("round_prefer_floor", [0, 2, 4, 6]),   # half_pixel at scale 0.5: source 2i + 0.5, a tie
    ("round_prefer_ceil", [1, 3, 5, 7]),
    ("floor", [0, 2, 4, 6]),
    ("ceil", [1, 3, 5, 7]),
    ("simple", [1, 3, 5, 7]),               # downsampling: ceil
])
def test_nearest_mode_decides_ties(nearest_mode, picked):
    x = np.arange(8, dtype=np.float32).reshape(1, 8) * 10
    node = v11(x.shape, [0.5], [1], nearest_mode=nearest_mode)
    np.testing.assert_array_equal(resize(node, x), x[:, picked])


def test_nearest_simple_truncates_when_upsampling():
    x = np.arange(3, dtype=np.float32).reshape(1, 3)
    node = v11(x.shape, [2.0], [1], nearest_mode="simple")   # sources 0, .25, .75, 1.25, ...
    np.testing.assert_array_equal(resize(node, x), [[0, 0, 0, 1, 1, 2]])


@pytest.mark.parametrize("mode", ["linear", "linear_onnx"])
def test_linear_half_pixel_doubling_of_a_ramp(mode):
    """Sources (i + 0.5)/2 - 0.5; the borders clamp to the first and last value."""
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 4)
    node = v11(x.shape, [8], [2], mode=mode)
    np.testing.assert_allclose(resize(node, x), [[[0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3]]])


@pytest.mark.parametrize("mode", ["linear", "linear_onnx", "cubic"])
def test_align_corners_keeps_the_corners(mode):
    x = np.array([[1.0, 5.0, -3.0, 2.0]], np.float32)
    node = v11(x.shape, [7], [1], mode=mode, coordinate_transformation_mode="align_corners")
    y = resize(node, x)
    np.testing.assert_allclose(y[:, ::2], x, atol=1e-6)
    if mode != "cubic":
        np.testing.assert_allclose(y[:, 1::2], (x[:, :-1] + x[:, 1:]) / 2)


def test_cubic_reproduces_constants_and_ramps_inside():
    ramp = np.tile(np.arange(10, dtype=np.float32) * 0.5, (2, 1))
    node = v11(ramp.shape, [2.5], [1], mode="cubic", cube_coeff=-0.5)
    y = resize(node, ramp)
    source = (np.arange(25) + 0.5) / 2.5 - 0.5
    inside = (source > 1) & (source < 8)
    np.testing.assert_allclose(y[0, inside], 0.5 * source[inside], rtol=1e-6)
    flat = np.full((3, 6), 1.5, np.float32)
    np.testing.assert_allclose(resize(v11(flat.shape, [4, 9], [0, 1], mode="cubic"), flat), 1.5,
                               rtol=1e-6)


@pytest.mark.parametrize("mode", ["nearest", "linear", "linear_onnx", "cubic"])
def test_resizing_is_separable(mode):
    """Resizing an outer product resizes each factor: y = resize(a) x resize(b)."""
    a = RNG.uniform(-2, 2, 5).astype(np.float32)
    b = RNG.uniform(-2, 2, 7).astype(np.float32)
    both = v11((1, 5, 7), [9, 4], [1, 2], mode=mode, coordinate_transformation_mode="asymmetric")
    rows = v11((1, 5, 1), [9], [1], mode=mode, coordinate_transformation_mode="asymmetric")
    cols = v11((1, 1, 7), [4], [2], mode=mode, coordinate_transformation_mode="asymmetric")
    expected = resize(rows, a.reshape(1, 5, 1)) * resize(cols, b.reshape(1, 1, 7))
    np.testing.assert_allclose(resize(both, np.outer(a, b)[None]), expected, rtol=1e-5,
                               atol=1e-6)


def test_pads_are_zeros_resized_with_the_data():
    x = np.array([[3.0, 4.0, 5.0]], np.float32)
    node = v11(x.shape, [5], [1], pads_begin=(0, 1), pads_end=(0, 1))
    np.testing.assert_array_equal(resize(node, x), [[0, 3, 4, 5, 0]])


def test_integer_data_rounds_half_to_even():
    """Sources 0, .25, .5, .75, 1 between 0 and 2 give 0, .5, 1, 1.5, 2: ties go to even."""
    x = np.array([[0, 2]], np.int32)
    node = ops.InterpolateV11(origin=origin("Interpolate"), inputs=(
        parameter(x.shape, dtypes.i32), constant([5], np.int64), constant([1], np.int64)),
        mode="linear_onnx", shape_calculation_mode="sizes",
        coordinate_transformation_mode="align_corners")
    y = resize(node, x)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, [[0, 0, 1, 2, 2]])


def test_integer_data_saturates():
    """Cubic overshoots a step; u8 results are clamped to 0..255, not wrapped."""
    x = np.array([[0, 0, 255, 255]], np.uint8)
    node = ops.InterpolateV11(origin=origin("Interpolate"), inputs=(
        parameter(x.shape, dtypes.u8), constant([7], np.int64), constant([1], np.int64)),
        mode="cubic", shape_calculation_mode="sizes")
    y = resize(node, x)
    unclamped = resize(v11(x.shape, [7], [1], mode="cubic"), x.astype(np.float32))
    assert unclamped.min() < 0 and unclamped.max() > 255
    np.testing.assert_array_equal(y, np.clip(np.round(unclamped), 0, 255))
