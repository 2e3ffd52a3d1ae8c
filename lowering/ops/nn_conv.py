"""Direct convolution kernels (NCHW graph layout, 1 to 3 spatial dims), and the padded copy.

Direct convolution, per output row (all spatial dims but the last, and the batch)::

    for row in N x out[:-1]                          PARALLEL
      for group, for block of `rows` output channels (the last block shifted back to end
                                                      at OC/G: no channel tail code)
        for tile of `vectors` x `lanes` output pixels along the width (then the remainder)
          FMA tile (nn_tiles): reduce over the group's input channels x kernel taps
            acc[r][v] += W[group, block, c, k..., r] * input[n, c, o*s + k*d, pixels]

Input: when there is padding or a width stride, the kernel first copies the input into a
zero-padded, *phase-split* buffer ``P[N, C, padded outer dims..., stride_w, Wq]`` with
``P[..., ph, j] = padded_input[..., j * stride_w + ph]`` (stride 2: dense loads and a shuffle
of even/odd lanes): output pixels ``ow`` then read
``P[..., (kw*d) % s, ow + (kw*d) // s]``, a dense vector for every stride and dilation, and
the inner loop has no border case.  Without padding and with a unit width stride the input
is read directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import numpy as np

from lowering import builder as lb
from lowering.loop_ir import SERIAL, Buffer, Expr, Kernel, Load, as_expr, f32, vectorized
from lowering.lower_graph import Epilogue, LoweringContext, kernel_builder, make_kernel
from lowering.ops.nn_schedules import ConvSchedule
from lowering.ops.nn_tiles import (
    Reduction,
    TileColumns,
    add,
    block_first,
    cover_axis,
    emit_fma_tile,
    loop_kind,
    mul,
    unravel,
    vector_index,
)
from lpjit.graph import Node
from lpjit.ops.nn import GroupConvolution

Index = Expr | int


@attrs.frozen
class ConvGeometry:
    """Sizes of one (grouped) convolution, with resolved pads."""

    batch: int
    channels: int
    out_channels: int
    groups: int
    in_spatial: tuple[int, ...]
    out_spatial: tuple[int, ...]
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]

    def __attrs_post_init__(self) -> None:
        """Along an axis with one output the stride multiplies only output index 0: make it 1,
        so that no loop or buffer is sized by a stride past the input (legal, up to 2^24)."""
        strides = tuple(1 if o == 1 else s for o, s in zip(self.out_spatial, self.strides))
        object.__setattr__(self, "strides", strides)

    @classmethod
    def of(cls, node: Node) -> ConvGeometry:
        data, out = node.input_type(0).shape, node.output_types[0].shape
        groups = node.groups if isinstance(node, GroupConvolution) else 1
        rank = len(data) - 2
        return cls(data[0], data[1], out[1], groups, tuple(data[2:]), tuple(out[2:]),
                   tuple(node.input_type(1).shape[-rank:]), tuple(node.strides),
                   tuple(node.dilations), tuple(node.pads_begin), tuple(node.pads_end))

    @property
    def spatial_rank(self) -> int:
        return len(self.in_spatial)

    @property
    def group_in(self) -> int:
        return self.channels // self.groups

    @property
    def group_out(self) -> int:
        return self.out_channels // self.groups

    @property
    def weights_shape(self) -> tuple[int, ...]:
        """Weights as ``[G, OC/G, IC/G, k...]`` (Convolution has G = 1)."""
        return (self.groups, self.group_out, self.group_in, *self.kernel)

    @property
    def is_depthwise(self) -> bool:
        return self.groups > 1 and self.group_in == 1 and self.group_out == 1

    @property
    def needs_copy(self) -> bool:
        """Padding or a width stride: read through the padded, phase-split copy."""
        return any(self.pads_begin) or any(self.pads_end) or self.strides[-1] > 1

    def padded_shape(self) -> tuple[int, ...]:
        """Spatial shape of the phase-split copy: padded outer dims, stride_w, Wq."""
        outer = [i + b + e for i, b, e in zip(self.in_spatial, self.pads_begin, self.pads_end)]
        width = outer.pop()
        stride = self.strides[-1]
        return (*outer, stride, -(-width // stride))

    def read_phases(self) -> tuple[int, ...]:
        """The phases of the phase-split copy that kernel taps read, ``(kw * d) % s``: at most
        one per width tap however large the stride; only these are filled."""
        stride, dilation = self.strides[-1], self.dilations[-1]
        return tuple(sorted({kw * dilation % stride for kw in range(self.kernel[-1])}))


def block_starts(extent: int, rows: int) -> list[int]:
    """First row of each block of ``rows`` covering ``[0, extent)``; the last block is shifted
    back to end at ``extent`` (it recomputes a few rows instead of needing tail code)."""
    return [min(b * rows, extent - rows) for b in range(-(-extent // rows))]


def pack_conv_weights(weights: np.ndarray, rows: int) -> np.ndarray:
    """``[G, OC/G, IC/G, k...]`` -> ``[G, blocks, IC/G, k..., rows]``, block ``b`` holding the
    output channels ``block_starts(OC/G, rows)[b] + r``."""
    starts = block_starts(weights.shape[1], rows)
    packed = np.stack([weights[:, s:s + rows] for s in starts], axis=1)
    return np.ascontiguousarray(np.moveaxis(packed, 2, -1))


@attrs.frozen
class ConvSource:
    """How tiles read the input: ``buffer`` is the input itself or its phase-split copy."""

    buffer: Buffer
    phased: bool
    stride_w: int
    dilation_w: int

    def vector(self, prefix: Sequence[Index], outer: Sequence[Index], start: Index,
               kw: Index, lanes: int) -> Load:
        """Input pixels ``start*s + kw*d`` (``lanes`` output pixels) of row ``outer``; an
        unphased source with a width stride serves scalars (``lanes == 1``) only."""
        s, d = self.stride_w, self.dilation_w
        if not self.phased:
            assert lanes == 1 or s == 1, "strided vector reads need the phase-split copy"
            column = add(mul(start, s), mul(kw, d))
            return Load(self.buffer, (*prefix, *outer, vector_index(column, lanes)))
        phase, offset = (kw * d) % s, (kw * d) // s
        return Load(self.buffer, (*prefix, *outer, phase, vector_index(start + offset, lanes)))


# -- the padded copy ---------------------------------------------------------------------------

def _fill_zero(b: lb.KernelBuilder, buffer: Buffer, prefix: Sequence[Index], lanes: int) -> None:
    """``buffer[prefix, ...] = 0`` over the remaining dims (innermost vectorized)."""
    rest = buffer.shape[len(prefix):]
    indices = list(prefix)
    contexts = []
    for axis, extent in enumerate(rest):
        last = axis == len(rest) - 1
        kind = vectorized(lanes) if last and extent >= lanes else SERIAL
        cm = b.for_range(extent, kind=kind, name="z")
        indices.append(cm.__enter__())
        contexts.append(cm)
    b.store(buffer, tuple(indices), as_expr(0.0, f32))
    for cm in reversed(contexts):
        cm.__exit__(None, None, None)


def emit_padded_copy(b: lb.KernelBuilder, g: ConvGeometry, x: Buffer, p: Buffer,
                     x_prefix: Sequence[Index], p_prefix: Sequence[Index], lanes: int,
                     dim: int = 0, x_outer: Sequence[Index] = (),
                     p_outer: Sequence[Index] = ()) -> None:
    """Fill ``p[p_prefix, ...]`` (padded outer dims, phase, Wq) from ``x[x_prefix, ...]``."""
    if dim == g.spatial_rank - 1:
        _copy_width(b, g, x, p, (*x_prefix, *x_outer), (*p_prefix, *p_outer), lanes)
        return
    low, size = g.pads_begin[dim], g.in_spatial[dim]
    high = g.pads_end[dim]
    if low:
        with b.for_range(low, name="pad") as h:
            _fill_zero(b, p, (*p_prefix, *p_outer, h), lanes)
    with b.for_range(size, name="h") as h:
        emit_padded_copy(b, g, x, p, x_prefix, p_prefix, lanes, dim + 1, (*x_outer, h),
                         (*p_outer, h + low))
    if high:
        with b.for_range(high, name="pad") as h:
            _fill_zero(b, p, (*p_prefix, *p_outer, h + (low + size)), lanes)


def _copy_width(b: lb.KernelBuilder, g: ConvGeometry, x: Buffer, p: Buffer,
                x_row: Sequence[Index], p_row: Sequence[Index], lanes: int) -> None:
    """One padded row: for each phase read, zeros, the input columns, zeros."""
    stride, low, width = g.strides[-1], g.pads_begin[-1], g.in_spatial[-1]
    columns = p.shape[-1]
    for phase in g.read_phases():
        first = min(columns, max(0, -((phase - low) // stride)))
        stop = min(columns, max(first, (width - 1 + low - phase) // stride + 1))
        _zero_range(b, p, (*p_row, phase), 0, first, lanes)
        if stride == 2:
            first = _deinterleave(b, x, p, x_row, (*p_row, phase), first, stop, phase - low,
                                  width, lanes)
        if stop > first:
            kind = vectorized(lanes) if stride == 1 and stop - first >= lanes else SERIAL
            with b.for_range(stop - first, kind=kind, name="j") as j:
                column = (j + first) * stride + (phase - low)
                b.store(p, (*p_row, phase, j + first), Load(x, (*x_row, column)))
        _zero_range(b, p, (*p_row, phase), stop, columns, lanes)


def _deinterleave(b: lb.KernelBuilder, x: Buffer, p: Buffer, x_row: Sequence[Index],
                  p_row: Sequence[Index], first: int, stop: int, shift: int, width: int,
                  lanes: int) -> int:
    """``p[j] = x[2*j + shift]`` for ``j`` from ``first``, ``lanes`` at a time: two dense loads
    and one shuffle of the even lanes, while both loads stay inside the row.  Returns the first
    ``j`` left for the scalar loop."""
    chunks = 0
    while (chunks + 1) * lanes <= stop - first and \
            2 * (first + (chunks + 1) * lanes) + shift - 1 < width:
        chunks += 1
    if chunks:
        with b.for_range(chunks, name="jv") as jv:
            j = add(mul(jv, lanes), first)
            column = add(mul(j, 2), shift)
            low = Load(x, (*x_row, vector_index(column, lanes)))
            high = Load(x, (*x_row, vector_index(add(column, lanes), lanes)))
            evens = lb.shuffle((low, high), range(0, 2 * lanes, 2))
            b.store(p, (*p_row, vector_index(j, lanes)), evens)
    return first + chunks * lanes


def _zero_range(b: lb.KernelBuilder, p: Buffer, prefix: Sequence[Index], start: int, stop: int,
                lanes: int) -> None:
    if stop <= start:
        return
    kind = vectorized(lanes) if stop - start >= lanes else SERIAL
    with b.for_range(stop - start, kind=kind, name="j") as j:
        b.store(p, (*prefix, j + start), as_expr(0.0, f32))


def conv_source(b: lb.KernelBuilder, ctx: LoweringContext, node: Node, g: ConvGeometry,
                x: Buffer, parallel: bool, copy: bool) -> ConvSource:
    """The input as tiles read it; with ``copy``, emits the padded, phase-split copy (into a
    program scratch buffer) and reads that."""
    if not copy:
        return ConvSource(x, False, g.strides[-1], g.dilations[-1])
    shape = (g.batch, g.channels, *g.padded_shape())
    p = Buffer(ctx.name(node.origin.name + "_padded"), f32, shape, role="scratch",
               alignment=64)
    count = g.batch * g.channels
    with b.for_range(count, kind=loop_kind(parallel, count), name="nc") as t:
        n, c = unravel(t, (g.batch, g.channels))
        emit_padded_copy(b, g, x, p, (n, c), (n, c), ctx.lanes)
    return ConvSource(p, True, g.strides[-1], g.dilations[-1])


# -- direct convolution ------------------------------------------------------------------------

def lower_conv(ctx: LoweringContext, node: Node, epilogue: Epilogue, g: ConvGeometry,
               weights: np.ndarray, schedule: ConvSchedule) -> Kernel:
    """The width-vectorized direct convolution kernel (see the module docstring)."""
    tile = schedule.tile
    packed = ctx.constant(node.origin.name + "_weights", pack_conv_weights(weights, tile.rows))
    b = kernel_builder(ctx, node)
    source = conv_source(b, ctx, node, g, ctx.buffer(node.inputs[0]), schedule.parallel,
                         g.needs_copy)
    outer_extents = (g.batch, *g.out_spatial[:-1])
    count = math.prod(outer_extents)
    writer = _ConvWriter(b, g, source, packed, epilogue, schedule.unroll_kernel_width, tile.rows)
    with b.for_range(count, kind=loop_kind(schedule.parallel, count), name="row") as t:
        n, *outer = unravel(t, outer_extents)
        with _group_loop(b, g.groups) as group:
            blocks = len(block_starts(g.group_out, tile.rows))
            with b.for_range(blocks, name="ob") as block:
                writer.row(n, outer, group, block, tile.vectors, tile.lanes)
    return make_kernel(b)


class _group_loop:
    """``for group in range(groups)``, or the constant 0 without a loop."""

    def __init__(self, b: lb.KernelBuilder, groups: int) -> None:
        self.cm = b.for_range(groups, name="grp") if groups > 1 else None

    def __enter__(self) -> Index:
        return self.cm.__enter__() if self.cm is not None else 0

    def __exit__(self, *exc) -> None:
        if self.cm is not None:
            self.cm.__exit__(*exc)


@attrs.frozen
class _ConvWriter:
    """Emits the tiles of one output row of the direct convolution."""

    b: lb.KernelBuilder
    g: ConvGeometry
    source: ConvSource
    weights: Buffer
    epilogue: Epilogue
    unroll_width: int
    block_rows: int

    def row(self, n: Index, outer: Sequence[Index], group: Index, block: Expr, vectors: int,
            lanes: int) -> None:
        """All tiles of output row ``outer`` for the channels of ``block``."""
        cover = cover_axis(self.g.out_spatial[-1], lanes, vectors)
        if cover.full_tiles:
            with self.b.for_range(cover.full_tiles, name="wt") as wt:
                self.tile(n, outer, group, block, cover.full_tile(wt))
        if cover.remainder_count:
            self.tile(n, outer, group, block, cover.remainder_tile())

    def tile(self, n: Index, outer: Sequence[Index], group: Index, block: Expr,
             columns: TileColumns) -> None:
        g = self.g
        kernel_width = g.kernel[-1]
        unrolled = kernel_width <= self.unroll_width
        reduction = [Reduction(g.group_in, name="c")]
        reduction += [Reduction(k, name="kh") for k in g.kernel[:-1]]
        if not unrolled:
            reduction.append(Reduction(kernel_width, name="kw"))
        taps = kernel_width if unrolled else 1
        inner = len(g.kernel) - 1

        lanes = columns.lanes

        def kw_of(ks: Sequence[Expr], tap: Index) -> Index:
            return tap if unrolled else ks[-1]

        def scalar(r: Index, ks: Sequence[Expr], tap: Index) -> Expr:
            return Load(self.weights, (group, block, ks[0], *ks[1:1 + inner], kw_of(ks, tap), r))

        def vector(v: Index, ks: Sequence[Expr], tap: Index) -> Expr:
            rows_in = [o * s + k * d for o, k, s, d in
                       zip(outer, ks[1:1 + inner], g.strides, g.dilations)]
            channel = ks[0] if g.groups == 1 else group * g.group_in + ks[0]
            return self.source.vector((n, channel), rows_in, columns.start(v), kw_of(ks, tap),
                                      lanes)

        def store(r: Index, v: Index, acc: Expr) -> None:
            first = block_first(block, self.block_rows, g.group_out)
            channel = add(add(mul(group, g.group_out), first), r)
            index = (n, channel, *outer, vector_index(columns.start(v), lanes))
            self.epilogue.store(self.b, index, acc)

        emit_fma_tile(self.b, self.block_rows, columns.count, lanes, reduction, taps, scalar,
                      vector, store)


__all__ = ["ConvGeometry", "ConvSource", "conv_source", "emit_padded_copy", "lower_conv",
           "pack_conv_weights"]
