"""Canonical hand-written kernels: documentation of the builder, test subjects, bench probes.

* ``scale_bias_relu``: elementwise f32 with a vector tail (any length).
* ``matmul_f32``: ``C = A @ B (+ bias)`` from a ``LoopNest`` and the register-tile schedule
  (FMA on vector accumulators, B packed at compile time), any sizes.
* ``matmul_u8i8``: exact ``u8 x i8 -> i32`` GEMM with one of the integer microkernels.
* ``requantize_u8``: ``i32 -> f32 scale -> round half to even -> clamp -> u8``.
"""

from __future__ import annotations

import math

import numpy as np

from lowering import builder as lb
from lowering.builder import KernelBuilder
from lowering.loop_ir import PARALLEL, UNROLLED, Buffer, Expr, Kernel, Var, f32, i32, u8, vectorized
from lowering.microkernels import DotI8Pairs, DotU8I8Quad, DotU8I8Saturating
from lowering.schedule import Axis, LoopNest, Packing, apply_schedule, register_tile_schedule
from lowering.verifier import verify_kernel


def scale_bias_relu(n: int, width: int = 8) -> Kernel:
    """``y[i] = max(x[i] * scale + bias[i], 0)``; ``n`` need not be a multiple of ``width``."""
    b = KernelBuilder("scale_bias_relu")
    x = b.input("x", f32, (n,))
    bias = b.input("bias", f32, (n,))
    y = b.output("y", f32, (n,))
    scale = b.scalar("scale", f32)
    with b.for_range(n, kind=vectorized(width)) as i:
        b.store(y, i, lb.max_(x[i] * scale + bias[i], 0.0))
    return b.build()


def matmul_f32(m: int, n: int, k: int, weights: np.ndarray, bias: np.ndarray | None = None,
               rows: int = 4, columns: int = 16, width: int = 8, parallel: bool = True) -> Kernel:
    """``C[m, n] = sum_k A[m, k] * B[k, n] (+ bias[n])`` with a ``rows x columns`` FMA tile."""
    a = Buffer("A", f32, (m, k), role="input")
    c = Buffer("C", f32, (m, n), role="output")
    weights_buffer = KernelBuilder.constant("B", weights.astype(np.float32))
    mv, nv, kv = Var("m"), Var("n"), Var("k")
    accumulator = Var("acc", f32)
    epilogue: Expr | None = None
    if bias is not None:
        bias_buffer = KernelBuilder.constant("bias", bias.astype(np.float32))
        epilogue = accumulator + bias_buffer[nv]
    nest = LoopNest(axes=(Axis(mv, m), Axis(nv, n), Axis(kv, k, reduce=True)), output=c,
                    output_indices=(mv, nv), value=a[mv, kv] * weights_buffer[kv, nv],
                    init=lb.broadcast(0.0, 1, f32), epilogue=epilogue, accumulator=accumulator)
    schedule = register_tile_schedule("m", "n", "k", rows, columns, width, parallel,
                                      pack=Packing("B", dim=1, axis="n", tile=columns))
    return verify_kernel(Kernel("matmul_f32", (a, c), apply_schedule(nest, schedule)))


_DOT = {"pairs": (DotI8Pairs, 2), "quad": (DotU8I8Quad, 4), "saturating": (DotU8I8Saturating, 4)}


