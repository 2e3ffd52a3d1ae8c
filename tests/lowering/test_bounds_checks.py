"""Checked mode in loop IR: ``insert_bounds_checks`` and both executors.

The static verifier proves every index of a verified kernel in bounds; checked mode does not
trust that proof.  To build kernels that index past the end, the tests that need one disable
the proof (``no_static_proof``), as if the interval analysis had a bug: checked mode must
still stop the kernel before the access, in the LLVM code and in the numba executor alike.
"""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from differential import engine

from lowering import builder as lb
from lowering import verifier
from lowering.bounds_checks import (
    error_record,
    insert_bounds_checks,
    insert_program_bounds_checks,
    record_of,
    sites,
)
from lowering.builder import KernelBuilder
from lowering.codegen_llvm import STACK_LIMIT, lower_kernels_to_llvm
from lowering.loop_ir import (
    PARALLEL,
    SERIAL,
    Binary,
    BoundsCheck,
    Buffer,
    For,
    IntImm,
    Kernel,
    Load,
    Store,
    Var,
    f32,
    i32,
    i64,
    vectorized,
)
from lowering.numba_exec import compile_numba
from lowering.printer import print_kernel
from lowering.program import Program, Step
from lowering.verifier import verify_kernel
from lpjit.errors import BoundsError, VerificationError
from lpjit.graph import Origin

ORIGIN = Origin("7", "shift", "Relu")


@pytest.fixture
def no_static_proof(monkeypatch):
    """Disable the verifier's static bounds proof (only that check)."""
    monkeypatch.setattr(verifier._Verifier, "check_in_bounds", lambda *args: None)


def executors(kernel: Kernel, threads: int = 1):
    """(name, callable) for the LLVM code and the numba executor of ``kernel``."""
    library = engine().compile_kernels([kernel])
    native = library.get_function(kernel.name)
    return [("llvm", lambda *a: native(*a, threads=threads)), ("numba", compile_numba(kernel))]


def off_by_one_copy(start: int = 1, n: int = 16) -> Kernel:
    """``y[pos] = x[i]`` with a counter ``pos`` that starts at ``start`` (should be 0)."""
    b = KernelBuilder("shift", origin=ORIGIN)
    x, y = b.input("x", f32, (n,)), b.output("y", f32, (n,))
    pos = b.local(IntImm(start), "pos")
    with b.for_range(n) as i:
        b.store(y, (pos,), x[i])
        b.assign(pos, pos + 1)
    return b.build()


def test_loads_are_checked_innermost_first_then_the_store():
    """A gather ``y[i] = x[idx[i]]`` checks ``idx[i]``, then ``x[idx[i]]``, then ``y[i]``;
    the in-range constant index of the 2-D table needs no check; the record is appended."""
    b = KernelBuilder("gather")
    x = b.input("x", f32, (2, 10))
    idx = b.input("idx", i64, (6,))
    y = b.output("y", f32, (6,))
    with b.for_range(6) as i:
        b.store(y, (i,), x[1, lb.min_(lb.max_(idx[i], 0), 9)])
    checked = insert_bounds_checks(b.build())
    assert print_kernel(checked) == "\n".join([  # noqa: FLY002
        ("kernel gather(x: f32[2, 10] input, idx: i64[6] input, y: f32[6] output, "
         "lpjit_error: i64[3] align 8 error):"),
        "  for i in range(6):",
        "    check 0 <= i < 6  # idx dim 0, site 1 -> lpjit_error",
        "    check 0 <= min(max(idx[i], 0), 9) < 10  # x dim 1, site 2 -> lpjit_error",
        "    check 0 <= i < 6  # y dim 0, site 3 -> lpjit_error",
        "    y[i] = x[1, min(max(idx[i], 0), 9)]",
    ])
    assert verify_kernel(checked) is checked
    assert insert_bounds_checks(checked) is checked            # already checked
    assert sorted(sites(checked)) == [1, 2, 3]


def test_an_off_by_one_store_is_stopped_before_the_access(no_static_proof):
    """The counter reaches 16 at the last iteration: the store to y[16] never happens; the
    elements before it are written; the message names kernel, buffer, dimension, index."""
    kernel = insert_bounds_checks(off_by_one_copy())
    x = np.arange(1, 17, dtype=np.float32)
    for name, run in executors(kernel):
        memory = np.full(17, -1.0, np.float32)          # y, and the element past its end
        record = np.zeros(3, np.int64)
        with pytest.raises(BoundsError, match=(
                r"^Relu 'shift' \(layer 7\): kernel 'shift': index 16 is outside dimension 0 "
                r"of buffer 'y' \(f32\[16\], valid 0\.\.15\); the checked kernel stopped "
                r"before the access \(a compiler bug: please report it\)$")):
            run(x, memory[:16], record)
        np.testing.assert_array_equal(memory[1:16], x[:15], err_msg=name)
        assert memory[16] == -1.0, name
        assert list(record) == [2, 16, 0], name


