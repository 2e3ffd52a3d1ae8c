"""Interpolate-4 and Interpolate-11 against OpenVINO's CPU plugin.

One-op models from ``openvino.opset10.interpolate`` (which builds Interpolate-4) and
``openvino.opset11.interpolate``, saved as IR and compared with ``oracle.compare_with_openvino``
over every coordinate transformation, every nearest rounding (including the exact ties of a 0.5
downscale), sizes and scales (with OpenVINO's +1e-6 on scales), axes, pads and ranks 2 to 5.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import oracle
import pytest
from openvino import opset1, opset10, opset11

import lpjit
from lpjit.errors import UnsupportedOpError

pytestmark = pytest.mark.oracle

TRANSFORMS = ["half_pixel", "pytorch_half_pixel", "asymmetric", "tf_half_pixel_for_nn",
              "align_corners"]
NEAREST_MODES = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple"]


def interpolate_model(shape: tuple[int, ...], target: list, axes: list | None, version: int,
                      pads: tuple[list, list] = (None, None), **attributes: str) -> ov.Model:
    """A one-Interpolate model; ``target`` holds sizes (ints) or scales (floats)."""
    x = opset1.parameter(shape, np.float32, name="x")
    calc = "scales" if isinstance(target[0], float) else "sizes"
    sizes = opset1.constant(np.array(target if calc == "sizes" else [1] * len(target), np.int64))
    scales = opset1.constant(np.array(target if calc == "scales" else [1.0] * len(target),
                                      np.float32))
    options = dict(shape_calculation_mode=calc, pads_begin=pads[0], pads_end=pads[1],
                   axes=None if axes is None else opset1.constant(np.array(axes, np.int64)),
                   **attributes)
    if version == 4:
        node = opset10.interpolate(x, sizes, scales, **options)
    else:
        node = opset11.interpolate(x, sizes if calc == "sizes" else scales, **options)
    return ov.Model([node], [x])


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("nearest_mode", NEAREST_MODES)
@pytest.mark.parametrize("target, version", [([0.5, 0.5], 4), ([1.7, 0.6], 11)])
def test_nearest(tmp_path, transform, nearest_mode, target, version):
    m = interpolate_model((2, 3, 6, 7), target, [2, 3], version, mode="nearest",
                          coordinate_transformation_mode=transform, nearest_mode=nearest_mode)
    oracle.compare_with_openvino(m, tmp_path)


@pytest.mark.parametrize("mode", ["linear", "linear_onnx", "cubic"])
@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("target, version", [([10, 14], 4), ([3, 4], 11), ([1.7, 0.6], 4),
                                             ([8, 3], 11)])
def test_linear_and_cubic(tmp_path, mode, transform, target, version):
    m = interpolate_model((2, 3, 5, 7), target, [2, 3], version, mode=mode,
                          coordinate_transformation_mode=transform)
    oracle.compare_with_openvino(m, tmp_path)


@pytest.mark.parametrize("mode", ["nearest", "linear", "linear_onnx", "cubic"])
@pytest.mark.parametrize("version", [4, 11])
@pytest.mark.parametrize("shape, target, axes, pads, transform", [
    ((2, 3, 5, 7), [2, 3, 10, 14], None, (None, None), "half_pixel"),        # no axes input
    ((2, 3, 5, 7), [9, 4], [3, 2], (None, None), "half_pixel"),               # axes reordered
    ((2, 3, 5, 7), [10, 14], [2, 3], ([0, 0, 1, 2], [0, 0, 2, 1]), "pytorch_half_pixel"),
    ((1, 1, 11), [13 / 11], [2], (None, None), "asymmetric"),                # needs the +1e-6
    ((2, 3, 4, 5, 6), [7, 3, 9], [2, 3, 4], (None, None), "half_pixel"),     # 5D
    ((3, 8), [5, 13], [0, 1], (None, None), "align_corners"),                # 2D
    ((2, 3, 9), [2.5], [2], (None, None), "tf_half_pixel_for_nn"),           # 3D
])
def test_axes_pads_and_ranks(tmp_path, mode, version, shape, target, axes, pads, transform):
    m = interpolate_model(shape, target, axes, version, pads, mode=mode,
                          coordinate_transformation_mode=transform)
    oracle.compare_with_openvino(m, tmp_path)


@pytest.mark.parametrize("mode", ["linear", "linear_onnx", "cubic"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_integer_data(tmp_path, mode, dtype):
    x = opset1.parameter((1, 2, 4, 6), dtype, name="x")
    node = opset11.interpolate(x, opset1.constant(np.array([7, 11], np.int64)), mode=mode,
                               shape_calculation_mode="sizes",
                               coordinate_transformation_mode="align_corners",
                               axes=opset1.constant(np.array([2, 3], np.int64)))
    values = np.random.default_rng(5).integers(0, 100, (1, 2, 4, 6)).astype(dtype)
    oracle.compare_with_openvino(ov.Model([node], [x]), tmp_path, inputs=[values])


@pytest.mark.parametrize("attributes, message", [
    ({"mode": "bilinear_pillow"}, r"mode 'bilinear_pillow' is not supported by lpjit"),
    ({"mode": "bicubic_pillow"}, r"mode 'bicubic_pillow' is not supported by lpjit"),
    ({"mode": "linear", "antialias": True}, r"antialias=true is not supported by lpjit"),
])
def test_unsupported_modes_are_reported_by_the_reader(tmp_path, attributes, message):
    m = interpolate_model((1, 3, 8, 8), [4, 4], [2, 3], 11, **attributes)
    xml = oracle.save(m, tmp_path)
    with pytest.raises(UnsupportedOpError, match=r"Interpolate '.*' \(layer \d+\): " + message):
        lpjit.read_ir(xml)
