"""``lpjit.compile(..., checks=True)``: a kernel that indexes outside a buffer makes the call
raise ``BoundsError`` naming the kernel, its graph layers, the buffer, dimension and index.

Lowerings are correct (and statically verified), so the test plants a bug: it replaces the
first step's kernel with one that reads ``x[i + trunc(x[i])]`` and disables the verifier's
static bounds proof, as if the interval analysis had missed it.
"""

from __future__ import annotations

import attrs
import lowp_graphs as lg
import numpy as np
import pytest

import lpjit
import lpjit.pipeline
from lowering import verifier
from lowering.bounds_checks import insert_program_bounds_checks
from lowering.builder import cast
from lowering.loop_ir import SERIAL, For, Load, Store, Var, i64
from lowering.lower_graph import lower_graph_to_loops
from lowering.program import Program
from lowering.program_exec import llvm_compiler, numba_compiler, run_program
from lpjit.errors import BoundsError
from lpjit.graph import Graph
from lpjit.ops.reductions import ReduceMax
from lpjit.profiling import profiled_executable


def add_relu_max() -> Graph:
    """``max(relu(x + c))`` over 16 elements: two steps (add + relu fused, then the max)."""
    x = lg.parameter((16,))
    c = lg.f32(np.linspace(0.0, 0.5, 16))
    relu = lg.relu(lg.add(x.output, c, name="add"), name="relu")
    top = ReduceMax(origin=lg.origin("top", "ReduceMax"),
                    inputs=(relu, lg.const(np.array([0], np.int64))), keep_dims=False)
    return lg.graph([x], top.output)


def plant_gather_bug(program: Program) -> Program:
    """The first step reads ``x[i + trunc(x[i])]`` instead of computing ``relu(x + c)``."""
    first = program.steps[0]
    x, out = first.kernel.buffer_params
    i = Var("i")
    index = i + cast(Load(x, (i,)), i64, "trunc")
    body = For(i, 16, SERIAL, Store(out, (i,), Load(x, (index,))))
    return program.with_steps((attrs.evolve(first, kernel=attrs.evolve(first.kernel, body=body)),
                               *program.steps[1:]))


@pytest.fixture
def planted(monkeypatch) -> None:
    monkeypatch.setattr(verifier._Verifier, "check_in_bounds", lambda *args: None)
    lower = lpjit.pipeline.lower_graph_to_loops
    monkeypatch.setattr(lpjit.pipeline, "lower_graph_to_loops",
                        lambda graph, options: plant_gather_bug(lower(graph, options)))


@pytest.mark.parametrize("threads", [1, 2])
def test_a_planted_out_of_bounds_read_raises_naming_kernel_layers_and_index(planted, threads):
    model = lpjit.compile(add_relu_max(), threads=threads, checks=True, cache=False)
    rng = np.random.default_rng(5)
    x = rng.uniform(0.0, 0.9, 16).astype(np.float32)       # trunc(x) = 0: in bounds
    assert model(x)[0] == x.max()
    bad = x.copy()
    bad[9] = 8.5                                              # reads x[17]
    with pytest.raises(BoundsError, match=(
            r"^Add 'add' \(layer \d+\): kernel 'add' \(layers add \+ relu\): index 17 is "
            r"outside dimension 0 of buffer 'x' \(f32\[16\], valid 0\.\.15\); the checked "
            r"kernel stopped before the access \(a compiler bug: please report it\)$")):
        model(bad)
    bad[9], bad[3] = 0.5, -4.0                                # reads x[-1]
    with pytest.raises(BoundsError, match=r"kernel 'add' \(layers add \+ relu\): index -1 "):
        model(bad)
    assert model(x)[0] == x.max()                             # the record starts clear


def test_checked_and_unchecked_compiles_of_a_correct_model_agree():
    graph = add_relu_max()
    checked = lpjit.compile(graph, threads=1, checks=True, cache=False)
    plain = lpjit.compile(graph, threads=1, cache=False)
    assert "insert_bounds_checks" in checked.timings()
    assert "insert_bounds_checks" not in plain.timings()
    x = np.random.default_rng(6).standard_normal(16).astype(np.float32)
    np.testing.assert_array_equal(checked(x)[0], plain(x)[0])


@pytest.mark.parametrize("executor", [numba_compiler, llvm_compiler],
                         ids=["numba", "llvm-per-kernel"])
def test_step_by_step_executors_report_the_same_failure(monkeypatch, executor):
    """``run_program`` on a checked program (numba, or LLVM one kernel at a time) raises the
    message the whole-program entry point raises."""
    monkeypatch.setattr(verifier._Verifier, "check_in_bounds", lambda *args: None)
    program = insert_program_bounds_checks(plant_gather_bug(lower_graph_to_loops(
        add_relu_max())))
    x = np.random.default_rng(7).uniform(0.0, 0.9, 16).astype(np.float32)
    np.testing.assert_array_equal(run_program(program, [x], executor)[0], x.max())
    x[2] = 14.0
    with pytest.raises(BoundsError, match=r"^Add 'add' \(layer \d+\): kernel 'add' \(layers "
                                          r"add \+ relu\): index 16 is outside dimension 0 "):
        run_program(program, [x], executor)


def test_the_profiled_entry_point_checks_as_well(planted):
    model = lpjit.compile(add_relu_max(), threads=1, checks=True, cache=False)
    profiled = profiled_executable(model)
    x = np.random.default_rng(8).uniform(0.0, 0.9, 16).astype(np.float32)
    outputs, stamps = profiled.run_profiled([x])
    assert outputs[0] == x.max() and len(stamps) == len(model.program.steps) + 1
    x[15] = 1.5
    with pytest.raises(BoundsError, match=r"kernel 'add' \(layers add \+ relu\): index 16 "):
        profiled.run_profiled([x])
