"""Integer GEMMs (``QMatMul``, ``QActivationMatMul``) and the weight-only ``CompressedMatMul``.

Integer GEMM, ``C[b, m, n] = sum_k A[b, m, k] * B[b, k, n]`` exactly in i32: columns of C in
panels of ``vectors * lanes`` (``nn_tiles.cover_axis``, the last panel shifted back), per
panel tiles of ``rows`` rows (the last shifted back) running the integer tile of
``lowp_tiles`` over ``K / g`` steps (``g``: the dot step's group)::

    for (batch, panel) PARALLEL: for row tile: for kg < K/g:
      acc[r][v] = step(acc[r][v], A[b, m+r, kg*g : kg*g+g] on every lane,
                       Bp[b, panel, kg, v*lanes*g : (v+1)*lanes*g])

* A (u8 level indices) is read in place when K is a multiple of ``g`` and A is not
  transposed; otherwise the kernel first copies it into a K-padded scratch ``[batch, M, Kp]``
  (zeros past K contribute nothing).
* B, group-interleaved: ``Bp[b, panel, kg, j*g + t] = B[b, kg*g + t, column j of the panel]``
  -- packed at compile time from constant i8 weights (``QMatMul``), at run time from a u8
  activation (``QActivationMatMul``, with its column sums).

Epilogues, in the reference's f32 order (``lpjit.reference.lowp``):

* ``QMatMul``: ``y = (f32(acc) * step + f32(wsum[n]) * low) * scale[n]``, the products
  ``f32(wsum[n]) * low`` tabulated at compile time.
* ``QActivationMatMul``: ``y = ((f32(s_ab)*c_ab + f32(s_b[n])*c_b) + f32(s_a[m])*c_a) + c_0``
  with the row sums ``s_a`` and column sums ``s_b`` computed by the kernel.  With VNNI (u8 x
  i8 only) B is packed as ``qb - 128`` (i8) and ``s_ab = acc + 128 * s_a``, exactly.

``CompressedMatMul``: the float GEMM of ``nn_tiles.emit_fma_tile`` whose B vectors are the
weights decompressed on the fly, ``(f32(wq) - f32(zero_point)) * scale`` per row and group
(f32, as the reference), from i8/u8 panels ``[panel, K, width]`` that stay 8-bit in memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import attrs
import numpy as np

from lowering import builder as lb
from lowering.loop_ir import (
    Buffer,
    Cast,
    Expr,
    Kernel,
    Load,
    ReduceLanes,
    as_expr,
    f32,
    i8,
    i32,
    u8,
    vectorized,
)
from lowering.lower_graph import Epilogue, LoweringContext, kernel_builder, make_kernel
from lowering.ops.lowp_conv import first_lane
from lowering.ops.lowp_tiles import DotStep, emit_dot_tile
from lowering.ops.nn_matmul import MatMulGeometry
from lowering.ops.nn_schedules import RegisterTile
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


def matmul_geometry(node: Node, b_shape: tuple[int, ...], transpose_b: bool
                    ) -> MatMulGeometry:
    """Shapes of a (Q/Compressed) MatMul whose B is ``b_shape`` (``[N, K]`` constant weights
    are ``transpose_b``)."""
    a_shape = node.input_type(0).shape
    transpose_a = node.transpose_a
    out = node.output_types[0].shape
    rows, depth = (a_shape[-1], a_shape[-2]) if transpose_a else (a_shape[-2], a_shape[-1])
    columns = b_shape[-2] if transpose_b else b_shape[-1]
    return MatMulGeometry(tuple(out[:-2]), rows, depth, columns, a_shape, b_shape, transpose_a,
                          transpose_b)


def flat_batch(g: MatMulGeometry, shape: tuple[int, ...], batch: Sequence[Index]) -> Index:
    """The flat index of an input's own batch dims (``shape[:-2]``) at output ``batch``."""
    flat: Index = 0
    stride = 1
    dims = shape[:-2]
    for extent, i in reversed(list(zip(dims, g.batch_of(shape, batch)))):
        if extent > 1:
            flat = add(mul(i, stride), flat)
        stride *= extent
    return flat


