"""Schedules of the float Convolution / GroupConvolution / MatMul lowerings, as data.

A schedule says *how* a kernel of ``lowering.ops.nn`` runs; the lowering never decides tiling
by itself.  ``default_*_schedule`` choose one per op and per ``Target``:

* register tile: ``rows`` broadcast operands (output channels, or matrix rows) times
  ``vectors`` vector operands of ``lanes`` f32 lanes (pixels along the output width, or matrix
  columns): ``rows * vectors`` vector accumulators, plus ``vectors`` loads and one broadcast,
  must fit the register file (16 registers on AVX2, 32 on AVX-512);
* ``parallel``: whether the outermost loop is marked ``PARALLEL`` (``threads != 1``);
* conv ``unroll_kernel_width``: the innermost kernel-width taps are emitted straight-line
  (they are always static; this only bounds code size for very wide kernels);
* matmul ``pack_constant_b``: a constant ``B`` is repacked at compile time into panels of
  ``vectors * lanes`` columns (``[panel][K][vectors * lanes]``) read with aligned dense loads;
  ``row_block_bytes``: rows of A are processed in blocks of about this many bytes, so that a
  block of A and one B panel stay in the L2 cache together.
"""

from __future__ import annotations

import math

import attrs

from lowering.target import Target


@attrs.frozen
class RegisterTile:
    """``rows`` x ``vectors`` accumulators of ``lanes`` f32 lanes each."""

    rows: int
    vectors: int
    lanes: int

    @property
    def columns(self) -> int:
        """Elements of the vectorized axis one tile covers."""
        return self.vectors * self.lanes


@attrs.frozen
class ConvSchedule:
    """Direct convolution.

    ``vectorize="width"``: output channels are the tile's broadcast rows, output pixels along
    the width its vectors.  ``vectorize="channels"``: output pixels (flattened over the
    spatial dims) are the rows, output channels the vectors (input read as scalars, output
    stored lane by lane: worth it when rows are short and the reduction is long).
    """

    tile: RegisterTile
    vectorize: str = "width"
    parallel: bool = True
    unroll_kernel_width: int = 16


@attrs.frozen
class DepthwiseSchedule:
    """Depthwise convolution: ``layout="rows"``: ``rows`` output rows x ``vectors`` vectors
    along the width; ``layout="flat"``: ``vectors`` vectors over the flattened plane."""

    tile: RegisterTile
    parallel: bool = True
    layout: str = "rows"


@attrs.frozen
class MatMulSchedule:
    """GEMM: ``tile.rows`` rows of A broadcast, ``tile.vectors`` vectors of B columns."""

    tile: RegisterTile
    parallel: bool = True
    pack_constant_b: bool = True
    row_block_bytes: int = 128 * 1024


def registers(target: Target) -> int:
    """Vector registers of the target (32 with AVX-512, else 16)."""
    return 32 if target.has_avx512 else 16