def test_a_negative_index_is_caught(no_static_proof):
    kernel = insert_bounds_checks(off_by_one_copy(start=-1))
    for name, run in executors(kernel):
        memory = np.full(17, -1.0, np.float32)
        with pytest.raises(BoundsError, match="index -1 is outside dimension 0 of buffer 'y'"):
            run(np.ones(16, np.float32), memory[1:], np.zeros(3, np.int64))
        assert (memory == -1.0).all(), name


def vector_shift(start: int) -> Kernel:
    """Two 8-lane stores ``y[pos : pos+8] = x[8v : 8v+8]`` with ``pos`` from ``start``."""
    b = KernelBuilder("vshift")
    x, y = b.input("x", f32, (16,)), b.output("y", f32, (16,))
    pos = b.local(IntImm(start), "pos")
    with b.for_range(2, name="v") as v:
        b.store(y, (lb.ramp(pos, 8),), x[lb.ramp(v * 8, 8)])
        b.assign(pos, pos + 8)
    return b.build()


def test_every_lane_of_a_vector_index_is_checked(no_static_proof):
    """Lanes 11..18 of the second store: the first failing lane (16) is reported and no lane
    of that store is written."""
    kernel = insert_bounds_checks(vector_shift(3))
    x = np.arange(1, 17, dtype=np.float32)
    for name, run in executors(kernel):
        y = np.zeros(16, np.float32)
        with pytest.raises(BoundsError, match="index 16 is outside dimension 0 of buffer 'y'"):
            run(x, y, np.zeros(3, np.int64))
        np.testing.assert_array_equal(y, np.r_[np.zeros(3), x[:8], np.zeros(5)],
                                      err_msg=name)


def test_vectorized_loops_check_each_lane_after_widening(no_static_proof):
    """``for i vectorized(8): y[i] = x[i + 1]`` over 19 elements: the vector body and the
    scalar tail are checked; x[19] is the first index out of range."""
    b = KernelBuilder("ahead")
    x, y = b.input("x", f32, (19,)), b.output("y", f32, (19,))
    with b.for_range(19, kind=vectorized(8)) as i:
        b.store(y, (i,), x[i + 1])
    kernel = insert_bounds_checks(b.build())
    for name, run in executors(kernel):
        y = np.zeros(19, np.float32)
        with pytest.raises(BoundsError, match="index 19 is outside dimension 0 of buffer 'x'"):
            run(np.arange(19, dtype=np.float32), y, np.zeros(3, np.int64))
        np.testing.assert_array_equal(y[:16], np.arange(1, 17), err_msg=name)


