"""FakeQuantize-1: the spec's piecewise formula, its edge cases, broadcasting and errors.

The edge-case expectations are the ones observed from OpenVINO's core reference
(facts sheet section 2.5): half-to-even rounding at exact midpoints, mirrored bins for
il > ih, inverted outputs for ol > oh, a step function for il == ih, NaN -> NaN, +-inf -> oh/ol.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpjit import dtypes
from lpjit.attributes import Attributes
from lpjit.errors import BadAttributeError, GraphError, ShapeError
from lpjit.graph import Constant, Origin, Parameter, Value
from lpjit.ops.quantize import FakeQuantize
from lpjit.reference import evaluate_node
from lpjit.reference.quantize import fake_quantize

ORIGIN = Origin("17", "conv1/fq_weights", "FakeQuantize", "opset1")


def parameter(shape: tuple[int, ...], dtype: dtypes.DType = dtypes.f32) -> Value:
    return Parameter(origin=Origin("0", "x", "Parameter", "opset1"), inputs=(),
                     element_type=dtype, shape=shape).output


def constant(value: object, dtype: type = np.float32) -> Value:
    return Constant.of(np.asarray(value, dtype), Origin("1", "c", "Const", "opset1")).output


def fq_node(x_shape: tuple[int, ...], ranges: list[np.ndarray], levels: int,
            dtype: dtypes.DType = dtypes.f32, **fields: object) -> FakeQuantize:
    inputs = [parameter(x_shape, dtype), *(constant(r, dtype.numpy) for r in ranges)]
    return FakeQuantize(origin=ORIGIN, inputs=inputs, levels=levels, **fields)


def run_fq(x: np.ndarray, il: float, ih: float, ol: float, oh: float, levels: int
           ) -> np.ndarray:
    """Evaluate a FakeQuantize node with scalar ranges on ``x`` (through the executor)."""
    ranges = [np.float32(v) for v in (il, ih, ol, oh)]
    node = fq_node(x.shape, ranges, levels)
    (y,) = evaluate_node(node, [x, *ranges])
    return y


# --- the edge cases of facts sheet 2.5 --------------------------------------------------------


def test_exact_midpoints_round_half_to_even():
    """il=ol=0, ih=oh=255, L=256: the bin index is x itself, so .5 ties go to the even one."""
    x = np.array([0.5, 1.5, 2.5, 3.5, 100.5, 101.5, 254.5, -0.5, 255.5], np.float32)
    y = run_fq(x, 0, 255, 0, 255, 256)
    np.testing.assert_array_equal(y, [0, 2, 2, 4, 100, 102, 254, 0, 255])


def test_symmetric_range_midpoints():
    """il=ol=-128, ih=oh=127: -127.5 -> -128, -0.5 -> 0, 0.5 -> 0, 2.5 -> 2."""
    x = np.array([-127.5, -0.5, 0.5, 2.5], np.float32)
    y = run_fq(x, -128, 127, -128, 127, 256)
    np.testing.assert_array_equal(y, [-128, 0, 0, 2])


X_STEPS = np.arange(-2.0, 2.01, 0.5, dtype=np.float32)  # -2, -1.5, ..., 2


def test_input_low_above_input_high_mirrors_the_bins():
    """il=1 > ih=-1, ol=0, oh=10, L=11: the formula runs backwards between -1 and 1."""
    y = run_fq(X_STEPS, 1, -1, 0, 10, 11)
    np.testing.assert_array_equal(y, [0, 0, 0, 8, 5, 2, 0, 10, 10])


def test_output_low_above_output_high_inverts_the_output():
    y = run_fq(X_STEPS, -1, 1, 10, 0, 11)
    np.testing.assert_array_equal(y, [10, 10, 10, 8, 5, 2, 0, 0, 0])


@pytest.mark.parametrize("levels", [2, 16, 256])
def test_equal_input_limits_give_a_step_function(levels):
    """il == ih: x <= il -> ol, x > il -> oh; never a division by zero (no NaN, no inf)."""
    x = np.array([-3.0, 0.25, 0.5, 0.50001, 7.0], np.float32)
    y = run_fq(x, 0.5, 0.5, -1, 3, levels)
    np.testing.assert_array_equal(y, [-1, -1, -1, 3, 3])


@pytest.mark.parametrize("il, ih, ol, oh", [(0, 255, 0, 255), (1, -1, 0, 10), (0.5, 0.5, -1, 3)])
def test_nan_stays_nan(il, ih, ol, oh):
    x = np.array([np.nan, 0.25, np.nan], np.float32)
    y = run_fq(x, il, ih, ol, oh, 256)
    assert np.isnan(y[0]) and np.isnan(y[2]) and not np.isnan(y[1])


@pytest.mark.parametrize("il, ih, ol, oh", [(0, 255, 0, 255), (1, -1, 0, 10), (-1, 1, 10, 0),
                                            (0.5, 0.5, -1, 3)])
def test_infinities_go_to_the_output_limits(il, ih, ol, oh):
    """-inf <= min(il, ih) gives ol; +inf > max(il, ih) gives oh."""
    x = np.array([-np.inf, np.inf], np.float32)
    np.testing.assert_array_equal(run_fq(x, il, ih, ol, oh, 256), [ol, oh])


def test_boundaries_are_asymmetric():
    """x == min(il, ih) gives ol (<=); x == max(il, ih) is quantized, not forced to oh (>)."""
    y = run_fq(np.array([-1.0, 1.0], np.float32), -1, 1, 0.0, 4.0, 5)
    np.testing.assert_array_equal(y, [0.0, 4.0])
    # With il > ih, x == max(il, ih) == il is the formula's zero point: it gives ol.
    y = run_fq(np.array([-1.0, 1.0], np.float32), 1, -1, 0.0, 4.0, 5)
    np.testing.assert_array_equal(y, [0.0, 0.0])


# --- the formula and its order of operations -------------------------------------------------


def _fq_scalar(x: float, il: float, ih: float, ol: float, oh: float, levels: int) -> np.float32:
    """One element of the spec, with numpy float32 scalars in OpenVINO's order."""
    f = np.float32
    x, il, ih, ol, oh = f(x), f(il), f(ih), f(ol), f(oh)
    if x <= min(il, ih):
        return ol
    if x > max(il, ih):
        return oh
    steps = f(levels - 1)
    return f(f(np.rint(f(f(x - il) / f(ih - il)) * steps)) / steps * f(oh - ol)) + ol


