"""The 2-D depthwise convolution kernel (one input and one output channel per group).

Per (n, c) -- the ``PARALLEL`` loop -- the channel's plane is copied into a zero-padded,
phase-split stack scratch (``nn_conv.emit_padded_copy``; read in place when there is neither
padding nor a width stride), then one of two layouts (``DepthwiseSchedule.layout``):

* ``rows``: tiles of ``rows`` output rows (the last tile shifted back) x ``vectors`` vectors
  along the width, each output vector a chain of ``KH*KW`` FMAs in unrolled loops (LLVM merges
  the input loads that neighbouring rows share).
* ``flat`` (rows shorter than a vector): the plane is one flat array; the output pixel
  ``(oh, ow)`` is the *virtual* pixel ``q = oh * pitch + ow`` (``pitch`` = the plane elements
  between two output rows), and tap ``(kh, kw)`` reads ``plane[q + offset(kh, kw)]``: dense
  vectors over ``q`` whatever the row length.  Virtual pixels past a row's end are computed
  into a staging row and dropped: each output row is then copied out through the epilogue.
"""

from __future__ import annotations

import attrs
import numpy as np

from lowering import builder as lb
from lowering.loop_ir import UNROLLED, Buffer, Expr, Kernel, Load, f32
from lowering.lower_graph import Epilogue, LoweringContext, kernel_builder, make_kernel
from lowering.ops.nn_conv import ConvGeometry, ConvSource, emit_padded_copy
from lowering.ops.nn_schedules import DepthwiseSchedule, default_depthwise_schedule
from lowering.ops.nn_tiles import (
    TileColumns,
    add,
    block_first,
    cover_axis,
    loop_kind,
    mul,
    unravel,
    vector_index,
)
from lpjit.graph import Node

Index = Expr | int


def row_pitch(g: ConvGeometry) -> int:
    """Elements of the phase-split plane between two consecutive output rows."""
    *_, phases, columns = g.padded_shape()
    return g.strides[0] * phases * columns


def lower_depthwise(ctx: LoweringContext, node: Node, epilogue: Epilogue, g: ConvGeometry,
                    weights: np.ndarray) -> Kernel:
    """The 2-D depthwise kernel (see the module docstring)."""
    (out_h, out_w), (kh, kw) = g.out_spatial, g.kernel
    schedule = default_depthwise_schedule(ctx.target, out_h, out_w, ctx.options.threads,
                                          row_pitch(g))
    packed = ctx.constant(node.origin.name + "_weights", weights.reshape(g.channels, kh, kw))
    x = ctx.buffer(node.inputs[0])
    b = kernel_builder(ctx, node)
    count = g.batch * g.channels
    with b.for_range(count, kind=loop_kind(schedule.parallel, count), name="nc") as t:
        n, c = unravel(t, (g.batch, g.channels))
        _channel(b, ctx, g, schedule, x, packed, epilogue, n, c)
    return make_kernel(b)