def test_a_failing_parallel_chunk_stops_the_kernel_after_the_loop(no_static_proof):
    """Row 3 of a parallel loop reads past the end; with 2 threads the other chunk finishes,
    but the statement after the loop does not run."""
    b = KernelBuilder("rows")
    x, y = b.input("x", f32, (4, 8)), b.output("y", f32, (4, 8))
    done = b.output("done", f32, (1,))
    with b.for_range(4, kind=PARALLEL, name="r") as r, b.for_range(8, name="c") as c:
        b.store(y, (r, c), x[r, c + r // 3])
    b.store(done, (0,), lb.load(x, 0, 0))
    kernel = insert_bounds_checks(b.build())
    for threads in (1, 2):
        for name, run in executors(kernel, threads):
            y, finished = np.zeros((4, 8), np.float32), np.zeros(1, np.float32)
            with pytest.raises(BoundsError, match="index 8 is outside dimension 1 of buffer 'x'"):
                run(np.ones((4, 8), np.float32), y, finished, np.zeros(3, np.int64))
            assert finished[0] == 0.0, (name, threads)
            assert (y[:3] == 1.0).all(), (name, threads)


def test_leaving_early_frees_heap_scratch(no_static_proof):
    """A scratch buffer past the stack limit is heap-allocated; the failure path frees it
    (one ``free`` on the normal path, one on each early exit) and the kernel still reports."""
    n = STACK_LIMIT // 4 + 16
    b = KernelBuilder("big")
    x, y = b.input("x", f32, (8,)), b.output("y", f32, (8,))
    pos = b.local(IntImm(1), "pos")
    tmp = b.allocate("tmp", f32, (n,))
    with b.for_range(8) as i:
        b.store(tmp, (i,), x[i])
    with b.for_range(8) as i:
        b.store(y, (pos,), tmp[i])
        b.assign(pos, pos + 1)
    kernel = insert_bounds_checks(b.build())
    text = str(lower_kernels_to_llvm([kernel]).ir_module)
    assert text.count('call void @"free"(') == 1 + len(sites(kernel))
    for name, run in executors(kernel):
        with pytest.raises(BoundsError, match="index 8 is outside dimension 0 of buffer 'y'"):
            run(np.ones(8, np.float32), np.zeros(8, np.float32), np.zeros(3, np.int64))


def test_a_kernel_within_bounds_runs_unchanged():
    """The checked kernel computes what the unchecked one does and leaves the record clear."""
    b = KernelBuilder("scale")
    x, y = b.input("x", f32, (3, 21)), b.output("y", f32, (3, 21))
    with b.for_range(3) as r, b.for_range(21, kind=vectorized(8)) as c:
        b.store(y, (r, c), x[r, c] * 2.0 + x[2 - r, 20 - c])
    kernel = b.build()
    checked = insert_bounds_checks(kernel)
    x = np.random.default_rng(3).standard_normal((3, 21)).astype(np.float32)
    expected = np.zeros((3, 21), np.float32)
    engine().compile_kernels([kernel]).get_function("scale")(x, expected, threads=1)
    for name, run in executors(checked):
        y, record = np.zeros((3, 21), np.float32), np.zeros(3, np.int64)
        run(x, y, record)
        np.testing.assert_array_equal(y, expected, err_msg=name)
        assert not record.any(), name


def test_a_view_outside_its_root_is_rejected_when_checks_are_inserted():
    root = Buffer("x", f32, (16,), role="input")
    view = root.view("x_tail", (4, 4), offset=4)
    y = Buffer("y", f32, (4,), role="output")
    i = Var("i")
    kernel = Kernel("tail", (root, y), For(i, 4, SERIAL, Store(y, (i,), Load(view, (i, i)))))
    with pytest.raises(VerificationError, match=r"kernel 'tail': view 'x_tail' addresses "
                                                r"elements \[4, 19\] of 'x', which has 16"):
        insert_bounds_checks(kernel)


def test_wrapping_index_arithmetic_is_not_trusted_statically(monkeypatch):
    """``(i * 2**30) >> 30`` in i32 for i in [0, 3] is 0, 1, -2, -1 (the product wraps): the
    interval analysis gives the type's range, not [0, 3]; checked mode reports the -2."""
    b = KernelBuilder("wrap")
    x, y = b.input("x", f32, (4,)), b.output("y", f32, (4,))
    with b.for_range(4) as i:
        wide = lb.cast(i, i32, "wrap") * IntImm(1 << 30, i32)
        b.store(y, (i,), x[Binary("shr", wide, IntImm(30, i32))])
    kernel = b.build(verify=False)
    with pytest.raises(VerificationError, match=r"ranges over \[-2147483648, 2147483647\], "
                                                r"outside \[0, 3\]"):
        verify_kernel(kernel)
    monkeypatch.setattr(verifier._Verifier, "check_in_bounds", lambda *args: None)
    checked = insert_bounds_checks(kernel)
    for name, run in executors(checked):
        y = np.zeros(4, np.float32)
        with pytest.raises(BoundsError, match="index -2 is outside dimension 0 of buffer 'x'"):
            run(np.ones(4, np.float32), y, np.zeros(3, np.int64))
        np.testing.assert_array_equal(y, [1, 1, 0, 0], err_msg=name)


def test_the_verifier_rejects_misused_bounds_checks():
    x = Buffer("x", f32, (4,), role="input")
    y = Buffer("y", f32, (4,), role="output")
    record = error_record()
    i = Var("i")
    bad_record = Kernel("k", (x, y), For(i, 4, PARALLEL, BoundsCheck(x, 0, i, y, 1)))
    with pytest.raises(VerificationError, match="reports to 'y', which is not an error record"):
        verify_kernel(bad_record)
    bad_dim = Kernel("k", (x, record), For(i, 4, PARALLEL, BoundsCheck(x, 1, i, record, 1)))
    with pytest.raises(VerificationError, match="dimension 1 of 'x', which has rank 1"):
        verify_kernel(bad_dim)
    store = Kernel("k", (x, record), For(i, 3, PARALLEL, Store(record, (i,), IntImm(1))))
    with pytest.raises(VerificationError, match="store to error buffer 'lpjit_error'"):
        verify_kernel(store)


def copy_kernel(x: Buffer, y: Buffer) -> Kernel:
    b = KernelBuilder("copy", origin=ORIGIN)
    with b.for_range(x.shape[0]) as i:
        b.store(y, (i,), lb.load(x, i))
    return verify_kernel(attrs.evolve(b.build(verify=False), params=(x, y)))


def test_program_kernels_share_one_record_and_shared_kernels_stay_shared():
    x = Buffer("x", f32, (5,), role="input")
    y = Buffer("y", f32, (5,), role="output")
    a, b = copy_kernel(x, y), copy_kernel(x, y)
    program = Program("p", (x,), (y,), (Step(a, (ORIGIN,)), Step(b, ()), Step(a, ())))
    checked = insert_program_bounds_checks(program)
    kernels = [step.kernel for step in checked.steps]
    assert kernels[0] is kernels[2] and kernels[0] is not kernels[1]
    assert record_of(kernels[0]) is record_of(kernels[1]) is not None
    assert kernels[0].params == (x, y, record_of(kernels[0]))
