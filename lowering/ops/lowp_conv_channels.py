"""Integer convolution vectorized along output channels (an implicit integer GEMM over pixels).

For short output rows (7x7, 14x14 feature maps) and many channels, vectors along the width
waste lanes and reload the activations for every few pixels; vectors along the output
channels do not.  The input goes through ``lowp_conv``'s blocked copy ``P`` (``g`` channels
interleaved), then per group::

    for (group, channel panel, n, pixel block) PARALLEL
      integer tile: rows = `rows` output pixels (flattened over the spatial dims, the last
      block shifted back), vectors = `vectors` x `lanes` output channels:
        acc[p][v] = step(acc[p][v], P[n, grp, cb, o(p)*s + k*d : g bytes] on every lane,
                         W[grp, panel, cb, k..., v*lanes*g : (v+1)*lanes*g])

Weights are packed at compile time into channel panels ``[G, panels, CB, k..., width * g]``
(``g`` input channels of each output channel side by side).  The epilogue is ``lowp_conv``'s
formula with per-channel vectors; the zero-point table is read as
``[outer class, width class, OC]`` (the pixel's classes are scalars here).  Each output
vector is stored lane by lane (channels are ``H*W`` apart in NCHW).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import numpy as np

from lowering import builder as lb
from lowering.loop_ir import Buffer, Cast, Expr, Kernel, Load, f32
from lowering.lower_graph import Epilogue, LoweringContext, kernel_builder, make_kernel
from lowering.ops.lowp_conv import (
    BlockedInput,
    EpilogueTables,
    FastTables,
    blocked_buffer,
    conv_input,
    emit_blocked_copy,
    fast_requantize_tables,
    first_lane,
    padded_channels,
)
from lowering.ops.lowp_matmul import column_cover, panel_columns, remainder_columns
from lowering.ops.lowp_requantize import DeferredExact, emit_fast_requantize
from lowering.ops.lowp_tiles import DotStep, emit_dot_tile
from lowering.ops.nn_conv import ConvGeometry
from lowering.ops.nn_schedules import RegisterTile
from lowering.ops.nn_tiles import (
    AxisCover,
    Reduction,
    TileColumns,
    add,
    block_first,
    loop_kind,
    mul,
    unravel,
    vector_index,
)
from lpjit.graph import Node

Index = Expr | int


def pack_channel_panels(weights: np.ndarray, cover: AxisCover, group: int) -> np.ndarray:
    """``[G, OCg, ICg, k...]`` -> ``[G, panels, CB, k..., width * group]`` (i8): element
    ``j * group + t`` of a panel row is output channel ``panel_columns[p][j]``, input channel
    ``cb * group + t`` (zero past ICg)."""
    padded = padded_channels(weights, group)                        # [G, OCg, CBg, k...]
    grouped = padded.reshape(*padded.shape[:2], -1, group, *padded.shape[3:])
    spatial = len(padded.shape) - 3
    panels = []
    for columns in panel_columns(cover):
        panel = grouped[:, columns]                                 # [G, width, CB, g, k...]
        order = (0, 2, *range(4, 4 + spatial), 1, 3)
        panels.append(panel.transpose(order))                      # [G, CB, k..., width, g]
    packed = np.stack(panels, axis=1)
    return np.ascontiguousarray(packed.reshape(*packed.shape[:-2], -1)).astype(np.int8)


def width_classes(ctx: LoweringContext, node: Node, tables: EpilogueTables
                  ) -> tuple[Buffer, Buffer]:
    """The zero-point table as ``[outer class, width class, OC]`` and the width class of
    each output column (i64)."""
    name = node.origin.name
    table = np.ascontiguousarray(tables.zero_point.data.transpose(0, 2, 1))
    return (ctx.constant(name + "_zero_point_by_class", table),
            ctx.constant(name + "_width_class", np.array(tables.classes.width_of, np.int64)))


def lower_q_conv_by_channels(ctx: LoweringContext, node: Node, epilogue: Epilogue,
                             g: ConvGeometry, weights: np.ndarray, tables: EpilogueTables,
                             step: DotStep, tile: RegisterTile, parallel: bool) -> Kernel:
    """The channel-vectorized integer convolution kernel (see the module docstring)."""
    cover = column_cover(g.group_out, tile)
    packed = ctx.constant(node.origin.name + "_weights",
                          pack_channel_panels(weights, cover, step.group))
    zero_point, width_class = width_classes(ctx, node, tables)
    b = kernel_builder(ctx, node)
    p = blocked_buffer(ctx, node, g, step.group)
    source = emit_blocked_copy(b, ctx, g, conv_input(ctx, node), p, step.group, parallel)
    fast = fast_requantize_tables(ctx, node, epilogue, g, weights, tables, tile.lanes,
                                  by_class=True)
    writer = _ChannelWriter(b, g, source, packed, tables, zero_point, width_class, epilogue,
                            step, tile.rows, fast)
    pixels = math.prod(g.out_spatial)
    blocks = -(-pixels // tile.rows)
    if cover.full_tiles:
        extents = (g.groups, cover.full_tiles, g.batch, blocks)
        count = math.prod(extents)
        with b.for_range(count, kind=loop_kind(parallel, count), name="t") as t:
            group, panel, n, block = unravel(t, extents)
            writer.tile(group, panel, n, block, cover.full_tile(panel), cover.lanes)
    if cover.remainder_count:
        extents = (g.groups, g.batch, blocks)
        count = math.prod(extents)
        with b.for_range(count, kind=loop_kind(parallel, count), name="t") as t:
            group, n, block = unravel(t, extents)
            columns = remainder_columns(cover)
            writer.tile(group, cover.full_tiles, n, block, columns,
                        min(columns.lanes, g.group_out))
    return make_kernel(b, optimization="cleanup")


@attrs.frozen
class _ChannelWriter:
    """Emits one tile: a block of output pixels x a panel of output channels."""

    b: lb.KernelBuilder
    g: ConvGeometry
    source: BlockedInput
    weights: Buffer
    tables: EpilogueTables
    zero_point: Buffer
    width_class: Buffer
    epilogue: Epilogue
    step: DotStep
    rows: int
    fast: FastTables | None

    def tile(self, group: Index, panel: Index, n: Index, block: Index, columns: TileColumns,
             stored: int) -> None:
        g, lanes, grouping = self.g, columns.lanes, self.step.group
        pixels = math.prod(g.out_spatial)
        first = block_first(block, self.rows, pixels)
        inner = len(g.kernel) - 1
        reduction = [Reduction(self.source.buffer.shape[2], name="cb")]
        reduction += [Reduction(k, name="kh") for k in g.kernel[:-1]]

        def pixel(r: Index) -> list[Index]:
            return unravel(add(first, r), g.out_spatial)

        def activations(r: Expr, ks: Sequence[Expr], tap: Expr) -> Expr:
            *outer, ow = pixel(r)
            rows = [add(mul(o, s), mul(k, d)) for o, k, s, d in
                    zip(outer, ks[1:1 + inner], g.strides, g.dilations)]
            return self.source.vector((n, group, ks[0]), rows, ow, tap, 1)

        def weights(v: Expr, ks: Sequence[Expr], tap: Expr) -> Expr:
            index = vector_index(v * (lanes * grouping), lanes * grouping)
            return Load(self.weights, (group, panel, *ks, tap, index))

        def exact(r: Expr, v: Expr, acc: Expr) -> None:
            *outer, ow = pixel(r)
            channel = add(mul(group, g.group_out), columns.start(v))
            value = self.b.let(self.value(acc, outer, ow, channel, lanes), "y")
            if stored == lanes:
                index = (n, vector_index(channel, lanes), *outer, ow)
                self.epilogue.store(self.b, index, value)
            else:
                self.epilogue.store(self.b, (n, channel, *outer, ow), first_lane(value))

        fast = self.fast if stored == lanes else None
        deferred = (DeferredExact.open(self.b, self.rows, columns.count, lanes)
                    if fast is not None else None)

        def store(r: Expr, v: Expr, acc: Expr) -> None:
            if fast is None:
                exact(r, v, acc)
                return
            *outer, ow = pixel(r)
            channels = vector_index(add(mul(group, g.group_out), columns.start(v)), lanes)
            outer_class, width = self.pixel_classes(outer, ow)
            index = (n, channels, *outer, ow)

            def by_class(table: Buffer) -> Expr:
                return Load(table, (outer_class, width, channels))

            kept = self.b.let(acc, "acc")
            emit_fast_requantize(
                self.b, kept, Load(fast.slope, (channels,)),
                by_class(fast.offset), fast.value("low", by_class, lanes),
                fast.value("high", by_class, lanes),
                fast.value("limit", lambda t: Load(t, (channels,)), lanes),
                (lambda: exact(r, v, acc)) if deferred is None
                else lambda: deferred.defer(self.b, r, v, kept),
                lambda q: self.b.store(self.epilogue.output, index, q),
                fast.dequantized(lambda t: Load(t, (channels,)), lanes),
                fast.check(lambda t: Load(t, (add(mul(group, g.group_out), columns.start(v)),))),
                fast.fused, fast.tail_levels(self.epilogue.ctx, self.b, index, lanes))

        emit_dot_tile(self.b, self.step, self.rows, columns.count, lanes, reduction,
                      g.kernel[-1], activations, weights, store, broadcast_is_activation=True)
        if deferred is not None:
            deferred.finish(self.b, exact)

    def pixel_classes(self, outer: Sequence[Index], ow: Index) -> tuple[Expr, Expr]:
        """The outer and width border classes of an output pixel."""
        classes = self.tables.classes
        flat: Index = 0
        for o, extent in zip(outer, self.g.out_spatial[:-1]):
            flat = add(mul(flat, extent), o)
        outer_class = lb.min_(lb.max_(Load(self.tables.outer_class, (flat,)), 0),
                              len(classes.outer) - 1)
        width = lb.min_(lb.max_(Load(self.width_class, (ow,)), 0), len(classes.width) - 1)
        return outer_class, width

    def value(self, acc: Expr, outer: Sequence[Index], ow: Index, channel: Index,
              lanes: int) -> Expr:
        """``(f32(acc) * step + f32(wsum_valid) * low) * scale`` for ``lanes`` channels of
        one pixel (``lowp_conv.output_value`` with the roles of the axes swapped)."""
        outer_class, width = self.pixel_classes(outer, ow)
        channels = vector_index(channel, lanes)
        zero_point = Load(self.zero_point, (outer_class, width, channels))
        value = (Cast(acc, f32, "nearest") * Load(self.tables.step, (channels,))
                 + zero_point)
        return value * Load(self.tables.scale, (channels,))


__all__ = ["lower_q_conv_by_channels", "pack_channel_panels"]
