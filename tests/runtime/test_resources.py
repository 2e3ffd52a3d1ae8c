"""Resources: compiled models are freed when dropped; a failed compile leaves nothing behind.

Memory is measured in a fresh interpreter (``MEASURE``), so other tests' allocations do not
blur it: 5 warm-up compiles, then 50 compile + run + drop cycles of a small model, reporting
the growth of the process's RSS and of the C heap in use (glibc ``mallinfo2``; RSS also keeps
memory the allocators hold for reuse).  llvmlite 0.50's optimizer binding leaks on every run
(``LLVMPY_CreatePassBuilder`` allocates a ``PassInstrumentationCallbacks`` that nothing frees,
and each run registers more callbacks in it: about 60-80 KB per run even for a one-function
module), so the script then runs LLVM's O3 pipeline alone 50 times on the model's module; the
test bounds the total RSS growth and lpjit's own share of the heap growth (the difference).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path

import attrs
import llvmlite.binding as llvm
import lowp_graphs as lg
import numpy as np
import pytest
from llvmlite import ir

import lpjit
import lpjit.pipeline
import runtime.jit
from lowering.loop_ir import SERIAL, For, Load, Store, Var
from lpjit import dtypes
from lpjit.errors import CodegenError, UnsupportedOpError, VerificationError
from lpjit.graph import Graph

TESTS = Path(__file__).resolve().parents[1]

MEASURE = r"""
import ctypes, gc, json, sys, weakref
sys.path[:0] = sys.argv[1:]
import llvmlite.binding as llvm
import numpy as np
import lpjit
from lpjit.pipeline import jit_engine
from test_resources import small_model

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def heap_mb():
    info = libc.mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

x = np.random.default_rng(0).uniform(-2, 2, (4, 64)).astype(np.float32)
expected, libraries = None, []
for i in range(55):
    if i == 5:
        gc.collect()
        rss0, heap0 = rss_mb(), heap_mb()
    model = lpjit.compile(small_model(), threads=1, cache=False)
    out = model(x)[0]
    expected = out if expected is None else expected
    assert np.array_equal(out, expected)
    libraries.append(weakref.ref(model.compilation.library))
    text = str(model.compilation.module.ir_module)
    del model, out
gc.collect()
rss1, heap1 = rss_mb(), heap_mb()
engine = jit_engine()
for i in range(50):
    module = llvm.parse_assembly(text)
    engine.optimize(module)
    module.close()
gc.collect()
print(json.dumps({"rss_growth_mb": rss1 - rss0, "heap_growth_mb": heap1 - heap0,
                  "optimizer_heap_growth_mb": heap_mb() - heap1,
                  "alive_libraries": sum(r() is not None for r in libraries)}))
"""


def small_model() -> Graph:
    """``softmax(relu(x @ w + b))``-like: MatMul, bias Add, ReLU, ReduceMax; x f32[4, 64]."""
    rng = np.random.default_rng(1)
    x = lg.parameter((4, 64))
    hidden = lg.matmul(x.output, lg.f32(rng.standard_normal((32, 64))))
    return lg.graph([x], lg.relu(lg.add(hidden, lg.f32(rng.standard_normal(32)))))


def test_fifty_compiles_keep_rss_within_a_fixed_bound():
    """Every dropped model's library is freed; RSS grows by less than 30 MB over 50
    compiles; the heap grows by what llvmlite's optimizer leaks, plus less than 1 MB."""
    done = subprocess.run([sys.executable, "-c", MEASURE, str(TESTS), str(TESTS / "runtime")],
                          capture_output=True, text=True, timeout=600, check=False,
                          cwd=TESTS.parent)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(figures)
    assert figures["alive_libraries"] == 0, figures
    assert figures["rss_growth_mb"] < 30, figures
    own = figures["heap_growth_mb"] - figures["optimizer_heap_growth_mb"]
    assert abs(own) < 1, figures


# -- failed compiles ---------------------------------------------------------------------------

def live_libraries() -> int:
    gc.collect()
    # type(), not isinstance(): isinstance on a dead weakref proxy among gc's objects raises
    # ReferenceError (seen when the whole suite runs).
    return sum(issubclass(type(o), runtime.jit.JitLibrary) for o in gc.get_objects())