def column_cover(columns: int, tile: RegisterTile) -> AxisCover:
    """Panels over N; one column is computed on two lanes (``lanes >= 2`` for the dots)."""
    if columns == 1:
        return AxisCover(1, 2, 1, 0, 1, 2)
    return cover_axis(columns, tile.lanes, tile.vectors)


def remainder_columns(cover: AxisCover) -> TileColumns:
    """The last panel's vectors (a one-column axis: one vector of two lanes from 0)."""
    if cover.extent == 1:
        return TileColumns(0, 1, 2)
    return cover.remainder_tile()


def panel_columns(cover: AxisCover) -> list[list[int]]:
    """The B column held by each packed column of each panel (clamped to the last column)."""
    width = cover.tile_columns
    panels = [[p * width + j for j in range(width)] for p in range(cover.full_tiles)]
    if cover.remainder_count:
        tile = remainder_columns(cover)
        panel = [min(tile.start(v) + j, cover.extent - 1)
                 for v in range(tile.count) for j in range(tile.lanes)]
        panels.append(panel + [cover.extent - 1] * (width - len(panel)))
    return panels


def pack_b_groups(b: np.ndarray, cover: AxisCover, group: int) -> np.ndarray:
    """``[batch, K, N]`` -> ``[batch, panels, Kp/g, width*g]``, K zero-padded to ``Kp``."""
    batch, depth, _ = b.shape
    steps = -(-depth // group)
    padded = np.zeros((batch, steps * group, b.shape[2]), b.dtype)
    padded[:, :depth] = b
    panels = panel_columns(cover)
    packed = np.stack([padded[:, :, cols] for cols in panels], axis=1)  # [B, P, Kp, width]
    packed = packed.reshape(batch, len(panels), steps, group, -1).transpose(0, 1, 2, 4, 3)
    return np.ascontiguousarray(packed.reshape(batch, len(panels), steps, -1))


# -- A: quads of a row ---------------------------------------------------------------------------

@attrs.frozen
class RowGroups:
    """How tiles read ``group`` consecutive K elements of a row of A."""

    buffer: Buffer
    g: MatMulGeometry
    group: int
    padded: bool            # reading the K-padded copy [batch, M, Kp]

    def elements(self, batch: Sequence[Index], m: Index, step: Index) -> Expr:
        k = mul(step, self.group) if isinstance(step, int) else step * self.group
        index = k if self.group == 1 else lb.ramp(k, self.group)
        if self.padded:
            return Load(self.buffer, (flat_batch(self.g, self.g.a_shape, batch), m, index))
        return Load(self.buffer, self.g.a_index(batch, m, index))


def row_groups(b: lb.KernelBuilder, ctx: LoweringContext, node: Node, g: MatMulGeometry,
               group: int, parallel: bool) -> RowGroups:
    """A as the tiles read it; emits the K-padded copy when needed (see module doc)."""
    a = ctx.buffer(node.inputs[0])
    if not g.transpose_a and g.depth % group == 0:
        return RowGroups(a, g, group, False)
    a_batch = g.a_shape[:-2]
    count = math.prod(a_batch)
    steps = -(-g.depth // group)
    copy = Buffer(ctx.name(node.origin.name + "_rows"), u8, (count, g.rows, steps * group),
                  role="scratch", alignment=64)
    rows = count * g.rows
    with b.for_range(rows, kind=loop_kind(parallel, rows), name="am") as t:
        flat, m = unravel(t, (count, g.rows))
        source = unravel(flat, a_batch) if a_batch else []
        kind = vectorized(ctx.lanes) if g.depth >= ctx.lanes else lb.SERIAL
        with b.for_range(g.depth, kind=kind, name="k") as k:
            pair = (k, m) if g.transpose_a else (m, k)
            b.store(copy, (flat, m, k), Load(a, (*source, *pair)))
        for k in range(g.depth, steps * group):
            b.store(copy, (flat, m, k), as_expr(0, u8))
    return RowGroups(copy, g, group, True)


# -- the tile loops ------------------------------------------------------------------------------

OutputValue = Callable[[Sequence[Index], Index, Index, Expr, int], Expr]


@attrs.frozen
class _IntegerGemm:
    """Emits the panels of an integer GEMM; ``value(batch, m, start, acc, lanes)`` is the
    f32 output of an accumulator (the op's epilogue formula)."""

    b: lb.KernelBuilder
    g: MatMulGeometry
    a: RowGroups
    packed: Buffer
    b_shape: tuple[int, ...]      # B's own batch dims are packed.shape[0] = prod(b batch)
    epilogue: Epilogue
    step: DotStep
    tile: RegisterTile
    value: OutputValue

    def run(self, cover: AxisCover, parallel: bool) -> None:
        b, g = self.b, self.g
        batch_count = math.prod(g.batch)
        if cover.full_tiles:
            count = batch_count * cover.full_tiles
            with b.for_range(count, kind=loop_kind(parallel, count), name="bp") as t:
                batch = unravel(t // cover.full_tiles if cover.full_tiles > 1 else t, g.batch)
                panel = t % cover.full_tiles if cover.full_tiles > 1 else 0
                self.panel(batch, panel, cover.full_tile(panel), cover.lanes)
        if cover.remainder_count:
            with b.for_range(batch_count, kind=loop_kind(parallel, batch_count),
                             name="bt") as t:
                tile = remainder_columns(cover)
                stored = min(tile.lanes, cover.extent)
                self.panel(unravel(t, g.batch), cover.full_tiles, tile, stored)

    def panel(self, batch: Sequence[Index], panel: Index, columns: TileColumns,
              stored: int) -> None:
        rows, extent = self.tile.rows, self.g.rows
        with self.b.for_range(-(-extent // rows), name="mt") as mt:
            first = block_first(mt, rows, extent)
            self.emit_tile(batch, panel, first, columns, stored)

    def emit_tile(self, batch: Sequence[Index], panel: Index, first: Index,
                  columns: TileColumns, stored: int) -> None:
        g, lanes, group = self.g, columns.lanes, self.step.group
        steps = self.packed.shape[2]
        b_flat = flat_batch(g, self.b_shape, batch) if len(self.b_shape) > 2 else 0

        def activations(r: Expr, ks: Sequence[Expr], tap: Expr) -> Expr:
            return self.a.elements(batch, add(first, r), ks[0])

        def weights(v: Expr, ks: Sequence[Expr], tap: Expr) -> Expr:
            start = v * (lanes * group)
            return Load(self.packed, (b_flat, panel, ks[0], vector_index(start, lanes * group)))

        def store(r: Expr, v: Expr, acc: Expr) -> None:
            m, start = add(first, r), columns.start(v)
            value = self.b.let(self.value(batch, m, start, acc, lanes), "y")
            if stored == lanes:
                self.epilogue.store(self.b, g.out_index(batch, m, vector_index(start, lanes)),
                                    value)
            else:
                self.epilogue.store(self.b, g.out_index(batch, m, start), first_lane(value))

        emit_dot_tile(self.b, self.step, self.tile.rows, columns.count, lanes,
                      [Reduction(steps, name="kg")], 1, activations, weights, store,
                      broadcast_is_activation=True)


def _vector_of(buffer: Buffer, prefix: Sequence[Index], start: Index, lanes: int) -> Expr:
    return Load(buffer, (*prefix, vector_index(start, lanes)))


def _padded_vector(values: np.ndarray, minimum: int = 2) -> np.ndarray:
    """``values`` (f32) padded by repetition to at least ``minimum`` entries (a one-column
    output is computed on two lanes)."""
    values = np.asarray(values, np.float32).reshape(-1)
    return np.pad(values, (0, max(0, minimum - values.size)), mode="edge")


# -- QMatMul -------------------------------------------------------------------------------------

def lower_q_matmul(ctx: LoweringContext, node: Node, epilogue: Epilogue, weights: np.ndarray,
                   scale: np.ndarray, step_value: float, low: float, step: DotStep,
                   tile: RegisterTile, parallel: bool) -> Kernel:
    """The integer GEMM of ``QMatMul`` with constant ``weights[N, K]`` (see module doc)."""
    g = matmul_geometry(node, weights.shape, True)
    cover = column_cover(g.columns, tile)
    packed = pack_b_groups(weights.T[None].astype(np.int8), cover, step.group)
    name = node.origin.name
    wsum = weights.astype(np.int64).sum(axis=1)
    zero_point = ctx.constant(name + "_zero_point",
                              _padded_vector(wsum.astype(np.float32) * np.float32(low)))
    scales = ctx.constant(name + "_scale", _padded_vector(scale))
    step_f32 = np.float32(step_value)
    b = kernel_builder(ctx, node)
    a = row_groups(b, ctx, node, g, step.group, parallel)

    def value(batch: Sequence[Index], m: Index, start: Index, acc: Expr, lanes: int) -> Expr:
        scaled = Cast(acc, f32, "nearest") * lb.broadcast(float(step_f32), lanes, f32)
        shifted = scaled + _vector_of(zero_point, (), start, lanes)
        return shifted * _vector_of(scales, (), start, lanes)

    gemm = _IntegerGemm(b, g, a, ctx.constant(name + "_weights", packed), (g.columns, g.depth),
                        epilogue, step, tile, value)
    gemm.run(cover, parallel)
    return make_kernel(b, optimization="cleanup")


# -- QActivationMatMul ---------------------------------------------------------------------------

def lower_q_activation_matmul(ctx: LoweringContext, node: Node, epilogue: Epilogue,
                              constants: Sequence[float], step: DotStep, tile: RegisterTile,
                              parallel: bool) -> Kernel:
    """The integer GEMM of two u8 activations with its sums (see module doc)."""
    a_step, a_low, b_step, b_low = (np.float32(c) for c in constants)
    b_shape = node.input_type(1).shape
    g = matmul_geometry(node, b_shape, node.transpose_b)
    cover = column_cover(g.columns, tile)
    b = kernel_builder(ctx, node)
    offset = 128 if step.kind in ("quad", "saturating") else 0
    packed, column_sums = _pack_b_at_run_time(b, ctx, node, g, cover, step.group, offset,
                                              parallel)
    a = row_groups(b, ctx, node, g, step.group, parallel)
    row_sums = _row_sums(b, ctx, node, g, a, parallel)
    c_ab, c_b, c_a = a_step * b_step, a_low * b_step, b_low * a_step
    c_0 = np.float32(g.depth) * a_low * b_low

    def value(batch: Sequence[Index], m: Index, start: Index, acc: Expr, lanes: int) -> Expr:
        def imm(x: np.float32) -> Expr:
            return lb.broadcast(float(x), lanes, f32)

        s_a = Load(row_sums, (flat_batch(g, g.a_shape, batch), m))
        if offset:
            acc = acc + lb.broadcast(s_a * offset, lanes, i32)
        b_flat = flat_batch(g, b_shape, batch) if len(b_shape) > 2 else 0
        s_b = _vector_of(column_sums, (b_flat,), start, lanes)
        value = (Cast(acc, f32, "nearest") * imm(c_ab)
                 + Cast(s_b, f32, "nearest") * imm(c_b))
        value = value + lb.broadcast(Cast(s_a, f32, "nearest") * float(c_a), lanes, f32)
        return value + imm(c_0)

    gemm = _IntegerGemm(b, g, a, packed, b_shape, epilogue, step, tile, value)
    gemm.run(cover, parallel)
    return make_kernel(b, optimization="cleanup")


def _pack_b_at_run_time(b: lb.KernelBuilder, ctx: LoweringContext, node: Node,
                        g: MatMulGeometry, cover: AxisCover, group: int, offset: int,
                        parallel: bool) -> tuple[Buffer, Buffer]:
    """Pack activation B into ``Bp`` (``qb - offset`` as i8 when ``offset``, else u8) and
    compute its column sums ``[batch_b, max(N, 2)]`` (i32)."""
    source = ctx.buffer(node.inputs[1])
    b_batch = g.b_shape[:-2]
    count = math.prod(b_batch)
    panels = panel_columns(cover)
    steps = -(-g.depth // group)
    width = cover.tile_columns
    dtype = i8 if offset else u8
    name = node.origin.name
    packed = Buffer(ctx.name(name + "_packed_b"), dtype, (count, len(panels), steps,
                                                          width * group),
                    role="scratch", alignment=64)
    sums = Buffer(ctx.name(name + "_column_sums"), i32, (count, max(g.columns, 2)),
                  role="scratch", alignment=64)
    with b.for_range(count, kind=loop_kind(parallel, count), name="pb") as t:
        batch = unravel(t, b_batch) if b_batch else []

        def element(k: Index, n: Index) -> Expr:
            pair = (n, k) if g.transpose_b else (k, n)
            return Load(source, (*batch, *pair))

        with b.for_range(g.columns, name="n") as n:
            if g.transpose_b:           # B[n, k] contiguous along k
                total = _row_sum(b, lambda k, lanes: Load(source, (*batch, n, vector_index(k, lanes))),
                                 g.depth)
            else:
                total = _row_sum(b, lambda k, lanes: element(k, n), g.depth, 1)
            b.store(sums, (t, n), total)
        for n in range(g.columns, max(g.columns, 2)):
            b.store(sums, (t, n), as_expr(0, i32))
        for p, columns in enumerate(panels):
            contiguous = columns == list(range(columns[0], columns[0] + width))
            if g.transpose_b and g.depth % group == 0:
                _pack_panel_by_groups(b, packed, t, p, columns, source, batch, steps, group,
                                      offset, contiguous)
                continue
            _pack_panel(b, packed, t, p, columns, element, g.depth, steps, group, offset,
                        contiguous)
    return packed, sums


# Lanes of the vector sums of a row (``_row_sum``).
SUM_LANES = 16


def _row_sum(b: lb.KernelBuilder, load: Callable[[Index, int], Expr], depth: int,
             lanes: int = SUM_LANES) -> Expr:
    """``sum_k load(k)`` in i32 over ``k < depth``: ``load(k, lanes)`` reads ``lanes``
    contiguous u8 elements from ``k``, summed a vector at a time (exact: at most ``depth *
    255``), then one element at a time past the last whole vector."""
    vectors = depth // lanes if lanes > 1 else 0
    total: Expr = as_expr(0, i32)
    if vectors:
        acc = b.local(lb.broadcast(0, lanes, i32), "vsum")
        with b.for_range(vectors, name="kv") as kv:
            b.assign(acc, acc + Cast(load(kv * lanes, lanes), i32, "exact"))
        total = ReduceLanes("add", acc)
    if depth % lanes or not vectors:
        rest = b.local(total, "sum")
        with b.for_range(depth - vectors * lanes, name="k") as k:
            b.assign(rest, rest + Cast(load(k + vectors * lanes, 1), i32, "exact"))
        return rest
    return b.let(total, "sum")


def _pack_panel_by_groups(b: lb.KernelBuilder, packed: Buffer, t: Expr, p: int,
                          columns: list[int], source: Buffer, batch: Sequence[Index],
                          steps: int, group: int, offset: int, contiguous: bool) -> None:
    """One panel of ``Bp`` from a B stored ``[N, K]`` (K contiguous, a multiple of ``g``):
    ``Bp[t, p, kg, j*g : j*g + g] = B[columns[j], kg*g : kg*g + g] - offset``, ``g`` bytes
    at a time (a loop over the columns when ``contiguous``, else one copy each)."""
    def copy(kg: Expr, j: Index, column: Index) -> None:
        value = Load(source, (*batch, column, vector_index(kg * group, group)))
        if offset:
            value = Cast(lb.binary("xor", value, lb.broadcast(offset, group, u8)), i8, "wrap")
        b.store(packed, (t, p, kg, vector_index(j * group, group)), value)

    with b.for_range(steps, name="kg") as kg:
        if contiguous:
            with b.for_range(len(columns), name="j") as j:
                copy(kg, j, j + columns[0])
        else:
            for j, column in enumerate(columns):
                copy(kg, j, column)


def _pack_panel(b: lb.KernelBuilder, packed: Buffer, t: Expr, p: int, columns: list[int],
                element, depth: int, steps: int, group: int, offset: int,
                contiguous: bool) -> None:
    """One panel of ``Bp``: ``Bp[t, p, kg, j*g + u] = B[kg*g + u, columns[j]] - offset``
    (zero past K)."""
    def converted(value: Expr) -> Expr:
        if not offset:
            return value
        return Cast(lb.binary("xor", value, as_expr(offset, u8)), i8, "wrap")

    zero = as_expr(0, packed.dtype)
    if contiguous:
        with b.for_range(depth, name="k") as k, b.for_range(len(columns), name="j") as j:
            index = (t, p, k // group, j * group + k % group)
            b.store(packed, index, converted(element(k, j + columns[0])))
    else:
        with b.for_range(depth, name="k") as k:
            for j, column in enumerate(columns):
                index = (t, p, k // group, j * group + k % group)
                b.store(packed, index, converted(element(k, column)))
    for k in range(depth, steps * group):       # A is zero there: any value adds nothing
        for j in range(len(columns)):
            b.store(packed, (t, p, k // group, j * group + k % group), zero)


def _row_sums(b: lb.KernelBuilder, ctx: LoweringContext, node: Node, g: MatMulGeometry,
              a: RowGroups, parallel: bool) -> Buffer:
    """``S[batch_a, m] = sum_k A[m, k]`` (i32)."""
    source = ctx.buffer(node.inputs[0])
    a_batch = g.a_shape[:-2]
    count = math.prod(a_batch)
    sums = Buffer(ctx.name(node.origin.name + "_row_sums"), i32, (count, g.rows),
                  role="scratch", alignment=64)
    rows = count * g.rows
    with b.for_range(rows, kind=loop_kind(parallel, rows), name="sm") as t:
        flat, m = unravel(t, (count, g.rows))
        batch = unravel(flat, a_batch) if a_batch else []
        if g.transpose_a:
            total = _row_sum(b, lambda k, lanes: Load(source, (*batch, k, m)), g.depth, 1)
        else:                           # A[m, k] contiguous along k
            total = _row_sum(b, lambda k, lanes: Load(source, (*batch, m, vector_index(k, lanes))),
                             g.depth)
        b.store(sums, (flat, m), total)
    return sums


# -- CompressedMatMul ----------------------------------------------------------------------------

def pack_decompression(values: np.ndarray, cover: AxisCover) -> np.ndarray:
    """Per-row values ``[N, groups]`` -> ``[panels, groups, width]`` (panel columns)."""
    panels = panel_columns(cover)
    return np.ascontiguousarray(np.stack([values[cols].T for cols in panels]))


def lower_compressed_matmul(ctx: LoweringContext, node: Node, epilogue: Epilogue,
                            weights: np.ndarray, scale: np.ndarray,
                            zero_point: np.ndarray | None, tile: RegisterTile,
                            parallel: bool) -> Kernel:
    """f32 GEMM with i8/u8 weights decompressed on the fly (see module doc)."""
    g = matmul_geometry(node, weights.shape, True)
    cover = column_cover(g.columns, tile)
    group_size = node.group_size
    name = node.origin.name
    packed = pack_b_groups(weights.T[None], cover, 1)[0]          # [P, K, width]
    packed = ctx.constant(name + "_weights", packed)
    scales = ctx.constant(name + "_scale", pack_decompression(scale.astype(np.float32), cover))
    points = None
    if zero_point is not None:
        points = ctx.constant(name + "_zero_point",
                              pack_decompression(zero_point.astype(np.float32), cover))
    a = ctx.buffer(node.inputs[0])
    b = kernel_builder(ctx, node)
    writer = _CompressedWriter(b, g, a, packed, scales, points, epilogue, tile.rows,
                               group_size)
    batch_count = math.prod(g.batch)
    if cover.full_tiles:
        count = batch_count * cover.full_tiles
        with b.for_range(count, kind=loop_kind(parallel, count), name="bp") as t:
            batch = unravel(t // cover.full_tiles if cover.full_tiles > 1 else t, g.batch)
            panel = t % cover.full_tiles if cover.full_tiles > 1 else 0
            writer.panel(batch, panel, cover.full_tile(panel), cover.lanes)
    if cover.remainder_count:
        with b.for_range(batch_count, kind=loop_kind(parallel, batch_count), name="bt") as t:
            tile_columns = remainder_columns(cover)
            writer.panel(unravel(t, g.batch), cover.full_tiles, tile_columns,
                         min(tile_columns.lanes, cover.extent))
    return make_kernel(b)


@attrs.frozen
class _CompressedWriter:
    """Emits the row tiles of one panel of the compressed GEMM."""

    b: lb.KernelBuilder
    g: MatMulGeometry
    a: Buffer
    weights: Buffer
    scale: Buffer
    zero_point: Buffer | None
    epilogue: Epilogue
    tile_rows: int
    group_size: int

    def panel(self, batch: Sequence[Index], panel: Index, columns: TileColumns,
              stored: int) -> None:
        rows, extent = self.tile_rows, self.g.rows
        with self.b.for_range(-(-extent // rows), name="mt") as mt:
            first = block_first(mt, rows, extent)
            self.tile(batch, panel, first, columns, stored)

    def tile(self, batch: Sequence[Index], panel: Index, first: Index, columns: TileColumns,
             stored: int) -> None:
        g, lanes, size = self.g, columns.lanes, self.group_size
        groups = g.depth // size

        def scalar(r: Index, ks: Sequence[Expr], tap: Index) -> Expr:
            k = ks[0] * size + ks[1] if groups > 1 else ks[1]
            return Load(self.a, g.a_index(batch, add(first, r), k))

        def vector(v: Index, ks: Sequence[Expr], tap: Index) -> Expr:
            k = ks[0] * size + ks[1] if groups > 1 else ks[1]
            start = vector_index(mul(v, lanes), lanes)
            value = Cast(Load(self.weights, (panel, k, start)), f32, "exact")
            if self.zero_point is not None:
                value = value - Load(self.zero_point, (panel, ks[0], start))
            return value * Load(self.scale, (panel, ks[0], start))

        def store(r: Index, v: Index, acc: Expr) -> None:
            m, start = add(first, r), columns.start(v)
            if stored == lanes:
                self.epilogue.store(self.b, g.out_index(batch, m, vector_index(start, lanes)),
                                    acc)
            else:
                self.epilogue.store(self.b, g.out_index(batch, m, start), first_lane(acc))

        reduction = [Reduction(groups, name="kg"), Reduction(size, name="kk")]
        emit_fma_tile(self.b, self.tile_rows, columns.count, lanes, reduction, 1, scalar,
                      vector, store)


__all__ = ["lower_compressed_matmul", "lower_q_activation_matmul", "lower_q_matmul",
           "matmul_geometry", "pack_b_groups"]
