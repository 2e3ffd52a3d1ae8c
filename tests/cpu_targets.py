"""Targets the integer-kernel tests run on (``znver3`` code is AVX2 without VNNI, ``x86-64``
has neither; all run on this host) and an LLVM executor compiling for each."""

from __future__ import annotations

import functools

from lowering.loop_ir import Kernel
from lowering.program_exec import llvm_compiler
from lowering.target import Target
from runtime.jit import CPU_FEATURES, CPUCodegen, JitLibrary, TargetSpec

HOST = Target.host()
AVX2 = Target("znver3", CPU_FEATURES["znver3"])
SSE = Target("x86-64", CPU_FEATURES["x86-64"])


class TargetJit(CPUCodegen):
    """A JIT for a named CPU (its code runs on this host: a subset of its features)."""

    library_class = JitLibrary
    _jit = True


@functools.cache
def _jit(cpu: str) -> TargetJit:
    return TargetJit(TargetSpec.for_cpu(cpu))


def compiler_for(target: Target):
    """LLVM one kernel at a time, compiled for ``target``'s CPU."""
    if target is HOST:
        return llvm_compiler

    def compile_kernel(kernel: Kernel):
        library = _jit(target.cpu).compile_kernels([kernel])
        return functools.partial(library.get_function(kernel.name), threads=1)

    return compile_kernel
