"""traversal: the one-walk ``uses`` summary agrees with the separate walks it replaces."""

from __future__ import annotations

from lowering.builder import KernelBuilder
from lowering.loop_ir import For, f32, i32
from lowering.traversal import allocated_buffers, buffers_used, free_vars, uses


def _kernel_with_scratch():
    b = KernelBuilder("scratch")
    x = b.input("x", f32, (6, 5))
    y = b.output("y", f32, (6, 5))
    a = b.scalar("a", f32)
    k = b.scalar("k", i32)
    with b.for_range(6, name="r") as r:
        tmp = b.allocate("tmp", f32, (5,))
        with b.for_range(5, name="c") as c:
            b.store(tmp, c, x[r, c] * a)
        with b.for_range(5, name="c2") as c2:
            b.store(y, (r, c2), tmp[c2] + x[r, k])
    return b.build(verify=False)        # x[r, k] is unproven in range: only walked here


def test_uses_of_a_loop_are_the_separate_walks():
    """Buffers (first use order), allocations and free variables of the outer loop: x, y and
    tmp are used, tmp is allocated inside, and a, k are free (r, c, c2 are bound inside)."""
    kernel = _kernel_with_scratch()
    loop = next(s for s in [kernel.body, *getattr(kernel.body, "stmts", ())]
                if isinstance(s, For))
    summary = uses(loop)
    assert list(summary.buffers) == buffers_used(loop)
    assert list(summary.allocated) == allocated_buffers(loop)
    assert list(summary.free_vars) == free_vars(loop)
    assert [b.name for b in summary.allocated] == ["tmp"]
    assert {b.name for b in summary.buffers} == {"x", "y", "tmp"}
    assert [v.name for v in summary.free_vars] == ["a", "k"]
    assert summary.bounds_checks == ()
