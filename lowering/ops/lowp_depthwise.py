"""Integer depthwise convolution (``QConvolution`` with one input and one output channel per
group, 2-D): per-channel i32 multiply-accumulate on widened values, exact.

Per (n, c), PARALLEL: the channel's plane is copied into the zero-padded, phase-split scratch
``P[N, C, 1, Hp, s_w, Wq]`` (``lowp_conv``'s blocked copy with a group of one channel), then
tiles of ``rows`` output rows x ``vectors`` vectors along the width: i32 accumulators updated
over the ``KH*KW`` taps (unrolled loops) by ``acc += i32(x) * i32(w)`` (``vpmovzxbd``, then
``vpmulld`` -- or ``vpmaddwd``, which LLVM uses knowing both factors fit 16 bits -- and
``vpaddd``).  The epilogue is ``lowp_conv.output_value``: the same f32 formula
with the exact per-border-class zero-point table, per-channel step and low included.
"""

from __future__ import annotations

import attrs
import numpy as np

from lowering import builder as lb
from lowering.loop_ir import UNROLLED, Buffer, Cast, Expr, Kernel, Load, i32
from lowering.lower_graph import Epilogue, LoweringContext, kernel_builder, make_kernel
from lowering.ops.lowp_conv import (
    BlockedCopy,
    BlockedInput,
    EpilogueTables,
    blocked_buffer,
    first_lane,
    output_value,
)
from lowering.ops.nn_conv import ConvGeometry
from lowering.ops.nn_schedules import default_depthwise_schedule
from lowering.ops.nn_tiles import (
    TileColumns,
    add,
    cover_axis,
    loop_kind,
    mul,
    unravel,
    vector_index,
)
from lpjit.graph import Node

Index = Expr | int


def lower_q_depthwise(ctx: LoweringContext, node: Node, epilogue: Epilogue, g: ConvGeometry,
                      weights: np.ndarray, tables: EpilogueTables, parallel: bool) -> Kernel:
    """The integer depthwise kernel (see the module docstring)."""
    (out_h, out_w), (kh, kw) = g.out_spatial, g.kernel
    tile = default_depthwise_schedule(ctx.target, out_h, out_w, ctx.options.threads).tile
    packed = ctx.constant(node.origin.name + "_weights",
                          weights.reshape(g.channels, kh, kw).astype(np.int8))
    b = kernel_builder(ctx, node)
    p = blocked_buffer(ctx, node, g, 1)
    byte_lanes = 4 * ctx.lanes
    copier = BlockedCopy(b, g, ctx.buffer(node.inputs[0]), p, 1, byte_lanes, byte_lanes)
    source = BlockedInput(p, 1, g.strides[-1], g.dilations[-1])
    count = g.batch * g.channels
    with b.for_range(count, kind=loop_kind(parallel, count), name="nc") as t:
        n, c = unravel(t, (g.batch, g.channels))
        copier.dims((n, c, 0))
        writer = _DepthwiseWriter(b, g, source, tables, packed, epilogue, n, c)
        full = out_h // tile.rows
        if full:
            with b.for_range(full, name="oh") as block:
                writer.rows(block * tile.rows, tile.rows, tile.vectors, tile.lanes)
        if out_h % tile.rows:
            writer.rows(full * tile.rows, out_h % tile.rows, tile.vectors, tile.lanes)
    return make_kernel(b)


@attrs.frozen
class _DepthwiseWriter:
    """Emits the tiles of a band of output rows of one channel."""

    b: lb.KernelBuilder
    g: ConvGeometry
    source: BlockedInput
    tables: EpilogueTables
    weights: Buffer
    epilogue: Epilogue
    n: Index
    c: Index

    def rows(self, first: Index, rows: int, vectors: int, lanes: int) -> None:
        width = self.g.out_spatial[-1]
        if width == 1:
            self.tile(first, rows, TileColumns(0, 1, 2), 1)
            return
        cover = cover_axis(width, lanes, vectors)
        if cover.full_tiles:
            with self.b.for_range(cover.full_tiles, name="wt") as wt:
                self.tile(first, rows, cover.full_tile(wt), lanes)
        if cover.remainder_count:
            tile = cover.remainder_tile()
            self.tile(first, rows, tile, tile.lanes)

    def tile(self, first: Index, rows: int, columns: TileColumns, stored: int) -> None:
        """``rows x columns.count`` i32 accumulators over the unrolled taps, then the
        epilogue of each."""
        b, g = self.b, self.g
        (sh, _), (dh, _) = g.strides, g.dilations
        (kh_extent, kw_extent), lanes = g.kernel, columns.lanes
        acc = b.allocate("acc", i32, (rows, columns.count * lanes))

        def at(i: Expr, v: Expr) -> tuple[Expr, Expr]:
            return (i, vector_index(v * lanes, lanes))

        with b.for_range(rows, kind=UNROLLED, name="r") as i, \
                b.for_range(columns.count, kind=UNROLLED, name="v") as v:
            b.store(acc, at(i, v), lb.broadcast(0, lanes, i32))
        with b.for_range(kh_extent, kind=UNROLLED, name="kh") as kh, \
                b.for_range(kw_extent, kind=UNROLLED, name="kw") as kw:
            weight = b.let(lb.broadcast(Cast(Load(self.weights, (self.c, kh, kw)), i32,
                                             "exact"), lanes, i32), "w")
            with b.for_range(rows, kind=UNROLLED, name="r") as i, \
                    b.for_range(columns.count, kind=UNROLLED, name="v") as v:
                row = add(mul(add(first, i), sh), kh * dh)
                x = self.source.vector((self.n, self.c, 0), (row,), columns.start(v), kw, lanes)
                b.store(acc, at(i, v), acc[at(i, v)] + Cast(x, i32, "exact") * weight)
        last = len(self.tables.classes.outer) - 1
        with b.for_range(rows, kind=UNROLLED, name="r") as i:
            oh = add(first, i)
            outer_class = b.let(lb.min_(lb.max_(Load(self.tables.outer_class, (oh,)), 0),
                                        last), "oc")
            with b.for_range(columns.count, kind=UNROLLED, name="v") as v:
                start = columns.start(v)
                value = b.let(output_value(b, self.tables, acc[at(i, v)], self.c, outer_class,
                                           start, lanes), "y")
                if stored == lanes:
                    self.epilogue.store(b, (self.n, self.c, oh, vector_index(start, lanes)),
                                        value)
                else:
                    self.epilogue.store(b, (self.n, self.c, oh, start), first_lane(value))


__all__ = ["lower_q_depthwise"]