def _channel(b: lb.KernelBuilder, ctx: LoweringContext, g: ConvGeometry,
             schedule: DepthwiseSchedule, x: Buffer, weights: Buffer, epilogue: Epilogue,
             n: Index, c: Index) -> None:
    """One (n, c) plane: the padded copy, then the tiles of the schedule's layout."""
    tile, out_h = schedule.tile, g.out_spatial[0]
    if schedule.layout == "flat" or g.needs_copy:
        plane = b.allocate("plane", f32, g.padded_shape())
        emit_padded_copy(b, g, x, plane, (n, c), (), ctx.lanes)
        source, prefix = ConvSource(plane, True, g.strides[-1], g.dilations[-1]), ()
    else:
        source, prefix = ConvSource(x, False, 1, g.dilations[-1]), (n, c)
    if schedule.layout == "flat":
        _FlatWriter(b, g, source.buffer, weights, epilogue, n, c).emit(tile.lanes, tile.vectors)
        return
    writer = _RowWriter(b, g, source, prefix, weights, epilogue, n, c)
    with b.for_range(-(-out_h // tile.rows), name="oh") as block:
        writer.rows(block_first(block, tile.rows, out_h), tile.rows, tile.vectors, tile.lanes)


@attrs.frozen
class _RowWriter:
    """The ``rows`` layout: tiles of a band of output rows of one channel."""

    b: lb.KernelBuilder
    g: ConvGeometry
    source: ConvSource
    prefix: tuple[Index, ...]
    weights: Buffer
    epilogue: Epilogue
    n: Index
    c: Index

    def rows(self, first: Index, rows: int, vectors: int, lanes: int) -> None:
        cover = cover_axis(self.g.out_spatial[-1], lanes, vectors)
        if cover.full_tiles:
            with self.b.for_range(cover.full_tiles, name="wt") as wt:
                self.tile(first, rows, cover.full_tile(wt))
        if cover.remainder_count:
            self.tile(first, rows, cover.remainder_tile())

    def tile(self, first: Index, rows: int, columns: TileColumns) -> None:
        """``rows x count`` output vectors, each a chain of ``KH*KW`` FMAs."""
        b, g, lanes = self.b, self.g, columns.lanes
        (sh, _), (dh, _) = g.strides, g.dilations
        kernel_h, kernel_w = g.kernel
        with b.for_range(rows, kind=UNROLLED, name="r") as i, \
                b.for_range(columns.count, kind=UNROLLED, name="v") as v:
            oh, start = add(first, i), columns.start(v)
            acc = b.local(lb.broadcast(0.0, lanes, f32), "acc")
            with b.for_range(kernel_h, kind=UNROLLED, name="kh") as kh, \
                    b.for_range(kernel_w, kind=UNROLLED, name="kw") as kw:
                weight = lb.broadcast(Load(self.weights, (self.c, kh, kw)), lanes, f32)
                row = add(mul(oh, sh), mul(kh, dh))
                x = self.source.vector(self.prefix, (row,), start, kw, lanes)
                b.assign(acc, lb.fma(weight, x, acc))
            self.epilogue.store(b, (self.n, self.c, oh, vector_index(start, lanes)), acc)


@attrs.frozen
class _FlatWriter:
    """The ``flat`` layout: virtual pixels over the flattened plane (module docstring)."""

    b: lb.KernelBuilder
    g: ConvGeometry
    plane: Buffer
    weights: Buffer
    epilogue: Epilogue
    n: Index
    c: Index

    def tap_offsets(self) -> list[list[int]]:
        """Flat plane offset of tap ``(kh, kw)`` from a virtual pixel."""
        g = self.g
        *_, phases, columns = g.padded_shape()
        (dh, dw), stride_w = g.dilations, g.strides[1]
        return [[kh * dh * phases * columns + (kw * dw) % stride_w * columns
                 + (kw * dw) // stride_w for kw in range(g.kernel[1])]
                for kh in range(g.kernel[0])]

    def emit(self, lanes: int, vectors: int) -> None:
        """Virtual pixels into the staging row, then the output rows out of it."""
        b, g = self.b, self.g
        out_h, out_w = g.out_spatial
        pitch = row_pitch(g)
        virtual = (out_h - 1) * pitch + out_w
        flat = self.plane.view(self.plane.name + "_flat", (self.plane.numel,))
        stage = b.allocate("stage", f32, (virtual,))
        cover = cover_axis(virtual, lanes, vectors)
        if cover.full_tiles:
            with b.for_range(cover.full_tiles, name="qt") as qt:
                self.tile(flat, stage, cover.full_tile(qt))
        if cover.remainder_count:
            self.tile(flat, stage, cover.remainder_tile())
        row_cover = cover_axis(out_w, lanes, 1)
        with b.for_range(out_h, name="oh") as oh:
            if row_cover.full_tiles:
                with b.for_range(row_cover.full_tiles, name="wt") as wt:
                    self.copy_out(stage, oh, pitch, row_cover.full_tile(wt))
            if row_cover.remainder_count:
                self.copy_out(stage, oh, pitch, row_cover.remainder_tile())

    def tile(self, flat: Buffer, stage: Buffer, columns: TileColumns) -> None:
        """``count`` vectors of virtual pixels into the staging row."""
        b, lanes = self.b, columns.lanes
        offsets = self.tap_offsets()
        with b.for_range(columns.count, kind=UNROLLED, name="v") as v:
            start = columns.start(v)
            acc: Expr = lb.broadcast(0.0, lanes, f32)
            for kh, row in enumerate(offsets):
                for kw, offset in enumerate(row):
                    weight = lb.broadcast(Load(self.weights, (self.c, kh, kw)), lanes, f32)
                    x = Load(flat, (vector_index(add(start, offset), lanes),))
                    acc = lb.fma(weight, x, acc)
            b.store(stage, (vector_index(start, lanes),), acc)

    def copy_out(self, stage: Buffer, oh: Expr, pitch: int, columns: TileColumns) -> None:
        """Output row ``oh`` from the staging row, through the epilogue."""
        b, lanes = self.b, columns.lanes
        with b.for_range(columns.count, kind=UNROLLED, name="v") as v:
            start = columns.start(v)
            value = Load(stage, (vector_index(add(mul(oh, pitch), start), lanes),))
            self.epilogue.store(b, (self.n, self.c, oh, vector_index(start, lanes)), value)


__all__ = ["lower_depthwise", "row_pitch"]

