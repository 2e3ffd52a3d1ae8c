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

from collections.abc import Callable, Sequence

import attrs
import numpy as np

from lowering import builder as lb
from lowering.loop_ir import (
    Buffer,
    Cast,
    Compare,
    Expr,
    ReduceLanes,
    Select,
    Var,
    as_expr,
    f32,
    i32,
    i64,
    u8,
)
from lowering.lower_graph import Epilogue
from lowering.ops.nn_tiles import vector_index
from lpjit import dtypes
from lpjit.graph import Node, Value, constant_value
from lpjit.ops import activations as act
from lpjit.ops import elementwise as elt
from lpjit.ops import lowp
from lpjit.ops.quantize import FakeQuantize
from lpjit.reference import EVALUATORS
from lpjit.reference.lowp import level_index

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
    output: Dequantized | None = None
    fused: bool = False
    tail: TailForm | None = None


@attrs.frozen
class TailForm:
    """The rest of a chain after its first FakeQuantize as one more fast step: a residual
    ``FakeQuantize -> Add(r) -> [Relu | Clamp | affine]... -> Quantize`` with per-tensor
    constants, where ``r`` takes few values (``_other_operand``: a Dequantize of u8 levels, or
    another FakeQuantize's f32 output), maps FakeQuantize's level ``q`` and ``r`` (the level,
    or the value) to the output level; the fast form is

        t2 = q * a + (r * b + c)       (FMAs where the plan's ``fused``; f32 steps)
        level = clamp(rint(t2), 0, high)

    checked against the reference's own evaluation of the rest on *every* pair of trusted
    FakeQuantize levels (``Dequantized``) and values of ``r``: at run time a lane with
    ``|t2 - rint(t2)| < limit`` is one of the pairs where the two agree, so it needs none of
    the rest's f32 divisions; any other vector takes the exact chain."""

    a: float
    b: float
    c: float
    limit: float
    high: float
    levels: Value               # the tensor the rest reads: u8 levels ``r`` or f32 values


@attrs.frozen
class Dequantized:
    """A chain ending in FakeQuantize: its f32 value of level ``q`` is
    ``(q / (L-1)) * span[oc] + out_low[oc]`` (the reference's steps; ``span = oh - ol`` in
    f32), trusted for ``q < L-1`` (``x > ih`` gives ``oh`` there, the formula may not) and
    for ``q == 0`` only when the formula gives ``ol`` bit for bit (``bottom``).
    ``reciprocal``: multiplying by it equals dividing by ``L-1`` for every level."""

    levels: int
    span: np.ndarray
    out_low: np.ndarray
    bottom: bool
    reciprocal: float | None

    @classmethod
    def of(cls, levels: int, out_low: np.ndarray, out_high: np.ndarray) -> Dequantized:
        out_low, out_high = out_low.astype(F32), out_high.astype(F32)
        span = out_high - out_low
        steps = F32(levels - 1)
        q = np.arange(levels, dtype=F32)
        inverse = F32(1) / steps
        reciprocal = float(inverse) if np.array_equal(q * inverse, q / steps) else None
        zero = F32(0) / steps * span + out_low
        bottom = bool(np.array_equal(zero.view(np.int32), out_low.view(np.int32)))
        return cls(levels, span, out_low, bottom, reciprocal)

    def trusted(self, q: Expr) -> Expr:
        lanes = q.type.lanes
        below_top = lb.lt(q, lb.broadcast(float(self.levels - 1), lanes, f32))
        if self.bottom:
            return below_top
        return below_top & lb.gt(q, lb.broadcast(0.0, lanes, f32))

    def value(self, q: Expr, span: Expr, out_low: Expr) -> Expr:
        lanes = q.type.lanes
        if self.reciprocal is not None:
            fraction = q * lb.broadcast(self.reciprocal, lanes, f32)
        else:
            fraction = q / lb.broadcast(float(self.levels - 1), lanes, f32)
        return fraction * span + out_low


@attrs.frozen
class _Chain:
    """The group's chain: ``run(x, oc)`` evaluates it as the reference does on the flat
    values ``x`` of channels ``oc``; ``slope``/``shift`` compose its affine parts (float64)."""

    run: Callable[[np.ndarray, np.ndarray], np.ndarray]
    slope: np.ndarray
    shift: np.ndarray
    levels: int
    output: Dequantized | None = None


