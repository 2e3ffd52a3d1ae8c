"""The profiled entry point: ``lpjit_run`` with a clock read before the first step and after
every step, built only when a profile is asked for.

A compiled program's kernels already sit in its JIT library with their own symbols.  A
profile adds one small LLVM module next to it that holds only ::

    void lpjit_run_profiled(ptr inputs, ptr outputs, ptr arena, i32 threads, ptr stamps)

It computes the same root pointers as ``lpjit_run`` and calls the same kernels (by address,
through symbols unique to this profile) in the same order, and stores
``stamps[0] = now()`` before the first call and ``stamps[i + 1] = now()`` after step ``i``:
``n_steps + 1`` nanosecond timestamps of ``clock_gettime(CLOCK_MONOTONIC)`` (the clock of
Python's ``time.monotonic_ns``).  The model's own code is not recompiled or changed, so
normal calls (``lpjit_run``) pay nothing; a profiled call pays one vDSO clock read per step.
A checked program's profiled entry clears and checks the error record as ``lpjit_run`` does.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
from collections.abc import Sequence

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from lowering.bounds_checks import failure_decoder
from lowering.codegen_ops import I32, I64, PTR
from lowering.program import Program
from runtime.entry_point import _RootPointers, clear_error_record, return_if_failed
from runtime.executable import BufferSpec, Executable
from runtime.jit import JitEngine, JitLibrary
from runtime.memory import MemoryPlan

PROFILED_ENTRY_POINT = "lpjit_run_profiled"
CLOCK_MONOTONIC = 1

ProfiledEntryFunction = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p,
                                         ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p)

_profiles = itertools.count()


def emit_profiled_entry_point(program: Program, plan: MemoryPlan,
                              kernel_symbols: dict[str, str],
                              name: str = PROFILED_ENTRY_POINT) -> ir.Module:
    """A module defining ``name`` (module docstring) that calls each step's kernel through the
    external symbol ``kernel_symbols[kernel.name]``."""
    module = ir.Module(f"{program.name or 'lpjit'}.profiled")
    timespec = ir.LiteralStructType([I64, I64])
    clock = ir.Function(module, ir.FunctionType(I32, [I32, PTR]), "clock_gettime")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR, I32, PTR]), name)
    fn.attributes.add("nounwind")
    inputs, outputs, arena, threads, stamps = fn.args
    for arg, arg_name in zip(fn.args, ("inputs", "outputs", "arena", "threads", "stamps")):
        arg.name = arg_name
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    now = builder.alloca(timespec, name="now")
    pointers = _RootPointers(builder, program, plan, inputs, outputs, arena)
    callees: dict[str, ir.Function] = {}

    def stamp(index: int) -> None:
        builder.call(clock, [ir.Constant(I32, CLOCK_MONOTONIC), now])
        seconds = builder.load(builder.gep(now, [ir.Constant(I32, 0), ir.Constant(I32, 0)],
                                           source_etype=timespec), typ=I64)
        nanos = builder.load(builder.gep(now, [ir.Constant(I32, 0), ir.Constant(I32, 1)],
                                         source_etype=timespec), typ=I64)
        total = builder.add(builder.mul(seconds, ir.Constant(I64, 1_000_000_000)), nanos)
        slot = builder.gep(stamps, [ir.Constant(I64, index)], source_etype=I64)
        builder.store(total, slot)

    clear_error_record(builder, pointers, program)
    stamp(0)
    for index, step in enumerate(program.steps):
        kernel = step.kernel
        if kernel.name not in callees:
            params = [PTR] * len(kernel.buffer_params) + [I32]
            callees[kernel.name] = ir.Function(module, ir.FunctionType(ir.VoidType(), params),
                                               kernel_symbols[kernel.name])
        builder.call(callees[kernel.name],
                     [pointers.of(b) for b in kernel.buffer_params] + [threads])
        return_if_failed(builder, pointers, kernel, index)
        stamp(index + 1)
    builder.ret_void()
    return module


class ProfiledExecutable(Executable):
    """An ``Executable`` whose calls run ``lpjit_run_profiled``: ``run_profiled`` returns the
    outputs and the ``n_steps + 1`` timestamps (ns) of the call.

    Built from a compiled program's JIT ``library`` (which must stay loaded; it is kept
    alive), its ``program``, memory ``plan`` and the input / output specs.
    """

    def __init__(self, library: JitLibrary, program: Program, plan: MemoryPlan,
                 inputs: Sequence[BufferSpec], outputs: Sequence[BufferSpec], threads: int,
                 engine: JitEngine) -> None:
        serial = next(_profiles)
        symbols: dict[str, str] = {}
        for step in program.steps:
            kernel_name = step.kernel.name
            if kernel_name not in symbols:
                symbols[kernel_name] = f"lpjit.profile{serial}.{kernel_name}"
                llvm.add_symbol(symbols[kernel_name], library.function_address(kernel_name))
        self.module = emit_profiled_entry_point(program, plan, symbols)
        self.profile_library = engine.add_module(self.module)
        address = self.profile_library.function_address(PROFILED_ENTRY_POINT)
        super().__init__(address, inputs, outputs, plan.arena_bytes, threads,
                         owner=(library, self.profile_library),
                         failure=failure_decoder(program))
        self.steps = len(program.steps)
        self._profiled = ProfiledEntryFunction(address)
        self._stamps_per_thread = threading.local()
        self._entry = self._stamped  # ``Executable.run`` calls ``self._entry``

    def _stamps(self) -> tuple[np.ndarray, int]:
        """This thread's timestamp array and its address (allocated on its first call)."""
        entry = getattr(self._stamps_per_thread, "entry", None)
        if entry is None:
            stamps = np.zeros(self.steps + 1, np.int64)
            entry = self._stamps_per_thread.entry = (stamps, stamps.ctypes.data)
        return entry

    def _stamped(self, inputs: int, outputs: int, arena: int, threads: int) -> None:
        self._profiled(inputs, outputs, arena, threads, self._stamps()[1])

    def run_profiled(self, arrays: Sequence[np.ndarray], threads: int | None = None
                     ) -> tuple[list[np.ndarray], np.ndarray]:
        """The outputs for ``arrays`` and this call's timestamps (int64 ns, ``steps + 1``)."""
        outputs = self.run(arrays, threads)
        return outputs, self._stamps()[0].copy()

    def __repr__(self) -> str:
        return (f"<ProfiledExecutable at {self.address:#x}: {self.steps} steps, "
                f"{len(self.inputs)} inputs, {len(self.outputs)} outputs>")
