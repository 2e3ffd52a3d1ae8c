"""Register-tiled FMA microkernels as explicit vector loop IR, and how vectors cover an axis.

``emit_fma_tile`` writes the body shared by the direct convolution and the GEMM::

    tile[r, v] = 0                       (rows x vectors f32 x lanes, a scratch tile)
    for k... in reduction loops:
      for tap, r unrolled:
        w = broadcast(scalar_operand(r, k..., tap))
        for v unrolled:
          tile[r, v] = fma(w, vector_operand(v, k..., tap), tile[r, v])
    for r, v unrolled: store(r, v, tile[r, v])

The tile's indices are constants once the ``unrolled`` loops are emitted, so LLVM keeps it in
vector registers (SROA) and merges the vector loads repeated for each row: the inner loop is
``vectors`` loads, ``rows`` broadcasts and ``rows * vectors`` ``vfmadd231ps``, with
``rows * vectors + vectors + 1`` live vector registers.  The numba executor runs
the same loops as written.

``cover_axis`` says where the vectors of an axis start: full tiles of ``vectors * lanes``
elements, then one remainder tile whose last vector is shifted back to end exactly at the
axis end (it recomputes a few elements with identical results instead of needing a scalar
tail or an out-of-bounds access).  An axis shorter than ``lanes`` uses the largest power of two
lanes that fits (down to scalars).  Rows are blocked the same way (``block_first``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import attrs

from lowering import builder as lb
from lowering.loop_ir import PARALLEL, SERIAL, UNROLLED, Expr, LoopKind, Ramp, Var, as_expr, f32


@attrs.frozen
class TileColumns:
    """The ``count`` vectors of ``lanes`` lanes of one tile: vector ``v`` starts at
    ``min(first + v * lanes, last)`` (``last`` = None: no clamp)."""

    first: Expr | int
    count: int
    lanes: int
    last: int | None = None

    def start(self, v: Expr | int) -> Expr | int:
        start = add(self.first, mul(v, self.lanes))
        if self.last is None:
            return start
        if isinstance(start, int):
            return min(start, self.last)
        return lb.min_(start, self.last)


@attrs.frozen
class AxisCover:
    """Vectors covering ``[0, extent)``: ``full_tiles`` tiles of ``vectors`` x ``lanes``
    (tile ``t`` vector ``v`` starts at ``t * vectors * lanes + v * lanes``), then one
    remainder tile of ``remainder_count`` vectors of ``remainder_lanes`` lanes, the last one
    shifted back to end at ``extent``."""

    extent: int
    lanes: int
    vectors: int
    full_tiles: int
    remainder_count: int
    remainder_lanes: int

    @property
    def tile_columns(self) -> int:
        return self.vectors * self.lanes

    @property
    def tiles(self) -> int:
        """Full tiles plus the remainder tile, if any."""
        return self.full_tiles + (1 if self.remainder_count else 0)

    def full_tile(self, t: Expr | int) -> TileColumns:
        return TileColumns(mul(t, self.tile_columns), self.vectors, self.lanes)

    def remainder_tile(self) -> TileColumns:
        first = self.full_tiles * self.tile_columns
        return TileColumns(first, self.remainder_count, self.remainder_lanes,
                           self.extent - self.remainder_lanes)


def cover_axis(extent: int, lanes: int, vectors: int) -> AxisCover:
    """How ``extent`` elements are covered by tiles of ``vectors`` vectors of ``lanes``."""
    full, rest_lanes = 0, lanes
    if extent < lanes:
        rest_lanes = 1 << (extent.bit_length() - 1)
    else:
        full = extent // (vectors * lanes)
    rest = extent - full * vectors * lanes
    count = -(-rest // rest_lanes) if rest else 0
    return AxisCover(extent, lanes, vectors, full, count, rest_lanes)


def add(a: Expr | int, b: Expr | int) -> Expr | int:
    """``a + b`` folding integer zeros and constants."""
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if isinstance(b, int) and b == 0:
        return a
    if isinstance(a, int) and a == 0:
        return b
    return a + b


def mul(a: Expr | int, b: int) -> Expr | int:
    """``a * b`` folding integer ones and zeros."""
    if isinstance(a, int):
        return a * b
    if b == 1:
        return a
    return 0 if b == 0 else a * b


def block_first(block: Expr, rows: int, extent: int) -> Expr | int:
    """First row of block ``block`` of ``rows`` rows covering ``[0, extent)``: the last block
    is shifted back to end at ``extent`` (``min(block * rows, extent - rows)``)."""
    first = mul(block, rows)
    return first if extent % rows == 0 else lb.min_(first, extent - rows)


def unravel(index: Expr, extents: Sequence[int]) -> list[Expr | int]:
    """The multi-index of flat ``index`` over row-major ``extents`` (size-1 dims are 0)."""
    out: list[Expr | int] = []
    stride = math.prod(extents)
    for axis, extent in enumerate(extents):
        stride //= extent
        if extent == 1:
            out.append(0)
            continue
        value = index if stride == 1 else index // stride
        out.append(value if axis == 0 else value % extent)
    return out


def loop_kind(parallel: bool, extent: int) -> LoopKind:
    """``PARALLEL`` when asked for and there is more than one iteration, else serial."""
    return PARALLEL if parallel and extent > 1 else SERIAL


def vector_index(start: Expr | int, lanes: int) -> Expr:
    """The index of a ``lanes``-wide dense access starting at ``start`` (scalar if 1 lane)."""
    start = as_expr(start)
    return start if lanes == 1 else Ramp(start, 1, lanes)


ScalarOperand = Callable[[int, Sequence[Var], int], Expr]
VectorOperand = Callable[[int, Sequence[Var], int], Expr]
StoreTile = Callable[[int, int, Expr], None]


@attrs.frozen
class Reduction:
    """A reduction loop of the tile: ``extent`` iterations run as ``kind``."""

    extent: int
    kind: LoopKind = SERIAL
    name: str = "k"


def emit_fma_tile(b: lb.KernelBuilder, rows: int, vectors: int, lanes: int,
                  reduction: Sequence[Reduction], taps: int, scalar_operand: ScalarOperand,
                  vector_operand: VectorOperand, store: StoreTile) -> None:
    """Emit one ``rows x vectors`` FMA tile (see the module docstring).

    Inside the innermost reduction loop, ``taps`` steps run as an unrolled loop (static
    kernel-width taps; 1 for a GEMM).  ``scalar_operand(r, ks, tap)`` is row ``r``'s f32
    scalar and ``vector_operand(v, ks, tap)`` vector ``v``'s ``lanes``-wide f32 value, for the
    reduction variables ``ks``; ``store(r, v, acc)`` writes an accumulator afterwards.
    ``r``, ``v`` and ``tap`` are variables of ``unrolled`` loops: constants after unrolling.
    """
    acc = b.allocate("tile", f32, (rows, vectors * lanes))

    def at(r: Expr, v: Expr) -> tuple[Expr, Expr]:
        return (r, vector_index(v * lanes, lanes))

    with b.for_range(rows, kind=UNROLLED, name="r") as r, \
            b.for_range(vectors, kind=UNROLLED, name="v") as v:
        b.store(acc, at(r, v), lb.broadcast(0.0, lanes, f32))
    ks: list[Var] = []
    contexts = []
    for loop in reduction:
        cm = b.for_range(loop.extent, kind=loop.kind, name=loop.name)
        ks.append(cm.__enter__())
        contexts.append(cm)
    with b.for_range(taps, kind=UNROLLED, name="tap") as tap, \
            b.for_range(rows, kind=UNROLLED, name="r") as r:
        w = b.let(lb.broadcast(scalar_operand(r, ks, tap), lanes, f32), "w")
        with b.for_range(vectors, kind=UNROLLED, name="v") as v:
            x = vector_operand(v, ks, tap)
            b.store(acc, at(r, v), lb.fma(w, x, acc[at(r, v)]))
    for cm in reversed(contexts):
        cm.__exit__(None, None, None)
    with b.for_range(rows, kind=UNROLLED, name="r") as r, \
            b.for_range(vectors, kind=UNROLLED, name="v") as v:
        store(r, v, acc[at(r, v)])

