"""The calling convention shared by both kernel executors (LLVM and numba).

A kernel is called with one argument per parameter, in order:

* a buffer parameter takes a numpy array of the buffer's element type; for a buffer with
  row-major strides, an array of exactly its shape (C-contiguous); otherwise a 1-D contiguous
  array holding at least ``buffer.span`` elements (the raw memory the strides address);
* a scalar parameter takes a Python or numpy number (converted to its type).

Outputs are written in place.  The native function additionally takes ``i32 threads`` last
(0 = the OpenMP default team size).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lowering.loop_ir import Buffer, Kernel, Var, contiguous_strides
from lpjit.errors import InputError


def _fail(kernel: Kernel, message: str) -> InputError:
    return InputError(f"kernel '{kernel.name}': {message}", kernel.origin)


def buffer_memory(kernel: Kernel, buffer: Buffer, array: object) -> np.ndarray:
    """The 1-D memory behind ``array`` passed for parameter ``buffer`` (a view, never a copy)."""
    if not isinstance(array, np.ndarray):
        raise _fail(kernel, f"buffer '{buffer.name}' expects a numpy array, got "
                            f"{type(array).__name__}")
    if array.dtype != buffer.dtype.numpy:
        raise _fail(kernel, f"buffer '{buffer.name}' expects dtype {buffer.dtype.numpy}, got "
                            f"{array.dtype}")
    if not array.flags.c_contiguous:
        raise _fail(kernel, f"buffer '{buffer.name}' needs a C-contiguous array")
    if buffer.role == "output" and not array.flags.writeable:
        raise _fail(kernel, f"output buffer '{buffer.name}' is read-only")
    if buffer.alignment and array.ctypes.data % buffer.alignment:
        raise _fail(kernel, f"buffer '{buffer.name}' must be {buffer.alignment}-byte aligned")
    if buffer.strides == contiguous_strides(buffer.shape):
        if array.shape != buffer.shape:
            raise _fail(kernel, f"buffer '{buffer.name}' expects shape {buffer.shape}, got "
                                f"{array.shape}")
    elif array.ndim != 1 or array.size < buffer.span:
        raise _fail(kernel, f"strided buffer '{buffer.name}' expects a 1-D array of at least "
                            f"{buffer.span} elements, got shape {array.shape}")
    return array.reshape(-1)


def scalar_value(kernel: Kernel, var: Var, value: object) -> np.generic:
    """``value`` converted to the numpy scalar type of parameter ``var``."""
    if not isinstance(value, (int, float, bool, np.number, np.bool_)):
        raise _fail(kernel, f"scalar '{var.name}' expects a number, got {type(value).__name__}")
    return var.type.numpy.type(value)


def bind_arguments(kernel: Kernel, args: Sequence[object]) -> list[np.ndarray | np.generic]:
    """Check ``args`` against ``kernel.params``: flat memory per buffer, typed scalars."""
    if len(args) != len(kernel.params):
        names = ", ".join(p.name for p in kernel.params)
        raise _fail(kernel, f"expects {len(kernel.params)} arguments ({names}), got {len(args)}")
    bound: list[np.ndarray | np.generic] = []
    for param, arg in zip(kernel.params, args):
        if isinstance(param, Buffer):
            bound.append(buffer_memory(kernel, param, arg))
        else:
            bound.append(scalar_value(kernel, param, arg))
    return bound