def _per_channel(array: np.ndarray, rank: int, channels: int) -> np.ndarray | None:
    """``array`` as ``[OC]`` (its own type) when it broadcasts over an output of ``rank`` dims
    as a per-channel (or scalar) constant, else ``None``."""
    array = np.asarray(array)
    if array.ndim > rank:
        return None
    shape = (1,) * (rank - array.ndim) + array.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(array.reshape(shape)[0].reshape(-1), (channels,))


def _chain(nodes: Sequence[Node], ports: Sequence[int], rank: int, channels: int
           ) -> _Chain | None:
    """The chain ``nodes`` (reading the previous value at ``ports``) when it is monotone
    affine steps and clamps ending in a Quantize, with per-channel constant operands; else
    ``None``."""
    if not nodes or not isinstance(nodes[-1], (lowp.Quantize, FakeQuantize)):
        return None
    slope, shift = np.ones(channels), np.zeros(channels)
    steps: list[tuple[Node, int, list[np.ndarray]]] = []
    quantize: tuple[int, np.ndarray, np.ndarray] | None = None
    output = None
    for node, port in zip(nodes, ports):
        others = [constant_value(v) for i, v in enumerate(node.inputs) if i != port]
        if any(c is None for c in others) or type(node) not in EVALUATORS:
            return None
        vectors = [_per_channel(c, rank, channels) for c in others]
        if any(v is None for v in vectors):
            return None
        wide = [v.astype(np.float64) for v in vectors]
        if isinstance(node, _AFFINE):
            if isinstance(node, elt.Subtract) and port != 0:
                return None
            (c,) = wide
            if isinstance(node, elt.Multiply):
                slope, shift = slope * c, shift * c
            else:
                shift = shift + c if isinstance(node, elt.Add) else shift - c
        elif isinstance(node, (lowp.Quantize, FakeQuantize)):
            low, high = wide[:2]
            if node is not nodes[-1] or not np.all(low < high):
                return None
            factor = (node.levels - 1) / (high - low)
            slope, shift = slope * factor, (shift - low) * factor
            if isinstance(node, FakeQuantize):
                if port != 0:
                    return None
                quantize = (node.levels, vectors[0].astype(F32), vectors[1].astype(F32))
                output = Dequantized.of(node.levels, vectors[2], vectors[3])
                break
        elif not isinstance(node, _CLAMPS):
            return None
        steps.append((node, port, vectors))

    def run(x: np.ndarray, oc: np.ndarray) -> np.ndarray:
        for node, port, vectors in steps:
            args = [v[oc] for v in vectors]
            args.insert(port, x)
            with np.errstate(all="ignore"):
                x = np.asarray(EVALUATORS[type(node)](node, *args))
            x = x.astype(node.output_types[0].dtype.numpy, copy=False)
        if quantize is not None:            # FakeQuantize's level index (its step 5's q)
            levels, low, high = quantize
            x = level_index(x, low[oc], high[oc], levels)
        return x.astype(np.int64)

    return _Chain(run, slope, shift, nodes[-1].levels, output)


# The tail's fast form must serve at least this share of the (level, level) pairs.
MIN_TAIL_SHARE = 0.9


