"""Run one kernel on both executors (LLVM JIT and numba) on identical arguments."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import llvmlite.binding as llvm
import numpy as np

from lowering.codegen_llvm import lower_kernels_to_llvm
from lowering.loop_ir import Buffer, Kernel
from lowering.numba_exec import compile_numba
from runtime.jit import JitEngine


@functools.cache
def engine() -> JitEngine:
    return JitEngine()


def reparsed(kernels: Sequence[Kernel], **options) -> llvm.ModuleRef:
    """The emitted module of ``kernels`` parsed back and verified by LLVM."""
    lowered = lower_kernels_to_llvm(kernels, engine().codegen_options(**options))
    module = llvm.parse_assembly(str(lowered.ir_module))
    module.verify()
    return module


def run_llvm(kernel: Kernel, args: Sequence[object], threads: int = 1, **options) -> list:
    """Outputs of ``kernel`` compiled by LLVM for the host, called on copies of ``args``."""
    library = engine().compile_kernels([kernel], **options)
    copies = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    library.get_function(kernel.name)(*copies, threads=threads)
    return _outputs(kernel, copies)


def run_numba(kernel: Kernel, args: Sequence[object]) -> list:
    """Outputs of ``kernel`` run by the numba executor on copies of ``args``."""
    copies = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
    compile_numba(kernel)(*copies)
    return _outputs(kernel, copies)


def run_both(kernel: Kernel, args: Sequence[object], threads: int = 1, **options):
    """(LLVM outputs, numba outputs) of ``kernel`` on ``args``."""
    return run_llvm(kernel, args, threads, **options), run_numba(kernel, args)


def _outputs(kernel: Kernel, args: Sequence[object]) -> list:
    return [a for p, a in zip(kernel.params, args)
            if isinstance(p, Buffer) and p.role == "output"]


def garbage(shape, dtype, rng: np.random.Generator) -> np.ndarray:
    """An output array pre-filled with random bytes, so unwritten elements are noticed."""
    raw = rng.integers(0, 256, int(np.prod(shape)) * np.dtype(dtype).itemsize, dtype=np.uint8)
    values = raw.view(dtype).reshape(shape).copy()
    if np.issubdtype(dtype, np.floating):
        values[~np.isfinite(values)] = 0
    return values
