"""Integer depthwise convolution (``QConvolution`` with one input and one output channel per
group, 2-D), exact in i32.

Per (n, c), PARALLEL:

1. the channel's plane is copied into the zero-padded scratch plane ``P[N, C, 1, Hp, 1, Wp]``
   (``lowp_conv``'s blocked copy of a stride-1 geometry: no phase split), its rows wide
   enough for every window load of step 2, so that no tap needs a bounds check;
2. tiles of ``rows`` output rows x a fixed set of vectors along the width (``width_vectors``:
   compile-time starts, the last one narrower or shifted back) accumulate in i32 registers.
   Each input row a tile reads is loaded once per vector, as one dense *window* of the bytes
   its taps read, and shuffled in registers into the dot step's group-interleaved layout
   (lane ``j``, element ``t`` of tap group ``tg``: ``P[row, (start + j) * s + (tg*g + t) *
   d]``; an element past the kernel width repeats a byte of the window: its weight is zero).
   The shuffled vector feeds every output row of the tile that uses that input row (``KH``
   rows with stride 1), so a 3x3 kernel costs per output vector ``KH * ceil(KW/g)`` dot
   steps (3 ``vpdpbusd`` with VNNI) and ``(rows + 2) / rows`` loads and byte shuffles
   (``vpermb``);
3. the epilogue is ``lowp_conv.output_value`` (the exact per-border-class zero-point table,
   per-channel step and low) and the fused chain; the vectors' starts being constants, the
   width border classes resolve at compile time (interior vectors select nothing).  The
   common chain ``[Add(per-channel constant) | ReLU | Clamp]... -> Quantize`` (bias, ReLU6,
   requantization) is emitted by ``LeanRequantize`` without the NaN and range handling that
   cannot matter: see there.
"""

from __future__ import annotations

import math

import attrs
import numpy as np

from lowering import builder as lb
from lowering.loop_ir import (
    UNROLLED,
    Buffer,
    Cast,
    Expr,
    Kernel,
    Load,
    Select,
    Var,
    as_expr,
    contiguous_strides,
    f32,
    i32,
    u8,
)
from lowering.lower_graph import Epilogue, LoweringContext, kernel_builder, make_kernel
from lowering.ops.lowp_conv import BlockedCopy, EpilogueTables, first_lane, output_value
from lowering.ops.lowp_tiles import DotStep, replicate
from lowering.ops.nn_conv import ConvGeometry
from lowering.ops.nn_tiles import add, loop_kind, mul, unravel
from lpjit.graph import Node, constant_value
from lpjit.ops import activations, elementwise, lowp

Index = Expr | int
MAX_WINDOW = 64          # bytes of one window load (one zmm)
MAX_ROWS = 8


