"""The profiled entry point: the same kernels and outputs as ``lpjit_run``, plus one
monotonic timestamp before the first step and after each step."""

from __future__ import annotations

import contextlib
import functools
import time

import numpy as np

from lowering import builder as lb
from lowering.loop_ir import Buffer, Kernel, f32
from lowering.lower_graph import make_kernel
from lowering.program import Program, Step
from runtime.entry_point import ENTRY_POINT, lower_program_to_llvm
from runtime.executable import BufferSpec, Executable
from runtime.jit import JitEngine
from runtime.memory import plan_memory
from runtime.profiling import PROFILED_ENTRY_POINT, ProfiledExecutable


@functools.cache
def engine() -> JitEngine:
    return JitEngine()


def affine(name: str, source: Buffer, target: Buffer, scale: float, shift: float) -> Kernel:
    """``target = source * scale + shift``."""
    b = lb.KernelBuilder(name)
    with contextlib.ExitStack() as loops:
        indices = tuple(loops.enter_context(b.for_range(n)) for n in target.shape)
        b.store(target, indices, source[indices] * scale + shift)
    return make_kernel(b)


def program() -> Program:
    """x -> t0 -> t1 -> t2 -> y; the middle kernel runs twice (one kernel, two steps)."""
    x = Buffer("x", f32, (4, 64), role="input")
    y = Buffer("y", f32, (4, 64), role="output", alignment=64)
    t = [Buffer(f"t{k}", f32, (4, 64), role="scratch", alignment=64) for k in range(3)]
    first = affine("first", x, t[0], 2.0, 1.0)
    middle = affine("middle", t[0], t[1], 0.5, -0.25)
    again = affine("again", t[1], t[2], 1.5, 0.125)
    last = affine("last", t[2], y, -1.0, 3.0)
    return Program("chain", (x,), (y,), [Step(k, ()) for k in (first, middle, middle, again, last)])


def compiled(p: Program):
    plan = plan_memory(p)
    module = lower_program_to_llvm(p, plan, engine().codegen_options())
    library = engine().add_module(module.lowered)
    specs = ([BufferSpec.of(b) for b in p.inputs], [BufferSpec.of(b) for b in p.outputs])
    plain = Executable(library.function_address(ENTRY_POINT), *specs, plan.arena_bytes, 1,
                       owner=library)
    profiled = ProfiledExecutable(library, p, plan, *specs, 1, engine())
    return plain, profiled


def test_profiled_outputs_equal_plain_and_stamps_are_monotonic():
    p = program()
    plain, profiled = compiled(p)
    x = np.random.default_rng(3).uniform(-1, 1, (4, 64)).astype(np.float32)
    before = time.monotonic_ns()
    outputs, stamps = profiled.run_profiled([x])
    after = time.monotonic_ns()
    np.testing.assert_array_equal(outputs[0], plain.run([x])[0])
    np.testing.assert_allclose(outputs[0], -(((x * 2 + 1) * 0.5 - 0.25) * 1.5 + 0.125) + 3,
                               rtol=1e-6)
    assert stamps.shape == (len(p.steps) + 1,) and stamps.dtype == np.int64
    assert before <= stamps[0] and stamps[-1] <= after
    assert np.all(np.diff(stamps) >= 0)
    _, again = profiled.run_profiled([x])
    assert again[0] >= stamps[-1]               # a fresh array each call, later times


def test_profile_module_calls_the_compiled_kernels_and_defines_only_the_entry():
    p = program()
    _, profiled = compiled(p)
    text = str(profiled.module)
    assert text.count("define ") == 1 and f'@"{PROFILED_ENTRY_POINT}"' in text
    assert text.count("clock_gettime") == 2 + len(p.steps)  # declaration + one per stamp
    assert text.count("declare void") == 4                  # each kernel declared once
    calls = [line for line in text.splitlines() if "call void" in line]
    assert [c.split('@"')[1].split('"')[0].rsplit(".", 1)[1] for c in calls] == [
        s.kernel.name for s in p.steps]
