"""``Executable``: a compiled program's entry point, called once per inference through ctypes.

An ``Executable`` knows only the entry point's address and what it expects: the input and
output buffers (element type, shape, alignment) and the arena size.  Each ``run`` allocates
its own outputs and uses an arena that belongs to the calling thread (64-byte aligned numpy
memory), so concurrent calls from several Python threads share nothing; ctypes releases the
GIL for the duration of the native call.
Alignment requests beyond 64 bytes are not supported (nothing asks for them).
The object that owns the machine code (a JIT library today, a loaded ``.so`` later) is kept
alive in ``owner``.  A checked program's error record follows the arena (``RECORD_BYTES``);
after each call ``failure(record)`` turns a recorded failure into the exception ``run`` raises.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Sequence

import attrs
import numpy as np

from lowering.bounds_checks import RECORD_BYTES, RECORD_SLOTS
from lowering.loop_ir import Buffer
from lpjit.errors import InputError
from runtime.memory import ALIGNMENT, align_up

EntryFunction = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_int32)


def aligned_empty(shape: Sequence[int], dtype: np.dtype | type) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts at a 64-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    block, _ = _aligned_block(nbytes)
    return block[:nbytes].view(dtype).reshape(tuple(shape))


@attrs.frozen
class BufferSpec:
    """What the entry point expects of one input or output array."""

    name: str
    shape: tuple[int, ...] = attrs.field(converter=tuple)
    dtype: np.dtype = attrs.field(converter=np.dtype)
    alignment: int = 0

    @classmethod
    def of(cls, buffer: Buffer) -> BufferSpec:
        """The spec of a program input or output buffer."""
        return cls(buffer.name, buffer.shape, buffer.dtype.numpy, buffer.alignment)

    @property
    def nbytes(self) -> int:
        """Size of the array in bytes."""
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


class Executable:
    """Runs a program's entry point on numpy arrays (see the module docstring).

    Each call allocates its outputs (views of one block, each 64-byte aligned).  The pointer
    tables and the arena live in a scratch block owned by the calling thread and reused by
    its later calls (no page faults on a fresh arena per call); concurrent calls from other
    threads use their own blocks.  Offsets inside both blocks are fixed here, once.
    """

    def __init__(self, address: int, inputs: Sequence[BufferSpec], outputs: Sequence[BufferSpec],
                 arena_bytes: int, threads: int, owner: object,
                 failure: Callable[[np.ndarray], Exception | None] | None = None) -> None:
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)
        self.arena_bytes, self.threads = arena_bytes, threads
        self.address, self.owner, self.failure = address, owner, failure
        self._entry = EntryFunction(address)
        self._output_offsets, self._outputs_bytes = _layout(
            [spec.nbytes for spec in self.outputs])
        self._pointers = len(self.inputs) + len(self.outputs)
        self._arena_offset = align_up(8 * self._pointers)
        self._record_offset = self._arena_offset + arena_bytes
        self._scratch_bytes = self._record_offset + (RECORD_BYTES if failure else 0)
        self._per_thread = threading.local()

    def run(self, arrays: Sequence[np.ndarray], threads: int | None = None) -> list[np.ndarray]:
        """The outputs for ``arrays`` (in input order, already of the right dtype and shape;
        copied when not C-contiguous or not aligned as the code requires)."""
        if len(arrays) != len(self.inputs):
            raise InputError(f"the program takes {len(self.inputs)} inputs, got {len(arrays)}")
        inputs = [_prepared(spec, array) for spec, array in zip(self.inputs, arrays)]
        outputs, output_base = _aligned_block(self._outputs_bytes)
        results = [outputs[offset:offset + spec.nbytes].view(spec.dtype).reshape(spec.shape)
                   for spec, offset in zip(self.outputs, self._output_offsets)]
        scratch, scratch_base = self._scratch_block()
        table = scratch[:8 * self._pointers].view(np.uintp)
        table[:len(inputs)] = [_address(a) for a in inputs]
        table[len(inputs):] = [output_base + offset for offset in self._output_offsets]
        team = self.threads if threads is None else threads
        self._entry(scratch_base, scratch_base + 8 * len(inputs),
                    scratch_base + self._arena_offset, team)
        if self.failure is not None:
            record = scratch[self._record_offset:self._record_offset + 8 * RECORD_SLOTS]
            error = self.failure(record.view(np.int64))
            if error is not None:
                raise error
        return results

    def _scratch_block(self) -> tuple[np.ndarray, int]:
        """This thread's pointer tables and arena (allocated on its first call)."""
        block = getattr(self._per_thread, "block", None)
        if block is None:
            block = self._per_thread.block = _aligned_block(self._scratch_bytes)
        return block

    def __repr__(self) -> str:
        return (f"<Executable at {self.address:#x}: {len(self.inputs)} inputs, "
                f"{len(self.outputs)} outputs, arena {self.arena_bytes} bytes>")


def _layout(sizes: Sequence[int]) -> tuple[list[int], int]:
    """Aligned offsets of consecutive blocks of ``sizes`` bytes, and the total."""
    offsets, total = [], 0
    for size in sizes:
        offsets.append(total)
        total = align_up(total + size)
    return offsets, total


def _aligned_block(nbytes: int) -> tuple[np.ndarray, int]:
    """``nbytes`` (at least 1) of uninitialised memory starting at a 64-byte boundary, and
    that boundary's address."""
    raw = np.empty(max(nbytes, 1) + ALIGNMENT, np.uint8)
    address = _address(raw)
    start = -address % ALIGNMENT
    return raw[start:start + max(nbytes, 1)], address + start


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def _prepared(spec: BufferSpec, array: np.ndarray) -> np.ndarray:
    """``array`` as the entry point reads it: checked, C-contiguous and aligned (to its
    element size, and to ``spec.alignment`` when the code requires more)."""
    if array.dtype != spec.dtype or array.shape != spec.shape:
        raise InputError(f"input '{spec.name}' is {array.dtype}{list(array.shape)}; the "
                         f"program expects {spec.dtype}{list(spec.shape)}")
    if not array.flags.c_contiguous or not array.flags.aligned or (
            spec.alignment and _address(array) % spec.alignment):
        copy = aligned_empty(spec.shape, spec.dtype)
        copy[...] = array
        return copy
    return array
