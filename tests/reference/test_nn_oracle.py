"""Convolution, GroupConvolution, MatMul, MaxPool-1/8/14 and AvgPool-1/14 against OpenVINO.

Each case is a one-op model built with OpenVINO's opset API, saved as IR, read back by lpjit and
run by its reference; OpenVINO's CPU plugin runs the same file (``oracle.compare_with_openvino``,
rtol 1e-4, atol 1e-5).  The geometries are the awkward ones: odd sizes with same_upper/lower,
ceil rounding whose last window starts in (or lies wholly in) the padding, dilation, stride 2,
asymmetric pads, 1x1 and 7x7 kernels, prime channel counts, batch > 1.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import oracle
import pytest
from openvino import opset1, opset8, opset14

pytestmark = pytest.mark.oracle

RNG = np.random.default_rng(30)
AUTO_PADS = ["explicit", "same_upper", "same_lower", "valid"]


def weights(shape: tuple[int, ...]) -> ov.Node:
    return opset1.constant(RNG.uniform(-1, 1, shape).astype(np.float32))


def model(outputs: list, *parameters: ov.Node) -> ov.Model:
    return ov.Model(outputs, list(parameters))


# --- convolutions ----------------------------------------------------------------------------

CONV_GEOMETRIES = [
    # data shape, weights shape, strides, dilations, pads_begin, pads_end
    ((2, 5, 9, 8), (7, 5, 3, 3), (2, 2), (1, 1), (1, 0), (0, 2)),       # odd sizes, stride 2
    ((1, 3, 11, 10), (5, 3, 7, 7), (2, 2), (1, 1), (3, 3), (3, 2)),     # 7x7 stem
    ((2, 7, 6, 5), (11, 7, 1, 1), (2, 1), (1, 1), (0, 0), (0, 0)),      # 1x1, prime channels
    ((1, 4, 10, 9), (3, 4, 3, 2), (1, 2), (2, 3), (2, 0), (1, 1)),      # dilation
]


@pytest.mark.parametrize("auto_pad", AUTO_PADS)
@pytest.mark.parametrize("shape, w_shape, strides, dilations, pb, pe", CONV_GEOMETRIES)
def test_convolution(tmp_path, shape, w_shape, strides, dilations, pb, pe, auto_pad):
    x = opset1.parameter(shape, np.float32, name="x")
    conv = opset1.convolution(x, weights(w_shape), strides, pb, pe, dilations, auto_pad=auto_pad)
    oracle.compare_with_openvino(model([conv], x), tmp_path)


@pytest.mark.parametrize("shape, w_shape, strides, dilations, pb, pe, auto_pad", [
    ((2, 3, 13), (4, 3, 4), (3,), (2,), (1,), (2,), "explicit"),                  # 1D
    ((1, 3, 9), (5, 3, 3), (1,), (2,), (0,), (0,), "same_upper"),
    ((1, 2, 5, 6, 4), (3, 2, 2, 3, 2), (1, 2, 1), (2, 1, 1), (1, 0, 1), (0, 1, 0), "explicit"),
    ((1, 2, 5, 7, 6), (3, 2, 3, 3, 3), (2, 2, 1), (1, 1, 1), (0, 0, 0), (0, 0, 0), "same_lower"),
])
def test_convolution_1d_and_3d(tmp_path, shape, w_shape, strides, dilations, pb, pe, auto_pad):
    x = opset1.parameter(shape, np.float32, name="x")
    conv = opset1.convolution(x, weights(w_shape), strides, pb, pe, dilations, auto_pad=auto_pad)
    oracle.compare_with_openvino(model([conv], x), tmp_path)


@pytest.mark.parametrize("shape, w_shape, strides, dilations, pb, pe, auto_pad", [
    ((2, 7, 9, 8), (7, 1, 1, 3, 3), (1, 1), (1, 1), (1, 1), (1, 1), "explicit"),   # depthwise
    ((1, 5, 9, 9), (5, 1, 1, 3, 3), (2, 2), (1, 1), (0, 0), (0, 0), "same_upper"),
    ((1, 5, 8, 7), (5, 1, 1, 3, 3), (2, 2), (1, 2), (0, 0), (0, 0), "same_lower"),
    ((2, 6, 7, 7), (3, 4, 2, 3, 3), (1, 2), (1, 1), (1, 1), (1, 0), "explicit"),   # 3 groups
    ((1, 6, 9), (3, 2, 2, 3), (2,), (1,), (0,), (0,), "same_lower"),              # 1D
    ((1, 4, 5, 6, 7), (4, 1, 1, 3, 2, 3), (1, 2, 1), (1, 1, 2), (1, 0, 1), (0, 1, 1),
     "valid"),                                                                      # 3D
])
def test_group_convolution(tmp_path, shape, w_shape, strides, dilations, pb, pe, auto_pad):
    x = opset1.parameter(shape, np.float32, name="x")
    conv = opset1.group_convolution(x, weights(w_shape), strides, pb, pe, dilations,
                                    auto_pad=auto_pad)
    oracle.compare_with_openvino(model([conv], x), tmp_path)


# --- MatMul ----------------------------------------------------------------------------------


@pytest.mark.parametrize("a, b, transpose_a, transpose_b", [
    ((3, 4), (4, 5), False, False),
    ((4, 3), (5, 4), True, True),
    ((2, 1, 3, 4), (3, 5, 4), False, True),
    ((4,), (2, 4, 3), True, False),
    ((2, 3, 4), (4,), False, False),
    ((4,), (4,), False, False),
    ((1, 13, 11), (11, 17), False, False),
])
def test_matmul(tmp_path, a, b, transpose_a, transpose_b):
    pa = opset1.parameter(a, np.float32, name="a")
    pb = opset1.parameter(b, np.float32, name="b")
    oracle.compare_with_openvino(model([opset1.matmul(pa, pb, transpose_a, transpose_b)], pa, pb),
                                 tmp_path)


def test_matmul_with_constant_weights(tmp_path):
    x = opset1.parameter((2, 5, 12), np.float32, name="x")
    y = opset1.matmul(x, weights((7, 12)), False, True)
    oracle.compare_with_openvino(model([y], x), tmp_path)


# --- pooling ---------------------------------------------------------------------------------

POOL_GEOMETRIES = [
    # spatial sizes, kernel, strides, pads_begin, pads_end
    ((9, 8), (3, 3), (2, 2), (0, 0), (0, 0)),
    ((8, 7), (2, 3), (2, 2), (0, 1), (1, 1)),    # ceil: last windows wholly in the end pads
    ((7, 6), (3, 2), (2, 1), (1, 0), (1, 1)),    # asymmetric pads
    ((5, 6), (2, 2), (3, 3), (1, 0), (0, 0)),    # ceil_torch drops a window ceil keeps
    ((7, 7), (7, 7), (1, 1), (0, 0), (0, 0)),    # global 7x7
]


@pytest.mark.parametrize("rounding", ["floor", "ceil"])
@pytest.mark.parametrize("auto_pad", AUTO_PADS)
@pytest.mark.parametrize("spatial, kernel, strides, pb, pe", POOL_GEOMETRIES)
def test_max_pool_v1(tmp_path, spatial, kernel, strides, pb, pe, auto_pad, rounding):
    x = opset1.parameter((2, 3, *spatial), np.float32, name="x")
    pool = opset1.max_pool(x, strides, pb, pe, kernel, rounding_type=rounding, auto_pad=auto_pad)
    oracle.compare_with_openvino(model([pool], x), tmp_path)


@pytest.mark.parametrize("opset, rounding", [(opset8, "floor"), (opset8, "ceil"),
                                             (opset14, "ceil"), (opset14, "ceil_torch")])
@pytest.mark.parametrize("spatial, kernel, strides, pb, pe", POOL_GEOMETRIES[:4])
@pytest.mark.parametrize("dilations, axis, auto_pad, index_type", [
    ((1, 1), 0, "explicit", "i64"),
    ((2, 1), 2, "explicit", "i32"),
    ((1, 2), 1, "same_upper", "i64"),
    ((1, 1), -1, "same_lower", "i32"),
])
def test_max_pool_values_and_indices(tmp_path, opset, rounding, spatial, kernel, strides, pb, pe,
                                     dilations, axis, auto_pad, index_type):
    x = opset1.parameter((2, 3, *spatial), np.float32, name="x")
    pool = opset.max_pool(x, strides, dilations, pb, pe, kernel, rounding_type=rounding,
                          auto_pad=auto_pad, index_element_type=index_type, axis=axis)
    oracle.compare_with_openvino(model([pool.output(0), pool.output(1)], x), tmp_path)


@pytest.mark.parametrize("shape, kernel, strides, dilations, pb, pe, axis", [
    ((2, 3, 11), (4,), (3,), (2,), (1,), (2,), 0),
    ((1, 2, 5, 4, 6), (2, 1, 3), (1, 2, 2), (1, 1, 2), (1, 0, 1), (0, 1, 1), 1),
])
def test_max_pool_1d_and_3d(tmp_path, shape, kernel, strides, dilations, pb, pe, axis):
    x = opset1.parameter(shape, np.float32, name="x")
    pool = opset8.max_pool(x, strides, dilations, pb, pe, kernel, rounding_type="ceil",
                           axis=axis)
    oracle.compare_with_openvino(model([pool.output(0), pool.output(1)], x), tmp_path)


@pytest.mark.parametrize("opset, rounding", [(opset1, "floor"), (opset1, "ceil"),
                                             (opset14, "ceil_torch")])
@pytest.mark.parametrize("auto_pad", ["explicit", "same_upper", "same_lower"])
@pytest.mark.parametrize("exclude_pad", [True, False])
@pytest.mark.parametrize("spatial, kernel, strides, pb, pe", POOL_GEOMETRIES[:4])
def test_avg_pool(tmp_path, opset, rounding, auto_pad, exclude_pad, spatial, kernel, strides,
                  pb, pe):
    x = opset1.parameter((2, 3, *spatial), np.float32, name="x")
    pool = opset.avg_pool(x, strides, pb, pe, kernel, exclude_pad, rounding_type=rounding,
                          auto_pad=auto_pad)
    oracle.compare_with_openvino(model([pool], x), tmp_path)


@pytest.mark.parametrize("shape, kernel, strides, pb, pe, exclude_pad", [
    ((2, 3, 11), (4,), (3,), (1,), (2,), False),
    ((1, 2, 5, 4, 6), (2, 1, 3), (1, 2, 2), (1, 0, 1), (0, 0, 1), True),
])
def test_avg_pool_1d_and_3d(tmp_path, shape, kernel, strides, pb, pe, exclude_pad):
    x = opset1.parameter(shape, np.float32, name="x")
    pool = opset1.avg_pool(x, strides, pb, pe, kernel, exclude_pad, rounding_type="ceil")
    oracle.compare_with_openvino(model([pool], x), tmp_path)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int32])
def test_pools_on_integer_data(tmp_path, dtype):
    """Integer MaxPool pads with the type's minimum; integer AvgPool rounds half to even."""
    x = opset1.parameter((1, 2, 5, 6), dtype, name="x")
    max_pool = opset8.max_pool(x, (2, 2), (1, 1), (0, 0), (1, 1), (2, 2), rounding_type="ceil")
    avg_pool = opset1.avg_pool(x, (1, 2), (0, 1), (0, 1), (2, 2), True)
    low = 0 if dtype == np.uint8 else -50
    values = np.random.default_rng(6).integers(low, 100, (1, 2, 5, 6)).astype(dtype)
    outputs = [max_pool.output(0), max_pool.output(1), avg_pool.output(0)]
    oracle.compare_with_openvino(model(outputs, x), tmp_path, inputs=[values])
