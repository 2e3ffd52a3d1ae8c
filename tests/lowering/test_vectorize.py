"""vectorize_loops: vectorized(w) loops become w-lane vector code plus a scalar tail."""

from __future__ import annotations

import pytest

from lowering import builder as lb
from lowering.builder import KernelBuilder
from lowering.loop_ir import f32, i32, vectorized
from lowering.printer import print_kernel
from lowering.vectorize import vectorize_loops
from lowering.verifier import verify_kernel
from lpjit.errors import LoweringError


def _axpy(n: int):
    b = KernelBuilder("axpy")
    x = b.input("x", f32, (4, n))
    y = b.output("y", f32, (4, n))
    a = b.scalar("a", f32)
    with (b.for_range(4, name="r") as r,
          b.for_range(n, kind=vectorized(8), name="i") as i):
        t = b.let(x[r, i] * a, "t")
        b.store(y, (r, i), t + x[r, 0])
    return b.build()


def test_loop_becomes_vector_body_and_scalar_tail():
    """n = 19: two 8-lane iterations over ramps, then a scalar tail of 3 from index 16."""
    after = verify_kernel(vectorize_loops(_axpy(19)))
    assert print_kernel(after) == """\
kernel axpy(x: f32[4, 19] input, y: f32[4, 19] output, a: f32):
  for r in range(4):
    for i_v in range(2):
      let t: f32x8 = x[r, ramp(i_v * 8, 1, 8)] * bcast(a, 8)
      y[r, ramp(i_v * 8, 1, 8)] = t + bcast(x[r, 0], 8)
    for i_t in range(3):
      let t_1: f32 = x[r, i_t + 16] * a
      y[r, i_t + 16] = t_1 + x[r, 0]"""


def test_single_vector_needs_no_loop():
    """n = 8 is one vector: the ramp starts at 0 and no loop or tail remains."""
    text = print_kernel(vectorize_loops(_axpy(8)))
    assert "y[r, ramp(0, 1, 8)] = t + bcast(x[r, 0], 8)" in text
    assert "range(1)" not in text and "i_t" not in text


def test_affine_indices_stay_ramps_and_strided_become_gathers():
    """``2*i + 1`` becomes ramp(…, 2, 8); a lane-dependent min() becomes a vector index."""
    b = KernelBuilder("strided")
    x = b.input("x", f32, (32,))
    y = b.output("y", f32, (16,))
    with b.for_range(16, kind=vectorized(8)) as i:
        b.store(y, i, x[i * 2 + 1] + x[lb.min_(i, 3)])
    text = print_kernel(verify_kernel(vectorize_loops(b.build())))
    assert "x[ramp(((i_v * 8) * 2) + 1, 2, 8)]" in text
    assert "x[min(ramp(i_v * 8, 1, 8), bcast(3, 8))]" in text


def test_lane_invariant_values_stay_scalar_and_locals_become_vectors():
    """A local declared in the loop is widened; an invariant load is broadcast once."""
    b = KernelBuilder("local")
    x = b.input("x", i32, (8,))
    y = b.output("y", i32, (8,))
    with b.for_range(8, kind=vectorized(8)) as i:
        acc = b.local(x[0], "acc")
        with b.for_range(3, name="k"):
            b.assign(acc, acc + x[i])
        b.store(y, i, acc)
    text = print_kernel(verify_kernel(vectorize_loops(b.build())))
    assert "var acc: i32x8 = bcast(x[0], 8)" in text
    assert "acc = acc + x[ramp(0, 1, 8)]" in text


def _failing(body):
    b = KernelBuilder("bad")
    x = b.input("x", f32, (8,))
    y = b.output("y", f32, (8,))
    body(b, x, y)
    return b.build()


def test_a_reduction_is_not_vectorized():
    def body(b, x, y):
        acc = b.local(lb.broadcast(0.0, 1, f32), "acc")
        with b.for_range(8, kind=vectorized(8)) as i:
            b.assign(acc, acc + x[i])
        b.store(y, 0, acc)
    with pytest.raises(LoweringError, match=r"kernel 'bad': cannot vectorize loop 'i': it "
                       r"assigns 'acc', declared outside the loop \(a reduction\)"):
        vectorize_loops(_failing(body))


def test_lane_dependent_if_is_refused():
    def body(b, x, y):
        with b.for_range(8, kind=vectorized(8)) as i, b.if_(lb.lt(i, 4)):
            b.store(y, i, x[i])
    with pytest.raises(LoweringError, match="an If condition depends on the loop variable; "
                       "use Select"):
        vectorize_loops(_failing(body))


def test_store_to_a_lane_invariant_place_is_refused():
    def body(b, x, y):
        with b.for_range(8, kind=vectorized(8)) as i:
            b.store(y, 0, x[i])
    with pytest.raises(LoweringError, match="the store to 'y' does not depend on the loop "
                       "variable but its value does"):
        vectorize_loops(_failing(body))
