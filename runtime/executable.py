"""``Executable``: a compiled program's entry point, called once per inference through ctypes.

An ``Executable`` knows only the entry point's address and what it expects: the input and
output buffers (element type, shape, alignment) and the arena size.  Each ``run`` allocates
its own outputs and arena (64-byte aligned numpy memory), so concurrent calls from several
Python threads share nothing; ctypes releases the GIL for the duration of the native call.
The object that owns the machine code (a JIT library today, a loaded ``.so`` later) is kept
alive in ``owner``.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

import attrs
import numpy as np

from lowering.loop_ir import Buffer
from lpjit.errors import InputError
from runtime.memory import ALIGNMENT

EntryFunction = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_int32)


def aligned_empty(shape: Sequence[int], dtype: np.dtype | type,
                  alignment: int = ALIGNMENT) -> np.ndarray:
    """An uninitialised C-contiguous array whose data pointer is a multiple of ``alignment``."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start:start + nbytes].view(dtype).reshape(tuple(shape))


@attrs.frozen
class BufferSpec:
    """What the entry point expects of one input or output array."""

    name: str
    shape: tuple[int, ...] = attrs.field(converter=tuple)
    dtype: np.dtype = attrs.field(converter=np.dtype)
    alignment: int = 0

    @classmethod
    def of(cls, buffer: Buffer) -> BufferSpec:
        return cls(buffer.name, buffer.shape, buffer.dtype.numpy, buffer.alignment)


class Executable:
    """Runs a program's entry point on numpy arrays (see the module docstring)."""

    def __init__(self, address: int, inputs: Sequence[BufferSpec], outputs: Sequence[BufferSpec],
                 arena_bytes: int, threads: int, owner: object) -> None:
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)
        self.arena_bytes, self.threads = arena_bytes, threads
        self.address, self.owner = address, owner
        self._entry = EntryFunction(address)

    def run(self, arrays: Sequence[np.ndarray], threads: int | None = None) -> list[np.ndarray]:
        """The outputs for ``arrays`` (in input order, already of the right dtype and shape;
        copied when not C-contiguous or not aligned as the code requires)."""
        if len(arrays) != len(self.inputs):
            raise InputError(f"the program takes {len(self.inputs)} inputs, got {len(arrays)}")
        inputs = [_prepared(spec, array) for spec, array in zip(self.inputs, arrays)]
        outputs = [aligned_empty(spec.shape, spec.dtype) for spec in self.outputs]
        arena = aligned_empty((max(self.arena_bytes, 1),), np.uint8)
        input_pointers = (ctypes.c_void_p * max(len(inputs), 1))(
            *(a.ctypes.data for a in inputs))
        output_pointers = (ctypes.c_void_p * max(len(outputs), 1))(
            *(a.ctypes.data for a in outputs))
        team = self.threads if threads is None else threads
        self._entry(input_pointers, output_pointers, arena.ctypes.data, team)
        return outputs

    def __repr__(self) -> str:
        return (f"<Executable at {self.address:#x}: {len(self.inputs)} inputs, "
                f"{len(self.outputs)} outputs, arena {self.arena_bytes} bytes>")


def _prepared(spec: BufferSpec, array: np.ndarray) -> np.ndarray:
    """``array`` as the entry point reads it: checked, C-contiguous and aligned."""
    if array.dtype != spec.dtype or array.shape != spec.shape:
        raise InputError(f"input '{spec.name}' is {array.dtype}{list(array.shape)}; the "
                         f"program expects {spec.dtype}{list(spec.shape)}")
    if not array.flags.c_contiguous or (spec.alignment and array.ctypes.data % spec.alignment):
        copy = aligned_empty(spec.shape, spec.dtype, max(spec.alignment, ALIGNMENT))
        copy[...] = array
        return copy
    return array
