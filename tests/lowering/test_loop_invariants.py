"""Loop invariants computed before their loop (``codegen_llvm.loop_invariants``).

Rule: scalar integer arithmetic that does not depend on a loop is emitted once, in the
loop's preheader (per iteration of the unrolled loops it depends on), never in the body;
what could trap (a division by a variable), what reads memory and what depends on the loop
stays where it is; and the kernel computes the same values, whichever LLVM pipeline
optimises it.
"""

from __future__ import annotations

import attrs
import numpy as np
import pytest

from lowering import builder as lb
from lowering.builder import KernelBuilder
from lowering.codegen_llvm import lower_kernels_to_llvm
from lowering.loop_ir import PARALLEL, SERIAL, UNROLLED, i64
from runtime.jit import JitEngine

RNG = np.random.default_rng(11)


@pytest.fixture(scope="module")
def engine() -> JitEngine:
    return JitEngine()


def blocks_of(kernel, engine, opname):
    """The names of the blocks of ``kernel``'s emitted (unoptimised) function that hold an
    ``opname`` instruction."""
    module = lower_kernels_to_llvm([kernel], engine.codegen_options()).ir_module
    return [block.name for fn in module.functions for block in fn.blocks
            for instruction in block.instructions if instruction.opname == opname]


def gather(parallel: bool = False):
    """``y[i, j, r] = x[(i * 7) // 3 + j + (i + r) // 5]`` (``r`` unrolled) and
    ``z[i, j] = x[j // n]`` (clamped to ``x``) for a scalar ``n`` that may be 0 (then ``z``
    is not written)."""
    b = KernelBuilder("gather")
    x = b.input("x", i64, (64,))
    n = b.scalar("n", i64)
    y = b.output("y", i64, (6, 5, 3))
    z = b.output("z", i64, (6, 5))
    with b.for_range(6, kind=PARALLEL if parallel else SERIAL, name="i") as i, \
            b.for_range(5, name="j") as j:
        with b.for_range(3, kind=UNROLLED, name="r") as r:
            b.store(y, (i, j, r), x[(i * 7) // 3 + j + (i + r) // 5])
        with b.if_(lb.gt(n, 0)):
            b.store(z, (i, j), x[lb.min_(lb.max_(j // n, 0), 63)])
    return b.build()


def expected(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    i, j, r = np.meshgrid(np.arange(6), np.arange(5), np.arange(3), indexing="ij")
    y = x[(i * 7) // 3 + j + (i + r) // 5]
    z = x[np.arange(5) // n][None, :].repeat(6, axis=0) if n > 0 else None
    return y, z


def test_arithmetic_of_outer_variables_is_computed_before_the_inner_loop(engine):
    """``(i * 7) // 3`` and the three ``(i + r) // 5`` are divisions by constants of ``i``
    alone: they sit in ``i``'s body, before ``j``'s loop; ``j // n`` divides by a variable
    that may be zero, so it stays under its guard, in ``j``'s loop."""
    divisions = blocks_of(gather(), engine, "sdiv")
    assert divisions.count("i.body") == 4, divisions
    assert [name for name in divisions if name != "i.body"] == ["j.body.if"], divisions


@pytest.mark.parametrize("optimization", ["full", "cleanup"])
@pytest.mark.parametrize("n", [0, 2])
def test_a_kernel_with_hoisted_invariants_computes_what_numpy_does(engine, optimization, n):
    kernel = attrs.evolve(gather(), optimization=optimization)
    module = lower_kernels_to_llvm([kernel], engine.codegen_options())
    library = engine.add_module(module)
    x = RNG.integers(-1000, 1000, 64)
    y = np.zeros((6, 5, 3), np.int64)
    z = np.full((6, 5), -7, np.int64)
    library.get_function("gather")(x, n, y, z)
    want_y, want_z = expected(x, n)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(z, want_z if n > 0 else np.full((6, 5), -7))


def test_a_parallel_loop_computes_its_invariants_in_its_own_function(engine):
    """The body of a parallel loop becomes a chunk function: the invariants of ``j``'s loop
    are computed there, before ``j``'s loop, not in the kernel that forks."""
    kernel = gather(parallel=True)
    module = lower_kernels_to_llvm([kernel], engine.codegen_options()).ir_module
    chunk = module.get_global("gather.parallel0.chunk")
    divisions = [block.name for block in chunk.blocks for instruction in block.instructions
                 if instruction.opname == "sdiv"]
    assert sorted(divisions) == ["i.body"] * 4 + ["j.body.if"], divisions
