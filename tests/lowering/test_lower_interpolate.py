"""Interpolate-4/11 lowered to loops, on numba and LLVM, against the reference.

Float outputs: rtol 1e-4 / atol 1e-5 (the kernel sums all taps of all axes in float32 where
the reference resamples axis by axis in float64); nearest without padding and integer
outputs: exact.  Cases: nearest-mode ties of a 0.5 downscale, every mode, sizes and scales,
Interpolate-4 and -11, pads (also on an axis that is not resized), ranks 2, 3 and 5, a row
wide enough to vectorize, and integer data (cubic undershoot saturates).
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import pytest
from lowered import check_lowered, lower_model
from openvino import opset1, opset10, opset11

from lpjit import reference

pytestmark = pytest.mark.oracle


def interpolate_model(shape: tuple[int, ...], target: list, axes: list, version: int,
                      pads: tuple[list | None, list | None] = (None, None),
                      dtype=np.float32, **attributes: str) -> ov.Model:
    """A one-Interpolate model; ``target`` holds sizes (ints) or scales (floats)."""
    x = opset1.parameter(list(shape), dtype, name="x")
    calc = "scales" if isinstance(target[0], float) else "sizes"
    sizes = opset1.constant(np.array(target if calc == "sizes" else [1] * len(target), np.int64))
    scales = opset1.constant(np.array(target if calc == "scales" else [1.0] * len(target),
                                      np.float32))
    options = dict(shape_calculation_mode=calc, pads_begin=pads[0], pads_end=pads[1],
                   axes=opset1.constant(np.array(axes, np.int64)), **attributes)
    if version == 4:
        node = opset10.interpolate(x, sizes, scales, **options)
    else:
        node = opset11.interpolate(x, sizes if calc == "sizes" else scales, **options)
    return ov.Model([node], [x])


@pytest.mark.parametrize("shape, target, axes, version, pads, attributes", [
    ((2, 3, 6, 7), [0.5, 0.5], [2, 3], 4, (None, None),
     {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
      "nearest_mode": "round_prefer_floor"}),
    ((2, 3, 5, 7), [10, 14], [2, 3], 11, ([0, 1, 1, 2], [0, 0, 2, 1]),
     {"mode": "nearest", "coordinate_transformation_mode": "pytorch_half_pixel",
      "nearest_mode": "simple"}),
    ((2, 3, 5, 7), [1.7, 0.6], [2, 3], 4, (None, None),
     {"mode": "linear", "coordinate_transformation_mode": "half_pixel"}),
    ((2, 3, 5, 7), [10, 14], [3, 2], 11, ([0, 0, 1, 2], [0, 0, 2, 1]),
     {"mode": "linear_onnx", "coordinate_transformation_mode": "pytorch_half_pixel"}),
    ((2, 3, 4, 5, 6), [7, 3, 9], [2, 3, 4], 4, (None, None),
     {"mode": "cubic", "coordinate_transformation_mode": "half_pixel"}),
    ((3, 8), [5, 13], [0, 1], 11, (None, None),
     {"mode": "linear", "coordinate_transformation_mode": "align_corners"}),
    ((2, 3, 9), [2.5], [2], 11, (None, None),
     {"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn"}),
], ids=["nearest-ties", "nearest-pads", "linear-scales", "onnx-pads", "cubic-5d",
        "linear-2d", "nearest-3d"])
def test_modes(tmp_path, shape, target, axes, version, pads, attributes):
    check_lowered(interpolate_model(shape, target, axes, version, pads, **attributes),
                  tmp_path)


def test_nearest_upsample_of_wide_rows_copies_exactly(tmp_path):
    """A 2x nearest upsample: index tables only, the innermost axis a vectorized gather."""
    model = interpolate_model((1, 3, 4, 40), [2.0, 2.0], [2, 3], 11, mode="nearest",
                              coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    check_lowered(model, tmp_path, rtol=0, atol=0)


def test_integer_cubic_rounds_and_saturates(tmp_path):
    """u8 data: the float32 sum is rounded half to even and saturated to 0..255 (the same
    cubic resize of float data over- and undershoots next to the steps)."""
    geometry = {"mode": "cubic", "coordinate_transformation_mode": "half_pixel"}
    data = np.random.default_rng(8).choice([0, 255], (1, 2, 5, 6)).astype(np.uint8)
    model = interpolate_model((1, 2, 5, 6), [11, 9], [2, 3], 4, dtype=np.uint8, **geometry)
    check_lowered(model, tmp_path / "u8", inputs=[data])
    float_model = interpolate_model((1, 2, 5, 6), [11, 9], [2, 3], 4, **geometry)
    graph, _ = lower_model(float_model, tmp_path / "f32")
    (unsaturated,) = reference.run(graph, [data.astype(np.float32)])
    assert unsaturated.min() < -0.5 and unsaturated.max() > 255.5
