"""Reference semantics of the low-precision ops (``lpjit.ops.lowp``): the definition the
integer kernels are checked against.

Integer parts are exact (int64 here; the kernels' i32 cannot overflow, see
``lpjit.ops.lowp.accumulator_bound``).  Float parts are f32, each operation rounded to nearest
even, in the order of the numbered steps, so a kernel that follows the same steps agrees
bit for bit; one that reassociates them agrees to float rounding.

Exactness against FakeQuantize (``lpjit.reference.quantize.fake_quantize``):

* ``quantize`` returns the level index the FakeQuantize reference rounds to, for every x.
* ``dequantize(quantize(x)) == fake_quantize(x)`` for every non-NaN x, with one exception
  inherent in FakeQuantize: its top level has two float values when
  ``fl(fl(oh - ol) + ol) != oh`` (about half of all signed ranges): ``x > max(il, ih)``
  gives ``oh``, an x inside the range that rounds to the top level gives
  ``fl(fl(oh - ol) + ol)``, at most two ulps away.  A level index cannot tell the two apart;
  ``dequantize`` returns ``oh``.  (With ``ol == 0``, e.g. every ReLU range, both agree.)
  Likewise ``-0.0`` vs ``+0.0`` at level 0 when ``ol`` is ``-0.0``.
* NaN: FakeQuantize gives NaN; ``quantize`` gives level 0, so a quantized layer sees
  ``output_low`` where the float model would propagate NaN (OpenVINO's CPU plugin also maps NaN
  to ``output_low``, facts 2.5).
"""

from __future__ import annotations

import numpy as np

from lpjit.ops import lowp
from lpjit.reference import evaluator
from lpjit.reference.nn import windows_of

F32 = np.float32
# How far (relative to output_high) FakeQuantize's top level value may be from output_high
# for the integer form, which uses output_high there (``range_problem``, step 4).
TOP_LEVEL_TOLERANCE = 2.0 ** -10


