"""Integer depthwise convolution (``QConvolution`` with one input and one output channel per
group, 2-D): per-channel i32 multiply-accumulate on widened values, exact.

Per (n, c), PARALLEL: the channel's plane is copied into the zero-padded, phase-split scratch
``P[N, C, 1, Hp, s_w, Wq]`` (``lowp_conv``'s blocked copy with a group of one channel), then
tiles of ``rows`` output rows x ``vectors`` vectors along the width, each output vector a
straight-line chain of ``KH*KW`` steps ``acc += i32(x) * i32(w)`` (``vpmovzxbd``,
``vpmulld``, ``vpaddd``).  The epilogue is ``lowp_conv.output_value``: the same f32 formula
with the exact per-border-class zero-point table, per-channel step and low included.
"""

from __future__ import annotations

import attrs
import numpy as np

from lowering import builder as lb
from lowering.loop_ir import Cast, Expr, Kernel, Load, i32
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
        taps = [[b.let(Cast(Load(packed, (c, i, j)), i32, "exact"), "w") for j in range(kw)]
                for i in range(kh)]
        writer = _DepthwiseWriter(b, g, source, tables, taps, epilogue, n, c)
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
    taps: list[list[Expr]]
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
        (sh, _), (dh, _) = self.g.strides, self.g.dilations
        lanes = columns.lanes
        last = len(self.tables.classes.outer) - 1
        prefix = (self.n, self.c, 0)
        for i in range(rows):
            oh = add(first, i)
            outer_class = self.b.let(
                lb.min_(lb.max_(Load(self.tables.outer_class, (oh,)), 0), last), "oc")
            for v in range(columns.count):
                start = columns.start(v)
                acc: Expr = lb.broadcast(0, lanes, i32)
                for kh, row_taps in enumerate(self.taps):
                    row = add(mul(oh, sh), kh * dh)
                    for kw, weight in enumerate(row_taps):
                        x = self.source.vector(prefix, (row,), start, kw, lanes)
                        acc = acc + Cast(x, i32, "exact") * lb.broadcast(weight, lanes, i32)
                value = self.b.let(output_value(self.b, self.tables, acc, self.c, outer_class,
                                                start, lanes), "y")
                if stored == lanes:
                    self.epilogue.store(self.b, (self.n, self.c, oh, vector_index(start, lanes)),
                                        value)
                else:
                    self.epilogue.store(self.b, (self.n, self.c, oh, start), first_lane(value))


__all__ = ["lower_q_depthwise"]