def _tail_form(nodes: Sequence[Node], ports: Sequence[int], output: Dequantized,
               fused: bool) -> TailForm | None:
    """``TailForm`` of the chain ``nodes`` that follows a FakeQuantize whose per-level values
    ``output`` describes, or ``None``: it must end in a Quantize, read per-tensor constants
    and one ``Dequantize`` of u8 levels with per-tensor constants, and the fitted form must
    agree with the reference on at least ``MIN_TAIL_SHARE`` of the pairs (away from ties)."""
    if not nodes or not isinstance(nodes[-1], lowp.Quantize):
        return None

    def scalar(value: Value) -> np.ndarray | None:
        data = constant_value(value)
        return None if data is None or np.size(data) != 1 else np.asarray(data).reshape(())

    spans, lows = output.span, output.out_low
    if not (np.all(spans == spans[0]) and np.all(lows == lows[0])):
        return None
    levels = output.levels
    q = np.arange(levels, dtype=F32)
    x = (q / F32(levels - 1) * spans[0] + lows[0]).astype(F32)[:, None]
    other: Value | None = None
    last = nodes[-1]
    for node, port in zip(nodes[:-1], ports[:-1]):
        if type(node) not in EVALUATORS:
            return None
        args = []
        for i, value in enumerate(node.inputs):
            constant = None if i == port else scalar(value)
            if i == port or constant is not None:
                args.append(x if i == port else constant)
                continue
            if other is not None:
                return None
            found = _other_operand(value, scalar)
            if found is None:
                return None
            other, keys, values = found
            args.append(values[None, :])
        with np.errstate(all="ignore"):
            x = np.asarray(EVALUATORS[type(node)](node, *args))
        x = x.astype(node.output_types[0].dtype.numpy, copy=False)
    bounds = [scalar(v) for v in last.inputs[1:]]
    if other is None or ports[-1] != 0 or any(v is None for v in bounds):
        return None
    x = np.broadcast_to(x, (levels, keys.size)).astype(F32)
    expected = level_index(x, bounds[0], bounds[1], last.levels)
    rows = np.arange(levels)
    trusted = (rows < levels - 1) & ((rows > 0) | output.bottom)
    # t2 = the Quantize's unrounded level, fitted by least squares where it is not clamped
    with np.errstate(all="ignore"):
        ideal = ((x.astype(np.float64) - float(bounds[0]))
                 / (float(bounds[1]) - float(bounds[0])) * (last.levels - 1))
    inside = trusted[:, None] & (ideal > 0.5) & (ideal < last.levels - 1.5)
    if inside.sum() < 3 or not np.all(np.isfinite(ideal[inside])):
        return None
    qq, rr = np.nonzero(inside)
    design = np.stack([qq, keys[rr], np.ones_like(qq)]).astype(np.float64)
    # least squares by its 3 x 3 normal equations, summed elementwise: a BLAS product of
    # this tall matrix would start OpenBLAS's threads, which then spin beside the compile
    normal = (design[:, None, :] * design[None, :, :]).sum(axis=2)
    a, b, c = (F32(v) for v in np.linalg.solve(normal, (design * ideal[inside]).sum(axis=1)))
    ql = np.arange(levels, dtype=F32)[:, None]
    rl = keys.astype(F32)[None, :]
    if fused:
        t2 = fma_f32(np.broadcast_to(ql, x.shape), np.full(x.shape, a),
                     fma_f32(np.broadcast_to(rl, x.shape), np.full(x.shape, b),
                             np.full(x.shape, c)))
    else:
        t2 = (ql * a + (rl * b + c)).astype(F32)
    fast = np.clip(np.rint(t2), 0, last.levels - 1).astype(np.int64)
    distance = np.abs(t2 - np.rint(t2))[trusted]
    wrong = (fast != expected)[trusted]
    limit = float(distance[wrong].min()) if wrong.any() else 1.0
    if np.mean(distance < limit) < MIN_TAIL_SHARE:
        return None
    return TailForm(float(a), float(b), float(c), limit, float(last.levels - 1), other)


def _other_operand(value: Value, scalar: Callable[[Value], np.ndarray | None]
                   ) -> tuple[Value, np.ndarray, np.ndarray] | None:
    """The tail's one tensor operand ``value`` as (what the kernel loads, the keys ``r`` the
    fast form multiplies, the f32 values the rest of the chain sees), every possible pair:

    - a ``Dequantize`` (per-tensor constants) of u8 levels: loads the levels; keys ``0..255``,
      values their dequantized values;
    - a ``FakeQuantize`` output (per-tensor constant ranges) stored in f32: loads the values;
      keys and values are the values it can take: ``q / (L-1) * (oh - ol) + ol`` for every
      level, ``ol`` and ``oh`` (``lpjit.reference.quantize``; a NaN, its other value, fails
      the tail's tie test at run time and takes the exact chain)."""
    source = value.node
    if isinstance(source, lowp.Dequantize):
        ranges = [scalar(v) for v in source.inputs[1:]]
        if any(r is None for r in ranges) or source.inputs[0].type.dtype != dtypes.u8:
            return None
        levels = np.arange(256, dtype=np.uint8)
        values = np.asarray(EVALUATORS[lowp.Dequantize](source, levels, *ranges), F32)
        return source.inputs[0], levels.astype(F32), values
    if isinstance(source, FakeQuantize) and value.type.dtype == dtypes.f32:
        ranges = [scalar(v) for v in source.inputs[1:]]
        if any(r is None for r in ranges):
            return None
        low, high = F32(ranges[2]), F32(ranges[3])
        steps = F32(source.levels - 1)
        with np.errstate(all="ignore"):
            formula = np.arange(source.levels, dtype=F32) / steps * (high - low) + low
        values = np.unique(np.concatenate([formula.astype(F32), [low, high]]).astype(F32))
        if not np.all(np.isfinite(values)):
            return None
        return value, values, values
    return None