def axis_efficiency(extent: int, lanes: int, vectors: int) -> float:
    """Useful fraction of the vector instructions covering ``extent`` (as ``cover_axis``
    does: full tiles, then remainder vectors, narrow ones costing as much as full ones)."""
    if extent < lanes:
        narrow = 1 << (extent.bit_length() - 1)
        return extent / lanes / -(-extent // narrow)
    full = extent // (vectors * lanes) * vectors
    rest = extent - full * lanes
    return extent / lanes / (full + -(-rest // lanes))


def block_efficiency(extent: int, rows: int) -> float:
    """Useful fraction of ``rows``-blocks covering ``extent`` (the last block overlapping)."""
    return extent / (-(-extent // rows) * rows)


def _tile(target: Target, rows: int, vectors: int, row_extent: int,
          column_extent: int) -> RegisterTile:
    """A ``rows x vectors`` tile clipped to the extents and the register budget."""
    lanes = target.f32_lanes
    vectors = max(1, min(vectors, -(-column_extent // lanes)))
    budget = registers(target) - vectors - 1
    return RegisterTile(max(1, min(row_extent, budget // vectors, rows)), vectors, lanes)


def fitted_rows(tile: RegisterTile, extent: int, fewest: int = 4) -> RegisterTile:
    """``tile`` with the number of rows (at most its own, at least ``fewest``) whose blocks
    waste least of ``extent`` (the last block of a cover overlaps the one before it, and
    recomputes the overlap); the tile's own rows while they waste under 2 %.  ResNet-18's
    7x7 layers: 6-row blocks compute 54 pixels for 49, 5-row blocks 50."""
    if block_efficiency(extent, tile.rows) >= 0.98 or tile.rows <= fewest:
        return tile
    rows = max(range(tile.rows, fewest - 1, -1), key=lambda r: block_efficiency(extent, r))
    return attrs.evolve(tile, rows=rows)


def conv_schedules(target: Target, group_out: int, out_spatial: tuple[int, ...],
                   reduction: int, threads: int) -> dict[str, tuple[ConvSchedule, float]]:
    """Both direct-conv schedules with their estimated efficiency: 6 x 4 tiles on AVX-512,
    4 x 3 (width) or 6 x 2 (channels) on AVX2.  ``reduction`` = MACs per output; the
    lane-by-lane stores of the channel layout cost about one FMA per lane."""
    avx512 = target.has_avx512
    pixels = math.prod(out_spatial)
    width = _tile(target, 6 if avx512 else 4, 4 if avx512 else 3, group_out, out_spatial[-1])
    channels = fitted_rows(_tile(target, 6, 4 if avx512 else 2, pixels, group_out), pixels)
    by_width = (axis_efficiency(out_spatial[-1], width.lanes, width.vectors)
                * block_efficiency(group_out, width.rows))
    by_channels = (axis_efficiency(group_out, channels.lanes, channels.vectors)
                   * block_efficiency(pixels, channels.rows)
                   * reduction / (reduction + channels.lanes))
    parallel = threads != 1
    return {"width": (ConvSchedule(width, "width", parallel), by_width),
            "channels": (ConvSchedule(channels, "channels", parallel), by_channels)}


def default_conv_schedule(target: Target, group_out: int, out_spatial: tuple[int, ...],
                          reduction: int, threads: int) -> ConvSchedule:
    """The direct-conv schedule of ``conv_schedules`` with the better estimate."""
    candidates = conv_schedules(target, group_out, out_spatial, reduction, threads)
    return max(candidates.values(), key=lambda pair: pair[1])[0]


def default_depthwise_schedule(target: Target, out_height: int, out_width: int,
                               threads: int, row_pitch: int = 0) -> DepthwiseSchedule:
    """Depthwise: 4 output rows x 2 vectors (AVX-512: 4 x 3), fewer on small images; the
    ``flat`` layout when a row is shorter than a vector and the plane pitch (``row_pitch``
    elements between output rows) is known."""
    lanes = target.f32_lanes
    rows, vectors = (4, 3) if target.has_avx512 else (4, 2)
    parallel = threads != 1
    if row_pitch and out_width < lanes:
        virtual = (out_height - 1) * row_pitch + out_width
        vectors = max(1, min(vectors, -(-virtual // lanes)))
        return DepthwiseSchedule(RegisterTile(1, vectors, lanes), parallel, "flat")
    vectors = max(1, min(vectors, -(-out_width // lanes)))
    return DepthwiseSchedule(RegisterTile(max(1, min(rows, out_height)), vectors, lanes),
                             parallel)


def default_matmul_schedule(target: Target, rows: int, columns: int,
                            threads: int) -> MatMulSchedule:
    """GEMM: 6 rows x 4 vectors on AVX-512 (24 accumulators), 6 x 2 on AVX2 (12)."""
    lanes = target.f32_lanes
    tile_rows, vectors = (6, 4) if target.has_avx512 else (6, 2)
    vectors = max(1, min(vectors, -(-columns // lanes)))
    budget = registers(target) - vectors - 1
    tile_rows = max(1, min(rows, tile_rows, budget // vectors))
    return MatMulSchedule(RegisterTile(tile_rows, vectors, lanes), parallel=threads != 1)
