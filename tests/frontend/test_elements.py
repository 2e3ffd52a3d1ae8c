"""Element byte layouts: decode/encode against the byte patterns OpenVINO writes (facts 1.6)."""

from __future__ import annotations

import numpy as np
import pytest

from lpjit import dtypes
from lpjit.errors import ExportError
from lpjit.frontend import elements


def _raw(hex_bytes: str) -> np.ndarray:
    return np.frombuffer(bytes.fromhex(hex_bytes), np.uint8)


@pytest.mark.parametrize("dtype, values, hex_bytes", [
    (dtypes.u4, [1, 2, 3, 15, 0], "21f300"),
    (dtypes.i4, [1, -2, 3, -8, 7], "e18307"),
    (dtypes.u1, [1, 0, 1, 1, 0, 0, 0, 1, 1], "b180"),
    (dtypes.f16, [1.0], "003c"),
    (dtypes.bf16, [1.0, 2.5], "803f2040"),
    (dtypes.boolean, [True, False, True], "010001"),
    (dtypes.i16, [-2, 258], "feff0201"),
])
def test_known_byte_patterns(dtype, values, hex_bytes):
    """Packed types put element 0 in the low nibble (4-bit) or the MSB (u1); bf16 is the
    upper half of an f32; everything is little-endian."""
    decoded = elements.decode(_raw(hex_bytes), dtype, (len(values),))
    np.testing.assert_array_equal(decoded, np.array(values, dtype.numpy))
    assert decoded.dtype == dtype.numpy
    assert elements.encode(decoded, dtype) == bytes.fromhex(hex_bytes)


@pytest.mark.parametrize("dtype", [dtypes.i4, dtypes.u4, dtypes.u1, dtypes.i8, dtypes.u8,
                                   dtypes.i32, dtypes.u64, dtypes.f32, dtypes.f64, dtypes.f16])
def test_round_trip_random(dtype):
    """encode is the inverse of decode on random values of every implemented type."""
    rng = np.random.default_rng(7)
    shape = (3, 5, 7)
    if dtype.is_float:
        values = rng.standard_normal(shape).astype(dtype.numpy)
    else:
        values = rng.integers(int(dtype.min), int(dtype.max), shape, endpoint=True,
                              dtype=dtype.numpy)
    raw = np.frombuffer(elements.encode(values, dtype), np.uint8)
    assert raw.size == elements.byte_size(dtype, values.size)
    np.testing.assert_array_equal(elements.decode(raw, dtype, shape), values)


def test_bf16_encode_rounds_to_nearest_even():
    """An f32 between two bf16 values rounds to the nearer one, ties to even."""
    values = np.array([1.0 + 2**-8, 1.0 + 3 * 2**-8, 1.0 + 2**-9], np.float32)
    decoded = elements.decode(np.frombuffer(elements.encode(values, dtypes.bf16), np.uint8),
                              dtypes.bf16, (3,))
    np.testing.assert_array_equal(decoded, np.array([1.0, 1.0 + 2**-6, 1.0], np.float32))


def test_byte_sized_decode_is_a_readonly_view():
    """Byte-sized types decode zero-copy, also at an unaligned offset."""
    rng = np.random.default_rng(3)
    values = rng.standard_normal(9).astype(np.float32)
    buffer = np.frombuffer(values.tobytes() + b"\x00", np.uint8)
    unaligned = np.concatenate([np.zeros(1, np.uint8), buffer])
    unaligned.flags.writeable = False
    view = elements.decode(unaligned[1:], dtypes.f32, (3, 3))
    assert np.shares_memory(view, unaligned)
    assert not view.flags.writeable
    np.testing.assert_array_equal(view.reshape(-1), values)


def test_packed_size_rounds_up():
    """5 x i4 need 3 bytes; 9 x u1 need 2 bytes."""
    assert elements.byte_size(dtypes.i4, 5) == 3
    assert elements.byte_size(dtypes.u1, 9) == 2
    assert elements.byte_size(dtypes.f32, 10**12) == 4 * 10**12


def test_encode_rejects_out_of_range_packed_values():
    with pytest.raises(ExportError, match=r"i4 constant has values in \[-9, 3\]; "
                                          r"expected \[-8, 7\]"):
        elements.encode(np.array([-9, 3]), dtypes.i4)
