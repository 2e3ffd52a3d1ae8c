"""Reference semantics of Convolution, GroupConvolution, MatMul, MaxPool and AvgPool.

Windows are strided views of the padded input (``sliding_windows``); a convolution is then one
``matmul`` of the weights with the im2col matrix.  Float products are accumulated in float64 and
rounded once to the output type, so the reference is closer to exact than any float32 kernel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lpjit.ops import nn
from lpjit.reference import evaluator


def accumulator_dtype(dtype: np.dtype) -> type:
    """float64 for float inputs, int64 for integer ones."""
    return np.float64 if dtype.kind == "f" else np.int64


def pad_spatial(x: np.ndarray, pads_begin: Sequence[int], pads_end: Sequence[int],
                value: float = 0) -> np.ndarray:
    """``x`` padded with ``value`` on its spatial dims (2 onwards)."""
    widths = [(0, 0), (0, 0), *zip(pads_begin, pads_end)]
    if not any(b or e for b, e in widths):
        return x
    return np.pad(x, widths, constant_values=value)


def sliding_windows(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int],
                    dilations: Sequence[int], out: Sequence[int]) -> np.ndarray:
    """Read-only view ``[N, C, *out, *kernel]`` of the windows of the (padded) input ``x``.

    ``x`` must already extend to the end of the last window.  An axis with one window (or a
    kernel of one) never steps, so its stride (or dilation) is not used: it may be any size.
    """
    n = len(kernel)
    spatial_strides = x.strides[2:]
    shape = (*x.shape[:2], *out, *kernel)
    strides = (*x.strides[:2],
               *(st * s if o > 1 else 0 for st, s, o in zip(spatial_strides, strides, out)),
               *(st * d if k > 1 else 0 for st, d, k in zip(spatial_strides, dilations, kernel)))
    assert len(shape) == 2 + 2 * n
    return np.lib.stride_tricks.as_strided(x, shape, strides, writeable=False)


def tail_padding(node: nn.SlidingWindow, kernel: Sequence[int], dilations: Sequence[int],
                 out: Sequence[int]) -> tuple[int, ...]:
    """Extra end padding so that ceil-mode windows lie inside the padded input."""
    spatial = node.input_type(0).shape[2:]
    extra = []
    for i, k, s, d, o, pb, pe in zip(spatial, kernel, node.strides, dilations, out,
                                     node.pads_begin, node.pads_end):
        reach = (o - 1) * s + nn.dilated_kernel(k, d)
        extra.append(max(0, reach - (i + pb + pe)))
    return tuple(extra)


def windows_of(node: nn.SlidingWindow, x: np.ndarray, kernel: Sequence[int],
               dilations: Sequence[int], fill: float) -> np.ndarray:
    """Windows ``[N, C, *out, *kernel]`` of ``x`` padded with ``fill`` as ``node`` pads it."""
    out = node.output_types[0].shape[2:]
    extra = tail_padding(node, kernel, dilations, out)
    padded = pad_spatial(x, node.pads_begin, [e + t for e, t in zip(node.pads_end, extra)], fill)
    return sliding_windows(padded, kernel, node.strides, dilations, out)


# ------------------------------------------------------------------------------------------


@evaluator(nn.Convolution, nn.GroupConvolution)
def _convolution(node: nn.ConvolutionBase, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``y[n, g*OCg + o, p] = sum_{c, k} w[g, o, c, k] * xpad[n, g*ICg + c, p*s + k*d]``."""
    work = accumulator_dtype(x.dtype)
    groups = w.shape[0] if isinstance(node, nn.GroupConvolution) else 1
    w = w.reshape(groups, -1, *w.shape[-(x.ndim - 1):])          # [G, OCg, ICg, k...]
    kernel = w.shape[3:]
    windows = windows_of(node, x.astype(work), kernel, node.dilations, 0)
    batch = x.shape[0]
    out = windows.shape[2:2 + len(kernel)]
    n = len(kernel)
    # im2col: [N, C, *out, *k] -> [N, G, ICg * K, P]
    columns = windows.transpose(0, 1, *range(2 + n, 2 + 2 * n), *range(2, 2 + n))
    columns = columns.reshape(batch, groups, -1, int(np.prod(out)))
    matrix = w.reshape(groups, w.shape[1], -1).astype(work)       # [G, OCg, ICg * K]
    y = np.matmul(matrix[None], columns)                          # [N, G, OCg, P]
    return y.reshape(batch, groups * w.shape[1], *out)