@attrs.frozen
class _Forms:
    """The exact level function ``f`` and the fast form ``g`` of every (channel, class), on
    flat arrays of accumulators ``acc``, channels ``oc`` and classes ``cls``."""

    chain: _Chain
    step: np.ndarray            # [OC] f32
    scale: np.ndarray           # [OC] f32
    zero_point: np.ndarray      # [OC, classes] f32
    slope: np.ndarray           # [OC] f32
    offset: np.ndarray          # [OC, classes] f32
    low: np.ndarray             # [OC, classes] f32: clamp of g
    high: np.ndarray
    fused: bool = False

    def exact(self, acc: np.ndarray, oc: np.ndarray, cls: np.ndarray) -> np.ndarray:
        x = (acc.astype(F32) * self.step[oc] + self.zero_point[oc, cls]) * self.scale[oc]
        return self.chain.run(x, oc)

    def t(self, acc: np.ndarray, oc: np.ndarray, cls: np.ndarray) -> np.ndarray:
        if self.fused:
            return fma_f32(acc.astype(F32), self.slope[oc], self.offset[oc, cls])
        return acc.astype(F32) * self.slope[oc] + self.offset[oc, cls]

    def fast(self, acc: np.ndarray, oc: np.ndarray, cls: np.ndarray) -> np.ndarray:
        rounded = np.rint(self.t(acc, oc, cls))
        return np.clip(rounded, self.low[oc, cls], self.high[oc, cls]).astype(np.int64)


