"""Reference semantics of Quantize / Dequantize: exactly FakeQuantize's level index and values.

``Dequantize(Quantize(x))`` must be FakeQuantize bit for bit (up to the documented top-level
exception), on random data, exact midpoints, boundaries, per-channel ranges and the level
counts NNCF uses (256, 255, 16) plus binarization (2).
"""

from __future__ import annotations

import numpy as np
import pytest
from lowp_graphs import const, origin, parameter

from lpjit import dtypes
from lpjit.errors import ShapeError
from lpjit.ops.lowp import Dequantize, Quantize
from lpjit.reference import evaluate_node
from lpjit.reference.lowp import dequantize, level_index
from lpjit.reference.quantize import fake_quantize

LEVELS = (256, 255, 16, 2)


def quantize_dequantize(x, il, ih, ol, oh, levels):
    """Dequantize(Quantize(x)) through the evaluators of the two graph nodes."""
    p = parameter(np.shape(x))
    q_node = Quantize(origin=origin("q", "FakeQuantize"),
                      inputs=(p.output, const(np.float32(il)), const(np.float32(ih))),
                      levels=levels)
    (q,) = evaluate_node(q_node, [x, np.float32(il), np.float32(ih)])
    d_node = Dequantize(origin=origin("dq", "FakeQuantize"),
                        inputs=(q_node.output, const(np.float32(ol)), const(np.float32(oh))),
                        levels=levels)
    (y,) = evaluate_node(d_node, [q, np.float32(ol), np.float32(oh)])
    assert q.dtype == np.uint8
    return q, y


def top_level_is_exact(ol, oh) -> bool:
    """FakeQuantize's top level has one value: ``fl(fl(oh - ol) + ol) == oh``."""
    ol, oh = np.float32(ol), np.float32(oh)
    return bool(np.all((oh - ol) + ol == oh))


def random_ranges(rng, levels: int, signed: bool) -> tuple[np.float32, np.float32]:
    """A random input range whose top level is exact (see ``top_level_is_exact``)."""
    while True:
        high = np.float32(rng.uniform(0.5, 8.0))
        low = np.float32(-rng.uniform(0.1, 8.0)) if signed else np.float32(0)
        if top_level_is_exact(low, high):
            return low, high


def bits(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, np.float32).view(np.int32)


@pytest.mark.parametrize("levels", LEVELS)
@pytest.mark.parametrize("signed", [False, True])
def test_dequantize_quantize_is_fake_quantize_bit_for_bit(levels: int, signed: bool):
    """Random data over and beyond the range: identical bits to FakeQuantize, and the index is
    the one FakeQuantize's output encodes."""
    rng = np.random.default_rng(levels + signed)
    for _ in range(5):
        low, high = random_ranges(rng, levels, signed)
        x = rng.uniform(low - 1, high + 1, (4, 3, 17)).astype(np.float32)
        q, y = quantize_dequantize(x, low, high, low, high, levels)
        expected = fake_quantize(x, low, high, low, high, levels)
        np.testing.assert_array_equal(bits(y), bits(expected))
        encoded = np.rint((expected.astype(np.float64) - low) / (high - low) * (levels - 1))
        np.testing.assert_array_equal(q, encoded)


@pytest.mark.parametrize("levels", LEVELS)
def test_output_range_differs_from_input_range(levels: int):
    """ol/oh other than il/ih (including ol > oh) and an inverted input range: still FQ."""
    rng = np.random.default_rng(7)
    x = rng.uniform(-3, 3, 500).astype(np.float32)
    for il, ih, ol, oh in [(-1.5, 2.0, 0.0, 255.0), (-1.0, 1.0, 10.0, -6.0),
                           (1.0, -1.0, 0.0, 10.0)]:
        _, y = quantize_dequantize(x, il, ih, ol, oh, levels)
        np.testing.assert_array_equal(bits(y), bits(fake_quantize(x, il, ih, ol, oh, levels)))


def test_exact_midpoints_round_half_to_even():
    """Facts 2.3: with [0, 255] L256, 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, ..., 255.5 -> 255; with
    [-128, 127]: -127.5 -> -128, -0.5 -> 0, 0.5 -> 0, 2.5 -> 2."""
    x = np.array([0.5, 1.5, 2.5, 3.5, 100.5, 101.5, 254.5, -0.5, 255.5], np.float32)
    q, y = quantize_dequantize(x, 0, 255, 0, 255, 256)
    np.testing.assert_array_equal(q, [0, 2, 2, 4, 100, 102, 254, 0, 255])
    np.testing.assert_array_equal(y, q.astype(np.float32))
    x = np.array([-127.5, -0.5, 0.5, 2.5], np.float32)
    q, y = quantize_dequantize(x, -128, 127, -128, 127, 256)
    np.testing.assert_array_equal(y, [-128, 0, 0, 2])
    np.testing.assert_array_equal(bits(y), bits(fake_quantize(x, -128, 127, -128, 127, 256)))