def test_each_range_input_broadcasts_independently():
    """il per channel (axis 1), ih scalar, ol along the last axis, oh per batch: every element
    uses its own four broadcast values."""
    rng = np.random.default_rng(7)
    x = rng.uniform(-3, 3, (2, 3, 2, 4)).astype(np.float32)
    il = rng.uniform(-2, -0.5, (1, 3, 1, 1)).astype(np.float32)
    ih = np.float32(1.5)
    ol = rng.uniform(-1, 0, (4,)).astype(np.float32)
    oh = rng.uniform(1, 2, (2, 1, 1, 1)).astype(np.float32)
    node = fq_node(x.shape, [il, ih, ol, oh], 16)
    (y,) = evaluate_node(node, [x, il, ih, ol, oh])
    b = [np.broadcast_to(r, x.shape) for r in (il, ih, ol, oh)]
    for index in itertools.product(*map(range, x.shape)):
        expected = _fq_scalar(x[index], *(r[index] for r in b), 16)
        assert y[index] == expected, index


def test_float32_arithmetic_order_matters_and_is_openvinos():
    """(x - il) / (ih - il) * (L-1) in float32 differs from the FMA form at some near-ties;
    the reference must reproduce the division form bit for bit."""
    rng = np.random.default_rng(8)
    il, ih, levels = np.float32(-0.37), np.float32(1.91), 256
    k = rng.integers(0, 255, 2000)
    ties = (il + (k + 0.5) * (ih - il) / 255).astype(np.float32)  # near bin midpoints
    x = np.concatenate([ties, np.nextafter(ties, np.float32(np.inf))])
    y = fake_quantize(x, il, ih, np.float32(0), np.float32(255), levels)
    expected = np.array([_fq_scalar(v, il, ih, 0, 255, levels) for v in x], np.float32)
    np.testing.assert_array_equal(y, expected)
    # The CPU plugin's form, fma(x, scale, shift), picks another bin for some of these inputs.
    scale = np.float32(levels - 1) / (ih - il)
    shift = -il * scale
    fma = (x.astype(np.float64) * scale + np.float64(shift)).astype(np.float32)
    assert np.any(np.rint(fma) != y)


@settings(max_examples=200, deadline=None)
@given(st.floats(-100, 100, width=32), st.floats(0.015625, 50, width=32),
       st.floats(-10, 10, width=32), st.floats(-10, 10, width=32),
       st.sampled_from([2, 3, 15, 16, 255, 256]),
       st.lists(st.floats(-200, 200, width=32), min_size=1, max_size=16))
