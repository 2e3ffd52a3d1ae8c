"""Quantize / Dequantize / FakeQuantize with constant ranges (``lowering.quant_forms``): the
compiled kernels equal the reference bit for bit on every level and at the exact thresholds of
the level function (found by binary search over float32 bit patterns), where a wrong select or
a reciprocal would show first."""

from __future__ import annotations

import numpy as np
import pytest
from lowp_graphs import const, fake_quantize, graph, origin, parameter

from lowering.lower_graph import LoweringOptions, lower_graph_to_loops
from lowering.program_exec import llvm_compiler, run_program
from lowering.quant_forms import constant_range, formula_values, level_values
from lowering.traversal import walk
from lpjit import dtypes, reference
from lpjit.ops import lowp
from lpjit.reference.lowp import level_index

F32 = np.float32
RNG = np.random.default_rng(20261127)
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
INF_KEY = 0x7F800000

# (il, ih, ol, oh, levels): ReLU ranges, signed ranges NNCF writes, tiny and huge widths
RANGES = [
    (0.0, 6.0, 0.0, 6.0, 256),
    (0.0, 2.4374237, 0.0, 2.4374237, 256),
    (-2.0150604, 1.9993179, -2.0150604, 1.9993179, 256),
    (-1.0, 1.0, -1.0, 1.0, 255),
    (-0.731, 1.913, -0.5, 0.25, 256),
    (1e-3, 1.0009999, -3.5, 7.25, 16),
    (-1e20, 3e20, -1e20, 3e20, 256),
    (0.5, 0.5000153, 0.0, 1.0, 2),
    (-7.5, -0.125, 2.0, -2.0, 256),
]


def _keys_to_floats(keys: np.ndarray) -> np.ndarray:
    keys = keys.astype(np.int64)
    return np.where(keys < 0, (-keys) | 0x80000000, keys).astype(np.uint32).view(F32)


def thresholds(level_of, levels: int) -> np.ndarray:
    """The smallest float32 reaching each level 1..L-1 of a monotone level function."""
    k = np.arange(1, levels)
    lo = np.full(k.shape, -INF_KEY - 1, np.int64)
    hi = np.full(k.shape, INF_KEY + 1, np.int64)
    while np.any(hi - lo > 1):
        mid = (lo + hi) // 2
        reached = level_of(_keys_to_floats(mid)) >= k
        hi, lo = np.where(reached, mid, hi), np.where(reached, lo, mid)
    return _keys_to_floats(np.minimum(hi, INF_KEY))


def probe_inputs(il: float, ih: float, levels: int) -> np.ndarray:
    """Each threshold and its float32 neighbours, the range ends, specials, random values."""
    edges = thresholds(lambda x: level_index(x, F32(il), F32(ih), levels), levels)
    near = [edges]
    for direction in (np.inf, -np.inf):
        step = edges
        for _ in range(2):
            step = np.nextafter(step, F32(direction))
            near.append(step)
    ends = np.array([il, ih, np.nextafter(F32(il), F32(-np.inf)), np.nextafter(F32(ih), F32(np.inf)),
                     0.0, -0.0, np.inf, -np.inf, np.nan, 3.4e38, -3.4e38], F32)
    width = F32(ih) - F32(il)
    spread = RNG.uniform(il - width, ih + width, 512).astype(F32)
    return np.concatenate([*near, ends, spread]).astype(F32)


def assert_same_bits(actual: np.ndarray, expected: np.ndarray) -> None:
    actual, expected = np.asarray(actual, F32), np.asarray(expected, F32)
    nan = np.isnan(expected)
    np.testing.assert_array_equal(np.isnan(actual), nan)
    bad = np.flatnonzero(actual[~nan].view(np.int32) != expected[~nan].view(np.int32))
    assert bad.size == 0, (actual[~nan][bad[:5]], expected[~nan][bad[:5]])


def compiled(g, data):
    program = lower_graph_to_loops(g, LoweringOptions(threads=1))
    return program, run_program(program, [data], llvm_compiler)[0]


def divisions(program) -> int:
    return sum(1 for s in program.steps for e in walk(s.kernel.body)
               if getattr(e, "op", None) == "div")


@pytest.mark.parametrize("il, ih, ol, oh, levels", RANGES)
def test_fake_quantize_matches_reference_at_every_threshold(il, ih, ol, oh, levels):
    data = probe_inputs(il, ih, levels)
    x = parameter(data.shape)
    g = graph([x], fake_quantize(x.output, il, ih, levels, ol, oh))
    expected, = reference.run(g, [data])
    program, actual = compiled(g, data)
    assert_same_bits(actual, expected)
    assert divisions(program) == 2         # constants folded: no range arithmetic at run time


@pytest.mark.parametrize("il, ih, ol, oh, levels", RANGES)
def test_quantize_then_dequantize_match_reference(il, ih, ol, oh, levels):
    data = probe_inputs(il, ih, levels)
    x = parameter(data.shape)
    q = lowp.Quantize(origin=origin("q", "Quantize"),
                      inputs=(x.output, const(np.float32(il)), const(np.float32(ih))),
                      levels=levels)
    g = graph([x], q.output)
    expected, = reference.run(g, [data])
    _, actual = compiled(g, data)
    np.testing.assert_array_equal(actual, np.asarray(expected).astype(np.uint8))

    every = np.arange(levels, dtype=np.uint8)
    p = parameter(every.shape, "q", dtypes.u8)
    dq = lowp.Dequantize(origin=origin("dq", "Dequantize"),
                         inputs=(p.output, const(np.float32(ol)), const(np.float32(oh))),
                         levels=levels)
    g = graph([p], dq.output)
    expected, = reference.run(g, [every])
    _, actual = compiled(g, every)
    assert_same_bits(actual, expected)


def test_constant_range_refuses_what_the_shortcut_cannot_prove():
    assert constant_range(0.0, 6.0) is not None
    assert constant_range(1.0, 1.0) is None            # empty range
    assert constant_range(2.0, -1.0) is None           # inverted
    assert constant_range(-3e38, 3e38) is None         # width overflows
    assert constant_range(None, 1.0) is None           # not a per-tensor constant
    assert constant_range(0.0, float("nan")) is None


def test_level_values_select_only_two_valued_levels():
    """NNCF's signed range: the formula's top level is not oh (the two-valued top level)."""
    values = level_values(-2.0150604, 1.9993179, 256)
    formula = formula_values(-2.0150604, 1.9993179, 256)
    assert formula[-1] != F32(1.9993179)
    assert values.high_value == float(F32(1.9993179)) and values.low_value is None
    relu = level_values(0.0, 6.0, 256)
    assert relu.high_value is None and relu.low_value is None
    assert level_values(None, 1.0, 256) is None
