"""Compiling a program's parts on worker threads while Python emits the rest.

``lower_program_to_llvm`` hands each part of a big program (a few thousand instructions of
kernels) to ``ParallelCompiler.submit`` as soon as it is built.  Each part is compiled on one
of the compiler's worker threads (two by default, one per core) by ``compile_part``:

1. parsed into an LLVM context of its own and verified;
2. optimised with the codegen's pipeline (``CPUCodegen.optimize``);
3. for a codegen that loads parts as machine code (``CPUCodegen.part_objects``: the JIT),
   emitted as a relocatable object by the worker's own target machine;
4. kept as optimised bitcode (to be linked into one module: for AOT code generation and for
   inspection) with the names of the symbols it needs from elsewhere.

**Threads and llvmlite's lock.**  llvmlite releases the GIL inside every LLVM call but holds
one process-wide lock around each, because the objects of one LLVM context must not be used
from two threads at once.  A part's context, module, pass builder and target machine belong
to its worker alone, so the two long calls (running the pass pipeline and emitting the
object) go to LLVM directly, without that lock (``_unlocked``): the workers optimise and
emit in parallel with each other, and the short locked calls (parsing, building the pass
pipeline) interleave safely with the main thread's use of the global context.  Measured on
ResNet-18 INT8 (fourteen parts): 1.9 s of optimisation on one thread, 1.1 s on two.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs
import llvmlite.binding as llvm
from llvmlite.binding import ffi

from lpjit.errors import CodegenError

if TYPE_CHECKING:
    from runtime.jit import CPUCodegen


@attrs.frozen(eq=False)
class CompiledPart:
    """One part compiled: optimised ``bitcode``, the names of the functions and globals it
    declares (defined by other parts or by the process), and its machine code (``object``,
    for codegens that load parts as objects; else None)."""

    bitcode: bytes
    declared_functions: tuple[str, ...]
    declared_globals: tuple[str, ...]
    object: bytes | None = None


def _unlocked(name: str) -> Callable[..., object]:
    """llvmlite's C function ``name`` without llvmlite's process-wide lock (module doc);
    the locked wrapper when this llvmlite does not expose the raw function."""
    function = getattr(ffi.lib, name)
    return getattr(function, "_cfn", function)


def optimize_unlocked(manager: llvm.ModulePassManager, module: llvm.ModuleRef,
                      builder: llvm.PassBuilder) -> None:
    """Run the pass pipeline ``manager`` (built with ``builder``) on ``module`` (all owned by
    the caller)."""
    _unlocked("LLVMPY_RunNewModulePassManager")(manager, module, builder)


def emit_object_unlocked(machine: llvm.TargetMachine, module: llvm.ModuleRef) -> bytes:
    """``machine.emit_object(module)`` (both owned by the caller)."""
    with ffi.OutputString() as error:
        buffer = _unlocked("LLVMPY_TargetMachineEmitToMemory")(machine, module, 1, error)
        if not buffer:
            raise CodegenError(f"LLVM could not emit machine code: {error}")
    try:
        return ctypes.string_at(ffi.lib.LLVMPY_GetBufferStart(buffer),
                                ffi.lib.LLVMPY_GetBufferSize(buffer))
    finally:
        ffi.lib.LLVMPY_DisposeMemoryBuffer(buffer)


def compile_part(codegen: CPUCodegen, text: str, machine: llvm.TargetMachine,
                 level: str = "full") -> CompiledPart:
    """Steps 1-4 of the module docstring for one part, in a context of its own; ``level``:
    the optimisation its kernels need (``Kernel.optimization``)."""
    context = llvm.create_context()
    module = None
    try:
        try:
            module = llvm.parse_assembly(text, context)
            module.verify()
        except RuntimeError as error:
            raise CodegenError(f"LLVM rejected the generated module: {error}") from None
        module.triple = machine.triple
        module.data_layout = str(machine.target_data)
        codegen.optimize(module, machine, run=optimize_unlocked, level=level)
        functions = tuple(f.name for f in module.functions if f.is_declaration)
        variables = tuple(g.name for g in module.global_variables if g.is_declaration)
        code = emit_object_unlocked(machine, module) if codegen.part_objects else None
        return CompiledPart(module.as_bitcode(), functions, variables, code)
    finally:
        if module is not None:
            module.close()
        context.close()


class ParallelCompiler:
    """Compiles submitted parts on ``workers`` threads (module docstring).

    ``submit`` queues a part's text (and the optimisation level of its kernels); ``finish`` waits for every part and returns them in
    submission order, or raises the first error; ``close`` stops the workers (idempotent).
    """

    def __init__(self, codegen: CPUCodegen, workers: int | None = None) -> None:
        self.codegen = codegen
        count = workers if workers is not None else min(2, os.cpu_count() or 1)
        self._pool = concurrent.futures.ThreadPoolExecutor(count, "lpjit-llvm")
        self._futures: list[concurrent.futures.Future[CompiledPart]] = []
        self._local = threading.local()

    def submit(self, text: str, level: str = "full") -> None:
        self._futures.append(self._pool.submit(self._compile, text, level))

    def _compile(self, text: str, level: str) -> CompiledPart:
        machine = getattr(self._local, "machine", None)
        if machine is None:
            machine = self._local.machine = self.codegen.part_machine()
        return compile_part(self.codegen, text, machine, level)

    def finish(self) -> list[CompiledPart]:
        try:
            return [future.result() for future in self._futures]
        finally:
            self.close()

    def close(self) -> None:
        for future in self._futures:
            future.cancel()
        self._pool.shutdown(wait=True)


__all__ = ["CompiledPart", "ParallelCompiler", "compile_part"]
