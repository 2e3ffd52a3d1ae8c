"""Integer convolution kernels (``QConvolution``): u8 level indices x i8 weights, exact in i32.

One kernel per layer, two loop nests.

1. **Blocked copy** of the u8 input (NCHW, as the graph stores it) into a zero-padded,
   phase-split, channel-interleaved scratch ``P[N, G, CB, padded outer dims..., s_w, Wq * g]``:
   ``g`` consecutive input channels (the dot step's group: 4 for ``vpdpbusd``, 2 for
   ``vpmaddwd``) sit next to each other, so one dense load of ``g * lanes`` bytes holds the
   ``g`` channels of ``lanes`` output pixels -- the group-interleaved operand the
   microkernels take.  When a stand-alone ``Quantize`` feeds the convolution (inlined by
   ``lowering.fusion``), the copy reads its f32 input and computes the level index on the
   fly, with the stand-alone kernel's exact expression (``ConvInput``).  Channels are
   padded to ``CB * g`` with zeros; padding is level 0 (it adds nothing to the sum; the
   zero point is compensated exactly below).  Phase split as in ``nn_conv``:
   ``P[..., ph, j*g + t] = padded_input[..., c + t, j * s_w + ph]``, so every stride and
   dilation reads dense vectors.
2. **Direct convolution**, per output row (batch and all spatial dims but the last)::

     for row in N x out[:-1]                                       PARALLEL
       for group, for block of `rows` output channels (last block shifted back)
       (outputs larger than the L2 cache: group x block x row, PARALLEL; ``blocks_outer``)
         for tile of `vectors` x `lanes` pixels along the width
           integer tile (lowp_tiles): reduce over channel groups x kernel taps
             acc[r][v] = step(acc[r][v], P[n, grp, cb, rows.., phase, pixels],
                              W[grp, block, cb, k..., r, 0:g] on every lane)

   weights packed at compile time as ``[G, blocks, CB, k..., rows, g]`` (i8).

The epilogue computes the design's f32 formula (``lpjit.reference.lowp``), in its order::

    y = (f32(acc) * step[oc] + f32(wsum_valid) * low[oc]) * weight_scale[oc]

``wsum_valid`` -- the sum of the weights over the taps inside the input -- depends on the
output position only through its *border class*: the set of valid taps along each spatial
dim.  The products ``f32(wsum_valid) * low`` are tabulated at compile time (rounded exactly as
the reference rounds them) per (outer class, output channel, width class): the outer class
of a row comes from a small table, the width class of each lane from a select chain over the
few border columns.  So borders are exact for any ``low``.  The result goes through the
group's epilogue (bias, ReLU, the next Quantize: requantization writes u8 directly).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import attrs
import numpy as np

from lowering import builder as lb
from lowering.loop_ir import (
    SERIAL,
    Buffer,
    Cast,
    Expr,
    Kernel,
    Load,
    ReduceLanes,
    Select,
    as_expr,
    contiguous_strides,
    f32,
    u8,
    vectorized,
)
from lowering.lower_graph import Epilogue, LoweringContext, kernel_builder, make_kernel
from lowering.ops.lowp_requantize import (
    DeferredExact,
    Dequantized,
    TailForm,
    emit_fast_requantize,
    plan_fast_requantize,
)
from lowering.ops.lowp_tiles import (
    EPILOGUE_PER_VECTOR,
    FORMULA_PER_VECTOR,
    DotStep,
    emit_dot_tile,
    integer_tile,
    integer_tile_cost,
)
from lowering.ops.nn_conv import ConvGeometry, block_starts
from lowering.ops.nn_schedules import RegisterTile
from lowering.ops.nn_tiles import (
    Reduction,
    TileColumns,
    add,
    block_first,
    cover_axis,
    loop_kind,
    mul,
    unravel,
    vector_index,
)
from lpjit.graph import Node, Value

Index = Expr | int
# Widest dense load (bytes) of the blocked copy's vector path; larger strides copy per column.
MAX_DENSE_BYTES = 512
# Outputs larger than this (the L2 cache of one core) are written block by block.
BLOCKS_OUTER_BYTES = 1 << 20
# Rows per thread below which a parallel convolution also splits the output-channel blocks.
PARALLEL_ROWS = 4


def q_conv_geometry(node: Node) -> ConvGeometry:
    """The geometry of a QConvolution (weights ``[G, OC/G, IC/G, k...]``)."""
    data, out = node.input_type(0).shape, node.output_types[0].shape
    weights = node.input_type(1).shape
    return ConvGeometry(data[0], data[1], out[1], weights[0], tuple(data[2:]), tuple(out[2:]),
                        tuple(weights[3:]), tuple(node.strides), tuple(node.dilations),
                        tuple(node.pads_begin), tuple(node.pads_end))


# -- border classes and the zero-point table -----------------------------------------------------

def valid_taps(g: ConvGeometry, dim: int, out: int) -> tuple[int, ...]:
    """Kernel taps of spatial dim ``dim`` that read inside the input at output index ``out``."""
    first = out * g.strides[dim] - g.pads_begin[dim]
    return tuple(k for k in range(g.kernel[dim])
                 if 0 <= first + k * g.dilations[dim] < g.in_spatial[dim])


def dim_classes(g: ConvGeometry, dim: int) -> tuple[list[tuple[int, ...]], list[int]]:
    """The distinct valid-tap sets of ``dim`` and the class of each output index."""
    sets = [valid_taps(g, dim, o) for o in range(g.out_spatial[dim])]
    unique = list(dict.fromkeys(sets))
    return unique, [unique.index(s) for s in sets]


@attrs.frozen
class BorderClasses:
    """Output positions grouped by their valid taps.

    ``outer``: the tap sets (one per outer spatial dim) of each outer class;
    ``outer_of``: the class of each outer position (row-major over ``out[:-1]``);
    ``width``: the tap sets of the width classes; ``width_of``: the class of each column.
    """

    outer: tuple[tuple[tuple[int, ...], ...], ...]
    outer_of: np.ndarray
    width: tuple[tuple[int, ...], ...]
    width_of: tuple[int, ...]

    @classmethod
    def of(cls, g: ConvGeometry) -> BorderClasses:
        per_dim = [dim_classes(g, d) for d in range(g.spatial_rank)]
        *outer_dims, (width, width_of) = per_dim
        keys = [tuple(ids) for ids in itertools.product(*(c[1] for c in outer_dims))]
        unique = list(dict.fromkeys(keys))
        outer = tuple(tuple(outer_dims[d][0][k] for d, k in enumerate(key)) for key in unique)
        outer_of = np.array([unique.index(k) for k in keys], np.int64)
        return cls(outer, outer_of, tuple(width), tuple(width_of))

    @property
    def common_width_class(self) -> int:
        """The width class of most columns (the interior, unless the image is tiny)."""
        return max(range(len(self.width)), key=self.width_of.count)

    def border_columns(self) -> list[tuple[int, int]]:
        """``(column, class)`` of every column outside the common class."""
        common = self.common_width_class
        return [(j, c) for j, c in enumerate(self.width_of) if c != common]


def zero_point_table(weights: np.ndarray, low: np.ndarray, classes: BorderClasses
                     ) -> np.ndarray:
    """``T[outer class, oc, width class] = f32(wsum_valid) * low[oc]`` in f32 (one rounding,
    as the reference), with ``wsum_valid`` the exact weight sum over the class's taps.
    ``weights`` is ``[G, OCg, ICg, k...]``; ``low`` per output channel."""
    taps = weights.astype(np.int64).sum(axis=2)
    taps = taps.reshape(-1, *taps.shape[2:])                        # [OC, k...]
    table = np.zeros((len(classes.outer), taps.shape[0], len(classes.width)), np.float32)
    for i, outer in enumerate(classes.outer):
        for j, width in enumerate(classes.width):
            window = taps[np.ix_(range(taps.shape[0]), *outer, width)]
            wsum = window.reshape(taps.shape[0], -1).sum(axis=1)
            table[i, :, j] = wsum.astype(np.float32) * low
    return table


def per_output_channel(values: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """A ``[1]`` or ``[C]`` (per input channel, IC/G == 1) f32 vector as ``[OC]``."""
    values = np.asarray(values, np.float32).reshape(-1)
    if values.size == 1:
        return np.repeat(values, g.out_channels)
    return np.repeat(values, g.group_out)          # output channel grp*OCg + o reads grp


# -- weights -------------------------------------------------------------------------------------

def padded_channels(weights: np.ndarray, group: int) -> np.ndarray:
    """``[G, OCg, ICg, k...]`` with ICg zero-padded to a multiple of ``group``."""
    blocks = -(-weights.shape[2] // group)
    pad = [(0, 0)] * weights.ndim
    pad[2] = (0, blocks * group - weights.shape[2])
    return np.pad(weights, pad)


def pack_q_conv_weights(weights: np.ndarray, rows: int, group: int) -> np.ndarray:
    """``[G, OCg, ICg, k...]`` -> ``[G, blocks, CB, k..., rows, group]`` (i8), block ``b``
    holding the output channels ``block_starts(OCg, rows)[b] + r``."""
    padded = padded_channels(weights, group)
    spatial = padded.shape[3:]
    grouped = padded.reshape(*padded.shape[:2], -1, group, *spatial)   # [G, OCg, CB, g, k..]
    starts = block_starts(weights.shape[1], rows)
    packed = np.stack([grouped[:, s:s + rows] for s in starts], axis=1)
    # [G, blocks, rows, CB, g, k...] -> [G, blocks, CB, k..., rows, g]
    n = len(spatial)
    order = (0, 1, 3, *range(5, 5 + n), 2, 4)
    return np.ascontiguousarray(packed.transpose(order)).astype(np.int8)


def conv_weight_pairs(weights: np.ndarray, group: int) -> np.ndarray:
    """The weight pairs a quad step multiplies, ``[OC, pairs, 2]``: adjacent input channels
    (padded to ``group``) at each tap."""
    padded = padded_channels(weights, group)
    channels_last = np.moveaxis(padded, 2, -1)                     # [G, OCg, k..., ICp]
    out = weights.shape[0] * weights.shape[1]
    return channels_last.reshape(out, -1, 2)


# -- the blocked copy ----------------------------------------------------------------------------

@attrs.frozen
class BlockedInput:
    """The blocked, padded, phase-split copy ``P`` and how tiles read it."""

    buffer: Buffer
    group: int
    stride_w: int
    dilation_w: int

    def vector(self, prefix: Sequence[Index], rows: Sequence[Index], start: Index, kw: Index,
               lanes: int) -> Load:
        """The ``group`` channels of output pixels ``start .. start+lanes-1`` at tap ``kw``."""
        s, d = self.stride_w, self.dilation_w
        phase, offset = (kw * d) % s, (kw * d) // s
        column = add(start, offset)
        return Load(self.buffer, (*prefix, *rows, phase,
                                  vector_index(mul(column, self.group), self.group * lanes)))


def blocked_width(g: ConvGeometry) -> int:
    """Columns ``Wq`` of each phase of ``P``: the phase-split padded width, or more when the
    tile reads past it (a one-column output computed on two lanes)."""
    padded = g.in_spatial[-1] + g.pads_begin[-1] + g.pads_end[-1]
    columns = -(-padded // g.strides[-1])
    reach = max(g.out_spatial[-1], 2) + (g.kernel[-1] - 1) * g.dilations[-1] // g.strides[-1]
    return max(columns, reach)


def blocked_buffer(ctx: LoweringContext, node: Node, g: ConvGeometry, group: int) -> Buffer:
    """The scratch buffer ``P`` of the blocked copy (see the module docstring)."""
    outer = [i + b + e for i, b, e in
             zip(g.in_spatial[:-1], g.pads_begin[:-1], g.pads_end[:-1])]
    blocks = -(-g.group_in // group)
    shape = (g.batch, g.groups, blocks, *outer, g.strides[-1], blocked_width(g) * group)
    return Buffer(ctx.name(node.origin.name + "_blocked"), u8, shape, role="scratch",
                  alignment=64)


def interleave(parts: list[Expr], lanes: int) -> Expr:
    """Lane ``j * len(parts) + t`` = lane ``j`` of ``parts[t]`` (2 or 4 parts, by pairs)."""
    def zip2(a: Expr, b: Expr, width: int, unit: int) -> Expr:
        indices = []
        for j in range(width // unit):
            indices += [j * unit + u for u in range(unit)]
            indices += [width + j * unit + u for u in range(unit)]
        return lb.shuffle((a, b), indices)

    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2:
        return zip2(parts[0], parts[1], lanes, 1)
    low, high = zip2(parts[0], parts[1], lanes, 1), zip2(parts[2], parts[3], lanes, 1)
    return zip2(low, high, 2 * lanes, 2)


@attrs.frozen
class ConvInput:
    """The convolution's data input computed where it is read: an inlined ``Quantize``
    (``fusion.quantizes_conv_input``) whose level index ``ctx.load`` emits from its f32
    input, exactly as its stand-alone kernel would store it."""

    ctx: LoweringContext
    value: Value

    def load(self, b: lb.KernelBuilder, indices: Sequence[Index], lanes: int) -> Expr:
        """The u8 level indices at ``indices`` (``lanes`` of them when the last is a ramp)."""
        return self.ctx.load(self.value, [as_expr(i) for i in indices], lanes, b=b)


def conv_input(ctx: LoweringContext, node: Node) -> Buffer | ConvInput:
    """The data input of ``node``: its buffer, or a ``ConvInput`` when it is inlined."""
    value = node.inputs[0]
    return ConvInput(ctx, value) if value in ctx.inlined else ctx.buffer(value)


@attrs.frozen
class BlockedCopy:
    """Emits the blocked copy of one (n, group, channel block)."""

    b: lb.KernelBuilder
    g: ConvGeometry
    x: Buffer | ConvInput
    p: Buffer
    group: int
    lanes: int          # pixels per vector copy step
    zero_lanes: int     # bytes per vector zero-fill step

    def channel(self, grp: Index, cb: Index, t: int) -> tuple[Index | None, Expr | None]:
        """Input channel of element ``t`` of block ``cb`` and its validity: ``(channel,
        None)`` when always valid, ``(None, None)`` when never, else the channel clamped into
        range and the run-time condition."""
        channels = self.g.group_in
        c = add(mul(cb, self.group), t)
        base = mul(grp, channels)
        if isinstance(c, int):
            return (add(base, c), None) if c < channels else (None, None)
        if channels % self.group == 0:
            return add(base, c), None
        return add(base, lb.min_(c, channels - 1)), lb.lt(c, channels)

    def dims(self, prefix: tuple[Index, Index, Index], dim: int = 0,
             x_rows: tuple[Index, ...] = (), p_rows: tuple[Index, ...] = ()) -> None:
        g, b = self.g, self.b
        if dim == g.spatial_rank - 1:
            self.row(prefix, x_rows, p_rows)
            return
        low, size, high = g.pads_begin[dim], g.in_spatial[dim], g.pads_end[dim]
        for start, count in ((0, low), (low + size, high)):
            if count:
                with b.for_range(count, name="pad") as h:
                    self.zero(prefix, (*p_rows, h + start), 0, None)
        with b.for_range(size, name="h") as h:
            self.dims(prefix, dim + 1, (*x_rows, h), (*p_rows, h + low))

    def zero(self, prefix: Sequence[Index], p_rows: Sequence[Index], start: int,
             stop: int | None, phase: Index | None = None) -> None:
        """Zero ``P[prefix, rows, phase, start:stop]``; missing outer rows and the phase
        (``None``) are looped over."""
        b = self.b
        outer = self.p.shape[3:-2]
        if len(p_rows) < len(outer):
            with b.for_range(outer[len(p_rows)], name="pad") as h:
                self.zero(prefix, (*p_rows, h), start, stop, phase)
            return
        stop = self.p.shape[-1] if stop is None else stop
        if stop <= start:
            return
        if phase is None:
            with b.for_range(self.p.shape[-2], name="ph") as ph:
                self.zero(prefix, p_rows, start, stop, ph)
            return
        kind = vectorized(self.zero_lanes) if stop - start >= self.zero_lanes else SERIAL
        with b.for_range(stop - start, kind=kind, name="z") as z:
            b.store(self.p, (*prefix, *p_rows, phase, z + start), as_expr(0, u8))

    def row(self, prefix: tuple[Index, Index, Index], x_rows: Sequence[Index],
            p_rows: Sequence[Index]) -> None:
        """One padded row: per phase read (``g.read_phases()``), zeros, the interleaved input
        columns, zeros.

        Columns ``j`` whose every phase reads inside the row are copied a vector at a time
        (the last vector shifted back; up to ``lanes`` columns, fewer on short rows) from
        dense loads of ``stride * lanes`` input bytes (at most ``MAX_DENSE_BYTES``), the
        phases split by shuffles; the few others one at a time.
        """
        g = self.g
        stride, low, width = g.strides[-1], g.pads_begin[-1], g.in_spatial[-1]
        columns = self.p.shape[-1] // self.group
        spans = {}
        for phase in g.read_phases():
            first = min(columns, max(0, -((phase - low) // stride)))
            spans[phase] = (first, min(columns, max(first, (width - 1 + low - phase) // stride
                                                    + 1)))
        dense_first = max(first for first, _ in spans.values())
        dense_stop = min(stop for _, stop in spans.values())
        lanes = self.lanes
        while lanes > 2 and (lanes > dense_stop - dense_first
                             or stride * lanes > MAX_DENSE_BYTES):
            lanes //= 2
        if dense_stop - dense_first < lanes or stride * lanes > MAX_DENSE_BYTES:
            dense_first = dense_stop = columns
        for phase, (first, stop) in spans.items():
            self.zero(prefix, p_rows, 0, first * self.group, phase)
            self.single(prefix, x_rows, p_rows, phase, first, min(stop, dense_first))
            self.single(prefix, x_rows, p_rows, phase, max(first, dense_stop), stop)
            self.zero(prefix, p_rows, stop * self.group, None, phase)
        count = dense_stop - dense_first
        if count:
            with self.b.for_range(count // lanes, name="jv") as jv:
                self.vectors(prefix, x_rows, p_rows, jv * lanes + dense_first, lanes)
            if count % lanes:
                self.vectors(prefix, x_rows, p_rows, as_expr(dense_stop - lanes), lanes)

    def channel_values(self, prefix: tuple[Index, Index, Index], x_rows: Sequence[Index],
                       index: Expr, lanes: int) -> list[Expr]:
        """``x[n, channel t of the block, rows, index]`` for each ``t`` (zero past IC)."""
        n, grp, cb = prefix
        parts = []
        for t in range(self.group):
            channel, valid = self.channel(grp, cb, t)
            value: Expr = lb.broadcast(0, lanes, u8)
            if channel is not None:
                value = self.read((n, channel, *x_rows, index), lanes)
                if valid is not None:
                    value = Select(valid, value, lb.broadcast(0, lanes, u8))
            parts.append(value)
        return parts

    def read(self, indices: tuple[Index, ...], lanes: int) -> Expr:
        """``x`` at ``indices``: a load, or the inlined Quantize computed there."""
        if isinstance(self.x, ConvInput):
            return self.x.load(self.b, indices, lanes)
        return Load(self.x, indices)

    def single(self, prefix: tuple[Index, Index, Index], x_rows: Sequence[Index],
               p_rows: Sequence[Index], phase: int, first: int, stop: int) -> None:
        """Columns ``first .. stop-1`` of one phase, one at a time."""
        if stop <= first:
            return
        g = self.g
        with self.b.for_range(stop - first, name="j") as j:
            column = (j + first) * g.strides[-1] + (phase - g.pads_begin[-1])
            for t, value in enumerate(self.channel_values(prefix, x_rows, column, 1)):
                self.b.store(self.p, (*prefix, *p_rows, phase, (j + first) * self.group + t),
                             value)

    def vectors(self, prefix: tuple[Index, Index, Index], x_rows: Sequence[Index],
                p_rows: Sequence[Index], j: Expr, lanes: int) -> None:
        """Columns ``j .. j+lanes-1`` of every phase read: per channel one dense load of
        ``stride * lanes`` bytes, split into phases, interleaved across the channels."""
        g = self.g
        stride = g.strides[-1]
        span = lb.ramp(j * stride - g.pads_begin[-1], stride * lanes)
        dense = [self.b.let(v, "x") for v in self.channel_values(prefix, x_rows, span,
                                                                 stride * lanes)]
        for phase in g.read_phases():
            parts = dense if stride == 1 else [
                lb.shuffle(v, [phase + stride * i for i in range(lanes)]) for v in dense]
            index = lb.ramp(j * self.group, self.group * lanes)
            self.b.store(self.p, (*prefix, *p_rows, phase, index), interleave(parts, lanes))


def emit_blocked_copy(b: lb.KernelBuilder, ctx: LoweringContext, g: ConvGeometry,
                      x: Buffer | ConvInput, p: Buffer, group: int, parallel: bool) -> BlockedInput:
    """Fill ``p`` from ``x`` (see the module docstring); returns how tiles read it."""
    blocks = p.shape[2]
    count = g.batch * g.groups * blocks
    byte_lanes = 4 * ctx.lanes
    copier = BlockedCopy(b, g, x, p, group, max(2, byte_lanes // group), byte_lanes)
    with b.for_range(count, kind=loop_kind(parallel, count), name="ncb") as t:
        n, grp, cb = unravel(t, (g.batch, g.groups, blocks))
        copier.dims((n, grp, cb))
    return BlockedInput(p, group, g.strides[-1], g.dilations[-1])


# -- the convolution -----------------------------------------------------------------------------

@attrs.frozen
class EpilogueTables:
    """Compile-time f32 constants of the output formula, per output channel (and class)."""

    step: Buffer            # [OC]
    scale: Buffer           # [OC]
    zero_point: Buffer      # [outer classes, OC, width classes]: f32(wsum_valid) * low
    outer_class: Buffer     # [prod(out[:-1])] i64
    classes: BorderClasses


def epilogue_tables(ctx: LoweringContext, node: Node, g: ConvGeometry, weights: np.ndarray,
                    scale: np.ndarray, step: np.ndarray, low: np.ndarray) -> EpilogueTables:
    classes = BorderClasses.of(g)
    name = node.origin.name
    low = per_output_channel(low, g)
    return EpilogueTables(
        ctx.constant(name + "_step", per_output_channel(step, g)),
        ctx.constant(name + "_scale", np.asarray(scale, np.float32)),
        ctx.constant(name + "_zero_point", zero_point_table(weights, low, classes)),
        ctx.constant(name + "_outer_class", classes.outer_of),
        classes)


def per_channel(buffer: Buffer, index: Sequence[Index], lanes: int) -> Expr:
    """``buffer[index]`` (f32) on every lane."""
    return lb.broadcast(Load(buffer, tuple(index)), lanes, f32)


def per_column(table: Buffer, classes: BorderClasses, outer_class: Expr, channel: Index,
               start: Index, lanes: int) -> Expr:
    """``table[outer class, channel, width class of the lane's column]`` for ``lanes``
    columns from ``start``: the common class, replaced on the border columns."""
    value = per_channel(table, (outer_class, channel, classes.common_width_class), lanes)
    borders = classes.border_columns()
    if borders:
        columns = lb.ramp(start, lanes) if lanes > 1 else as_expr(start)
        for column, width_class in borders:
            here = lb.eq(columns, lb.broadcast(column, lanes))
            value = Select(here, per_channel(table, (outer_class, channel, width_class),
                                             lanes), value)
    return value


def output_value(b: lb.KernelBuilder, tables: EpilogueTables, acc: Expr, channel: Index,
                 outer_class: Expr, start: Index, lanes: int) -> Expr:
    """``(f32(acc) * step + f32(wsum_valid) * low) * scale`` for ``lanes`` output pixels of
    one channel starting at column ``start`` (see the module docstring)."""
    zero_point = per_column(tables.zero_point, tables.classes, outer_class, channel, start,
                            lanes)
    value = Cast(acc, f32, "nearest") * per_channel(tables.step, (channel,), lanes) + zero_point
    return value * per_channel(tables.scale, (channel,), lanes)


@attrs.frozen
class FastTables:
    """``lowp_requantize.FastRequantize``'s constants: buffers (per channel, or in the
    zero-point table's ``[outer class, OC, width class]`` layout), or one float when every
    entry is the same (a splat constant instead of a load per channel)."""

    slope: Buffer
    limit: Buffer | float
    offset: Buffer
    low: Buffer | float
    high: Buffer | float
    output: Dequantized | None = None
    span: Buffer | float = 0.0          # [OC]: FakeQuantize's oh - ol (with ``output``)
    out_low: Buffer | float = 0.0       # [OC]: its ol
    checked: Buffer | bool = True       # [OC] i32: whether the tie test runs (``tie_flags``)
    fused: bool = False                 # t by one FMA (the target has FMA)
    tail: TailForm | None = None        # the rest of the chain after ``output``'s FakeQuantize

    def tail_levels(self, ctx: LoweringContext, b: lb.KernelBuilder, index: Sequence[Index],
                    lanes: int) -> tuple[TailForm, Expr] | None:
        """``emit_fast_requantize``'s ``tail`` for the output vector at ``index``: the form
        and what it reads there (u8 levels or f32 values); ``None`` without a tail."""
        if self.tail is None:
            return None
        levels = ctx.load(self.tail.levels, [as_expr(i) for i in index], lanes, b=b)
        return self.tail, b.let(levels, "r")

    def value(self, field: str, load: Callable[[Buffer], Expr], lanes: int) -> Expr:
        """``field`` for one output vector: ``load(buffer)``, or the splat float."""
        entry = getattr(self, field)
        if isinstance(entry, Buffer):
            return load(entry)
        return lb.broadcast(as_expr(entry, f32), lanes, f32)

    def dequantized(self, load: Callable[[Buffer], Expr], lanes: int
                    ) -> tuple[Dequantized, Expr, Expr] | None:
        """The ``output`` argument of ``emit_fast_requantize`` (``load`` reads an ``[OC]``
        table for the vector's channels)."""
        if self.output is None:
            return None
        return self.output, self.value("span", load, lanes), self.value("out_low", load, lanes)

    def check(self, load: Callable[[Buffer], Expr]) -> Expr | bool:
        """``emit_fast_requantize``'s ``checked`` for one output vector (``load`` reads the
        scalar flag of its channel, or of its first channel in the channel layout)."""
        return load(self.checked) if isinstance(self.checked, Buffer) else self.checked


def tie_flags(limit: np.ndarray, lanes: int, by_vector: bool) -> np.ndarray | bool:
    """Which output vectors need the fast form's tie test: those holding a channel with a
    limit below 1 (an accumulator where the fast form differs; 1 means none).  ``True`` or
    ``False`` when all or none do, else an i32 flag per channel; ``by_vector`` (the channel
    layout): per first channel ``c`` of a vector, for the channels ``c .. c+lanes-1``."""
    needs = limit < 1
    if by_vector:
        ends = np.concatenate([[0], np.cumsum(needs)])
        stops = np.minimum(np.arange(needs.size) + lanes, needs.size)
        needs = ends[stops] > ends[:needs.size]
    if needs.all() or not needs.any():
        return bool(needs.all())
    return needs.astype(np.int32)


# Below this smallest per-channel tie distance, the limit stays per channel.
SHARED_LIMIT = 0.4995


def fast_requantize_tables(ctx: LoweringContext, node: Node, epilogue: Epilogue,
                           g: ConvGeometry, weights: np.ndarray, tables: EpilogueTables,
                           lanes: int, by_class: bool = False) -> FastTables | None:
    """The fast requantizing epilogue's tables (``lowp_requantize``), or ``None``; with
    ``by_class`` (the channel layout) the per-class tables are ``[outer class, width class,
    OC]`` and FakeQuantize outputs keep the exact chain (no gain measured there)."""
    from lowering.ops.lowp import max_level

    plan = plan_fast_requantize(epilogue, weights, tables.step.data, tables.scale.data,
                                tables.zero_point.data, 2 + g.spatial_rank,
                                max_level(node.inputs[0]), lanes, ctx.target.has_fma)
    if plan is None or (by_class and plan.output is not None and plan.tail is None):
        return None
    name = node.origin.name

    def table(values: np.ndarray, suffix: str) -> Buffer:
        if by_class:
            values = np.ascontiguousarray(values.transpose(0, 2, 1))
        return ctx.constant(f"{name}_{suffix}", values)

    def bound(values: np.ndarray, suffix: str) -> Buffer | float:
        first = float(values.flat[0])
        return first if np.all(values == first) else table(values, suffix)

    def channel_vector(values: np.ndarray, suffix: str) -> Buffer | float:
        first = float(values[0])
        same = np.array_equal(values.view(np.int32), np.full_like(values, first).view(np.int32))
        return first if same else ctx.constant(f"{name}_{suffix}", values)

    limit = float(plan.limit.min())
    output = plan.output
    flags = tie_flags(plan.limit, lanes, by_class)
    return FastTables(ctx.constant(name + "_slope", plan.slope),
                      limit if limit >= SHARED_LIMIT else ctx.constant(name + "_limit",
                                                                        plan.limit),
                      table(plan.offset, "offset"), bound(plan.low, "qlow"),
                      bound(plan.high, "qhigh"), output,
                      0.0 if output is None else channel_vector(output.span, "span"),
                      0.0 if output is None else channel_vector(output.out_low, "out_low"),
                      flags if isinstance(flags, bool) else ctx.constant(name + "_checked", flags),
                      plan.fused, plan.tail)




def reduction_steps(g: ConvGeometry, step: DotStep) -> int:
    """Dot steps per output vector: channel groups times kernel taps."""
    return -(-g.group_in // step.group) * math.prod(g.kernel)


def first_lane(value: Expr) -> Expr:
    """Lane 0 of a vector, exactly (``min`` of the lane with itself keeps NaN and -0.0)."""
    return ReduceLanes("min", lb.shuffle(value, [0, 0]))


def blocks_outer(output: Buffer, rows: int, threads: int) -> bool:
    """Whether the output-channel blocks are the outermost loop (each block's rows of the
    whole image, then the next block) rather than the output rows (every block of one row,
    then the next row): when the output is larger than ``BLOCKS_OUTER_BYTES``, or when
    several threads share fewer than ``PARALLEL_ROWS`` rows per thread (a regrouped
    pointwise image may be one row).  Row by row, every output channel plane takes one short
    write per row, a stream per channel that misses the caches once the output outgrows
    them; block by block, a few planes are each written front to back.  (The input rows are
    read once per block then, from the cache.)"""
    if threads != 1 and rows < PARALLEL_ROWS * max(threads, 2):
        return True
    return math.prod(output.shape) * output.dtype.bits // 8 > BLOCKS_OUTER_BYTES


# Longest regrouped row of a pointwise convolution (``regrouped_rows``).
MAX_REGROUPED_WIDTH = 1024


def pointwise_operands(ctx: LoweringContext, g: ConvGeometry, epilogue: Epilogue,
                       data: Buffer | ConvInput) -> list[Value] | None:
    """Whether output pixel ``p`` (row-major over the spatial dims) reads only input pixel
    ``p`` (a 1x1 kernel, strides 1, no pads) and the data and output are contiguous: then the
    image may be cut into rows of any length.  The values the epilogue reads per pixel (a
    residual, through inlined producers) must then be contiguous buffers of the output's
    shape, seen with the same rows; returns them (``[]`` when every operand is broadcast over
    the spatial dims), else ``None``."""
    if g.spatial_rank < 2 or any(k != 1 for k in g.kernel) or any(s != 1 for s in g.strides) \
            or any(g.pads_begin) or any(g.pads_end) or not isinstance(data, Buffer):
        return None
    if any(buffer.strides != contiguous_strides(buffer.shape)
           for buffer in (data, epilogue.output)):
        return None
    shape = epilogue.output.shape
    found: list[Value] = []

    def per_pixel(value: Value) -> bool:
        """Whether ``value`` is broadcast over the pixels, or a contiguous buffer of the
        output's shape (or computed where it is read from such buffers); collects those."""
        if all(extent == 1 for extent in value.type.shape[-g.spatial_rank:]):
            return True
        if tuple(value.type.shape) != tuple(shape):
            return False
        node = ctx.inlined.get(value)
        if node is not None:
            return all(per_pixel(v) for v in node.inputs)
        buffer = ctx.buffer(value)
        if buffer.strides != contiguous_strides(buffer.shape) or buffer.shape != shape:
            return False
        if value not in found:
            found.append(value)
        return True

    group = epilogue.group
    for node, port in zip(group.chain, group.ports):
        if not all(per_pixel(v) for i, v in enumerate(node.inputs) if i != port):
            return None
    return found


def regrouped_rows(ctx: LoweringContext, g: ConvGeometry, step: DotStep, cost: float) -> int:
    """The row length of a pointwise convolution's image (a divisor of its pixel count, at
    least its width, at most ``MAX_REGROUPED_WIDTH``) whose tiles cost least over the whole
    image (``integer_tile_cost``): rows that are whole vectors waste no lanes (28x28 in rows
    of 112 = 7 x 16, not 28 = 2 x 16 - 4)."""
    pixels, width = math.prod(g.out_spatial), g.out_spatial[-1]
    steps = reduction_steps(g, step)

    def total(length: int) -> float:
        return integer_tile_cost(ctx.target, step, g.group_out, length, steps=steps,
                                 epilogue=cost)[0] * (pixels // length)

    lengths = [d for d in range(width, min(pixels, MAX_REGROUPED_WIDTH) + 1) if pixels % d == 0]
    return min(lengths, key=lambda d: (total(d) - 1e-9 * (d == width), d))


@attrs.frozen
class Regrouped:
    """A pointwise convolution seen over rows of ``regrouped_rows`` pixels: its geometry,
    epilogue and data (views), and the views of the buffers its epilogue reads per pixel
    (``views``: value -> view, bound while its kernel is built)."""

    g: ConvGeometry
    epilogue: Epilogue
    data: Buffer | ConvInput
    views: dict[Value, Buffer] = attrs.field(factory=dict)


def epilogue_cost(epilogue: Epilogue) -> float:
    """Instructions per output vector of the epilogue (``integer_tile_cost``)."""
    return FORMULA_PER_VECTOR if epilogue.is_identity else EPILOGUE_PER_VECTOR


def regroup_pointwise(ctx: LoweringContext, node: Node, g: ConvGeometry, epilogue: Epilogue,
                      data: Buffer | ConvInput, step: DotStep) -> Regrouped:
    """A pointwise convolution (``pointwise_operands``) as one over an image of rows of
    ``regrouped_rows`` pixels; anything else unchanged."""
    operands = pointwise_operands(ctx, g, epilogue, data)
    if operands is None:
        return Regrouped(g, epilogue, data)
    length = regrouped_rows(ctx, g, step, epilogue_cost(epilogue))
    if length == g.out_spatial[-1]:
        return Regrouped(g, epilogue, data)
    rows = math.prod(g.out_spatial) // length
    spatial = (1,) * (g.spatial_rank - 2) + (rows, length)
    name = node.origin.name

    def rows_view(buffer: Buffer, what: str) -> Buffer:
        return buffer.view(f"{name}_{what}_rows", (*buffer.shape[:2], *spatial))

    output = rows_view(epilogue.output, "output")
    views = {value: rows_view(buffer, buffer.name)
             for value in operands for buffer in (ctx.buffer(value),)}
    regrouped = attrs.evolve(g, in_spatial=spatial, out_spatial=spatial)
    return Regrouped(regrouped, attrs.evolve(epilogue, output=output),
                     rows_view(data, "data"), views)


def scheduled_geometry(ctx: LoweringContext, node: Node, g: ConvGeometry, epilogue: Epilogue,
                       step: DotStep) -> ConvGeometry:
    """The geometry the convolution's tiles see: regrouped rows for a pointwise one."""
    return regroup_pointwise(ctx, node, g, epilogue, conv_input(ctx, node), step).g


def lower_q_conv(ctx: LoweringContext, node: Node, epilogue: Epilogue, g: ConvGeometry,
                 weights: np.ndarray, tables: EpilogueTables, step: DotStep,
                 tile: RegisterTile, parallel: bool) -> Kernel:
    """The integer direct convolution kernel (see the module docstring)."""
    regrouped = regroup_pointwise(ctx, node, g, epilogue, conv_input(ctx, node), step)
    saved = {value: ctx.buffers[value] for value in regrouped.views}
    ctx.buffers.update(regrouped.views)
    try:
        return _lower_q_conv(ctx, node, regrouped.epilogue, regrouped.g, regrouped.data,
                             weights, tables, step, tile, parallel)
    finally:
        ctx.buffers.update(saved)


def _lower_q_conv(ctx: LoweringContext, node: Node, epilogue: Epilogue, g: ConvGeometry,
                  data: Buffer | ConvInput, weights: np.ndarray, tables: EpilogueTables,
                  step: DotStep, tile: RegisterTile, parallel: bool) -> Kernel:
    cost = epilogue_cost(epilogue)
    tile = integer_tile(ctx.target, step, g.group_out, g.out_spatial[-1],
                        steps=reduction_steps(g, step),
                        epilogue=cost) if g.out_spatial[-1] > 1 else tile
    packed = ctx.constant(node.origin.name + "_weights",
                          pack_q_conv_weights(weights, tile.rows, step.group))
    b = kernel_builder(ctx, node)
    p = blocked_buffer(ctx, node, g, step.group)
    source = emit_blocked_copy(b, ctx, g, data, p, step.group, parallel)
    outer_extents = g.out_spatial[:-1]
    rows_per_image = math.prod(outer_extents)
    count = g.batch * rows_per_image
    fast = fast_requantize_tables(ctx, node, epilogue, g, weights, tables, tile.lanes)
    writer = _QConvWriter(b, g, source, packed, tables, epilogue, step, tile.rows, fast)
    last = len(tables.classes.outer) - 1
    if blocks_outer(epilogue.output, count, ctx.options.threads):
        extents = (g.groups, len(block_starts(g.group_out, tile.rows)), g.batch, rows_per_image)
        total = math.prod(extents)
        with b.for_range(total, kind=loop_kind(parallel, total), name="t") as t:
            group, block, n, flat = unravel(t, extents)
            outer = unravel(flat, outer_extents) if outer_extents else []
            outer_class = b.let(lb.min_(lb.max_(Load(tables.outer_class, (flat,)), 0), last),
                                "oc")
            writer.row(n, outer, outer_class, group, block, tile.vectors, tile.lanes)
        return make_kernel(b, optimization="cleanup")
    with b.for_range(count, kind=loop_kind(parallel, count), name="row") as t:
        n, *outer = unravel(t, (g.batch, *outer_extents))
        flat = 0 if rows_per_image == 1 else t if g.batch == 1 else t % rows_per_image
        outer_class = b.let(lb.min_(lb.max_(Load(tables.outer_class, (flat,)), 0), last), "oc")
        groups = b.for_range(g.groups, name="grp") if g.groups > 1 else None
        group = groups.__enter__() if groups is not None else 0
        with b.for_range(len(block_starts(g.group_out, tile.rows)), name="ob") as block:
            writer.row(n, outer, outer_class, group, block, tile.vectors, tile.lanes)
        if groups is not None:
            groups.__exit__(None, None, None)
    return make_kernel(b, optimization="cleanup")


@attrs.frozen
class _QConvWriter:
    """Emits the tiles of one output row of the integer convolution."""

    b: lb.KernelBuilder
    g: ConvGeometry
    source: BlockedInput
    weights: Buffer
    tables: EpilogueTables
    epilogue: Epilogue
    step: DotStep
    block_rows: int
    fast: FastTables | None

    def row(self, n: Index, outer: Sequence[Index], outer_class: Expr, group: Index,
            block: Expr, vectors: int, lanes: int) -> None:
        width = self.g.out_spatial[-1]
        if width == 1:          # one pixel, computed on two lanes (the copy is wide enough)
            self.tile(n, outer, outer_class, group, block, TileColumns(0, 1, 2), 1)
            return
        cover = cover_axis(width, lanes, vectors)
        if cover.full_tiles:
            with self.b.for_range(cover.full_tiles, name="wt") as wt:
                self.tile(n, outer, outer_class, group, block, cover.full_tile(wt), lanes)
        if cover.remainder_count:
            tile = cover.remainder_tile()
            self.tile(n, outer, outer_class, group, block, tile, tile.lanes)

    def tile(self, n: Index, outer: Sequence[Index], outer_class: Expr, group: Index,
             block: Expr, columns: TileColumns, stored: int) -> None:
        g, lanes, grouping = self.g, columns.lanes, self.step.group
        inner = len(g.kernel) - 1
        reduction = [Reduction(self.source.buffer.shape[2], name="cb")]
        reduction += [Reduction(k, name="kh") for k in g.kernel[:-1]]

        def weights(r: Expr, ks: Sequence[Expr], tap: Expr) -> Expr:
            last = 0 if grouping == 1 else lb.ramp(0, grouping)
            return Load(self.weights, (group, block, *ks, tap, r, last))

        def activations(v: Expr, ks: Sequence[Expr], tap: Expr) -> Expr:
            rows = [add(mul(o, s), mul(k, d)) for o, k, s, d in
                    zip(outer, ks[1:1 + inner], g.strides, g.dilations)]
            return self.source.vector((n, group, ks[0]), rows, columns.start(v), tap, lanes)

        def channel_of(r: Expr) -> Expr:
            first = block_first(block, self.block_rows, g.group_out)
            return add(add(mul(group, g.group_out), first), r)

        def exact(r: Expr, v: Expr, acc: Expr) -> None:
            channel, start = channel_of(r), columns.start(v)
            value = self.b.let(output_value(self.b, self.tables, acc, channel,
                                            outer_class, start, lanes), "y")
            if stored == lanes:
                index = (n, channel, *outer, vector_index(start, lanes))
                self.epilogue.store(self.b, index, value)
            else:
                self.epilogue.store(self.b, (n, channel, *outer, start), first_lane(value))

        fast = self.fast if stored == lanes else None
        deferred = (DeferredExact.open(self.b, self.block_rows, columns.count, lanes)
                    if fast is not None else None)

        def store(r: Expr, v: Expr, acc: Expr) -> None:
            if fast is None:
                exact(r, v, acc)
                return
            classes, channel, start = self.tables.classes, channel_of(r), columns.start(v)
            index = (n, channel, *outer, vector_index(start, lanes))

            def by_column(table: Buffer) -> Expr:
                return per_column(table, classes, outer_class, channel, start, lanes)

            kept = self.b.let(acc, "acc")
            emit_fast_requantize(
                self.b, kept, per_channel(fast.slope, (channel,), lanes),
                by_column(fast.offset), fast.value("low", by_column, lanes),
                fast.value("high", by_column, lanes),
                fast.value("limit", lambda t: per_channel(t, (channel,), lanes), lanes),
                (lambda: exact(r, v, acc)) if deferred is None
                else lambda: deferred.defer(self.b, r, v, kept),
                lambda q: self.b.store(self.epilogue.output, index, q),
                fast.dequantized(lambda t: per_channel(t, (channel,), lanes), lanes),
                fast.check(lambda t: Load(t, (channel,))), fast.fused,
                fast.tail_levels(self.epilogue.ctx, self.b, index, lanes))

        emit_dot_tile(self.b, self.step, self.block_rows, columns.count, lanes, reduction,
                      g.kernel[-1], weights, activations, store, broadcast_is_activation=False)
        if deferred is not None:
            deferred.finish(self.b, exact)

__all__ = ["BorderClasses", "EpilogueTables", "conv_weight_pairs", "emit_blocked_copy",
           "epilogue_tables", "lower_q_conv", "pack_q_conv_weights", "q_conv_geometry",
           "zero_point_table"]
