"""Verifier: broken invariants raise VerificationError naming the kernel and the statement."""

from __future__ import annotations

import numpy as np
import pytest

from lowering import builder as lb
from lowering.builder import KernelBuilder
from lowering.loop_ir import (
    PARALLEL,
    Binary,
    Buffer,
    For,
    Kernel,
    Let,
    Load,
    Seq,
    Store,
    Var,
    f32,
    i8,
    i32,
    i64,
    u8,
    vectorized,
)
from lowering.microkernels import DotI8Pairs, DotU8I8Saturating
from lowering.verifier import verify_kernel
from lpjit.errors import VerificationError
from lpjit.graph import Origin


def _copy_kernel(extent: int, **store_overrides):
    b = KernelBuilder("copy", origin=Origin("7", "conv1", "Convolution"))
    x = b.input("x", f32, (16,))
    y = b.output("y", f32, (16,))
    with b.for_range(extent) as i:
        value = store_overrides.get("value", x[i])
        b.store(y, i, value)
    return b


def test_well_formed_kernel_passes_and_is_returned():
    """A correct kernel is returned unchanged."""
    kernel = _copy_kernel(16).build(verify=False)
    assert verify_kernel(kernel) is kernel


def test_type_mismatch_names_kernel_layer_and_statement():
    """f32 + i32 is rejected with both types, the layer and the printed statement."""
    b = KernelBuilder("copy", origin=Origin("7", "conv1", "Convolution"))
    x = b.input("x", f32, (16,))
    n = b.input("n", i32, (16,))
    y = b.output("y", f32, (16,))
    with b.for_range(16) as i:
        b.store(y, i, Binary("add", x[i], n[i]))
    with pytest.raises(VerificationError, match=r"^Convolution 'conv1' \(layer 7\): kernel "
                       r"'copy': operands of add have different types f32 and i32 in "
                       r"`x\[i\] \+ n\[i\]`, in `y\[i\] = x\[i\] \+ n\[i\]`$"):
        b.build()


def test_out_of_bounds_static_index_is_reported_with_its_range():
    """A loop of 17 iterations over a 16-element buffer is out of bounds."""
    with pytest.raises(VerificationError, match=r"kernel 'copy': index `i` of dimension 0 of "
                       r"'y' ranges over \[0, 16\], outside \[0, 15\], in `y\[i\] = x\[i\]`"):
        _copy_kernel(17).build()


def test_affine_index_ranges_are_computed_from_loop_extents():
    """``2*i + 1`` over i < 8 reaches 15 (in bounds); over i < 9 it reaches 17."""
    for extent, ok in ((8, True), (9, False)):
        b = KernelBuilder("strided")
        x = b.input("x", f32, (16,))
        y = b.output("y", f32, (16,))
        with b.for_range(extent) as i:
            b.store(y, i * 2 + 1, x[i])
        if ok:
            b.build()
        else:
            with pytest.raises(VerificationError, match=r"index `\(i \* 2\) \+ 1` of dimension 0"
                               r" of 'y' ranges over \[1, 17\], outside \[0, 15\]"):
                b.build()


def test_unbound_variable_is_reported():
    """A variable used outside any binding is out of scope."""
    stray = Var("k")
    with pytest.raises(VerificationError, match=r"kernel 'copy': variable 'k' is used outside "
                       r"its scope in `k`, in `y\[k\] = x\[0\]`"):
        b = KernelBuilder("copy")
        x = b.input("x", f32, (16,))
        y = b.output("y", f32, (16,))
        b.store(y, stray, x[0])
        b.build()


def test_loop_variable_is_out_of_scope_after_its_loop():
    """Reusing a loop variable after the loop is a scope error."""
    x = Buffer("x", f32, (4,), role="input")
    y = Buffer("y", f32, (4,), role="output")
    i = Var("i")
    body = Seq((For(i, 4, vectorized(4), Store(y, (i,), Load(x, (i,)))),
                Store(y, (i,), Load(x, (i,)))))
    with pytest.raises(VerificationError, match="variable 'i' is used outside its scope"):
        verify_kernel(Kernel("k", (x, y), body))


def test_guards_refine_ranges_of_padded_accesses():
    """``if 0 <= h < 8: x[h]`` with ``h = o - 1`` over o < 10 is in bounds; unguarded it is not."""
    for guarded in (True, False):
        b = KernelBuilder("pad")
        x = b.input("x", f32, (8,))
        y = b.output("y", f32, (10,))
        with b.for_range(10, name="o") as o:
            h = b.let(o - 1, "h")
            if guarded:
                with b.if_(lb.ge(h, 0) & lb.lt(h, 8)):
                    b.store(y, o, x[h])
            else:
                b.store(y, o, x[h])
        if guarded:
            b.build()
        else:
            with pytest.raises(VerificationError, match=r"ranges over \[-1, 8\], outside "
                               r"\[0, 7\]"):
                b.build()


