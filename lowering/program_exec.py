"""Run a whole ``Program`` step by step with one of the two kernel executors.

This is the slow, obviously-right way to execute a program: numpy arrays for every root
buffer, each step's kernel compiled on its own (numba, or LLVM one kernel at a time) and called
on views of those arrays (a checked program's error record starts clear; a failure raises
``BoundsError`` naming the step's layers).  Tests compare it with the reference executor
(lowering bugs) and with the native whole-program entry point (code generation and
memory-planning bugs).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

from lowering.bounds_checks import bounds_error, record_of
from lowering.loop_ir import Buffer, Kernel, contiguous_strides
from lowering.program import Program
from lpjit.errors import BoundsError, InputError

CompileKernel = Callable[[Kernel], Callable[..., None]]


def numba_compiler(kernel: Kernel) -> Callable[..., None]:
    """The numba executor on the kernel as lowered (before vectorization): the definition."""
    from lowering.numba_exec import compile_numba

    return compile_numba(kernel)


def llvm_compiler(kernel: Kernel) -> Callable[..., None]:
    """The LLVM path on one kernel (vectorized, O3, host CPU), run single-threaded."""
    library = _jit_engine().compile_kernels([kernel])
    return functools.partial(library.get_function(kernel.name), threads=1)


@functools.cache
def _jit_engine():
    """The host JIT engine, made once (runtime.jit is imported lazily: it loads LLVM)."""
    from runtime.jit import JitEngine

    return JitEngine()


def _argument(buffer: Buffer, memory: dict[int, np.ndarray]) -> np.ndarray:
    """The array the executors' ABI expects for ``buffer`` (see ``lowering.abi``)."""
    root = memory[id(buffer.root)].reshape(-1)
    if buffer.base is None and buffer.strides == contiguous_strides(buffer.shape):
        return root[:buffer.numel].reshape(buffer.shape)
    start = buffer.root_offset
    flat = root[start:]
    if buffer.strides == contiguous_strides(buffer.shape):
        return flat[:buffer.numel].reshape(buffer.shape)
    return flat


def run_program(program: Program, inputs: Sequence[np.ndarray],
                compile_kernel: CompileKernel = numba_compiler) -> list[np.ndarray]:
    """The program's outputs for ``inputs`` (in Program input order)."""
    if len(inputs) != len(program.inputs):
        raise InputError(f"program '{program.name}' takes {len(program.inputs)} inputs, "
                         f"got {len(inputs)}")
    memory: dict[int, np.ndarray] = {}
    for buffer, array in zip(program.inputs, inputs):
        memory[id(buffer)] = np.ascontiguousarray(array, dtype=buffer.dtype.numpy)
    for root in program.roots:
        if id(root) in memory:
            continue
        if root.role == "constant":
            memory[id(root)] = root.data
        elif root.role == "error":
            memory[id(root)] = np.zeros(root.shape, root.dtype.numpy)
        else:
            # Never zeros: a kernel that reads before writing should not pass by luck.
            memory[id(root)] = _aligned_full(max(root.span, 1), _poison(root), root.dtype.numpy)
    for step in program.steps:
        fn = compile_kernel(step.kernel)
        try:
            fn(*(_argument(p, memory) for p in step.kernel.params))
        except BoundsError:
            record = memory[id(record_of(step.kernel))]
            raise bounds_error(step.kernel, record, step) from None
    return [_argument(b, memory).reshape(b.shape).copy() for b in program.outputs]


def _aligned_full(size: int, fill: float, dtype: np.dtype, alignment: int = 64
                  ) -> np.ndarray:
    """A 1-D array of ``size`` elements filled with ``fill``, its data ``alignment``-aligned
    (the memory planner's guarantee, which kernels may assume)."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(size * itemsize + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    array = raw[start:start + size * itemsize].view(dtype)
    array[...] = fill
    return array


def _poison(buffer: Buffer) -> float | int:
    return np.nan if buffer.dtype.is_float else 0x5A
