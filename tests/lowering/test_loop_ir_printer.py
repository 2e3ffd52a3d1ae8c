"""Printer: stable, readable text for loop IR (golden)."""

from __future__ import annotations

import numpy as np

from lowering import builder as lb
from lowering.builder import KernelBuilder
from lowering.loop_ir import PARALLEL, UNROLLED, Var, f32, i8, i32, i64, u8, vectorized
from lowering.microkernels import DotI8Pairs, DotU8I8Saturating
from lowering.printer import print_expr, print_kernel


def _requantize_kernel():
    b = KernelBuilder("requantize")
    acc = b.input("acc", i32, (4, 16))
    out = b.output("out", u8, (4, 16))
    scale = b.constant("scale", np.linspace(0.5, 1.0, 16, dtype=np.float32))
    shift = b.scalar("shift", f32)
    with (b.for_range(4, kind=PARALLEL, name="m") as m,
          b.for_range(16, kind=vectorized(8), name="n") as n):
        x = b.let(lb.cast(acc[m, n], f32, "nearest") * scale[n] + shift, "x")
        b.store(out, (m, n), lb.cast(x, u8, "round_even_sat"))
    return b.build()


EXPECTED_REQUANTIZE = """\
kernel requantize(acc: i32[4, 16] input, out: u8[4, 16] output, shift: f32):
  constant scale: f32[16] align 64
  for m in range(4) parallel:
    for n in range(16) vectorized(8):
      let x: f32 = (cast<f32, nearest>(acc[m, n]) * scale[n]) + shift
      out[m, n] = cast<u8, round_even_sat>(x)"""


def test_kernel_text_is_the_golden_text():
    """A requantization kernel prints exactly as reviewed."""
    assert print_kernel(_requantize_kernel()) == EXPECTED_REQUANTIZE


def _tile_kernel():
    b = KernelBuilder("dot_tile")
    a = b.input("a", u8, (2, 16))
    w = b.input("w", i8, (16,))
    c = b.output("c", i32, (2, 8))
    with b.for_range(2, kind=UNROLLED, name="r") as r:
        acc = b.local(lb.broadcast(0, 8, i32), "acc")
        tile = b.allocate("tmp", i32, (8,))
        b.store(tile, (lb.ramp(0, 8),), lb.broadcast(1, 8, i32))
        with b.if_(lb.lt(r, 1)):
            b.assign(acc, DotI8Pairs(acc, lb.vload(a, r, 0, lanes=16), lb.vload(w, 0, lanes=16)))
        with b.else_():
            b.assign(acc, acc + tile[lb.ramp(0, 8)])
        b.vstore(c, (r, 0), acc)
    return b.build()


EXPECTED_TILE = """\
kernel dot_tile(a: u8[2, 16] input, w: i8[16] input, c: i32[2, 8] output):
  for r in range(2) unrolled:
    var acc: i32x8 = bcast(0:i32, 8)
    allocate tmp: i32[8]
    tmp[ramp(0, 1, 8)] = bcast(1:i32, 8)
    if r < 1:
      acc = dot_i8_pairs(acc, a[r, ramp(0, 1, 16)], w[ramp(0, 1, 16)])
    else:
      acc = acc + tmp[ramp(0, 1, 8)]
    c[r, ramp(0, 1, 8)] = acc"""


def test_locals_allocations_branches_and_microkernels_print():
    """LocalVar, Allocate, If/else, Ramp, Broadcast and a microkernel print as reviewed."""
    assert print_kernel(_tile_kernel()) == EXPECTED_TILE


def test_distinct_variables_with_one_name_get_suffixes():
    """Two different variables named ``i`` print as ``i`` and ``i_1``, in order of use."""
    first, second = Var("i"), Var("i")
    assert print_expr(first + second * 2) == "i + (i_1 * 2)"


def test_immediates_show_their_type_unless_i64_or_f32():
    """``3`` is i64, ``3:i32`` is i32, ``0.5`` is f32, ``true`` is i1."""
    three = lb.cast(Var("x", i32) + 3, i64)
    assert print_expr(three) == "cast<i64>(x + 3:i32)"
    assert print_expr(Var("y", f32) * 0.5) == "y * 0.5"
    assert print_expr(lb.select(lb.lt(Var("y", f32), 0.0), 1.5, 2.0)) == \
        "select(y < 0.0, 1.5, 2.0)"


def test_saturating_dot_prints_its_justification():
    """The proof that a saturating step is safe is part of the printed IR."""
    acc = Var("acc", i32.with_lanes(8))
    a, w = Var("a", u8.with_lanes(32)), Var("w", i8.with_lanes(32))
    node = DotU8I8Saturating(acc, a, w, justification="weights in [-63, 63]")
    assert print_expr(node) == "dot_u8i8_saturating(acc, a, w; 'weights in [-63, 63]')"
