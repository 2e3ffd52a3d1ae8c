"""Element types of the graph IR, with their OpenVINO IR spellings and numpy storage.

A ``DType`` is a small frozen value.  Sub-byte types (i4, u4, u1) have a numpy
*unpacked* dtype (one element per byte) used after decoding a constant; their packed
layout is handled by ``lpjit.frontend.elements``.
"""

from __future__ import annotations

import attrs
import numpy as np

from lpjit.errors import UnsupportedTypeError


@attrs.frozen
class DType:
    """An element type: IR name (``f32``), bit width, kind (``f``, ``i``, ``u``, ``b``)."""

    name: str
    bits: int
    kind: str

    @property
    def is_float(self) -> bool:
        return self.kind == "f"

    @property
    def is_integer(self) -> bool:
        return self.kind in ("i", "u")

    @property
    def is_signed(self) -> bool:
        return self.kind in ("i", "f")

    @property
    def is_packed(self) -> bool:
        """True for sub-byte types stored several to a byte in the .bin."""
        return self.bits < 8

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype that holds one (unpacked) element."""
        return np.dtype(_NUMPY_NAMES[self.name])

    @property
    def min(self) -> int | float:
        if self.is_float:
            return float(np.finfo(self.numpy).min) if self.name != "bf16" else -3.3895314e38
        if self.kind == "b":
            return 0
        return -(1 << (self.bits - 1)) if self.kind == "i" else 0

    @property
    def max(self) -> int | float:
        if self.is_float:
            return float(np.finfo(self.numpy).max) if self.name != "bf16" else 3.3895314e38
        if self.kind == "b":
            return 1
        return (1 << (self.bits - 1)) - 1 if self.kind == "i" else (1 << self.bits) - 1

    def __repr__(self) -> str:
        return self.name

    __str__ = __repr__


f16 = DType("f16", 16, "f")
bf16 = DType("bf16", 16, "f")
f32 = DType("f32", 32, "f")
f64 = DType("f64", 64, "f")
i4 = DType("i4", 4, "i")
u4 = DType("u4", 4, "u")
u1 = DType("u1", 1, "u")
i8 = DType("i8", 8, "i")
u8 = DType("u8", 8, "u")
i16 = DType("i16", 16, "i")
u16 = DType("u16", 16, "u")
i32 = DType("i32", 32, "i")
u32 = DType("u32", 32, "u")
i64 = DType("i64", 64, "i")
u64 = DType("u64", 64, "u")
boolean = DType("boolean", 8, "b")

ALL: tuple[DType, ...] = (f16, bf16, f32, f64, i4, u4, u1, i8, u8, i16, u16, i32, u32, i64, u64,
                          boolean)
BY_NAME: dict[str, DType] = {t.name: t for t in ALL}

# bf16 values are held as f32 once decoded (numpy has no bf16).
_NUMPY_NAMES = {
    "f16": "float16", "bf16": "float32", "f32": "float32", "f64": "float64",
    "i4": "int8", "u4": "uint8", "u1": "uint8", "i8": "int8", "u8": "uint8",
    "i16": "int16", "u16": "uint16", "i32": "int32", "u32": "uint32",
    "i64": "int64", "u64": "uint64", "boolean": "bool",
}

# Port precisions are upper-case aliases; BIN is u1, BOOL is boolean.
_ALIASES = {"bin": "u1", "bool": "boolean", "fp32": "f32", "fp16": "f16", "fp64": "f64"}

# Known to OpenVINO, deliberately not implemented by lpjit.
KNOWN_UNSUPPORTED = frozenset({
    "nf4", "u2", "u3", "u6", "f8e4m3", "f8e5m2", "f8e8m0", "f4e2m1", "string", "dynamic",
    "undefined",
})


def from_ir_name(name: str) -> DType:
    """Map an IR element type (``f32``, ``FP32``, ``BOOL``, ...) to a ``DType``.

    Raises ``UnsupportedTypeError`` for types lpjit does not implement.
    """
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in BY_NAME:
        return BY_NAME[key]
    supported = ", ".join(t.name for t in ALL)
    if key in KNOWN_UNSUPPORTED:
        raise UnsupportedTypeError(
            f"element type '{name}' is not supported by lpjit; supported types: {supported}")
    raise UnsupportedTypeError(f"unknown element type '{name}'; expected one of: {supported}")


def from_numpy(dtype: np.dtype) -> DType:
    """The ``DType`` that stores numpy ``dtype`` (``float32`` -> f32, ``bool`` -> boolean)."""
    dtype = np.dtype(dtype)
    for t in (f16, f32, f64, i8, u8, i16, u16, i32, u32, i64, u64, boolean):
        if t.numpy == dtype:
            return t
    raise UnsupportedTypeError(f"numpy dtype '{dtype}' has no lpjit element type")