def pack_depthwise_weights(weights: np.ndarray, group: int) -> np.ndarray:
    """``[C, 1, 1, KH, KW]`` -> ``[C, KH, ceil(KW/g), g]`` (i8, zero past KW)."""
    channels, kh, kw = weights.shape[0], *weights.shape[-2:]
    groups = -(-kw // group)
    packed = np.zeros((channels, kh, groups * group), np.int8)
    packed[:, :, :kw] = weights.reshape(channels, kh, kw)
    return packed.reshape(channels, kh, groups, group)


def depthwise_weight_pairs(weights: np.ndarray, group: int) -> np.ndarray:
    """The weight pairs a dot step multiplies, ``[C, pairs, 2]`` (adjacent taps)."""
    packed = pack_depthwise_weights(weights, group)
    return packed.reshape(packed.shape[0], -1, 2)


@attrs.frozen
class ColumnVector:
    """Output columns ``start .. start+lanes-1`` of a row (``stored`` of them written)."""

    start: int
    lanes: int
    stored: int


def width_vectors(width: int, lanes: int) -> list[ColumnVector]:
    """Vectors covering ``[0, width)``: full vectors of ``lanes`` (halved while wider than the
    row), then the rest as one narrower power-of-two vector, or a full one shifted back to end
    at ``width``; a one-column row is computed on two lanes and stores the first."""
    if width == 1:
        return [ColumnVector(0, 2, 1)]
    while lanes > width:
        lanes //= 2
    full, rest = divmod(width, lanes)
    vectors = [ColumnVector(j * lanes, lanes, lanes) for j in range(full)]
    if rest and rest & (rest - 1) == 0 and rest > 1:
        vectors.append(ColumnVector(full * lanes, rest, rest))
    elif rest:
        vectors.append(ColumnVector(width - lanes, lanes, lanes))
    return vectors


def _window_bytes(g: ConvGeometry, lanes: int) -> int:
    """Bytes of the power-of-two window load of ``lanes`` output pixels (all taps)."""
    reach = (lanes - 1) * g.strides[-1] + (g.kernel[-1] - 1) * g.dilations[-1] + 1
    return 1 << (reach - 1).bit_length()


def _vector_lanes(g: ConvGeometry, lanes: int) -> int:
    """The widest vector (at most ``lanes``) whose window fits ``MAX_WINDOW`` bytes."""
    while lanes > 2 and _window_bytes(g, lanes) > MAX_WINDOW:
        lanes //= 2
    return lanes


@attrs.frozen
class DepthwisePlan:
    """The vectors of an output row, split into column chunks of ``vectors`` accumulators per
    row, and the rows of a tile (the register budget: ``rows * chunk <= accumulators``)."""

    columns: tuple[ColumnVector, ...]
    chunk: int
    rows: int

    @classmethod
    def of(cls, g: ConvGeometry, lanes: int, registers: int, weight_vectors: int
           ) -> DepthwisePlan:
        columns = tuple(width_vectors(g.out_spatial[-1], _vector_lanes(g, lanes)))
        accumulators = max(2, registers - weight_vectors - 2)
        chunk = min(len(columns), accumulators)
        rows = max(1, min(MAX_ROWS, g.out_spatial[0], accumulators // chunk))
        return cls(columns, chunk, rows)

    def chunks(self) -> list[tuple[ColumnVector, ...]]:
        return [self.columns[i:i + self.chunk] for i in range(0, len(self.columns), self.chunk)]

    def plane_width(self, g: ConvGeometry) -> int:
        """Columns of ``P``: the padded row, or more where a window load reaches past it."""
        padded = g.in_spatial[-1] + g.pads_begin[-1] + g.pads_end[-1]
        reach = max(v.start * g.strides[-1] + _window_bytes(g, v.lanes) for v in self.columns)
        return max(padded, reach)


# Largest |anchor value| for which the lean epilogue is used: every f32 operation on it and
# the chain's constants then stays finite, so no NaN can arise.
FINITE_LIMIT = 1e30


@attrs.frozen
class LeanRequantize:
    """The chain ``[Add(c) | ReLU | Clamp]... -> Quantize`` on finite values, where ``c`` is a
    per-channel (or scalar) constant and Quantize's ranges are scalars.

    For a value ``x`` that is not NaN, FakeQuantize's level index equals that of ``x``
    clamped into ``[il, ih]`` (``x <= il`` gives 0 and ``il`` gives ``t = 0``; ``x > ih``
    gives ``L-1`` and ``ih`` gives ``t = (ih-il)/(ih-il)*(L-1) = L-1``), and on that range
    ``t = (x - il) / (ih - il) * (L-1)`` (same f32 operations) lies in ``[0, L-1]``: no
    comparison, select or clip is left but the two clamps.  ReLU and Clamp are ``max``/``min``
    (equal to the reference on non-NaN values).  The anchor's values are finite
    (``FINITE_LIMIT`` checked from the accumulator bound), so nothing is NaN.
    """

    steps: tuple[tuple[str, object], ...]      # ("add", Buffer [C]) | ("clamp", (lo, hi)),
    #                                            the last one a clamp into [low, high]
    low: float
    high: float
    levels: int

    @classmethod
    def of(cls, ctx: LoweringContext, epilogue: Epilogue, channels: int, bound: float
           ) -> LeanRequantize | None:
        """The lean form of ``epilogue``'s chain, or None when it does not apply."""
        chain, ports = epilogue.group.chain, epilogue.group.ports
        if not chain or not isinstance(chain[-1], lowp.Quantize) or ports[-1] != 0:
            return None
        steps: list[tuple[str, object]] = []
        for node, port in zip(chain[:-1], ports[:-1]):
            if isinstance(node, elementwise.Add):
                values = _per_channel(node.inputs[1 - port], channels)
                if values is None or node.output_types[0].dtype.name != "f32":
                    return None
                bound += float(np.abs(values).max(initial=0.0))
                steps.append(("add", ctx.constant(node.origin.name + "_lean", values)))
            elif isinstance(node, activations.Relu):
                _append_clamp(steps, 0.0, math.inf)
            elif isinstance(node, activations.Clamp):
                _append_clamp(steps, float(np.float32(node.min)), float(np.float32(node.max)))
            else:
                return None
        quantize = chain[-1]
        ranges = [constant_value(v) for v in quantize.inputs[1:]]
        if any(r is None or np.asarray(r).size != 1 for r in ranges) or bound > FINITE_LIMIT:
            return None
        low, high = (float(np.asarray(r, np.float32).reshape(())) for r in ranges)
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            return None
        _append_clamp(steps, low, high)
        return cls(tuple(steps), low, high, quantize.levels)

    def apply(self, value: Expr, channel: Index, lanes: int) -> Expr:
        """The u8 level index of the chain applied to ``value`` (f32 x ``lanes``)."""
        def imm(x: float) -> Expr:
            return as_expr(float(np.float32(x)), f32.with_lanes(lanes))

        for kind, operand in self.steps:
            if kind == "add":
                value = value + lb.broadcast(Load(operand, (channel,)), lanes, f32)
            else:
                lo, hi = operand
                if lo > -math.inf:
                    value = lb.max_(value, imm(lo))
                if hi < math.inf:
                    value = lb.min_(value, imm(hi))
        steps = imm(float(self.levels - 1))
        t = lb.binary("mul", lb.binary("div", lb.binary("sub", value, imm(self.low)),
                                       imm(float(np.float32(self.high) - np.float32(self.low)))),
                      steps)
        return Cast(lb.call("round_half_even", t), u8, "trunc")


def _append_clamp(steps: list[tuple[str, object]], low: float, high: float) -> None:
    """Append ``min(max(x, low), high)``, merged into a clamp just before it when the two
    ranges overlap (``clamp(clamp(x, a, b), c, d) = clamp(x, max(a, c), min(b, d))``)."""
    if steps and steps[-1][0] == "clamp":
        a, b = steps[-1][1]
        if max(a, low) <= min(b, high):
            steps[-1] = ("clamp", (max(a, low), min(b, high)))
            return
    steps.append(("clamp", (low, high)))


def _per_channel(value, channels: int) -> np.ndarray | None:
    """A constant broadcasting along N, H, W only, as ``[channels]`` f32; else None."""
    data = constant_value(value)
    if data is None:
        return None
    data = np.asarray(data)
    if data.dtype != np.float32 or data.ndim > 4:
        return None
    shape = (1,) * (4 - data.ndim) + data.shape
    if shape[0] != 1 or shape[2:] != (1, 1) or shape[1] not in (1, channels):
        return None
    return np.ascontiguousarray(np.broadcast_to(data.reshape(-1), (channels,)), np.float32)


def _anchor_bound(weights: np.ndarray, tables: EpilogueTables, max_level: int) -> float:
    """An upper bound of ``|(f32(acc) * step + zp) * scale|`` over the layer (float64, with
    a margin for the f32 roundings)."""
    taps = np.abs(weights.astype(np.int64)).reshape(weights.shape[0], -1).sum(axis=1)
    acc = taps.astype(np.float64) * max_level
    step = np.abs(tables.step.data.astype(np.float64))
    scale = np.abs(tables.scale.data.astype(np.float64))
    zero = np.abs(tables.zero_point.data.astype(np.float64)).max(axis=(0, 2))
    return float(np.max((acc * step + zero) * scale, initial=0.0) * 1.01)


def lower_q_depthwise(ctx: LoweringContext, node: Node, epilogue: Epilogue, g: ConvGeometry,
                      weights: np.ndarray, tables: EpilogueTables, step: DotStep,
                      parallel: bool, max_level: int = 255) -> Kernel:
    """The integer depthwise kernel (see the module docstring); ``max_level`` bounds the
    input's level indices."""
    lean = LeanRequantize.of(ctx, epilogue, g.channels,
                             _anchor_bound(weights, tables, max_level))
    group = step.group
    packed = pack_depthwise_weights(weights, group)
    constant = ctx.constant(node.origin.name + "_weights", packed)
    grid = Grid.of(g, ctx.lanes) if lean is not None else None
    if grid is not None:
        return _lower_grid(ctx, node, g, grid, constant, tables, step, lean, epilogue, parallel)
    registers = 32 if ctx.target.has_avx512 else 16
    plan = DepthwisePlan.of(g, ctx.lanes, registers, packed.shape[1] * packed.shape[2])
    b = kernel_builder(ctx, node)
    outer = g.in_spatial[0] + g.pads_begin[0] + g.pads_end[0]
    width = plan.plane_width(g)
    flat = attrs.evolve(g, strides=(g.strides[0], 1))
    byte_lanes = 4 * ctx.lanes
    count = g.batch * g.channels
    with b.for_range(count, kind=loop_kind(parallel, count), name="nc") as t:
        n, c = unravel(t, (g.batch, g.channels))
        p = _plane_buffer(b, node.origin.name + "_padded", (g.batch, g.channels, 1),
                          (outer, 1, width))
        copier = BlockedCopy(b, flat, ctx.buffer(node.inputs[0]), p, 1, byte_lanes,
                             byte_lanes)
        copier.dims((n, c, 0))
        writer = _DepthwiseWriter(b, g, p, step, tables, epilogue, lean, n, c,
                                  _weight_vectors(b, constant, c, plan, group))
        out_h = g.out_spatial[0]
        full = out_h // plan.rows
        if full:
            with b.for_range(full, name="oh") as block:
                writer.rows(block * plan.rows, plan.rows, plan)
        if out_h % plan.rows:
            writer.rows(full * plan.rows, out_h % plan.rows, plan)
    return make_kernel(b)


@attrs.frozen
class Grid:
    """Stride-1 planes narrower than a vector: outputs on the grid ``q = oh * Wg + ow`` of the
    padded input width ``Wg``, ``lanes`` consecutive positions per vector across rows.  Tap
    ``(kh, kw)`` of position ``q`` reads byte ``q + kh*dh*Wg + kw*dw`` of the flat padded
    plane, so a vector's taps are again one window per kernel row; the ``Wg - W`` junk
    columns of each grid row are computed and dropped by the shuffles that store each output
    row.  Chosen when it needs fewer vectors than ``width_vectors`` rows (widths 7, 14)."""

    width: int
    lanes: int
    vectors: int

    @classmethod
    def of(cls, g: ConvGeometry, lanes: int) -> Grid | None:
        out_h, out_w = g.out_spatial
        if g.strides != (1, 1) or lanes < 8 or not 2 <= out_w < lanes:
            return None
        width = g.in_spatial[-1] + g.pads_begin[-1] + g.pads_end[-1]
        vectors = -(-out_h * width // lanes)
        by_rows = out_h * len(width_vectors(out_w, lanes))
        return cls(width, lanes, vectors) if vectors < by_rows else None

    def window(self, g: ConvGeometry) -> int:
        return _pow2(self.lanes + (g.kernel[-1] - 1) * g.dilations[-1])

    def plane_length(self, g: ConvGeometry) -> int:
        """Bytes of the flat padded plane, with the reach of the last vector's windows."""
        rows = g.in_spatial[0] + g.pads_begin[0] + g.pads_end[0]
        reach = ((self.vectors - 1) * self.lanes + (g.kernel[0] - 1) * g.dilations[0]
                 * self.width + self.window(g))
        return max(rows * self.width, reach)

    def classes(self, g: ConvGeometry, tables: EpilogueTables, v: int
                ) -> list[tuple[tuple[int, int], list[int]]]:
        """The border classes ``(outer class, width class)`` of vector ``v``'s lanes and the
        lanes of each, the most frequent first (junk columns go with it)."""
        classes = tables.classes
        out_h, out_w = g.out_spatial
        lanes: dict[tuple[int, int], list[int]] = {}
        junk = []
        for lane in range(self.lanes):
            oh, ow = divmod(v * self.lanes + lane, self.width)
            if oh < out_h and ow < out_w:
                key = (int(classes.outer_of[oh]), classes.width_of[ow])
                lanes.setdefault(key, []).append(lane)
            else:
                junk.append(lane)
        ordered = sorted(lanes.items(), key=lambda item: -len(item[1]))
        if not ordered:
            return []
        (first, first_lanes), *rest = ordered
        return [(first, sorted(first_lanes + junk)), *rest]

    def zero_point(self, g: ConvGeometry, tables: EpilogueTables, c: Index, v: int) -> Expr:
        """The zero-point term of vector ``v``'s lanes: the per-channel value of each lane's
        border class, by selects on constant lane masks (no per-position table)."""
        def value(key: tuple[int, int]) -> Expr:
            outer, width = key
            return lb.broadcast(Load(tables.zero_point, (outer, c, width)), self.lanes, f32)

        classes = self.classes(g, tables, v)
        if not classes:
            return lb.broadcast(0.0, self.lanes, f32)
        result = value(classes[0][0])
        ones, zeros = lb.broadcast(1, self.lanes, i32), lb.broadcast(0, self.lanes, i32)
        for key, members in classes[1:]:
            flags = lb.shuffle((zeros, ones), [self.lanes + j if j in members else j
                                               for j in range(self.lanes)])
            result = Select(lb.eq(flags, ones), value(key), result)
        return result


def _pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def _plane_buffer(b: lb.KernelBuilder, name: str, owners: tuple[int, ...],
                  plane: tuple[int, ...]) -> Buffer:
    """The padded plane of one loop iteration, on the stack of the thread that runs it:
    indexed ``[*owners, *plane]`` like one plane per (n, c) but with stride 0 along the
    owner dimensions, so its bytes stay in that core's L1 from copy to use (a shared scratch
    array would be written once per inference, its lines fetched from wherever the memory
    plan last used them: from the other core's cache, 2 threads)."""
    strides = (0,) * len(owners) + contiguous_strides(plane)
    return b.allocate(name, u8, (*owners, *plane), strides)


def _lower_grid(ctx: LoweringContext, node: Node, g: ConvGeometry, grid: Grid,
                packed: Buffer, tables: EpilogueTables, step: DotStep, lean: LeanRequantize,
                epilogue: Epilogue, parallel: bool) -> Kernel:
    """The depthwise kernel on the grid (see ``Grid``), with the lean epilogue."""
    b = kernel_builder(ctx, node)
    name = node.origin.name
    x = ctx.buffer(node.inputs[0])
    count = g.batch * g.channels
    lanes, group = grid.lanes, step.group
    (kernel_h, kernel_w), (dh, dw) = g.kernel, g.dilations
    with b.for_range(count, kind=loop_kind(parallel, count), name="nc") as t:
        n, c = unravel(t, (g.batch, g.channels))
        flat = _flat_plane(x, x.name + "_plane")
        registers = None
        p = None
        if flat is not None and grid.plane_length(g) <= MAX_REGISTER_PLANE:
            registers = _register_plane(b, g, grid, flat, n, c)
        else:
            p = _plane_buffer(b, name + "_padded", (g.batch, g.channels),
                              (grid.plane_length(g),))
            _grid_copy(b, g, grid, x, p, n, c)
        results = []
        for v in range(grid.vectors):
            acc: Expr = lb.broadcast(0, lanes, i32)
            for kh in range(kernel_h):
                base = v * lanes + kh * dh * grid.width
                window = (None if p is None
                          else Load(p, (n, c, lb.ramp(base, grid.window(g)))))
                for tg in range(packed.shape[2]):
                    indices = [j + ((tg * group + e) * dw if tg * group + e < kernel_w else 0)
                               for j in range(lanes) for e in range(group)]
                    last = 0 if group == 1 else lb.ramp(0, group)
                    weight = replicate(Load(packed, (c, kh, tg, last)), lanes, group)
                    if registers is None:
                        taps = lb.shuffle(window, indices)
                    else:
                        taps = _pick(*registers, [base + i for i in indices])
                    acc = step.apply(acc, taps, weight)
            value = (Cast(b.let(acc, "acc"), f32, "nearest")
                     * lb.broadcast(Load(tables.step, (c,)), lanes, f32)
                     + grid.zero_point(g, tables, c, v))
            value = value * lb.broadcast(Load(tables.scale, (c,)), lanes, f32)
            results.append(b.let(lean.apply(value, c, lanes), "q"))
        out_h, out_w = g.out_spatial
        for oh in range(out_h):
            for start, size in _pieces(out_w, lanes):
                positions = [oh * grid.width + start + j for j in range(size)]
                used = sorted({q // lanes for q in positions})
                indices = [used.index(q // lanes) * lanes + q % lanes for q in positions]
                b.store(epilogue.output, (n, c, oh, _at(start, size)),
                        lb.shuffle([results[u] for u in used], indices))
    return make_kernel(b)


# Padded planes up to this many bytes stay in registers (no store and reload of the copy).
MAX_REGISTER_PLANE = 320


def _flat_plane(buffer: Buffer, name: str) -> Buffer | None:
    """A ``[N, C, H*W]`` view of a ``[N, C, H, W]`` buffer whose planes are contiguous."""
    *outer, rows, width = buffer.shape
    if buffer.strides[-1] != 1 or buffer.strides[-2] != width:
        return None
    return buffer.view(name, (*outer, rows * width), (*buffer.strides[:-2], 1))


def _gather(vectors: list[Expr], indices: list[int]) -> Expr:
    """``indices`` into the concatenation of ``vectors`` (of one type): a shuffle takes one or
    two, so more are concatenated pairwise first (padded to a power of two)."""
    vectors = list(vectors)
    while len(vectors) > 2:
        if len(vectors) % 2:
            vectors.append(vectors[-1])
        lanes = vectors[0].type.lanes
        vectors = [lb.shuffle((vectors[i], vectors[i + 1]), list(range(2 * lanes)))
                   for i in range(0, len(vectors), 2)]
    return lb.shuffle(vectors, indices)


def _pick(pieces: list[tuple[int, int]], values: list[Expr], positions: list[int]) -> Expr:
    """Bytes ``positions`` of a plane held as ``pieces`` (start, lanes) with ``values``: a
    shuffle of the (one or two) pieces they lie in."""
    owners = [next(k for k, (start, lanes) in enumerate(pieces) if start <= q < start + lanes)
              for q in positions]
    used = sorted(set(owners))
    lanes = pieces[0][1]
    indices = [used.index(k) * lanes + q - pieces[k][0] for k, q in zip(owners, positions)]
    return _gather([values[k] for k in used], indices)


def _register_plane(b: lb.KernelBuilder, g: ConvGeometry, grid: Grid, x: Buffer, n: Index,
                    c: Index) -> tuple[list[tuple[int, int]], list[Var]]:
    """The flat padded plane as register pieces: the contiguous input plane loaded in a few
    pieces, each piece of the padded plane a shuffle of them and zeros.  A copy through
    memory would be reloaded at once by wider loads, which store forwarding cannot serve."""
    height, width = g.in_spatial
    top, left = g.pads_begin
    inputs = _pieces(height * width, 64)
    loaded = [b.let(Load(x, (n, c, _at(start, size))), "x") for start, size in inputs]
    zero = lb.broadcast(0, inputs[0][1], u8)
    pieces = _pieces(grid.plane_length(g), 64)
    values = []
    for start, lanes in pieces:
        sources, indices = [], []
        for position in range(start, start + lanes):
            row, column = divmod(position, grid.width)
            h, w = row - top, column - left
            if 0 <= h < height and 0 <= w < width:
                flat = h * width + w
                k = next(k for k, (first, size) in enumerate(inputs) if flat < first + size)
                source, lane = loaded[k], flat - inputs[k][0]
            else:
                source, lane = zero, 0
            if not any(source is s for s in sources):
                sources.append(source)
            slot = next(i for i, s in enumerate(sources) if s is source)
            indices.append(slot * inputs[0][1] + lane)
        values.append(b.let(_gather(sources, indices), "p"))
    return pieces, values


def _at(start: Index, lanes: int) -> Index | Expr:
    return start if lanes == 1 else lb.ramp(start, lanes)


def _pieces(extent: int, widest: int) -> list[tuple[int, int]]:
    """``(start, lanes)`` power-of-two pieces covering ``[0, extent)``, the last one shifted
    back to end at ``extent``."""
    lanes = min(widest, 1 << (extent.bit_length() - 1))
    pieces = [(j * lanes, lanes) for j in range(extent // lanes)]
    if extent % lanes:
        pieces.append((extent - lanes, lanes))
    return pieces


def _grid_copy(b: lb.KernelBuilder, g: ConvGeometry, grid: Grid, x: Buffer, p: Buffer,
               n: Index, c: Index) -> None:
    """The flat padded plane: zeroed by whole vectors, then each input row stored over it at
    ``(h + top) * Wg + left``."""
    top, left = g.pads_begin
    for start, size in _pieces(p.shape[-1], 64):
        b.store(p, (n, c, _at(start, size)), lb.broadcast(0, size, u8))
    with b.for_range(g.in_spatial[0], name="h") as h:
        base = (h + top) * grid.width + left
        for start, size in _pieces(g.in_spatial[1], 64):
            b.store(p, (n, c, _at(base + start, size)), Load(x, (n, c, h, _at(start, size))))


def _weight_vectors(b: lb.KernelBuilder, packed: Buffer, c: Index, plan: DepthwisePlan,
                    group: int) -> dict[tuple[int, int, int], Var]:
    """The channel's weights of each ``(kh, tap group)`` replicated over each vector width."""
    _, kernel_h, tap_groups, _ = packed.shape
    weights = {}
    for lanes in sorted({v.lanes for v in plan.columns}):
        for kh in range(kernel_h):
            for tg in range(tap_groups):
                last = 0 if group == 1 else lb.ramp(0, group)
                value = replicate(Load(packed, (c, kh, tg, last)), lanes, group)
                weights[kh, tg, lanes] = b.let(value, "w")
    return weights


@attrs.frozen
class _DepthwiseWriter:
    """Emits the tiles of a band of output rows of one channel."""

    b: lb.KernelBuilder
    g: ConvGeometry
    plane: Buffer
    step: DotStep
    tables: EpilogueTables
    epilogue: Epilogue
    lean: LeanRequantize | None
    n: Index
    c: Index
    weights: dict[tuple[int, int, int], Var]

    def rows(self, first: Index, rows: int, plan: DepthwisePlan) -> None:
        for chunk in plan.chunks():
            self.tile(first, rows, chunk)

    def taps(self, window: Expr, vector: ColumnVector, tg: int) -> Expr:
        """Tap group ``tg`` of the vector's pixels in the step's group-interleaved layout."""
        g, group = self.g, self.step.group
        (_, sw), (_, dw) = self.g.strides, self.g.dilations
        indices = []
        for j in range(vector.lanes):
            for t in range(group):
                kw = tg * group + t
                indices.append(j * sw + (kw * dw if kw < g.kernel[-1] else 0))
        return lb.shuffle(window, indices)

    def tile(self, first: Index, rows: int, chunk: tuple[ColumnVector, ...]) -> None:
        """``rows x len(chunk)`` i32 accumulators over the taps, then the epilogue of each."""
        b, g = self.b, self.g
        (sh, sw), (dh, _) = g.strides, g.dilations
        kernel_h = g.kernel[0]
        tap_groups = -(-g.kernel[-1] // self.step.group)
        offsets = [sum(v.lanes for v in chunk[:k]) for k in range(len(chunk))]
        acc = b.allocate("acc", i32, (rows, sum(v.lanes for v in chunk)))

        def at(r: Index, k: int) -> tuple[Index, Expr]:
            return (r, lb.ramp(offsets[k], chunk[k].lanes))

        for r in range(rows):
            for k, vector in enumerate(chunk):
                b.store(acc, at(r, k), lb.broadcast(0, vector.lanes, i32))
        span = (rows - 1) * sh + (kernel_h - 1) * dh + 1
        for offset in range(span):
            users = [(r, kh) for r in range(rows) for kh in range(kernel_h)
                     if r * sh + kh * dh == offset]
            row = add(mul(first, sh), offset)
            for k, vector in enumerate(chunk):
                if not users:
                    continue
                window = Load(self.plane, (self.n, self.c, 0, row, 0, lb.ramp(
                    vector.start * sw, _window_bytes(g, vector.lanes))))
                for tg in range(tap_groups):
                    with _scope(b):
                        x = b.let(self.taps(window, vector, tg), "x")
                        for r, kh in users:
                            weight = self.weights[kh, tg, vector.lanes]
                            b.store(acc, at(r, k), self.step.apply(acc[at(r, k)], x, weight))
        last_class = len(self.tables.classes.outer) - 1
        with b.for_range(rows, kind=UNROLLED, name="r") as r:
            oh = add(first, r)
            outer_class = b.let(lb.min_(lb.max_(Load(self.tables.outer_class, (oh,)), 0),
                                        last_class), "oc")
            for k, vector in enumerate(chunk):
                with _scope(b):
                    value = b.let(output_value(b, self.tables, acc[at(r, k)], self.c,
                                               outer_class, vector.start, vector.lanes), "y")
                    self.store(oh, vector, value)

    def store(self, oh: Index, vector: ColumnVector, value: Expr) -> None:
        """The chain on ``value`` stored at the vector's (first ``stored``) columns."""
        b = self.b
        if self.lean is not None:
            value = b.let(self.lean.apply(value, self.c, vector.lanes), "q")
            if vector.stored != vector.lanes:
                value = lb.shuffle(value, [0])
            b.store(self.epilogue.output, (self.n, self.c, oh,
                                           lb.ramp(vector.start, vector.stored)), value)
        elif vector.stored == vector.lanes:
            self.epilogue.store(b, (self.n, self.c, oh, lb.ramp(vector.start, vector.lanes)),
                                value)
        else:
            self.epilogue.store(b, (self.n, self.c, oh, vector.start), first_lane(value))


def _scope(b: lb.KernelBuilder):
    """A block of its own (a one-iteration unrolled loop) for ``let`` bindings that are used
    only inside it: unrolled tiles would otherwise nest hundreds of them."""
    return b.for_range(1, kind=UNROLLED, name="s")


__all__ = ["ColumnVector", "DepthwisePlan", "depthwise_weight_pairs", "lower_q_depthwise",
           "pack_depthwise_weights", "width_vectors"]
