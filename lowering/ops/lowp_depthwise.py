"""Integer depthwise convolution (``QConvolution`` with one input and one output channel per
group, 2-D), exact in i32.

Per (n, c), PARALLEL:

1. the channel's plane is copied into the zero-padded, phase-split scratch
   ``P[N, C, 1, Hp, s_w, Wq]`` (``lowp_conv``'s blocked copy, a group of one channel);
2. with a dot step of group ``g > 1`` (VNNI quads, AVX2 pairs), the plane is re-laid out with
   ``g`` consecutive *kernel-width taps* next to each other:
   ``T[n, c, h, tg, ow*g + t] = P[.., h, tap's phase, ow + tap's offset]`` for
   ``tap = tg*g + t < KW`` (zero past the kernel: its weights are zero too).  One dense load
   of ``g * lanes`` bytes then holds ``g`` taps of ``lanes`` output pixels, and one dot step
   (``vpdpbusd``, ``vpmaddwd``) multiplies them by the channel's ``g`` weights: ``KH *
   ceil(KW/g)`` steps per output vector (3 for a 3x3 kernel with VNNI);
3. tiles of ``rows`` output rows x ``vectors`` vectors along the width accumulate over the
   taps (unrolled loops).  Without a dot step (no AVX2: group 1) they read ``P`` directly and
   multiply-add values widened to i32.

The epilogue is ``lowp_conv.output_value``: the same f32 formula with the exact
per-border-class zero-point table, per-channel step and low included.
"""

from __future__ import annotations

import attrs
import numpy as np

from lowering import builder as lb
from lowering.loop_ir import UNROLLED, Buffer, Expr, Kernel, Load, i32, u8
from lowering.lower_graph import Epilogue, LoweringContext, kernel_builder, make_kernel
from lowering.ops.lowp_conv import (
    BlockedCopy,
    BlockedInput,
    EpilogueTables,
    blocked_buffer,
    first_lane,
    interleave,
    output_value,
)
from lowering.ops.lowp_tiles import DotStep, replicate
from lowering.ops.nn_conv import ConvGeometry
from lowering.ops.nn_schedules import RegisterTile
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


