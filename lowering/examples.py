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
from lowering.loop_ir import PARALLEL, SERIAL, Buffer, Expr, Kernel, Var, f32, i32, u8, vectorized
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
                lanes: int = 8, justification: str = "") -> Kernel:
    """Exact ``C = A(u8) @ B(i8)`` in i32, ``lanes`` outputs per microkernel step.

    Each step broadcasts ``group`` consecutive activations of a row to every lane and takes
    the matching weights from the packed layout of ``pack_dot_weights``; the ``K % group``
    remainder is a widened multiply-add, and a partial last column block goes through scratch.
    """
    node, group = _DOT[microkernel]
    w_main, w_tail = pack_dot_weights(weights.astype(np.int8), lanes, group)
    b = KernelBuilder(f"matmul_u8i8_{microkernel}")
    a = b.input("A", u8, (m, k))
    c = b.output("C", i32, (m, n))
    w = b.constant("W", w_main)
    t = b.constant("T", w_tail)
    extra = {"justification": justification} if microkernel == "saturating" else {}

    def block(row: Expr, nb: Expr | int, valid: int) -> None:
        acc = b.local(lb.broadcast(0, lanes, i32), "acc")
        with b.for_range(k // group, name="kg") as kg:
            pair = lb.shuffle(a[row, lb.ramp(kg * group, group)], list(range(group)) * lanes)
            weights_step = w[nb, kg, lb.ramp(0, lanes * group)]
            b.assign(acc, node(acc, pair, weights_step, **extra))
        for r in range(k % group):
            activation = lb.broadcast(lb.cast(a[row, k // group * group + r], i32), lanes)
            b.assign(acc, acc + activation * lb.cast(t[nb, r, lb.ramp(0, lanes)], i32))
        if valid == lanes:
            b.vstore(c, (row, nb * lanes), acc)
            return
        tile = b.allocate("tile", i32, (lanes,))
        b.store(tile, (lb.ramp(0, lanes),), acc)
        with b.for_range(valid, name="j") as j:
            b.store(c, (row, nb * lanes + j), tile[j])

    with b.for_range(m, kind=PARALLEL, name="m") as row:
        if n // lanes:
            with b.for_range(n // lanes, kind=SERIAL, name="nb") as nb:
                block(row, nb, lanes)
        if n % lanes:
            block(row, n // lanes, n % lanes)
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