def f64_add() -> Graph:
    x = lg.parameter((4,), "x", dtypes.f64)
    return lg.graph([x], lg.add(x.output, x.output))


def compiles_and_runs(graph: Graph) -> None:
    model = lpjit.compile(graph, threads=1, cache=False)
    x = np.random.default_rng(2).uniform(-2, 2, (4, 64)).astype(np.float32)
    np.testing.assert_allclose(model(x)[0], lpjit.reference.run(graph, [x])[0], rtol=1e-5,
                               atol=1e-5)


def test_an_op_without_lowering_fails_before_anything_is_compiled():
    engine, libraries = lpjit.pipeline.jit_engine(), live_libraries()
    with pytest.raises(UnsupportedOpError, match=r"^Add 'add' \(layer \d+\): Add cannot be "
                                                 r"compiled yet \(no lowering\)$"):
        lpjit.compile(f64_add(), threads=1, cache=False)
    assert lpjit.pipeline.jit_engine() is engine and live_libraries() == libraries
    compiles_and_runs(small_model())


def test_a_kernel_rejected_by_code_generation_leaves_its_names_reusable(monkeypatch):
    """A lowering bug (a kernel storing into its input) is a VerificationError from code
    generation; no library exists afterwards, and the same kernel names compile again."""
    lower = lpjit.pipeline.lower_graph_to_loops

    def broken(graph, options):
        program = lower(graph, options)
        first, x, i = program.steps[0], program.inputs[0], Var("i")
        body = For(i, 4, SERIAL, Store(x, (i, 0), Load(x, (i, 1))))
        kernel = attrs.evolve(first.kernel, body=body)
        return program.with_steps((attrs.evolve(first, kernel=kernel), *program.steps[1:]))

    libraries = live_libraries()
    monkeypatch.setattr(lpjit.pipeline, "lower_graph_to_loops", broken)
    with pytest.raises(VerificationError, match="store to input buffer 'x'"):
        lpjit.compile(small_model(), threads=1, cache=False)
    monkeypatch.undo()
    assert live_libraries() == libraries
    compiles_and_runs(small_model())


def test_an_unresolvable_symbol_is_a_codegen_error_and_registers_nothing(monkeypatch):
    """A module that calls a function this process lacks is refused before MCJIT sees it
    (MCJIT would bind it to address 0); the module's constants are not registered."""
    lower = lpjit.pipeline.lower_program_to_llvm
    seen = {}

    def with_missing_call(program, plan, options, **kwargs):
        module = lower(program, plan, options, **kwargs)
        missing = ir.Function(module.ir_module, ir.FunctionType(ir.VoidType(), []),
                              "lpjit_test_missing_runtime")
        caller = ir.Function(module.ir_module, ir.FunctionType(ir.VoidType(), []),
                             "lpjit_test_caller")
        builder = ir.IRBuilder(caller.append_basic_block())
        builder.call(missing, [])
        builder.ret_void()
        seen["symbols"] = [name for name, _ in module.lowered.symbols]
        return module

    big = big_constant_model()
    libraries = live_libraries()
    monkeypatch.setattr(lpjit.pipeline, "lower_program_to_llvm", with_missing_call)
    with pytest.raises(CodegenError, match="^the compiled module refers to "
                                           "lpjit_test_missing_runtime, which this process "
                                           r"does not define \(a missing runtime library\?\)$"):
        lpjit.compile(big, threads=1, cache=False)
    monkeypatch.undo()
    assert seen["symbols"], "the model should bind a constant by symbol"
    assert all(llvm.address_of_symbol(name) is None for name in seen["symbols"])
    assert live_libraries() == libraries
    model = lpjit.compile(big, threads=1, cache=False)
    x = np.random.default_rng(3).uniform(-1, 1, (2, 256)).astype(np.float32)
    np.testing.assert_allclose(model(x)[0], lpjit.reference.run(big, [x])[0], rtol=1e-4,
                               atol=1e-4)


def big_constant_model() -> Graph:
    """A MatMul whose weights (256 x 128 f32 = 128 KB) are bound by symbol, not embedded."""
    rng = np.random.default_rng(4)
    x = lg.parameter((2, 256))
    return lg.graph([x], lg.matmul(x.output, lg.f32(rng.standard_normal((128, 256)))))