def test_outputs_lie_on_the_output_grid(il, width, ol, oh, levels, values):
    """For il < ih every output is ol + k * (oh - ol) / (L-1) with k in 0..L-1, and k is the
    nearest bin of the clipped input (within float32 rounding)."""
    ih = np.float32(il + width)
    x = np.array(values, np.float32)
    y = fake_quantize(x, il, ih, ol, oh, levels).astype(np.float64)
    span = float(oh) - float(ol)
    if span == 0:
        np.testing.assert_array_equal(y, np.float64(np.float32(ol)))
        return
    k = (y - float(np.float32(ol))) / span * (levels - 1)
    np.testing.assert_allclose(k, np.round(k), atol=1e-3)
    assert np.all((np.round(k) >= 0) & (np.round(k) <= levels - 1))
    clipped = np.clip(x.astype(np.float64), float(np.float32(il)), float(ih))
    exact = (clipped - float(np.float32(il))) / (float(ih) - float(np.float32(il))) * (levels - 1)
    assert np.all(np.abs(np.round(k) - exact) <= 0.5 + 1e-3)


def test_f16_data_is_computed_in_float32_and_returned_as_f16():
    x = np.array([0.3, 1.7, 2.5, 9.0], np.float16)
    ranges = [np.float16(v) for v in (0, 4, 0, 8)]
    node = fq_node(x.shape, ranges, 5, dtypes.f16)
    (y,) = evaluate_node(node, [x, *ranges])
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, [0, 4, 4, 8])  # bins of width 1, outputs 2 apart; 2.5 -> 2


# --- attributes and inference errors ----------------------------------------------------------


def test_levels_below_two_is_a_bad_attribute():
    with pytest.raises(BadAttributeError, match=r"^FakeQuantize 'conv1/fq_weights' \(layer 17\): "
                                                r"levels=1 is invalid; expected levels >= 2$"):
        FakeQuantize.from_ir(Attributes({"levels": "1", "auto_broadcast": "numpy"}, ORIGIN))
    with pytest.raises(BadAttributeError, match=r"levels=0 is invalid; expected levels >= 2"):
        fq_node((2,), [np.float32(0), np.float32(1), np.float32(0), np.float32(1)], 0)


def test_attributes_round_trip():
    values = {"levels": "256", "auto_broadcast": "numpy"}
    fields = FakeQuantize.from_ir(Attributes(values, ORIGIN))
    assert fields == {"levels": 256, "auto_broadcast": "numpy"}
    node = fq_node((2, 3), [np.float32(0)] * 4, **fields)
    assert node.to_ir() == values


def test_pdpd_broadcast_is_rejected():
    with pytest.raises(BadAttributeError, match=r"attribute auto_broadcast=\"pdpd\" is invalid; "
                                                r"expected 'numpy' or 'none'"):
        FakeQuantize.from_ir(Attributes({"levels": "256", "auto_broadcast": "pdpd"}, ORIGIN))


def re_tuple(shape: tuple[int, ...]) -> str:
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("bad_shape", [(1, 4, 1, 1), (2, 3, 1, 1), (3, 4, 4, 1, 1)])
def test_range_must_broadcast_to_the_data(bad_shape):
    ranges = [np.zeros(bad_shape, np.float32)] + [np.float32(1)] * 3
    with pytest.raises(ShapeError, match=r"^FakeQuantize 'conv1/fq_weights' \(layer 17\): "
                                         rf"input 1 \(input_low\) has shape "
                                         rf"{re_tuple(bad_shape)}, which does not broadcast to "
                                         r"the data shape \(1, 3, 4, 4\) \(numpy rules\)$"):
        fq_node((1, 3, 4, 4), ranges, 256)


def test_auto_broadcast_none_needs_equal_shapes():
    ranges = [np.float32(0), np.ones((2, 3), np.float32), np.float32(0), np.float32(1)]
    with pytest.raises(ShapeError, match=r"input 1 \(input_low\) has shape \(\); "
                                         r"auto_broadcast=none needs the data shape \(2, 3\)"):
        fq_node((2, 3), ranges, 256, auto_broadcast="none")


def test_range_type_must_match_data():
    inputs = [parameter((2,)), constant(0.0), constant(1.0, np.float16), constant(0.0),
              constant(1.0)]
    with pytest.raises(ShapeError, match=r"input 2 \(input_high\) has element type f16; "
                                         r"expected the data's type f32"):
        FakeQuantize(origin=ORIGIN, inputs=inputs, levels=256)


def test_integer_data_is_rejected():
    inputs = [parameter((2,), dtypes.i8)] + [constant(0, np.int8)] * 4
    with pytest.raises(ShapeError, match=r"input 0 \(data\) has element type i8; expected a "
                                         r"float type"):
        FakeQuantize(origin=ORIGIN, inputs=inputs, levels=256)


def test_five_inputs_required():
    with pytest.raises(GraphError, match=r"has 4 inputs; expected 5"):
        FakeQuantize(origin=ORIGIN, inputs=[parameter((2,))] + [constant(0.0)] * 3, levels=256)
