"""The float MatMul kernel: a register-tiled GEMM over broadcast batch dims.

Logical view (after the 1-D rule and the transposes): ``C[b, m, n] = sum_k A[b, m, k] *
B[b, k, n]``.  Columns of C are covered by *panels* of ``vectors * lanes`` columns
(``nn_tiles.cover_axis``; the last panel may overlap its neighbour); per panel, tiles of
``rows`` rows (the last one shifted back to end at M) run the FMA tile over ``k``: A scalars
broadcast, B vectors.  With fewer columns than lanes (a 1-D ``B``: one column) the vectors
narrow down to scalars: correct, not fast.

B is read as

* a panel-packed constant ``Bp[batch_b, panel, K, vectors*lanes]``, packed at compile time
  when ``B`` is a constant (dense, aligned, one cache-line stream per panel);
* packed the same way at run time into a scratch buffer when ``B`` is a transposed
  activation (attention's ``Q @ K^T``);
* directly (``B[..., k, n:n+lanes]``) when ``B`` is an activation that is not transposed.

Loop nest: ``for (batch, row block, panel) PARALLEL: for row tile of the block: FMA tile``.
A row block of A (``row_block_bytes``) and a B panel together stay in the L2 cache while the
block's row tiles use the panel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import numpy as np

from lowering import builder as lb
from lowering.loop_ir import Buffer, Expr, Kernel, Load, f32
from lowering.lower_graph import Epilogue, LoweringContext, kernel_builder, make_kernel
from lowering.ops.nn_schedules import default_matmul_schedule
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
from lpjit.ops.nn import MatMul

Index = Expr | int


@attrs.frozen
class MatMulGeometry:
    """Shapes of one MatMul: logical M, K, N, output batch dims, and each input's layout."""

    batch: tuple[int, ...]
    rows: int
    depth: int
    columns: int
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]
    transpose_a: bool
    transpose_b: bool

    @classmethod
    def of(cls, node: MatMul) -> MatMulGeometry:
        a, b = node.matrix_shapes()
        out = node.output_types[0].shape
        rank = len(out) - (node.input_type(0).rank > 1) - (node.input_type(1).rank > 1)
        return cls(tuple(out[:rank]), a[-2], a[-1], b[-1], node.input_type(0).shape,
                   node.input_type(1).shape, node.transpose_a, node.transpose_b)

    def batch_of(self, shape: tuple[int, ...], index: Sequence[Index]) -> list[Index]:
        """The batch indices of an input of ``shape`` for output batch ``index``."""
        dims = shape[:-2] if len(shape) > 1 else ()
        mine = list(index)[len(index) - len(dims):] if dims else []
        return [0 if extent == 1 else i for extent, i in zip(dims, mine)]

    def a_index(self, batch: Sequence[Index], m: Index, k: Index) -> tuple[Index, ...]:
        if len(self.a_shape) == 1:
            return (k,)
        pair = (k, m) if self.transpose_a else (m, k)
        return (*self.batch_of(self.a_shape, batch), *pair)

    def b_index(self, batch: Sequence[Index], k: Index, n: Index) -> tuple[Index, ...]:
        if len(self.b_shape) == 1:
            return (k,)
        pair = (n, k) if self.transpose_b else (k, n)
        return (*self.batch_of(self.b_shape, batch), *pair)

    def out_index(self, batch: Sequence[Index], m: Index, n: Index) -> tuple[Index, ...]:
        rows = (m,) if len(self.a_shape) > 1 else ()
        columns = (n,) if len(self.b_shape) > 1 else ()
        return (*batch, *rows, *columns)

    @property
    def b_batch(self) -> tuple[int, ...]:
        return tuple(self.b_shape[:-2]) if len(self.b_shape) > 1 else ()

    def b_flat_batch(self, batch: Sequence[Index]) -> Index:
        """B's own flat batch index (for the packed layout) at output batch ``batch``."""
        flat: Index = 0
        stride = 1
        for extent, i in reversed(list(zip(self.b_batch, self.batch_of(self.b_shape, batch)))):
            if extent > 1:
                flat = i * stride + flat
            stride *= extent
        return flat


def logical_b(g: MatMulGeometry, data: np.ndarray) -> np.ndarray:
    """Constant B as ``[batch_b..., K, N]``."""
    if data.ndim == 1:
        return data.reshape(data.shape[0], 1)
    return np.swapaxes(data, -1, -2) if g.transpose_b else data


def pack_b_panels(b: np.ndarray, cover: AxisCover) -> np.ndarray:
    """``[batch..., K, N]`` -> ``[prod(batch), panels, K, vectors*lanes]`` (see module doc)."""
    depth, columns = b.shape[-2:]
    flat = b.reshape(-1, depth, columns)
    width = cover.tile_columns
    panels = cover.tiles
    packed = np.zeros((flat.shape[0], panels, depth, width), np.float32)
    for p in range(cover.full_tiles):
        packed[:, p] = flat[:, :, p * width:(p + 1) * width]
    lanes = cover.remainder_lanes
    tile = cover.remainder_tile()
    for v in range(tile.count):
        start = tile.start(v)
        packed[:, -1, :, v * lanes:(v + 1) * lanes] = flat[:, :, start:start + lanes]
    return packed