@pytest.mark.parametrize("levels", LEVELS)
def test_boundaries_and_non_finite_inputs(levels: int):
    """x <= il -> 0 and x > ih -> L-1 (FQ's asymmetric comparisons); +-inf saturate; NaN -> 0
    (FakeQuantize gives NaN: the documented difference)."""
    il, ih = np.float32(-0.75), np.float32(1.25)
    x = np.array([il, np.nextafter(il, np.float32(-9)), np.nextafter(il, np.float32(9)), ih,
                  np.nextafter(ih, np.float32(9)), np.nextafter(ih, np.float32(-9)),
                  -np.inf, np.inf, np.nan], np.float32)
    q, y = quantize_dequantize(x, il, ih, il, ih, levels)
    assert q[0] == q[1] == 0 and q[3] == q[4] == q[5] == levels - 1
    assert q[2] == 0 and q[6] == 0 and q[7] == levels - 1 and q[8] == 0
    expected = fake_quantize(x, il, ih, il, ih, levels)
    np.testing.assert_array_equal(bits(y[:-1]), bits(expected[:-1]))
    assert np.isnan(expected[-1]) and y[-1] == il


def test_per_channel_ranges_broadcast_independently():
    """il/ih per channel [1,C,1,1], ol scalar, oh per channel: each broadcasts on its own."""
    rng = np.random.default_rng(3)
    channels = 5
    il = -rng.uniform(0.1, 2, (1, channels, 1, 1)).astype(np.float32)
    ih = rng.uniform(0.5, 3, (1, channels, 1, 1)).astype(np.float32)
    ol = np.float32(0)
    oh = rng.uniform(1, 9, (1, channels, 1, 1)).astype(np.float32)
    x = rng.uniform(-3, 4, (2, channels, 6, 7)).astype(np.float32)
    q = level_index(x, il, ih, 256)
    y = dequantize(q, ol, oh, 256)
    np.testing.assert_array_equal(bits(y), bits(fake_quantize(x, il, ih, ol, oh, 256)))


def test_top_level_has_two_values_when_oh_minus_ol_plus_ol_is_not_oh():
    """FakeQuantize's in-range top bin gives fl(fl(oh-ol)+ol), saturation gives oh; the level
    index cannot tell them apart and Dequantize returns oh: everything else is identical, and
    those elements differ by at most 2 ulps (documented in lpjit.reference.lowp)."""
    ol, oh = np.float32(-2.0150604), np.float32(1.9993179)      # an NNCF input range
    assert not top_level_is_exact(ol, oh)
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.uniform(-3, 3, 4000), rng.uniform(1.99, 2.0, 200)]).astype(
        np.float32)
    q, y = quantize_dequantize(x, ol, oh, ol, oh, 256)
    expected = fake_quantize(x, ol, oh, ol, oh, 256)
    differ = bits(y) != bits(expected)
    in_top_bin = (q == 255) & (x <= oh)
    assert differ.any() and np.array_equal(differ, in_top_bin)
    assert np.all(y[differ] == oh)
    assert np.all(np.abs(y[differ] - expected[differ]) <= 2 * np.spacing(oh))


@pytest.mark.parametrize("levels", [1, 257])
def test_quantize_rejects_levels_without_a_u8_index(levels: int):
    x = parameter((2, 3))
    with pytest.raises(ShapeError, match=f"'q' .*levels={levels} is invalid"):
        Quantize(origin=origin("q", "FakeQuantize"), inputs=(x.output, const(np.float32(0)),
                                                              const(np.float32(1))),
                 levels=levels)


def test_quantize_and_dequantize_check_their_inputs():
    """Quantize needs float data and ranges of its type that broadcast; Dequantize u8."""
    x = parameter((2, 3))
    with pytest.raises(ShapeError, match="input 1 \\(input_low\\) has shape \\(4,\\)"):
        Quantize(origin=origin("q", "FakeQuantize"),
                 inputs=(x.output, const(np.zeros(4, np.float32)), const(np.float32(1))),
                 levels=256)
    with pytest.raises(ShapeError, match="input 0 \\(level indices\\) has element type f32"):
        Dequantize(origin=origin("dq", "FakeQuantize"),
                   inputs=(x.output, const(np.float32(0)), const(np.float32(1))), levels=256)
    ints = parameter((2, 3), dtype=dtypes.i32)
    with pytest.raises(ShapeError, match="input 0 \\(data\\) has element type i32"):
        Quantize(origin=origin("q", "FakeQuantize"),
                 inputs=(ints.output, const(np.int32(0)), const(np.int32(1))), levels=256)