def fma_f32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``a * b + c`` rounded once to f32 (round half to even), as an FMA instruction does.

    1. ``p = a * b`` in f64: exact (two 24-bit significands need 48 bits).
    2. ``s = p + c`` in f64, and its exact error ``e`` (TwoSum): ``p + c = s + e``.
    3. Round to odd: when ``e != 0`` and ``s`` has an even last bit, step ``s`` one f64 ulp
       towards ``e`` (the two f64 neighbours of ``p + c`` are ``s`` and that one).
    4. Round to f32 (half to even): rounding to odd in 53 bits, then to 24 bits, equals
       rounding the exact value to 24 bits once (53 >= 24 + 2)."""
    p = a.astype(np.float64) * b.astype(np.float64)
    c = np.broadcast_to(c.astype(np.float64), p.shape)
    s = p + c
    virtual = s - p
    e = (p - (s - virtual)) + (c - virtual)
    even = (s.view(np.int64) & 1) == 0
    step = (e != 0) & even
    s = np.where(step, np.nextafter(s, np.where(e > 0, np.inf, -np.inf)), s)
    return s.astype(F32)


@attrs.frozen
class _Levels:
    """Every (channel, class, level ``k``) flattened, with the search domain of ``b``
    (``acc = direction * b`` makes both functions non-decreasing in ``b``)."""

    oc: np.ndarray
    cls: np.ndarray
    k: np.ndarray
    direction: np.ndarray
    first: np.ndarray
    last: np.ndarray

    def threshold(self, fn, guess: np.ndarray) -> np.ndarray:
        """``min{b in [first, last]: fn(direction * b) >= k}`` (``last + 1`` if none): the
        guess where it checks, else a binary search."""
        guess = np.clip(guess, self.first, self.last + 1)
        below = np.maximum(guess - 1, self.first)
        at = np.minimum(guess, self.last)
        ok = ((guess == self.first) | (self._at(fn, below) < self.k)) & \
            ((guess == self.last + 1) | (self._at(fn, at) >= self.k))
        wrong = np.nonzero(~ok)[0]
        if wrong.size:
            guess[wrong] = self._search(fn, wrong)
        return guess

    def _at(self, fn, b: np.ndarray, index=slice(None)) -> np.ndarray:
        return fn(self.direction[index] * b, self.oc[index], self.cls[index])

    def _search(self, fn, index: np.ndarray) -> np.ndarray:
        left, right = self.first[index].copy(), self.last[index] + 1
        k = self.k[index]
        while np.any(left < right):
            mid = (left + right) // 2
            reached = self._at(fn, np.minimum(mid, self.last[index]), index) >= k
            reached |= mid > self.last[index]
            right = np.where(reached, mid, right)
            left = np.where(reached, left, mid + 1)
        return left


def plan_fast_requantize(epilogue: Epilogue, weights: np.ndarray, step: np.ndarray,
                         scale: np.ndarray, zero_point: np.ndarray, rank: int,
                         max_activation: int, lanes: int,
                         fused: bool = False) -> FastRequantize | None:
    """The fast form for a convolution (weights ``[G, OCg, ICg, k...]``, the output formula's
    ``step``, ``scale`` ``[OC]`` and zero-point table ``[outer, OC, width]``), or ``None``
    when the chain does not qualify or the fast form would rarely apply.  ``fused``: ``t``
    is one FMA (one rounding; ``fma_f32``), else a multiply and an add."""
    channels = step.size
    group = epilogue.group
    chain, tail = _chain(group.chain, group.ports, rank, channels), None
    if chain is None:
        cut = next((i for i, node in enumerate(group.chain) if isinstance(node, FakeQuantize)),
                   len(group.chain)) + 1
        chain = _chain(group.chain[:cut], group.ports[:cut], rank, channels)
        if chain is None or chain.output is None:
            return None
        tail = _tail_form(group.chain[cut:], group.ports[cut:], chain.output, fused)
        if tail is None:
            return None
    flat = weights.astype(np.int64).reshape(channels, -1)
    lo = max_activation * np.minimum(flat, 0).sum(axis=1)
    hi = max_activation * np.maximum(flat, 0).sum(axis=1)
    outer, _, width = zero_point.shape
    every = zero_point.transpose(1, 0, 2).reshape(channels, -1).astype(F32)  # [OC, classes]
    zp, column = _distinct_columns(every)       # classes with equal zero points plan once
    classes = zp.shape[1]
    slope = (step.astype(np.float64) * scale * chain.slope).astype(F32)
    offset = (zp.astype(np.float64) * (scale * chain.slope)[:, None]
              + chain.shift[:, None]).astype(F32)
    reach = np.abs(slope.astype(np.float64)) * np.maximum(-lo, hi) + np.abs(offset).max(axis=1)
    if not (np.all(np.isfinite(reach)) and reach.max(initial=0) < 1e30
            and np.all(slope != 0)):
        return None
    forms = _Forms(chain, step.astype(F32), scale.astype(F32), zp, slope, offset, zp, zp,
                   fused)
    oc = np.repeat(np.arange(channels), classes)
    cls = np.tile(np.arange(classes), channels)
    ends = [forms.exact(np.repeat(bound, classes), oc, cls).astype(F32).reshape(channels, -1)
            for bound in (lo, hi)]
    forms = attrs.evolve(forms, low=np.minimum(*ends), high=np.maximum(*ends))
    direction = np.where(slope > 0, 1, -1)
    count = chain.levels - 1
    levels = _Levels(np.repeat(oc, count), np.repeat(cls, count),
                     np.tile(np.arange(1, chain.levels), channels * classes),
                     np.repeat(direction, classes * count),
                     np.repeat(np.where(direction > 0, lo, -hi), classes * count),
                     np.repeat(np.where(direction > 0, hi, -lo), classes * count))
    # t = |slope| * b + offset crosses k - 1/2 here (up to rounding: checked, then searched)
    with np.errstate(all="ignore"):
        crossing = ((levels.k - 0.5 - offset[levels.oc, levels.cls].astype(np.float64))
                    / np.abs(slope[levels.oc].astype(np.float64)))
    guess = np.ceil(np.clip(crossing, levels.first - 1, levels.last + 1)).astype(np.int64)
    quick = levels.threshold(forms.fast, guess)
    ideal = levels.threshold(forms.exact, quick.copy())
    limit = _limits(forms, levels, np.minimum(ideal, quick), np.maximum(ideal, quick),
                    channels)
    share = np.mean(np.minimum(2.0 * limit.astype(np.float64), 1.0) ** lanes)
    if share < MIN_FAST_SHARE:
        return None

    def table(values: np.ndarray) -> np.ndarray:
        values = np.take_along_axis(values, column, axis=1)
        return np.ascontiguousarray(values.reshape(channels, outer, width).transpose(1, 0, 2))

    return FastRequantize(slope, table(offset), table(forms.low), table(forms.high), limit,
                          chain.output, fused, tail)


def _distinct_columns(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's distinct values (bit patterns) ``[rows, D]`` (rows with fewer repeat their
    smallest), and the column of ``table``'s every entry in it (``[rows, columns]``)."""
    bits = table.view(np.int32)
    order = np.argsort(bits, axis=1, kind="stable")
    ordered = np.take_along_axis(bits, order, axis=1)
    rank = np.cumsum(np.diff(ordered, axis=1, prepend=ordered[:, :1]) != 0, axis=1)
    distinct = np.repeat(ordered[:, :1], rank.max(initial=0) + 1, axis=1)
    rows = np.arange(table.shape[0])[:, None]
    distinct[rows, rank] = ordered
    column = np.empty_like(rank)
    column[rows, order] = rank
    return distinct.view(table.dtype), column