def lower_matmul(ctx: LoweringContext, node: MatMul, epilogue: Epilogue,
                 b_constant: np.ndarray | None) -> Kernel:
    """The GEMM kernel of ``node`` (see the module docstring)."""
    g = MatMulGeometry.of(node)
    schedule = default_matmul_schedule(ctx.target, g.rows, g.columns, ctx.options.threads)
    tile = schedule.tile
    cover = cover_axis(g.columns, tile.lanes, tile.vectors)
    b = kernel_builder(ctx, node)
    a = ctx.buffer(node.inputs[0])
    if b_constant is not None and schedule.pack_constant_b:
        packed = pack_b_panels(logical_b(g, b_constant), cover)
        source = _PackedB(ctx.constant(node.origin.name + "_packed", packed), g, cover)
    elif g.transpose_b and len(g.b_shape) > 1:
        source = _pack_at_run_time(b, ctx, node, g, cover, schedule.parallel)
    else:
        source = _DirectB(ctx.buffer(node.inputs[1]), g)
    tiles = -(-g.rows // tile.rows)
    per_block = max(1, min(tiles, schedule.row_block_bytes // (4 * g.depth * tile.rows)))
    writer = _GemmWriter(b, g, a, source, epilogue, tile.rows, per_block)
    blocks = -(-tiles // per_block)
    if cover.full_tiles:
        extents = (*g.batch, blocks, cover.full_tiles)
        count = math.prod(extents)
        with b.for_range(count, kind=loop_kind(schedule.parallel, count), name="bp") as t:
            *batch, block, panel = unravel(t, extents)
            writer.panel(batch, block, panel, cover.full_tile(panel))
    if cover.remainder_count:
        extents = (*g.batch, blocks)
        count = math.prod(extents)
        with b.for_range(count, kind=loop_kind(schedule.parallel, count), name="bt") as t:
            *batch, block = unravel(t, extents)
            writer.panel(batch, block, cover.full_tiles, cover.remainder_tile())
    return make_kernel(b)


@attrs.frozen
class _PackedB:
    """B read from a panel-packed buffer ``[batch_b, panel, K, width]``."""

    buffer: Buffer
    g: MatMulGeometry
    cover: AxisCover

    def vector(self, batch: Sequence[Index], panel: Index, v: Index, columns: TileColumns,
               k: Expr) -> Expr:
        flat = self.g.b_flat_batch(batch)
        lanes = columns.lanes
        return Load(self.buffer, (flat, panel, k, vector_index(mul(v, lanes), lanes)))


@attrs.frozen
class _DirectB:
    """B read in place (an activation, not transposed)."""

    buffer: Buffer
    g: MatMulGeometry

    def vector(self, batch: Sequence[Index], panel: Index, v: Index, columns: TileColumns,
               k: Expr) -> Expr:
        index = vector_index(columns.start(v), columns.lanes)
        return Load(self.buffer, self.g.b_index(batch, k, index))


def _pack_at_run_time(b: lb.KernelBuilder, ctx: LoweringContext, node: Node, g: MatMulGeometry,
                      cover: AxisCover, parallel: bool) -> _PackedB:
    """Copy a transposed activation B into the panel layout (a program scratch buffer)."""
    source = ctx.buffer(node.inputs[1])
    panels = cover.tiles
    count = math.prod(g.b_batch)
    packed = Buffer(ctx.name(node.origin.name + "_packed_b"), f32,
                    (count, panels, g.depth, cover.tile_columns), role="scratch", alignment=64)
    with b.for_range(count, kind=loop_kind(parallel, count), name="pb") as t:
        batch = unravel(t, g.b_batch)
        if cover.full_tiles:
            with b.for_range(cover.full_tiles, name="p") as p, \
                    b.for_range(cover.tile_columns, name="j") as j, \
                    b.for_range(g.depth, name="k") as k:
                column = p * cover.tile_columns + j
                b.store(packed, (t, p, k, j), Load(source, (*batch, column, k)))
        tile = cover.remainder_tile()
        for v in range(tile.count):
            start = tile.start(v)
            with b.for_range(tile.lanes, name="j") as j, b.for_range(g.depth, name="k") as k:
                b.store(packed, (t, cover.full_tiles, k, j + v * tile.lanes),
                        Load(source, (*batch, j + start, k)))
    return _PackedB(packed, g, cover)


@attrs.frozen
class _GemmWriter:
    """Emits the row tiles of one column panel."""

    b: lb.KernelBuilder
    g: MatMulGeometry
    a: Buffer
    source: _PackedB | _DirectB
    epilogue: Epilogue
    tile_rows: int
    per_block: int

    def panel(self, batch: Sequence[Index], block: Index, panel: Index,
              columns: TileColumns) -> None:
        """The row tiles of row block ``block`` in one panel; the last tile of the matrix is
        shifted back to end at M."""
        rows, extent = self.tile_rows, self.g.rows
        tiles = -(-extent // rows)
        with self.b.for_range(self.per_block, name="mt") as mt:
            index = add(mul(block, self.per_block), mt)
            if tiles % self.per_block:
                # The last block is short: skip the missing tiles (the clamp only tells the
                # verifier so; it changes no index that runs).
                with self.b.if_(lb.lt(index, tiles)):
                    index = lb.min_(index, tiles - 1)
                    self.tile(batch, panel, block_first(index, rows, extent), rows, columns)
            else:
                self.tile(batch, panel, block_first(index, rows, extent), rows, columns)

    def tile(self, batch: Sequence[Index], panel: Index, first: Index, rows: int,
             columns: TileColumns) -> None:
        g = self.g

        def scalar(r: Index, ks: Sequence[Expr], tap: Index) -> Expr:
            return Load(self.a, g.a_index(batch, add(first, r), ks[0]))

        def vector(v: Index, ks: Sequence[Expr], tap: Index) -> Expr:
            return self.source.vector(batch, panel, v, columns, ks[0])

        def store(r: Index, v: Index, acc: Expr) -> None:
            index = g.out_index(batch, add(first, r),
                                vector_index(columns.start(v), columns.lanes))
            self.epilogue.store(self.b, index, acc)

        emit_fma_tile(self.b, rows, columns.count, columns.lanes, [Reduction(g.depth, name="k")],
                  1, scalar, vector, store)
