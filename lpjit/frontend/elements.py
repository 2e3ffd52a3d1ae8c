"""Byte layouts of IR element types: decode constants from the .bin, encode them back.

The rules (facts sheet 1.6), all little-endian and dense in C order:

* byte-sized types (f16 f32 f64 i8 u8 i16 u16 i32 u32 i64 u64 boolean) are stored as numpy
  stores them; decoding them is a zero-copy, read-only view of the buffer;
* ``bf16`` is the upper half of an f32; it decodes to float32 values;
* ``i4``/``u4`` are two per byte, element 0 in the LOW nibble; i4 is a two's complement nibble,
  sign-extended into int8; u4 decodes into uint8;
* ``u1`` is eight per byte, element 0 in the MOST significant bit; it decodes into uint8 0/1.

A packed constant's byte size is rounded up to whole bytes: ``ceil(numel * bits / 8)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lpjit import dtypes
from lpjit.dtypes import DType
from lpjit.errors import ExportError


def numel(shape: Sequence[int]) -> int:
    """Number of elements of ``shape``, as an exact Python int (no int64 overflow)."""
    count = 1
    for d in shape:
        count *= int(d)
    return count


def byte_size(dtype: DType, count: int) -> int:
    """Bytes that ``count`` elements of ``dtype`` occupy in the .bin (rounded up)."""
    return (count * dtype.bits + 7) // 8


def _storage(dtype: DType) -> np.dtype:
    """The little-endian numpy dtype of one stored element of a byte-sized type."""
    return dtype.numpy.newbyteorder("<") if dtype.numpy.itemsize > 1 else dtype.numpy


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def decode(raw: np.ndarray, dtype: DType, shape: Sequence[int]) -> np.ndarray:
    """The read-only array of ``dtype`` and ``shape`` stored in the uint8 buffer ``raw``.

    ``raw`` must hold at least ``byte_size(dtype, numel(shape))`` bytes (the caller checks);
    extra bytes are ignored.  Byte-sized types come back as a view of ``raw``.
    """
    shape = tuple(int(d) for d in shape)
    count = numel(shape)
    raw = raw[:byte_size(dtype, count)]
    if dtype.name == "bf16":
        halves = raw.view("<u2").astype(np.uint32)
        values = (halves << 16).view(np.float32)
    elif dtype.name in ("i4", "u4"):
        values = _unpack_nibbles(raw, count, signed=dtype.name == "i4")
    elif dtype.name == "u1":
        values = np.unpackbits(raw, count=count, bitorder="big")
    elif dtype.name == "boolean":
        values = raw.view(np.bool_) if raw.size == 0 or raw.max() <= 1 else raw != 0
    else:
        values = raw.view(_storage(dtype))
    return _readonly(values.reshape(shape))


def _unpack_nibbles(raw: np.ndarray, count: int, *, signed: bool) -> np.ndarray:
    """Two 4-bit elements per byte, element 0 in the low nibble; i4 sign-extended."""
    pairs = np.empty((raw.size, 2), np.uint8)
    pairs[:, 0] = raw & 0x0F
    pairs[:, 1] = raw >> 4
    values = pairs.reshape(-1)[:count]
    if signed:
        return ((values ^ 0x08).astype(np.int8) - np.int8(8)).astype(np.int8)
    return values


def encode(array: np.ndarray, dtype: DType) -> bytes:
    """The .bin bytes of ``array`` (decoded values) stored as ``dtype``: inverse of ``decode``.

    Raises ``ExportError`` when a value does not fit a packed type.
    """
    values = np.ascontiguousarray(array).reshape(-1)
    if dtype.name == "bf16":
        return _encode_bf16(values.astype(np.float32)).tobytes()
    if dtype.is_packed:
        ints = values.astype(np.int64)
        if ints.size and (ints.min() < dtype.min or ints.max() > dtype.max):
            raise ExportError(f"{dtype} constant has values in [{ints.min()}, {ints.max()}]; "
                              f"expected [{dtype.min}, {dtype.max}]")
        if dtype.name == "u1":
            return np.packbits(ints.astype(np.uint8), bitorder="big").tobytes()
        nibbles = (ints & 0x0F).astype(np.uint8)
        if nibbles.size % 2:
            nibbles = np.append(nibbles, np.uint8(0))
        return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()
    if dtype == dtypes.boolean:
        return values.astype(bool).astype(np.uint8).tobytes()
    return values.astype(_storage(dtype)).tobytes()


def _encode_bf16(values: np.ndarray) -> np.ndarray:
    """Upper 16 bits of each f32, rounded to nearest even (NaN kept quiet)."""
    bits = values.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    nan = np.isnan(values)
    halves = np.where(nan, (bits >> 16) | 0x40, rounded)
    return halves.astype("<u2")
