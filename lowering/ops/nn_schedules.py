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
  ``vectors * lanes`` columns (``[panel][K][vectors * lanes]``) read with aligned dense loads.
"""

from __future__ import annotations

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
    """Direct convolution: output channels in ``tile.rows``, output width in vectors."""

    tile: RegisterTile
    parallel: bool = True
    unroll_kernel_width: int = 16


@attrs.frozen
class DepthwiseSchedule:
    """Depthwise convolution: ``rows`` output rows x ``vectors`` vectors along the width."""

    tile: RegisterTile
    parallel: bool = True


@attrs.frozen
class MatMulSchedule:
    """GEMM: ``tile.rows`` rows of A broadcast, ``tile.vectors`` vectors of B columns."""

    tile: RegisterTile
    parallel: bool = True
    pack_constant_b: bool = True


def registers(target: Target) -> int:
    """Vector registers of the target (32 with AVX-512, else 16)."""
    return 32 if target.has_avx512 else 16


def default_conv_schedule(target: Target, out_channels: int, out_width: int,
                          threads: int) -> ConvSchedule:
    """Direct conv: 6 channels x 4 vectors on AVX-512, 4 x 3 (or 6 x 2) on AVX2.

    Fewer vectors when the output row is short (a row of 56 is 4 AVX-512 vectors, the last one
    overlapping), fewer rows when there are few output channels.
    """
    lanes = target.f32_lanes
    if target.has_avx512:
        rows, vectors = 6, 4
    else:
        rows, vectors = 4, 3
    vectors = max(1, min(vectors, -(-out_width // lanes)))
    budget = registers(target) - vectors - 1
    rows = max(1, min(out_channels, budget // vectors, 8))
    return ConvSchedule(RegisterTile(rows, vectors, lanes), parallel=threads != 1)


def default_depthwise_schedule(target: Target, out_height: int, out_width: int,
                               threads: int) -> DepthwiseSchedule:
    """Depthwise: 4 output rows x 2 vectors (AVX-512: 4 x 3), fewer on small images."""
    lanes = target.f32_lanes
    rows, vectors = (4, 3) if target.has_avx512 else (4, 2)
    vectors = max(1, min(vectors, -(-out_width // lanes)))
    return DepthwiseSchedule(RegisterTile(max(1, min(rows, out_height)), vectors, lanes),
                             parallel=threads != 1)


def default_matmul_schedule(target: Target, rows: int, columns: int,
                            threads: int) -> MatMulSchedule:
    """GEMM: 6 rows x 4 vectors on AVX-512 (24 accumulators), 6 x 2 on AVX2 (12)."""
    lanes = target.f32_lanes
    tile_rows, vectors = (6, 4) if target.has_avx512 else (6, 2)
    vectors = max(1, min(vectors, -(-columns // lanes)))
    budget = registers(target) - vectors - 1
    tile_rows = max(1, min(rows, tile_rows, budget // vectors))
    return MatMulSchedule(RegisterTile(tile_rows, vectors, lanes), parallel=threads != 1)
