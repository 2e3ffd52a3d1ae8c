"""Reference semantics of Interpolate-4/11 (nearest, linear, linear_onnx, cubic).

Every implemented mode is separable: each resized axis is resampled in turn, an output
position reading a few input positions ("taps") with weights.  Source coordinates are computed
in float32 exactly as OpenVINO's CPU plugin does, since nearest-neighbour choices at ties depend
on the last bit; the weighted sums are accumulated in float64.
"""

from __future__ import annotations

import numpy as np

from lpjit.ops import interpolate as ops
from lpjit.reference import evaluator

Taps = list[tuple[np.ndarray, np.ndarray]]   # per tap: (input index, weight) per output index

HALF = np.float32(0.5)


def source_coordinates(mode: str, out_len: int, in_len: int, scale: np.float32) -> np.ndarray:
    """Float32 input coordinate of every output index (``coordinate_transformation_mode``)."""
    x = np.arange(out_len, dtype=np.float32)
    if scale == np.float32(1.0) or out_len == in_len:
        return x
    if mode == "half_pixel":
        return (x + HALF) / scale - HALF
    if mode == "pytorch_half_pixel":
        return (x + HALF) / scale - HALF if out_len > 1 else np.zeros_like(x)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + HALF) / scale
    assert mode == "align_corners", mode
    if out_len == 1:
        return np.zeros_like(x)
    return x * (np.float32(in_len - 1) / np.float32(out_len - 1))


def round_half_away(c: np.ndarray) -> np.ndarray:
    """``std::round``: halves away from zero (exact for float32 inputs, done in float64)."""
    c = c.astype(np.float64)
    return np.sign(c) * np.floor(np.abs(c) + 0.5)


def nearest_index(mode: str, c: np.ndarray, downsample: bool) -> np.ndarray:
    """The input index chosen by ``nearest_mode`` for float32 coordinates ``c``."""
    if mode == "round_prefer_floor":
        tie = c == np.trunc(c) + HALF
        rounded = np.where(tie, np.floor(c), round_half_away(c))
    elif mode == "round_prefer_ceil":
        rounded = round_half_away(c)
    elif mode == "floor":
        rounded = np.floor(c)
    elif mode == "ceil":
        rounded = np.ceil(c)
    else:
        assert mode == "simple", mode
        rounded = np.ceil(c) if downsample else np.trunc(c)
    return rounded.astype(np.int64)


def nearest_taps(node: ops.Interpolate, c: np.ndarray, in_len: int, scale: np.float32) -> Taps:
    index = nearest_index(node.nearest_mode, c, bool(scale < 1))
    return [(np.clip(index, 0, in_len - 1), np.ones(len(c)))]


def linear_taps(node: ops.Interpolate, c: np.ndarray, in_len: int, scale: np.float32) -> Taps:
    """Triangle filter of width 1: ``floor(c)`` and ``floor(c)+1``; taps outside the input are
    dropped and the remaining weights renormalised (so the border value is repeated)."""
    c64 = c.astype(np.float64)
    low = np.floor(c64).astype(np.int64)
    taps = []
    for index in (low, low + 1):
        weight = np.maximum(0.0, 1.0 - np.abs(c64 - index))
        weight = np.where((index >= 0) & (index < in_len), weight, 0.0)
        taps.append((np.clip(index, 0, in_len - 1), weight))
    total = taps[0][1] + taps[1][1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return [(i, np.where(total > 0, w / np.where(total > 0, total, 1), 0.0)) for i, w in taps]


def linear_onnx_taps(node: ops.Interpolate, c: np.ndarray, in_len: int, scale: np.float32
                     ) -> Taps:
    """ONNX linear: clamp ``c`` to ``[0, in_len-1]``, blend its two neighbours."""
    c = np.clip(c.astype(np.float64), 0, in_len - 1)
    low = c.astype(np.int64)
    high = np.minimum(low + 1, in_len - 1)
    same = low == high
    return [(low, np.where(same, 0.5, np.abs(c - high))),
            (high, np.where(same, 0.5, np.abs(c - low)))]


def cubic_taps(node: ops.Interpolate, c: np.ndarray, in_len: int, scale: np.float32) -> Taps:
    """Keys cubic convolution with ``a = cube_coeff`` on ``floor(c)-1 .. floor(c)+2`` (clamped)."""
    a = float(np.float32(node.cube_coeff))
    base = np.floor(c).astype(np.int64)
    s = np.abs(c.astype(np.float64) - base)
    weights = [
        ((a * (s + 1) - 5 * a) * (s + 1) + 8 * a) * (s + 1) - 4 * a,
        ((a + 2) * s - (a + 3)) * s * s + 1,
        ((a + 2) * (1 - s) - (a + 3)) * (1 - s) * (1 - s) + 1,
        ((a * (2 - s) - 5 * a) * (2 - s) + 8 * a) * (2 - s) - 4 * a,
    ]
    return [(np.clip(base + j - 1, 0, in_len - 1), w) for j, w in enumerate(weights)]


TAPS = {"nearest": nearest_taps, "linear": linear_taps, "linear_onnx": linear_onnx_taps,
        "cubic": cubic_taps}


def resample_axis(x: np.ndarray, axis: int, taps: Taps) -> np.ndarray:
    """``y[..., o, ...] = sum_t w_t[o] * x[..., i_t[o], ...]`` along ``axis``."""
    shape = [1] * x.ndim
    shape[axis] = -1
    return sum(np.take(x, index, axis=axis) * weight.reshape(shape) for index, weight in taps)


@evaluator(ops.InterpolateV4, ops.InterpolateV11)
def _interpolate(node: ops.Interpolate, data: np.ndarray, *_: np.ndarray) -> np.ndarray:
    """Zero-pad, then resample each resized axis with the mode's taps."""
    widths = list(zip(node.pads_begin, node.pads_end))
    x = np.pad(data, widths) if any(b or e for b, e in widths) else data
    out_shape = node.output_types[0].shape
    y = x.astype(np.float64)
    for axis, scale in zip(node.axes, node.scales):
        in_len, out_len = x.shape[axis], out_shape[axis]
        c = source_coordinates(node.coordinate_transformation_mode, out_len, in_len, scale)
        y = resample_axis(y, axis, TAPS[node.mode](node, c, in_len, scale))
    if data.dtype.kind in "iu":
        # Half to even, then saturated to the type: OpenVINO's CPU plugin (cubic undershoots).
        info = np.iinfo(data.dtype)
        y = np.clip(np.round(y), info.min, info.max)
    return y
