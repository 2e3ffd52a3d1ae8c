"""Direct convolution vectorized along output channels (an implicit GEMM over pixels).

For short output rows (7x7, 14x14 feature maps) and many channels, vectors along the width
waste lanes; vectors along the output channels do not.  Per group::

    for (group, channel panel, n, pixel block) PARALLEL       (panels outermost: a thread
                                                               streams only its panels)
      FMA tile: rows = `rows` output pixels (flattened over the spatial dims, the last block
      shifted back to end at the last pixel), vectors = `vectors` x `lanes` output channels
        acc[p][v] += input[n, c, o(p)*s + k*d] * W[group, panel, c, k..., v*lanes + lane]

Weights are packed at compile time into channel panels ``[G, panel, IC/G, k..., width]``
(``nn_matmul.pack_b_panels`` on the ``[IC/G * k, OC/G]`` matrix).  The input is read as
scalars, so any stride works without a copy; padding reads the zero-padded copy.  The tile is
staged in a small scratch buffer and written out channel by channel (a channel's pixels are
contiguous in NCHW, its channels ``H*W`` apart): scalar epilogues and stores, a cost the long
reduction pays for (the schedule weighs it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import numpy as np

from lowering import builder as lb
from lowering.loop_ir import UNROLLED, Buffer, Expr, Kernel, Load, f32
from lowering.lower_graph import Epilogue, LoweringContext, kernel_builder, make_kernel
from lowering.ops.nn_conv import ConvGeometry, ConvSource, conv_source
from lowering.ops.nn_matmul import pack_b_panels
from lowering.ops.nn_schedules import ConvSchedule
from lowering.ops.nn_tiles import (
    AxisCover,
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

Index = Expr | int


def pack_channel_panels(weights: np.ndarray, cover: AxisCover) -> np.ndarray:
    """``[G, OCg, ICg, k...]`` -> ``[G, panels, ICg, k..., width]`` (see module doc)."""
    groups, out = weights.shape[:2]
    inner = weights.shape[2:]
    matrix = weights.reshape(groups, out, -1).transpose(0, 2, 1)      # [G, ICg*k, OCg]
    packed = pack_b_panels(matrix, cover)                               # [G, P, ICg*k, width]
    return packed.reshape(groups, packed.shape[1], *inner, packed.shape[-1])


def lower_conv_by_channels(ctx: LoweringContext, node: Node, epilogue: Epilogue,
                           g: ConvGeometry, weights: np.ndarray,
                           schedule: ConvSchedule) -> Kernel:
    """The channel-vectorized convolution kernel (see the module docstring)."""
    tile = schedule.tile
    cover = cover_axis(g.group_out, tile.lanes, tile.vectors)
    packed = ctx.constant(node.origin.name + "_weights", pack_channel_panels(weights, cover))
    b = kernel_builder(ctx, node)
    padded = any(g.pads_begin) or any(g.pads_end)
    source = conv_source(b, ctx, node, g, ctx.buffer(node.inputs[0]), schedule.parallel,
                         padded)
    writer = _ChannelWriter(b, g, source, packed, epilogue, tile.rows,
                            schedule.unroll_kernel_width)
    pixels = math.prod(g.out_spatial)
    blocks = -(-pixels // tile.rows)
    if cover.full_tiles:
        extents = (g.groups, cover.full_tiles, g.batch, blocks)
        count = math.prod(extents)
        with b.for_range(count, kind=loop_kind(schedule.parallel, count), name="t") as t:
            group, panel, n, block = unravel(t, extents)
            writer.tile(group, panel, n, block, cover.full_tile(panel))
    if cover.remainder_count:
        extents = (g.groups, g.batch, blocks)
        count = math.prod(extents)
        with b.for_range(count, kind=loop_kind(schedule.parallel, count), name="t") as t:
            group, n, block = unravel(t, extents)
            writer.tile(group, cover.full_tiles, n, block, cover.remainder_tile())
    return make_kernel(b)


@attrs.frozen
class _ChannelWriter:
    """Emits one tile: a block of output pixels x a panel of output channels."""

    b: lb.KernelBuilder
    g: ConvGeometry
    source: ConvSource
    weights: Buffer
    epilogue: Epilogue
    rows: int
    unroll_width: int

    def tile(self, group: Index, panel: Index, n: Index, block: Index,
             columns: TileColumns) -> None:
        g, lanes = self.g, columns.lanes
        pixels = math.prod(g.out_spatial)
        first = block_first(block, self.rows, pixels)
        kernel_width = g.kernel[-1]
        unrolled = kernel_width <= self.unroll_width
        reduction = [Reduction(g.group_in, name="c")]
        reduction += [Reduction(k, name="kh") for k in g.kernel[:-1]]
        if not unrolled:
            reduction.append(Reduction(kernel_width, name="kw"))
        inner = len(g.kernel) - 1

        def pixel(r: Index) -> list[Index]:
            return unravel(add(first, r), g.out_spatial)

        def kw_of(ks: Sequence[Expr], tap: Index) -> Index:
            return tap if unrolled else ks[-1]

        def scalar(r: Index, ks: Sequence[Expr], tap: Index) -> Expr:
            *outer, ow = pixel(r)
            rows_in = [add(mul(o, s), mul(k, d)) for o, k, s, d in
                       zip(outer, ks[1:1 + inner], g.strides, g.dilations)]
            channel = add(mul(group, g.group_in), ks[0])
            return self.source.vector((n, channel), rows_in, ow, kw_of(ks, tap), 1)

        def vector(v: Index, ks: Sequence[Expr], tap: Index) -> Expr:
            index = (group, panel, ks[0], *ks[1:1 + inner], kw_of(ks, tap),
                     vector_index(mul(v, lanes), lanes))
            return Load(self.weights, index)

        stage = self.b.allocate("stage", f32, (self.rows, columns.count * lanes))

        def store(r: Index, v: Index, acc: Expr) -> None:
            self.b.store(stage, (r, vector_index(mul(v, lanes), lanes)), acc)

        emit_fma_tile(self.b, self.rows, columns.count, lanes, reduction,
                      kernel_width if unrolled else 1, scalar, vector, store)
        self.transpose_out(stage, group, n, columns, pixel)

    def transpose_out(self, stage: Buffer, group: Index, n: Index, columns: TileColumns,
                      pixel) -> None:
        """Channel by channel, the tile's pixels through the epilogue (scalar stores: an
        output channel's pixels are contiguous in NCHW, its channels are not)."""
        b, lanes = self.b, columns.lanes
        with b.for_range(columns.count, name="v") as v, b.for_range(lanes, name="lane") as lane, \
                b.for_range(self.rows, kind=UNROLLED, name="r") as r:
            channel = add(mul(group, self.g.group_out), add(columns.start(v), lane))
            value = Load(stage, (r, add(mul(v, lanes), lane)))
            self.epilogue.store(b, (n, channel, *pixel(r)), value)