def _limits(forms: _Forms, levels: _Levels, start: np.ndarray, stop: np.ndarray,
            channels: int) -> np.ndarray:
    """Per channel, the smallest ``|t - rint(t)|`` over the accumulators where ``f != g``
    (all lie in some ``[start, stop)``); 1 when there are none, 0 when too many to list."""
    limit = np.ones(channels, F32)
    differ = np.nonzero(stop > start)[0]
    spans = stop[differ] - start[differ]
    totals = np.bincount(levels.oc[differ], weights=spans, minlength=channels)
    crowded = totals > MAX_EXCEPTIONS
    limit[crowded] = 0
    differ = differ[~crowded[levels.oc[differ]]]
    if not differ.size:
        return limit
    spans = stop[differ] - start[differ]
    item = np.repeat(differ, spans)
    offsets = np.arange(item.size) - np.repeat(np.cumsum(spans) - spans, spans)
    acc = levels.direction[item] * (start[item] + offsets)
    oc, cls = levels.oc[item], levels.cls[item]
    wrong = forms.exact(acc, oc, cls) != forms.fast(acc, oc, cls)
    t = forms.t(acc[wrong], oc[wrong], cls[wrong])
    np.minimum.at(limit, oc[wrong], np.abs(t - np.rint(t)).astype(F32))
    return limit


# -- emission -----------------------------------------------------------------------------------

def emit_fast_requantize(b: lb.KernelBuilder, acc: Expr, slope: Expr, offset: Expr, low: Expr,
                         high: Expr, limit: Expr, exact: Callable[[], None],
                         store: Callable[[Expr], None],
                         output: tuple[Dequantized, Expr, Expr] | None = None,
                         checked: Expr | bool = True, fused: bool = False,
                         tail: tuple[TailForm, Expr] | None = None) -> None:
    """``store(u8 level indices)`` of the fast form when every lane is far enough from a
    rounding tie (``|t - rint(t)| < limit``), else ``exact()`` (the group's epilogue).  With
    ``output`` (``Dequantized``, its span and out_low for this vector) the stored values are
    FakeQuantize's f32 outputs, and lanes at untrusted levels also take the exact chain.

    ``checked`` says whether the vector's channels have accumulators where the fast form
    differs (a limit below 1): ``True``, ``False`` (the fast form is stored without the tie
    test), or a scalar known at run time (a branch around the test, taken alike by all the
    vectors of a channel).  It applies without ``output`` only (that form always tests).
    ``fused``: ``t`` by one FMA, as the plan assumed.  ``tail`` (with ``output``): the
    ``TailForm`` and the other tensor's u8 levels at this vector; the stored values are the
    tail's levels, lanes near its ties also take the exact chain."""
    wide = Cast(acc, f32, "nearest")
    t = b.let(lb.fma(wide, slope, offset) if fused else wide * slope + offset, "t")
    rounded = b.let(lb.call("round_half_even", t), "rt")
    q = b.let(lb.min_(lb.max_(rounded, low), high), "q")
    trusted, value = None, Cast(q, u8, "trunc")
    if output is not None:
        trusted, value, checked = output[0].trusted(q), output[0].value(q, *output[1:]), True
    if output is not None and tail is not None:
        form, other = tail
        lanes = q.type.lanes

        def splat(v: float) -> Expr:
            return lb.broadcast(v, lanes, f32)

        r = other if other.type.elem == f32 else Cast(other, f32)
        inner = (lb.fma(r, splat(form.b), splat(form.c)) if fused
                 else r * splat(form.b) + splat(form.c))
        t2 = b.let(lb.fma(q, splat(form.a), inner) if fused else q * splat(form.a) + inner,
                   "t2")
        rounded2 = b.let(lb.call("round_half_even", t2), "rt2")
        near = Compare("lt", lb.call("abs", t2 - rounded2), splat(form.limit))
        trusted = trusted & near
        value = Cast(lb.min_(lb.max_(rounded2, splat(0.0)), splat(form.high)), u8, "trunc")
    if checked is False:
        store(value)
        return
    if checked is True:
        _test_ties(b, t, rounded, limit, trusted, exact, lambda: store(value))
        return
    with b.if_(lb.eq(checked, 0)):
        store(value)
    with b.else_():
        _test_ties(b, t, rounded, limit, trusted, exact, lambda: store(value))