@evaluator(nn.MatMul)
def _matmul(node: nn.MatMul, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.matmul`` after the transposes (which 1-D inputs ignore)."""
    work = accumulator_dtype(a.dtype)
    a, b = a.astype(work), b.astype(work)
    if node.transpose_a and a.ndim > 1:
        a = np.swapaxes(a, -1, -2)
    if node.transpose_b and b.ndim > 1:
        b = np.swapaxes(b, -1, -2)
    return np.matmul(a, b)


def lowest(dtype: np.dtype) -> float:
    """The padding value of MaxPool: the lowest finite value of the type.

    OpenVINO's CPU plugin returns it (not -inf) for a ceil-mode window that lies entirely in the
    padding.
    """
    return float(np.finfo(dtype).min) if dtype.kind == "f" else int(np.iinfo(dtype).min)


def _flat_windows(node: nn.Pool, x: np.ndarray, dilations: Sequence[int], fill: float
                  ) -> np.ndarray:
    """Windows as ``[N, C, *out, K]`` (kernel positions in row-major order)."""
    windows = windows_of(node, x, node.kernel, dilations, fill)
    return windows.reshape(*windows.shape[:2 + len(node.kernel)], -1)


@evaluator(nn.MaxPoolV1)
def _max_pool_v1(node: nn.MaxPoolV1, x: np.ndarray) -> np.ndarray:
    return _flat_windows(node, x, node.window_dilations(), lowest(x.dtype)).max(axis=-1)


@evaluator(nn.MaxPoolV8, nn.MaxPoolV14)
def _max_pool_v8(node: nn.MaxPoolV8, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values and indices; an index is the first maximum's flat position from dim ``axis`` on.

    A window entirely in the padding gives the lowest value and spatial position 0 (as
    OpenVINO's CPU plugin).
    """
    flat = _flat_windows(node, x, node.dilations, lowest(x.dtype))
    values = flat.max(axis=-1)
    position = np.unravel_index(flat.argmax(axis=-1), node.kernel)
    out = values.shape[2:]
    spatial = x.shape[2:]
    index = np.zeros(values.shape, np.int64)
    in_padding = np.zeros(values.shape, bool)
    for axis, (k_index, s, d, pb) in enumerate(zip(position, node.strides, node.dilations,
                                                   node.pads_begin)):
        step, dilation = (s if out[axis] > 1 else 0), (d if node.kernel[axis] > 1 else 0)
        start = np.arange(out[axis]) * step - pb
        coordinate = start.reshape((-1,) + (1,) * (len(out) - axis - 1)) + k_index * dilation
        in_padding |= (coordinate < 0) | (coordinate >= spatial[axis])
        index = index * spatial[axis] + coordinate
    index = np.where(in_padding, 0, index)
    plane = int(np.prod(spatial))
    batch, channels = x.shape[:2]
    offset = np.arange(batch * channels).reshape(batch, channels, *(1,) * len(out)) * plane
    return values, (index + offset) % int(np.prod(x.shape[node.flatten_axis:]))


@evaluator(nn.AvgPoolV1, nn.AvgPoolV14)
def _avg_pool(node: nn.AvgPoolV1, x: np.ndarray) -> np.ndarray:
    """Window sums divided by the in-bounds count (``exclude_pad``, or no pads at all) or by the
    kernel size (padding included, as OpenVINO: also for ceil-mode windows past the end).

    A ceil-mode window with no in-bounds element gives 0/0 = NaN, as OpenVINO's CPU plugin.
    Integer means are rounded half to even.
    """
    dilations = node.window_dilations()
    sums = _flat_windows(node, x.astype(np.float64), dilations, 0.0).sum(axis=-1)
    has_pads = any(node.pads_begin) or any(node.pads_end)
    if has_pads and not node.exclude_pad:
        counts: np.ndarray | int = int(np.prod(node.kernel))
    else:
        ones = np.ones((1, 1, *x.shape[2:]))
        counts = _flat_windows(node, ones, dilations, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore"):
        means = sums / counts
    return np.round(means) if x.dtype.kind in "iu" else means
