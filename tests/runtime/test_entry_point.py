"""The whole-program entry point: one native call runs every step on the planned arena."""

from __future__ import annotations

import contextlib
import functools

import llvmlite.binding as llvm
import numpy as np
import pytest

from lowering import builder as lb
from lowering.loop_ir import Buffer, Kernel, f32
from lowering.lower_graph import make_kernel
from lowering.program import Program, Step
from lpjit.errors import CodegenError, InputError
from runtime.entry_point import ENTRY_POINT, lower_program_to_llvm
from runtime.executable import BufferSpec, Executable, aligned_empty
from runtime.jit import JitEngine
from runtime.memory import plan_memory, verify_memory_plan


@functools.cache
def engine() -> JitEngine:
    return JitEngine()


def scratch(name: str, n: int) -> Buffer:
    return Buffer(name, f32, (n,), role="scratch", alignment=64)


def affine_kernel(name: str, source: Buffer, target: Buffer, scale: float,
                  shift: float) -> Kernel:
    """``target = source * scale + shift`` over ``target``'s shape."""
    b = lb.KernelBuilder(name)
    with contextlib.ExitStack() as loops:
        indices = tuple(loops.enter_context(b.for_range(n)) for n in target.shape)
        b.store(target, indices, source[indices] * scale + shift)
    return make_kernel(b)


def chain_program() -> Program:
    """x -> t0 -> t1 -> ... -> t5 -> y through views: t_k is read as a [3, 4] view by the next
    step, so the plan reuses the arena and each kernel addresses a view through its root."""
    x = Buffer("x", f32, (3, 4), role="input")
    y = Buffer("y", f32, (3, 4), role="output", alignment=64)
    temps = [scratch(f"t{k}", 12) for k in range(6)]
    kernels = [affine_kernel("k0", x, temps[0].view("t0v", (3, 4)), 2.0, 1.0)]
    for k in range(1, 6):
        kernels.append(affine_kernel(f"k{k}", temps[k - 1], temps[k], 1.5, -0.5))
    kernels.append(affine_kernel("k6", temps[5].view("t5v", (3, 4)), y, 0.5, 0.25))
    return Program("chain", (x,), (y,), [Step(k, ()) for k in kernels])


def executable(program: Program, threads: int = 1) -> Executable:
    plan = verify_memory_plan(plan_memory(program), program)
    module = lower_program_to_llvm(program, plan, engine().codegen_options())
    library = engine().add_module(module.lowered)
    return Executable(library.function_address(ENTRY_POINT),
                      [BufferSpec.of(b) for b in program.inputs],
                      [BufferSpec.of(b) for b in program.outputs],
                      plan.arena_bytes, threads, owner=library)


def chain_expected(x: np.ndarray) -> np.ndarray:
    value = x.astype(np.float32) * np.float32(2.0) + np.float32(1.0)
    for _ in range(5):
        value = value * np.float32(1.5) - np.float32(0.5)
    return value * np.float32(0.5) + np.float32(0.25)


def test_one_call_runs_every_step_through_the_reused_arena() -> None:
    program = chain_program()
    plan = plan_memory(program)
    assert plan.arena_bytes == 128 < plan.unshared_bytes        # two 64-byte slots for six
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    (y,) = executable(program).run([x])
    np.testing.assert_allclose(y, chain_expected(x), rtol=1e-6)


def test_the_entry_point_is_one_function_calling_each_kernel_in_order() -> None:
    program = chain_program()
    module = lower_program_to_llvm(program, plan_memory(program), engine().codegen_options())
    parsed = llvm.parse_assembly(str(module.ir_module))
    parsed.verify()
    entry = str(module.ir_module.get_global(ENTRY_POINT))
    calls = [line.split("@")[1].split("(")[0].strip('"') for line in entry.splitlines()
             if "call void" in line]
    assert calls == [f"k{k}" for k in range(7)]
    assert '%"t1" = getelementptr i8, ptr %"arena", i64 64' in entry
    assert 'call void @"k1"(ptr %"t1", ptr %"t0", i32 %"threads")' in entry


def test_inputs_are_checked_and_misaligned_or_strided_inputs_copied() -> None:
    program = chain_program()
    run = executable(program)
    x = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)[:, ::2]
    (y,) = run.run([x])
    np.testing.assert_allclose(y, chain_expected(x), rtol=1e-6)
    with pytest.raises(InputError, match=r"input 'x' is float64\[3, 4\]; the program expects "
                                         r"float32\[3, 4\]"):
        run.run([x.astype(np.float64)])
    with pytest.raises(InputError, match="the program takes 1 inputs, got 2"):
        run.run([x, x])


def test_aligned_empty_is_aligned_and_sized() -> None:
    for shape in [(0,), (1,), (3, 5), (7, 9, 11)]:
        array = aligned_empty(shape, np.float32)
        assert array.shape == shape and array.dtype == np.float32
        assert array.flags.c_contiguous and array.flags.writeable
        assert array.size == 0 or array.ctypes.data % 64 == 0


def test_a_kernel_named_like_the_entry_point_is_refused() -> None:
    x = Buffer("x", f32, (4,), role="input")
    y = Buffer("y", f32, (4,), role="output")
    program = Program("clash", (x,), (y,), [Step(affine_kernel(ENTRY_POINT, x, y, 1, 0), ())])
    with pytest.raises(CodegenError, match="a kernel is named 'lpjit_run'"):
        lower_program_to_llvm(program, plan_memory(program))