def test_store_to_input_is_rejected():
    b = KernelBuilder("k")
    x = b.input("x", f32, (4,))
    with b.for_range(4) as i:
        b.store(x, i, 0.0)
    with pytest.raises(VerificationError, match=r"store to input buffer 'x', in `x\[i\] = 0.0`"):
        b.build()


def test_parallel_loop_may_not_assign_an_outer_local():
    """A reduction into a local across a parallel loop is a data race."""
    b = KernelBuilder("race")
    x = b.input("x", f32, (8,))
    y = b.output("y", f32, (1,))
    acc = b.local(lb.broadcast(0.0, 1, f32), "acc")
    with b.for_range(8, kind=PARALLEL) as i:
        b.assign(acc, acc + x[i])
    b.store(y, 0, acc)
    with pytest.raises(VerificationError, match=r"a parallel loop assigns 'acc', declared "
                       r"outside it \(a data race\), in `acc = acc \+ x\[i\]`"):
        b.build()


def test_fast_math_is_refused_on_a_requantizing_kernel():
    b = KernelBuilder("rq", fast_math=("contract",))
    x = b.input("x", f32, (4,))
    y = b.output("y", u8, (4,))
    with b.for_range(4) as i:
        b.store(y, i, lb.cast(x[i] * 2.0, u8, "round_even_sat"))
    with pytest.raises(VerificationError, match="fast-math flags on a kernel that rounds to "
                       "integers"):
        b.build()


@pytest.mark.parametrize("source, target, mode, message", [
    (f32, u8, "exact", "cast mode 'exact' cannot convert f32 to u8"),
    (i32, f32, "exact", "cast mode 'exact' cannot convert i32 to f32"),
    (i32, u8, "round_even_sat", "cast mode 'round_even_sat' cannot convert i32 to u8"),
    (i32, i8, "clamp", "unknown cast mode 'clamp'"),
])
def test_cast_modes_must_fit_their_types(source, target, mode, message):
    b = KernelBuilder("cast")
    x = b.input("x", source, (4,))
    y = b.output("y", target, (4,))
    with b.for_range(4) as i:
        b.store(y, i, lb.cast(x[i], target, mode))
    with pytest.raises(VerificationError, match=message):
        b.build()


def test_microkernel_lanes_are_checked():
    """dot_i8_pairs needs 2N input lanes for N accumulator lanes."""
    b = KernelBuilder("dot")
    a = b.input("a", u8, (8,))
    w = b.input("w", i8, (16,))
    c = b.output("c", i32, (8,))
    acc = b.let(lb.broadcast(0, 8, i32), "acc")
    b.vstore(c, (0,), DotI8Pairs(acc, lb.vload(a, 0, lanes=8), lb.vload(w, 0, lanes=16)))
    with pytest.raises(VerificationError, match=r"dot_i8_pairs: operand a must be "
                       r"u8/i8/i16x16, got u8x8"):
        b.build()


def test_saturating_dot_requires_a_justification():
    acc = Var("acc", i32.with_lanes(8))
    a, w = Var("a", u8.with_lanes(32)), Var("w", i8.with_lanes(32))
    y = Buffer("y", i32, (8,), role="output")
    node = DotU8I8Saturating(acc, a, w)
    body = Let(acc, lb.broadcast(0, 8, i32), Let(a, lb.broadcast(0, 32, u8), Let(
        w, lb.broadcast(0, 32, i8), Store(y, (lb.ramp(0, 8),), node))))
    with pytest.raises(VerificationError, match="needs a justification"):
        verify_kernel(Kernel("sat", (y,), body))


def test_view_indices_are_checked_against_the_view_shape():
    """A (4, 4) view of a 16-element buffer is indexed per its own dimensions."""
    b = KernelBuilder("view")
    x = b.input("x", f32, (16,))
    y = b.output("y", f32, (4, 4))
    square = x.view("x2", (4, 4))
    with b.for_range(4, name="r") as r, b.for_range(5, name="c") as c:
        b.store(y, (r, lb.min_(c, 3)), square[r, c])
    with pytest.raises(VerificationError, match=r"index `c` of dimension 1 of 'x2' ranges over "
                       r"\[0, 4\], outside \[0, 3\]"):
        b.build()


def test_buffers_must_be_parameters_constants_or_allocations():
    orphan = Buffer("w", f32, (4,), role="scratch")
    y = Buffer("y", f32, (4,), role="output")
    i = Var("i", i64)
    body = For(i, 4, vectorized(4), Store(y, (i,), Load(orphan, (i,))))
    with pytest.raises(VerificationError, match="buffer 'w' is not a parameter, a constant or an "
                       "allocation in scope"):
        verify_kernel(Kernel("k", (y,), body))
    const = KernelBuilder.constant("c", np.ones(4, np.float32))
    verify_kernel(Kernel("k", (y,), For(i, 4, vectorized(4), Store(y, (i,), Load(const, (i,))))))