def level_index(x: np.ndarray, input_low: np.ndarray, input_high: np.ndarray,
                levels: int) -> np.ndarray:
    """The FakeQuantize level index of ``x`` (int64 in ``[0, levels-1]``), in float32 steps:

    1. Broadcast ``il``, ``ih`` to ``x`` (numpy rules), all float32.
    2. ``t = (x - il) / (ih - il) * (levels - 1)`` (each op rounded to f32, this order).
    3. ``q = round_half_to_even(t)`` (``np.rint``).
    4. ``x > max(il, ih)`` -> ``levels - 1``.
    5. ``x <= min(il, ih)`` -> 0 (wins over step 4, as in FakeQuantize).
    6. NaN ``x`` (which fails both comparisons) -> 0.

    These are FakeQuantize's steps 1-5 up to its rounding (``lpjit.reference.quantize``), so
    the index is the one FakeQuantize's output is computed from.
    """
    x = np.asarray(x, F32)
    il, ih = (np.broadcast_to(np.asarray(r, F32), x.shape) for r in (input_low, input_high))
    steps = F32(levels - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint((x - il) / (ih - il) * steps)
    q = np.where(x > np.maximum(il, ih), steps, q)
    q = np.where(x <= np.minimum(il, ih), F32(0), q)
    q = np.where(np.isnan(x), F32(0), q)
    return np.clip(q, 0, levels - 1).astype(np.int64)


def dequantize(q: np.ndarray, output_low: np.ndarray, output_high: np.ndarray,
               levels: int) -> np.ndarray:
    """The float value of level index ``q``, in float32 steps:

    1. ``y = q / (levels - 1) * (oh - ol) + ol`` (each op rounded to f32, this order: the
       expression FakeQuantize evaluates after rounding).
    2. ``q == levels - 1`` -> ``oh``; ``q == 0`` -> ``ol`` (FakeQuantize's saturated values).
    """
    q = np.asarray(q)
    ol, oh = (np.broadcast_to(np.asarray(r, F32), q.shape) for r in (output_low, output_high))
    steps = F32(levels - 1)
    y = q.astype(F32) / steps * (oh - ol) + ol
    y = np.where(q == levels - 1, oh, y)
    return np.where(q == 0, ol, y)


def range_problem(input_low: np.ndarray, input_high: np.ndarray, output_low: np.ndarray,
                  output_high: np.ndarray, levels: int) -> str | None:
    """Why FakeQuantize ranges have no integer form (``None``: they have one).

    The integer kernels scale level indices by steps computed from the ranges, in float32;
    they agree with FakeQuantize only when

    1. the four ranges are finite (NaN or an infinite bound has no level grid);
    2. ``ih - il`` and ``(levels - 1) / (ih - il)`` are finite and normal (not zero, not
       subnormal): the input step;
    3. ``oh - ol`` and ``(oh - ol) / (levels - 1)`` are finite and normal: the output step;
    4. the top level FakeQuantize computes, ``fl(fl(oh - ol) + ol)``, is ``oh`` within
       ``TOP_LEVEL_TOLERANCE`` of ``|oh|`` (``dequantize`` returns ``oh`` there; with
       ``|ol| >> |oh|``, e.g. ``[-1e30, 1]``, the sum cancels to 0).

    Otherwise the FakeQuantize stays float ("non-finite or degenerate range (...)").
    """
    names = ("input_low", "input_high", "output_low", "output_high")
    ranges = [np.asarray(r, F32) for r in (input_low, input_high, output_low, output_high)]
    for name, values in zip(names, ranges):
        if not np.all(np.isfinite(values)):
            bad = values[~np.isfinite(values)].reshape(-1)[0]
            return f"non-finite or degenerate range ({name} has the value {bad:.3g})"
    il, ih, ol, oh = ranges
    steps = F32(levels - 1)
    with np.errstate(all="ignore"):
        spans = {"input_high - input_low": ih - il, "output_high - output_low": oh - ol}
        spans["(levels - 1) / (input_high - input_low)"] = steps / spans["input_high - input_low"]
        spans["(output_high - output_low) / (levels - 1)"] = (
            spans["output_high - output_low"] / steps)
    for what, values in spans.items():
        normal = np.isfinite(values) & (np.abs(values) >= np.finfo(F32).tiny)
        if not np.all(normal):
            bad = values[~normal].reshape(-1)[0]
            return f"non-finite or degenerate range ({what} is {bad:.3g})"
    top = spans["output_high - output_low"] + ol
    oh = np.broadcast_to(oh, top.shape)
    far = np.abs(top - oh) > TOP_LEVEL_TOLERANCE * np.abs(oh)
    if np.any(far):
        return (f"non-finite or degenerate range (the top level computes as "
                f"{top[far].reshape(-1)[0]:.3g}, not output_high {oh[far].reshape(-1)[0]:.3g})")
    return None


@evaluator(lowp.Quantize)
def _quantize(node: lowp.Quantize, x: np.ndarray, input_low: np.ndarray,
              input_high: np.ndarray) -> np.ndarray:
    return level_index(x, input_low, input_high, node.levels).astype(np.uint8)


@evaluator(lowp.Dequantize)
def _dequantize(node: lowp.Dequantize, q: np.ndarray, output_low: np.ndarray,
                output_high: np.ndarray) -> np.ndarray:
    return dequantize(q, output_low, output_high, node.levels)


# ------------------------------------------------------------------------------------------
# Integer convolution and matrix products


def integer_convolution(node: lowp.QConvolution | lowp.CompressedConvolution, x: np.ndarray,
                        w: np.ndarray) -> np.ndarray:
    """``acc[n, g*OCg + o, p] = sum_{c, k} w[g, o, c, k] * x[n, g*ICg + c, p*s + k*d]`` over
    the taps inside the input (padding contributes nothing), in int64 (or float64 for float
    ``x``/``w``).  ``w`` is ``[G, OCg, ICg, k...]``."""
    groups, per_group_out = w.shape[:2]
    kernel = w.shape[3:]
    windows = windows_of(node, x, kernel, node.dilations, 0)      # [N, C, *out, *k]
    batch, n = x.shape[0], len(kernel)
    out = windows.shape[2:2 + n]
    columns = windows.transpose(0, 1, *range(2 + n, 2 + 2 * n), *range(2, 2 + n))
    columns = columns.reshape(batch, groups, -1, int(np.prod(out)))
    matrix = w.reshape(groups, per_group_out, -1).astype(columns.dtype)
    acc = np.matmul(matrix[None], columns)                         # [N, G, OCg, P]
    return acc.reshape(batch, groups * per_group_out, *out)


def _per_output_channel(values: np.ndarray, node: lowp.QConvolution) -> np.ndarray:
    """A ``[1]`` or ``[C]`` (per input channel, IC/G == 1) vector as ``[1, OC, 1...]``."""
    per_group_out = node.input_type(1).shape[1]
    if values.shape[0] != 1:
        values = np.repeat(values, per_group_out)      # output channel g*OCg + o reads channel g
    return values.reshape(1, -1, *(1,) * (node.input_type(0).rank - 2))


@evaluator(lowp.QConvolution)
def _q_convolution(node: lowp.QConvolution, q: np.ndarray, w: np.ndarray,
                   weight_scale: np.ndarray, step: np.ndarray, low: np.ndarray) -> np.ndarray:
    """1. ``acc = sum over valid taps of wq * q`` (exact integer);
    2. ``wsum = sum over valid taps of wq`` (exact integer; the full kernel sum inside,
       smaller at the borders, where float padding is 0.0);
    3. ``y = (f32(acc) * step + f32(wsum) * low) * weight_scale[oc]`` in f32, this order.
    """
    w = w.astype(np.int64)
    acc = integer_convolution(node, q.astype(np.int64), w)
    wsum = integer_convolution(node, np.ones((1, *q.shape[1:]), np.int64), w)
    step, low = _per_output_channel(step, node), _per_output_channel(low, node)
    scale = weight_scale.reshape(1, -1, *(1,) * (q.ndim - 2))
    return (acc.astype(F32) * step + wsum.astype(F32) * low) * scale


def _as_matrix(x: np.ndarray, transpose: bool) -> np.ndarray:
    return np.swapaxes(x, -1, -2) if transpose else x


@evaluator(lowp.QMatMul)
def _q_matmul(node: lowp.QMatMul, q: np.ndarray, w: np.ndarray, weight_scale: np.ndarray,
              step: np.ndarray, low: np.ndarray) -> np.ndarray:
    """1. ``acc[..., m, n] = sum_k q[..., m, k] * wq[n, k]`` (exact integer);
    2. ``wsum[n] = sum_k wq[n, k]`` (exact integer);
    3. ``y = (f32(acc) * step + f32(wsum) * low) * weight_scale[n]`` in f32, this order.
    """
    w = w.astype(np.int64)
    acc = np.matmul(_as_matrix(q.astype(np.int64), node.transpose_a), w.T)
    wsum = w.sum(axis=1)
    return (acc.astype(F32) * step[0] + wsum.astype(F32) * low[0]) * weight_scale


@evaluator(lowp.QActivationMatMul)
def _q_activation_matmul(node: lowp.QActivationMatMul, qa: np.ndarray, qb: np.ndarray,
                         a_step: np.ndarray, a_low: np.ndarray, b_step: np.ndarray,
                         b_low: np.ndarray) -> np.ndarray:
    """With ``a = la + sa*qa`` and ``b = lb + sb*qb`` (per tensor) and K the inner length:

    1. ``s_ab = sum_k qa*qb``, ``s_a = sum_k qa`` (per row of a), ``s_b = sum_k qb`` (per
       column of b): exact integers;
    2. f32 constants ``c_ab = sa*sb``, ``c_b = la*sb``, ``c_a = lb*sa``,
       ``c_0 = (f32(K)*la)*lb``;
    3. ``y = ((f32(s_ab)*c_ab + f32(s_b)*c_b) + f32(s_a)*c_a) + c_0`` in f32, this order.
    """
    a = _as_matrix(qa.astype(np.int64), node.transpose_a)
    b = _as_matrix(qb.astype(np.int64), node.transpose_b)
    s_ab = np.matmul(a, b)
    s_a = a.sum(axis=-1, keepdims=True)                  # [..., M, 1]
    s_b = b.sum(axis=-2, keepdims=True)                  # [..., 1, N]
    sa, la, sb, lb = (F32(v[0]) for v in (a_step, a_low, b_step, b_low))
    c_ab, c_b, c_a = sa * sb, la * sb, lb * sa
    c_0 = F32(a.shape[-1]) * la * lb
    return ((s_ab.astype(F32) * c_ab + s_b.astype(F32) * c_b) + s_a.astype(F32) * c_a) + c_0


# ------------------------------------------------------------------------------------------
# Weight-only compression


def decompress(weights: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None
               ) -> np.ndarray:
    """``(f32(wq) - f32(zero_point)) * scale`` in f32 (facts 3.1: f32 math on the exactly
    converted values, as OpenVINO's CPU plugin); ``scale``/``zero_point`` broadcast to
    ``weights``."""
    values = weights.astype(F32)
    if zero_point is not None:
        values = values - zero_point.astype(F32)
    return values * scale.astype(F32)


def _expand_groups(x: np.ndarray, group_size: int) -> np.ndarray:
    """``[N, K/g]`` -> ``[N, K]`` (each value repeated over its group)."""
    return np.repeat(x, group_size, axis=1)


@evaluator(lowp.CompressedMatMul)
def _compressed_matmul(node: lowp.CompressedMatMul, a: np.ndarray, w: np.ndarray,
                       scale: np.ndarray, zero_point: np.ndarray | None = None) -> np.ndarray:
    """1. ``w = decompress(wq, scale, zero_point)`` per group, f32;
    2. ``y = a @ w^T`` accumulated in float64, rounded once (as the MatMul reference)."""
    group = node.group_size
    zp = None if zero_point is None else _expand_groups(zero_point, group)
    weights = decompress(w, _expand_groups(scale, group), zp)
    a = _as_matrix(a.astype(np.float64), node.transpose_a)
    return np.matmul(a, weights.astype(np.float64).T)


@evaluator(lowp.CompressedConvolution)
def _compressed_convolution(node: lowp.CompressedConvolution, x: np.ndarray, w: np.ndarray,
                            scale: np.ndarray, zero_point: np.ndarray | None = None
                            ) -> np.ndarray:
    """1. ``w = decompress(wq, scale[oc], zero_point[oc])``, f32;
    2. the convolution accumulated in float64, rounded once (as the Convolution reference)."""
    per_channel = (*w.shape[:2], *(1,) * (w.ndim - 2))
    zp = None if zero_point is None else zero_point.reshape(per_channel)
    weights = decompress(w, scale.reshape(per_channel), zp)
    return integer_convolution(node, x.astype(np.float64), weights.astype(np.float64))