def tap_groups(g: ConvGeometry, group: int) -> int:
    return -(-g.kernel[-1] // group)


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


def lower_q_depthwise(ctx: LoweringContext, node: Node, epilogue: Epilogue, g: ConvGeometry,
                      weights: np.ndarray, tables: EpilogueTables, step: DotStep,
                      tile: RegisterTile, parallel: bool) -> Kernel:
    """The integer depthwise kernel (see the module docstring)."""
    group = step.group
    packed = ctx.constant(node.origin.name + "_weights", pack_depthwise_weights(weights, group))
    b = kernel_builder(ctx, node)
    p = blocked_buffer(ctx, node, g, 1)
    byte_lanes = 4 * ctx.lanes
    copier = BlockedCopy(b, g, ctx.buffer(node.inputs[0]), p, 1, byte_lanes, byte_lanes)
    plane = BlockedInput(p, 1, g.strides[-1], g.dilations[-1])
    taps = None
    if group > 1:
        width = max(g.out_spatial[-1], 2)
        taps = Buffer(ctx.name(node.origin.name + "_taps"), u8,
                      (g.batch, g.channels, p.shape[3], tap_groups(g, group), width * group),
                      role="scratch", alignment=64)
    count = g.batch * g.channels
    with b.for_range(count, kind=loop_kind(parallel, count), name="nc") as t:
        n, c = unravel(t, (g.batch, g.channels))
        copier.dims((n, c, 0))
        if taps is not None:
            _emit_tap_layout(b, g, plane, taps, n, c, group, max(2, byte_lanes // group))
        writer = _DepthwiseWriter(b, g, plane, taps, step, tables, packed, epilogue, n, c)
        out_h = g.out_spatial[0]
        full = out_h // tile.rows
        if full:
            with b.for_range(full, name="oh") as block:
                writer.rows(block * tile.rows, tile.rows, tile.vectors, tile.lanes)
        if out_h % tile.rows:
            writer.rows(full * tile.rows, out_h % tile.rows, tile.vectors, tile.lanes)
    return make_kernel(b)


def _emit_tap_layout(b: lb.KernelBuilder, g: ConvGeometry, plane: BlockedInput, taps: Buffer,
                     n: Index, c: Index, group: int, lanes: int) -> None:
    """``T[n, c, h, tg, ow*g + t]`` from the padded plane (see the module docstring), a
    power-of-two vector of pixels at a time (the last one shifted back): odd widths such as 7
    or 14 would make odd-sized byte shuffles that LLVM scalarizes."""
    kernel_width = g.kernel[-1]
    width = taps.shape[-1] // group
    lanes = 1 << (min(lanes, width).bit_length() - 1)

    def step(h: Expr, tg: int, start: Index, count: int) -> None:
        parts = []
        for t in range(group):
            tap = tg * group + t
            if tap < kernel_width:
                parts.append(plane.vector((n, c, 0), (h,), start, tap, count))
            else:
                parts.append(lb.broadcast(0, count, u8))
        index = vector_index(mul(start, group), group * count)
        b.store(taps, (n, c, h, tg, index), interleave(parts, count))

    with b.for_range(taps.shape[2], name="h") as h:
        for tg in range(taps.shape[3]):
            full = width // lanes
            if full:
                with b.for_range(full, name="j") as j:
                    step(h, tg, j * lanes, lanes)
            if width % lanes:
                step(h, tg, width - lanes, lanes)


@attrs.frozen
class _DepthwiseWriter:
    """Emits the tiles of a band of output rows of one channel."""

    b: lb.KernelBuilder
    g: ConvGeometry
    plane: BlockedInput
    taps: Buffer | None
    step: DotStep
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

    def activations(self, row: Index, tg: Expr, start: Index, lanes: int) -> Expr:
        """``g`` taps of ``lanes`` output pixels (the tap group ``tg``; with group 1, the
        tap ``tg`` itself from the padded plane)."""
        if self.taps is None:
            return self.plane.vector((self.n, self.c, 0), (row,), start, tg, lanes)
        group = self.step.group
        index = vector_index(mul(start, group), group * lanes)
        return Load(self.taps, (self.n, self.c, row, tg, index))

    def tile(self, first: Index, rows: int, columns: TileColumns, stored: int) -> None:
        """``rows x columns.count`` i32 accumulators over the unrolled taps, then the
        epilogue of each."""
        b, g, group = self.b, self.g, self.step.group
        (sh, _), (dh, _) = g.strides, g.dilations
        lanes = columns.lanes
        acc = b.allocate("acc", i32, (rows, columns.count * lanes))

        def at(i: Expr, v: Expr) -> tuple[Expr, Expr]:
            return (i, vector_index(v * lanes, lanes))

        with b.for_range(rows, kind=UNROLLED, name="r") as i, \
                b.for_range(columns.count, kind=UNROLLED, name="v") as v:
            b.store(acc, at(i, v), lb.broadcast(0, lanes, i32))
        with b.for_range(g.kernel[0], kind=UNROLLED, name="kh") as kh, \
                b.for_range(self.weights.shape[2], kind=UNROLLED, name="tg") as tg:
            last = 0 if group == 1 else lb.ramp(0, group)
            weight = b.let(replicate(Load(self.weights, (self.c, kh, tg, last)), lanes, group),
                           "w")
            with b.for_range(rows, kind=UNROLLED, name="r") as i, \
                    b.for_range(columns.count, kind=UNROLLED, name="v") as v:
                row = add(mul(add(first, i), sh), kh * dh)
                x = self.activations(row, tg, columns.start(v), lanes)
                b.store(acc, at(i, v), self.step.apply(acc[at(i, v)], x, weight))
        last_class = len(self.tables.classes.outer) - 1
        with b.for_range(rows, kind=UNROLLED, name="r") as i:
            oh = add(first, i)
            outer_class = b.let(lb.min_(lb.max_(Load(self.tables.outer_class, (oh,)), 0),
                                        last_class), "oc")
            with b.for_range(columns.count, kind=UNROLLED, name="v") as v:
                start = columns.start(v)
                value = b.let(output_value(b, self.tables, acc[at(i, v)], self.c, outer_class,
                                           start, lanes), "y")
                if stored == lanes:
                    self.epilogue.store(b, (self.n, self.c, oh, vector_index(start, lanes)),
                                        value)
                else:
                    self.epilogue.store(b, (self.n, self.c, oh, start), first_lane(value))


__all__ = ["depthwise_weight_pairs", "lower_q_depthwise", "pack_depthwise_weights"]