def _test_ties(b: lb.KernelBuilder, t: Expr, rounded: Expr, limit: Expr, trusted: Expr | None,
               exact: Callable[[], None], fast: Callable[[], None]) -> None:
    """``fast()`` when every lane has ``|t - rint(t)| < limit`` (and is ``trusted``), else
    ``exact()``."""
    lanes = t.type.lanes
    sure = Compare("lt", lb.call("abs", t - rounded), limit)
    if trusted is not None:
        sure = sure & trusted
    near = Select(sure, lb.broadcast(0, lanes, i32), lb.broadcast(1, lanes, i32))
    unsure = ReduceLanes("max", near) if lanes > 1 else near
    with b.if_(lb.eq(unsure, 0)):
        fast()
    with b.else_():
        exact()


# A tile's unsure vectors are marked in one i64 mask.
MAX_DEFERRED = 63


@attrs.frozen
class DeferredExact:
    """The exact chain of a ``rows x vectors`` register tile's unsure output vectors, run after
    the tile in a loop over them: emitted once per tile, not once per vector.  ``defer(r, v,
    acc)`` (what an unsure vector does) keeps the accumulator in ``spill`` and sets bit
    ``r * vectors + v`` of ``mask``; ``finish(exact)`` calls ``exact(r, v, acc)`` for each
    set bit.  The vectors of a tile store disjoint outputs, so the order does not matter."""

    spill: Buffer
    mask: Var
    rows: int
    vectors: int
    lanes: int

    @classmethod
    def open(cls, b: lb.KernelBuilder, rows: int, vectors: int, lanes: int
             ) -> DeferredExact | None:
        """The spill tile and the cleared mask (before the tile), or ``None`` when the tile
        has more vectors than the mask has bits."""
        if rows * vectors > MAX_DEFERRED:
            return None
        spill = b.allocate("spill", i32, (rows, vectors * lanes))
        return cls(spill, b.local(as_expr(0, i64), "unsure"), rows, vectors, lanes)

    def _bit(self, r: Expr, v: Expr) -> Expr:
        return r * self.vectors + v

    def defer(self, b: lb.KernelBuilder, r: Expr, v: Expr, acc: Expr) -> None:
        """Keep vector ``(r, v)``'s accumulator for ``finish``."""
        b.store(self.spill, (r, vector_index(v * self.lanes, self.lanes)), acc)
        b.assign(self.mask, self.mask | (as_expr(1, i64) << self._bit(r, v)))

    def finish(self, b: lb.KernelBuilder, exact: Callable[[Expr, Expr, Expr], None]) -> None:
        """``exact(r, v, acc)`` for every deferred vector (after the tile)."""
        with b.if_(lb.compare("ne", self.mask, 0)), \
                b.for_range(self.rows, name="xr") as r, \
                b.for_range(self.vectors, name="xv") as v, \
                b.if_(lb.compare("ne", (self.mask >> self._bit(r, v)) & 1, 0)):
            exact(r, v, self.spill[(r, vector_index(v * self.lanes, self.lanes))])


__all__ = ["DeferredExact", "Dequantized", "FastRequantize", "TailForm", "emit_fast_requantize",
           "plan_fast_requantize"]