def pack_dot_weights(weights: np.ndarray, lanes: int, group: int) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """``B[K, N]`` -> main ``W[nb, kg, j*group + t] = B[kg*group + t, nb*lanes + j]`` and tail
    ``T[nb, r, j] = B[K//group*group + r, nb*lanes + j]`` (zero padded along N)."""
    k, n = weights.shape
    blocks, main = math.ceil(n / lanes), k // group * group
    padded = np.zeros((k, blocks * lanes), weights.dtype)
    padded[:, :n] = weights
    w = padded[:main].reshape(main // group, group, blocks, lanes).transpose(2, 0, 3, 1)
    tail = padded[main:].reshape(k - main, blocks, lanes).transpose(1, 0, 2)
    return (np.ascontiguousarray(w.reshape(blocks, main // group, lanes * group)),
            np.ascontiguousarray(tail))


def matmul_u8i8(m: int, n: int, k: int, weights: np.ndarray, microkernel: str = "pairs",
                lanes: int = 8, justification: str = "", rows: int = 4,
                blocks: int = 2) -> Kernel:
    """Exact ``C = A(u8) @ B(i8)`` in i32 with a ``rows x blocks`` tile of i32x``lanes`` registers.

    Each microkernel step broadcasts ``group`` consecutive activations of a row to every lane
    and takes the matching weights from the packed layout of ``pack_dot_weights``; the
    ``K % group`` remainder is a widened multiply-add.  Rows and column blocks left over by the
    tile get smaller tiles, and a partial last column block is written through scratch.
    """
    node, group = _DOT[microkernel]
    w_main, w_tail = pack_dot_weights(weights.astype(np.int8), lanes, group)
    b = KernelBuilder(f"matmul_u8i8_{microkernel}")
    a = b.input("A", u8, (m, k))
    c = b.output("C", i32, (m, n))
    w = b.constant("W", w_main)
    t = b.constant("T", w_tail)
    extra = {"justification": justification} if microkernel == "saturating" else {}

    def tile(row0: Expr | int, tile_rows: int, nb0: Expr | int, tile_blocks: int,
             valid: int) -> None:
        """``tile_rows x tile_blocks`` accumulators; ``valid`` columns of the last block."""
        acc = b.allocate("acc", i32, (tile_rows, tile_blocks * lanes))
        with (b.for_range(tile_rows, kind=UNROLLED, name="r") as r,
              b.for_range(tile_blocks, kind=UNROLLED, name="bb") as bb):
            b.store(acc, (r, lb.ramp(bb * lanes, lanes)), lb.broadcast(0, lanes, i32))
        with (b.for_range(k // group, name="kg") as kg,
              b.for_range(tile_rows, kind=UNROLLED, name="r") as r):
            step = lb.shuffle(a[row0 + r, lb.ramp(kg * group, group)], list(range(group)) * lanes)
            with b.for_range(tile_blocks, kind=UNROLLED, name="bb") as bb:
                place = (r, lb.ramp(bb * lanes, lanes))
                weights_step = w[nb0 + bb, kg, lb.ramp(0, lanes * group)]
                b.store(acc, place, node(acc[place], step, weights_step, **extra))
        for rest in range(k % group):
            with (b.for_range(tile_rows, kind=UNROLLED, name="r") as r,
                  b.for_range(tile_blocks, kind=UNROLLED, name="bb") as bb):
                place = (r, lb.ramp(bb * lanes, lanes))
                activation = lb.cast(a[row0 + r, k // group * group + rest], i32)
                product = lb.broadcast(activation, lanes) * lb.cast(
                    t[nb0 + bb, rest, lb.ramp(0, lanes)], i32)
                b.store(acc, place, acc[place] + product)
        with (b.for_range(tile_rows, kind=UNROLLED, name="r") as r,
              b.for_range(tile_blocks * lanes - (lanes - valid), kind=vectorized(lanes),
                          name="j") as j):
            b.store(c, (row0 + r, nb0 * lanes + j), acc[r, j])

    def row_tile(row0: Expr | int, tile_rows: int) -> None:
        full = n // lanes
        if full // blocks:
            with b.for_range(full // blocks, name="nb") as nb:
                tile(row0, tile_rows, nb * blocks, blocks, lanes)
        if full % blocks:
            tile(row0, tile_rows, full // blocks * blocks, full % blocks, lanes)
        if n % lanes:
            tile(row0, tile_rows, full, 1, n % lanes)

    if m // rows:
        with b.for_range(m // rows, kind=PARALLEL, name="m") as mo:
            row_tile(mo * rows, rows)
    if m % rows:
        row_tile(m // rows * rows, m % rows)
    return b.build()


def requantize_u8(m: int, n: int, scale: np.ndarray, width: int = 8,
                  saturating_cast: bool = True) -> Kernel:
    """``out = clamp(round_half_even(f32(acc) * scale[n] + zero_point), 0, 255)`` as u8.

    1. ``x = f32(acc)`` rounding to nearest even (exact below 2**24);
    2. ``y = x * scale[n] + zero_point`` (two roundings, no FMA, no fast-math);
    3. round half to even, clamp to [0, 255], store as u8 -- in one ``round_even_sat`` cast,
       or (``saturating_cast=False``) as ``round_half_even``, ``max``/``min`` and a ``trunc``.
    """
    b = KernelBuilder("requantize_u8")
    acc = b.input("acc", i32, (m, n))
    out = b.output("out", u8, (m, n))
    zero_point = b.scalar("zero_point", f32)
    scales = b.constant("scale", scale.astype(np.float32))
    with (b.for_range(m, kind=PARALLEL, name="m") as row,
          b.for_range(n, kind=vectorized(width), name="n") as col):
        y = b.let(lb.cast(acc[row, col], f32, "nearest") * scales[col] + zero_point, "y")
        if saturating_cast:
            q = lb.cast(y, u8, "round_even_sat")
        else:
            clamped = lb.min_(lb.max_(lb.call("round_half_even", y), 0.0), 255.0)
            q = lb.cast(clamped, u8, "trunc")
        b.store(out, (row, col), q)
    return b.build()


__all__ = ["matmul_f32", "matmul_u8i8", "pack_dot_weights", "requantize_u8", "scale_bias_relu"]
