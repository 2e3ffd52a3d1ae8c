"""Fast requantizing epilogue of integer convolutions: one multiply-add and a rounding per vector,
proven at compile time to give the reference's level index, or the exact chain when unsure.

A group ``QConvolution -> [Add/Subtract/Multiply by per-channel constants, Relu, Clamp] ->
Quantize`` maps the i32 accumulator ``acc`` of output channel ``oc`` (and border class ``c``) to
a level index ``f(acc)``, a composition of monotone f32 steps: ``f`` is monotone in ``acc``
(non-decreasing when the composed slope is positive).  The fast form is

    t = f32(acc) * A[oc] + B[c, oc]        (two f32 roundings, no FMA)
    g(acc) = clamp(rint(t), f(lo), f(hi))  over the accumulator's range [lo, hi]

also monotone.  Two monotone step functions with values in ``[0, L-1]`` differ only between
their thresholds ``T_k = min{acc: f(acc) >= k}`` and ``T'_k`` (each found by binary search on
the reference chain and on ``g``).  Every accumulator where they differ (few, isolated) is
listed; ``limit[oc]`` is the smallest ``|t - rint(t)|`` among them.  At run time a vector whose
lanes all have ``|t - rint(t)| < limit`` holds no listed accumulator, so ``g`` is exact there;
any other vector takes the exact chain (the group's epilogue).  Results are bit-identical to
the reference for every input; the proof is the threshold comparison, done per layer.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import numpy as np

from lowering import builder as lb
from lowering.loop_ir import Cast, Compare, Expr, ReduceLanes, Select, f32, i32, u8
from lowering.lower_graph import Epilogue
from lpjit.graph import Node, constant_value
from lpjit.ops import activations as act
from lpjit.ops import elementwise as elt
from lpjit.ops import lowp
from lpjit.reference import EVALUATORS

F32 = np.float32
# Give up (exact chain everywhere) when the fast form would serve fewer vectors than this.
MIN_FAST_SHARE = 0.75
# Give up on a channel whose thresholds differ over more accumulators than this.
MAX_EXCEPTIONS = 256
_AFFINE = (elt.Add, elt.Subtract, elt.Multiply)
_CLAMPS = (act.Relu, act.Clamp)


@attrs.frozen
class FastRequantize:
    """The fast form's constants: ``slope [OC]``, ``limit [OC]``; ``offset``, ``low``,
    ``high`` per ``[outer class, OC, width class]`` (the zero-point table's layout)."""

    slope: np.ndarray
    offset: np.ndarray
    low: np.ndarray
    high: np.ndarray
    limit: np.ndarray


@attrs.frozen
class _Chain:
    """The group's chain: ``run(x)`` evaluates it as the reference does on ``x`` shaped
    ``[1, OC, n, 1...]``; ``slope``/``shift`` compose its affine parts (float64, per OC)."""

    run: Callable[[np.ndarray], np.ndarray]
    slope: np.ndarray
    shift: np.ndarray
    levels: int


def _per_channel(array: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    """``array`` as ``[OC]`` float64 when it broadcasts over an output of ``rank`` dims as a
    per-channel (or scalar) constant, else ``None``."""
    array = np.asarray(array)
    if array.ndim > rank:
        return None
    shape = (1,) * (rank - array.ndim) + array.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(array.reshape(shape)[0].reshape(-1), (channels,)).astype(np.float64)


def _chain(epilogue: Epilogue, rank: int, channels: int) -> _Chain | None:
    """The chain when it is monotone affine steps and clamps ending in a Quantize, with
    per-channel constant operands; else ``None``."""
    group = epilogue.group
    if not group.chain or not isinstance(group.chain[-1], lowp.Quantize):
        return None
    slope, shift = np.ones(channels), np.zeros(channels)
    steps: list[tuple[Node, int, list]] = []
    for node, port in zip(group.chain, group.ports):
        others = [constant_value(v) for i, v in enumerate(node.inputs) if i != port]
        if any(c is None for c in others) or type(node) not in EVALUATORS:
            return None
        vectors = [_per_channel(c, rank, channels) for c in others]
        if any(v is None for v in vectors):
            return None
        if isinstance(node, _AFFINE):
            if isinstance(node, elt.Subtract) and port != 0:
                return None
            (c,) = vectors
            if isinstance(node, elt.Multiply):
                slope, shift = slope * c, shift * c
            else:
                shift = shift + c if isinstance(node, elt.Add) else shift - c
        elif isinstance(node, lowp.Quantize):
            low, high = vectors
            if node is not group.chain[-1] or not np.all(low < high):
                return None
            factor = (node.levels - 1) / (high - low)
            slope, shift = slope * factor, (shift - low) * factor
        elif not isinstance(node, _CLAMPS):
            return None
        steps.append((node, port, [np.asarray(c) for c in others]))

    def run(x: np.ndarray) -> np.ndarray:
        for node, port, constants in steps:
            args = list(constants)
            args.insert(port, x)
            with np.errstate(all="ignore"):
                x = np.asarray(EVALUATORS[type(node)](node, *args))
            x = x.astype(node.output_types[0].dtype.numpy, copy=False)
        return x.astype(np.int64)

    return _Chain(run, slope, shift, group.chain[-1].levels)


def plan_fast_requantize(epilogue: Epilogue, weights: np.ndarray, step: np.ndarray,
                         scale: np.ndarray, zero_point: np.ndarray, rank: int,
                         max_activation: int, lanes: int) -> FastRequantize | None:
    """The fast form for a convolution (weights ``[G, OCg, ICg, k...]``, the output formula's
    ``step``, ``scale`` ``[OC]`` and zero-point table ``[outer, OC, width]``), or ``None``
    when the chain does not qualify or the fast form would rarely apply."""
    channels = step.size
    chain = _chain(epilogue, rank, channels)
    if chain is None:
        return None
    flat = weights.astype(np.int64).reshape(channels, -1)
    lo = max_activation * np.minimum(flat, 0).sum(axis=1)
    hi = max_activation * np.maximum(flat, 0).sum(axis=1)
    outer, _, width = zero_point.shape
    zp = zero_point.transpose(1, 0, 2).reshape(channels, -1).astype(F32)     # [OC, classes]
    slope64 = step.astype(np.float64) * scale * chain.slope
    slope = slope64.astype(F32)
    offset = (zp.astype(np.float64) * (scale * chain.slope)[:, None]
              + chain.shift[:, None]).astype(F32)
    reach = np.abs(slope.astype(np.float64)) * np.maximum(-lo, hi) + np.abs(offset).max(axis=1)
    if not (np.all(np.isfinite(reach)) and reach.max(initial=0) < 1e30
            and np.all(slope != 0)):
        return None

    def exact(acc: np.ndarray, cls: np.ndarray) -> np.ndarray:
        """``f`` at ``acc [OC, n]`` of classes ``cls [OC, n]``."""
        rows = np.arange(channels)[:, None]
        x = (acc.astype(F32) * step[:, None].astype(F32) + zp[rows, cls]) * \
            scale[:, None].astype(F32)
        shaped = x.reshape(1, channels, -1, *([1] * (rank - 3)))
        return chain.run(shaped).reshape(channels, -1)

    def fast_t(acc: np.ndarray, cls: np.ndarray) -> np.ndarray:
        rows = np.arange(channels)[:, None]
        return acc.astype(F32) * slope[:, None] + offset[rows, cls]

    classes = zp.shape[1]
    every = np.broadcast_to(np.arange(classes), (channels, classes))
    q_lo = exact(np.repeat(lo[:, None], classes, 1), every).astype(F32)
    q_hi = exact(np.repeat(hi[:, None], classes, 1), every).astype(F32)
    direction = np.where(slope > 0, 1, -1)[:, None]
    q_min, q_max = np.minimum(q_lo, q_hi), np.maximum(q_lo, q_hi)

    def fast(acc: np.ndarray, cls: np.ndarray) -> np.ndarray:
        rows = np.arange(channels)[:, None]
        return np.clip(np.rint(fast_t(acc, cls)), q_min[rows, cls],
                       q_max[rows, cls]).astype(np.int64)

    levels = np.arange(1, chain.levels)
    shape = (channels, classes, levels.size)
    cls = np.broadcast_to(np.arange(classes)[None, :, None], shape).reshape(channels, -1)
    k = np.broadcast_to(levels, shape).reshape(channels, -1)
    first = np.where(direction > 0, lo[:, None], -hi[:, None])
    last = np.where(direction > 0, hi[:, None], -lo[:, None])

    def thresholds(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
        """``min{b in [first, last]: fn(direction * b) >= k}`` (``last + 1`` if none)."""
        left = np.broadcast_to(first, k.shape).copy()
        right = np.broadcast_to(last + 1, k.shape).copy()
        while np.any(left < right):
            mid = (left + right) // 2
            reached = fn(direction * mid, cls) >= k
            right = np.where(reached, mid, right)
            left = np.where(reached, left, mid + 1)
        return left

    ideal, quick = thresholds(exact), thresholds(fast)
    start, stop = np.minimum(ideal, quick), np.maximum(ideal, quick)
    counts = (stop - start).reshape(channels, -1).sum(axis=1)
    limit = np.ones(channels, F32)
    points: list[tuple[int, int, int]] = []
    for oc, index in zip(*np.nonzero(stop > start)):
        if counts[oc] > MAX_EXCEPTIONS:
            limit[oc] = 0
            continue
        points += [(oc, cls[oc, index], b) for b in range(start[oc, index], stop[oc, index])]
    if points:
        oc, where, b = (np.array(column, np.int64)[None, :] for column in zip(*points))
        acc = direction[oc[0], 0][None, :] * b
        exceptions = _evaluate_points(exact, fast, fast_t, oc[0], where[0], acc[0], channels)
        for channel, distance in exceptions:
            limit[channel] = min(limit[channel], distance)
    share = np.mean(np.minimum(2.0 * limit.astype(np.float64), 1.0) ** lanes)
    if share < MIN_FAST_SHARE:
        return None

    def table(values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(values.reshape(channels, outer, width).transpose(1, 0, 2))

    return FastRequantize(slope, table(offset), table(q_min), table(q_max), limit)


def _evaluate_points(exact, fast, fast_t, oc: np.ndarray, cls: np.ndarray, acc: np.ndarray,
                     channels: int) -> list[tuple[int, float]]:
    """``(channel, |t - rint(t)|)`` of every listed accumulator where ``f != g``."""
    found = []
    for channel in np.unique(oc):
        mine = oc == channel
        grid_acc = np.zeros((channels, int(mine.sum())), np.int64)
        grid_cls = np.zeros_like(grid_acc)
        grid_acc[channel], grid_cls[channel] = acc[mine], cls[mine]
        differ = exact(grid_acc, grid_cls)[channel] != fast(grid_acc, grid_cls)[channel]
        t = fast_t(grid_acc, grid_cls)[channel][differ]
        if t.size:
            found.append((int(channel), float(np.abs(t - np.rint(t)).min())))
    return found


# -- emission -----------------------------------------------------------------------------------

def emit_fast_requantize(b: lb.KernelBuilder, acc: Expr, slope: Expr, offset: Expr, low: Expr,
                         high: Expr, limit: Expr, exact: Callable[[], None],
                         store: Callable[[Expr], None]) -> None:
    """``store(u8 level indices)`` of the fast form when every lane is far enough from a
    rounding tie (``|t - rint(t)| < limit``), else ``exact()`` (the group's epilogue)."""
    lanes = acc.type.lanes
    t = b.let(Cast(acc, f32, "nearest") * slope + offset, "t")
    rounded = b.let(lb.call("round_half_even", t), "rt")
    distance = lb.call("abs", t - rounded)
    near = Select(Compare("lt", distance, limit), lb.broadcast(0, lanes, i32),
                  lb.broadcast(1, lanes, i32))
    unsure = ReduceLanes("max", near) if lanes > 1 else near
    with b.if_(lb.eq(unsure, 0)):
        store(Cast(lb.min_(lb.max_(rounded, low), high), u8, "trunc"))
    with b.else_():
        exact()


__all__ = ["FastRequantize", "emit_fast_requantize", "plan_fast_requantize"]
