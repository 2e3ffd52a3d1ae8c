"""Activations and SoftMax: reference vs closed-form float64 math, inference errors, attributes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lpjit import dtypes
from lpjit.attributes import Attributes
from lpjit.errors import BadAttributeError, GraphError, ShapeError, UnsupportedOpError
from lpjit.graph import Constant, Node, Origin, Parameter, Value
from lpjit.ops import activations as act
from lpjit.ops.registry import IR_NAMES, lookup
from lpjit.reference import evaluate_node


def origin(ir_type: str, version: str = "opset1") -> Origin:
    return Origin("7", "act", ir_type, version)


def parameter(shape: tuple[int, ...], dtype: dtypes.DType = dtypes.f32) -> Value:
    return Parameter(origin=origin("Parameter"), inputs=(), element_type=dtype,
                     shape=shape).output


def constant(array: np.ndarray) -> Value:
    return Constant.of(array, origin("Const")).output


def build(cls: type[Node], *inputs: Value, **fields: object) -> Node:
    """A ``cls`` node named 'act' (layer 7) whose origin carries its IR type name."""
    return cls(origin=origin(IR_NAMES[cls][0]), inputs=inputs, **fields)


def evaluate(node: Node, *arrays: np.ndarray) -> np.ndarray:
    (out,) = evaluate_node(node, arrays)
    return out


def closed_form(fn, x: np.ndarray) -> np.ndarray:
    """``fn`` applied per element in float64 (Python's math module), the independent oracle."""
    return np.array([fn(float(v)) for v in x.reshape(-1)], np.float64).reshape(x.shape)


def _softplus(v: float) -> float:
    return v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v))


CLOSED_FORMS = [
    (act.Relu, lambda v: max(v, 0.0)),
    (act.Sigmoid, lambda v: 1 / (1 + math.exp(-v))),
    (act.Tanh, math.tanh),
    (act.Exp, math.exp),
    (act.Log, lambda v: math.log(abs(v) + 0.1)),
    (act.Erf, math.erf),
    (act.Sqrt, lambda v: math.sqrt(abs(v) + 0.1)),
    (act.Abs, abs),
    (act.Negative, lambda v: -v),
    (act.Floor, math.floor),
    (act.Ceiling, math.ceil),
    (act.HSwish, lambda v: v * min(max(v + 3, 0), 6) / 6),
    (act.HSigmoid, lambda v: min(max(v + 3, 0), 6) / 6),
    (act.Mish, lambda v: v * math.tanh(_softplus(v))),
    (act.SoftPlus, _softplus),
    (act.GeluV2, lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2)))),
]


@pytest.mark.parametrize("cls, fn", CLOSED_FORMS, ids=lambda c: getattr(c, "__name__", ""))
def test_unary_matches_closed_form(cls, fn):
    """Each unary activation equals its textbook formula to float32 rounding."""
    x = np.random.default_rng(1).uniform(-5, 5, (3, 4, 5)).astype(np.float32)
    if cls in (act.Log, act.Sqrt):
        x = np.abs(x) + np.float32(0.1)
        fn = {act.Log: math.log, act.Sqrt: math.sqrt}[cls]
    node = build(cls, parameter(x.shape))
    y = evaluate(node, x)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, closed_form(fn, x), rtol=2e-6, atol=1e-6)


def test_softplus_and_sigmoid_saturate_without_overflow():
    """Large |x|: softplus(x) -> x, softplus(-x) -> 0, sigmoid -> 0/1, no inf or NaN."""
    x = np.array([-200.0, -90.0, 90.0, 200.0], np.float32)
    softplus = evaluate(build(act.SoftPlus, parameter(x.shape)), x)
    np.testing.assert_allclose(softplus, [0.0, 0.0, 90.0, 200.0], atol=1e-30)
    sigmoid = evaluate(build(act.Sigmoid, parameter(x.shape)), x)
    np.testing.assert_array_equal(sigmoid, [0.0, 0.0, 1.0, 1.0])


@pytest.mark.parametrize("mode", ["erf", "tanh"])
def test_gelu_v7_modes(mode):
    """Gelu-7 erf is Gelu-2; tanh is 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))."""
    x = np.random.default_rng(2).uniform(-4, 4, (2, 9)).astype(np.float32)
    y = evaluate(build(act.GeluV7, parameter(x.shape), approximation_mode=mode), x)
    if mode == "erf":
        expected = closed_form(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))), x)
    else:
        c = math.sqrt(2 / math.pi)
        expected = closed_form(lambda v: 0.5 * v * (1 + math.tanh(c * (v + 0.044715 * v**3))),
                               x)
    np.testing.assert_allclose(y, expected, rtol=2e-6, atol=1e-7)


def test_gelu_tanh_differs_from_erf():
    """The two Gelu-7 modes are distinct functions (so a swapped mode would be caught)."""
    x = np.array([-2.5, -1.0, 1.5, 3.0], np.float32)
    erf = evaluate(build(act.GeluV7, parameter(x.shape), approximation_mode="erf"), x)
    tanh = evaluate(build(act.GeluV7, parameter(x.shape), approximation_mode="tanh"), x)
    assert np.max(np.abs(erf - tanh)) > 1e-4


def test_clamp_float_and_integer_bounds():
    """Float bounds clip as float32; integer tensors clip to ceil(min)..floor(max)."""
    x = np.array([-3.0, -2.5, 0.25, 3.7, 9.0], np.float32)
    y = evaluate(build(act.Clamp, parameter(x.shape), min=-2.5, max=3.7), x)
    np.testing.assert_array_equal(y, np.array([-2.5, -2.5, 0.25, 3.7, 3.7], np.float32))
    xi = np.array([-5, -3, -2, 0, 3, 4, 100], np.int8)
    yi = evaluate(build(act.Clamp, parameter(xi.shape, dtypes.i8), min=-2.5, max=3.7), xi)
    np.testing.assert_array_equal(yi, np.array([-2, -2, -2, 0, 3, 3, 3], np.int8))
    assert yi.dtype == np.int8


def test_prelu_per_channel_slope_applies_along_axis_1():
    """A 1-D slope as long as dim 1 scales channel c of a rank-3 input by slope[c]."""
    x = np.random.default_rng(3).uniform(-1, 1, (2, 3, 3)).astype(np.float32)
    slope = np.array([0.1, 0.2, 0.3], np.float32)
    y = evaluate(build(act.PRelu, parameter(x.shape), constant(slope)), x, slope)
    expected = np.where(x < 0, x * slope[None, :, None], x)
    np.testing.assert_array_equal(y, expected)
    # numpy broadcasting along the last axis would give something else here
    assert not np.array_equal(y, np.where(x < 0, x * slope, x))


@pytest.mark.parametrize("x_shape, slope_shape", [
    ((2, 3, 4), (4,)),       # 1-D, not the channel length: numpy broadcast (last axis)
    ((2, 3, 4), (3, 1)),     # numpy broadcast over the last two axes
    ((2, 3, 4), ()),         # scalar slope
    ((5,), (5,)),            # rank-1 data: "channel" is axis 0
    ((2, 3, 4), (1, 3, 1)),  # explicit broadcastable shape
])
def test_prelu_other_slopes_broadcast_numpy(x_shape, slope_shape):
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, x_shape).astype(np.float32)
    slope = rng.uniform(0.1, 0.5, slope_shape).astype(np.float32)
    y = evaluate(build(act.PRelu, parameter(x_shape), constant(slope)), x, slope)
    np.testing.assert_array_equal(y, np.where(x < 0, x * slope, x))


def test_swish_default_and_explicit_beta():
    x = np.random.default_rng(5).uniform(-6, 6, (4, 5)).astype(np.float32)
    y1 = evaluate(build(act.Swish, parameter(x.shape)), x)
    np.testing.assert_allclose(y1, closed_form(lambda v: v / (1 + math.exp(-v)), x),
                               rtol=2e-6, atol=1e-7)
    beta = np.array(1.7, np.float32)
    y2 = evaluate(build(act.Swish, parameter(x.shape), constant(beta)), x, beta)
    np.testing.assert_allclose(y2, closed_form(lambda v: v / (1 + math.exp(-1.7 * v)), x),
                               rtol=2e-6, atol=1e-7)


def _softmax64(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("cls, axis, normalized", [
    (act.SoftmaxV1, 0, 0), (act.SoftmaxV1, 2, 2), (act.SoftmaxV8, -1, 2),
    (act.SoftmaxV8, -3, 0), (act.LogSoftmax, 1, 1), (act.LogSoftmax, -2, 1),
])
def test_softmax_family(cls, axis, normalized):
    """Softmax rows sum to 1 and equal exp(x)/sum(exp(x)); LogSoftmax is their log."""
    x = np.random.default_rng(6).uniform(-8, 8, (2, 3, 4)).astype(np.float32)
    node = build(cls, parameter(x.shape), axis=axis)
    assert node.normalized_axis == normalized
    y = evaluate(node, x)
    expected = _softmax64(x, normalized)
    if cls is act.LogSoftmax:
        expected = np.log(expected)
    np.testing.assert_allclose(y, expected, rtol=2e-6, atol=1e-6)


def test_softmax_is_stable_for_large_inputs():
    x = np.array([[1000.0, 1000.0, -1000.0]], np.float32)
    y = evaluate(build(act.SoftmaxV8, parameter(x.shape), axis=-1), x)
    np.testing.assert_allclose(y, [[0.5, 0.5, 0.0]])
    logs = evaluate(build(act.LogSoftmax, parameter(x.shape), axis=1), x)
    np.testing.assert_allclose(logs, [[-math.log(2), -math.log(2), -2000 - math.log(2)]],
                               rtol=1e-6)


# --- inference errors ------------------------------------------------------------------------


def test_softmax_v1_rejects_negative_axis():
    node_origin = Origin("3", "sm", "SoftMax", "opset1")
    with pytest.raises(ShapeError, match=r"SoftMax 'sm' \(layer 3\): axis -1 is out of range "
                                         r"for rank 2; SoftMax-1 expects 0\.\.1 \(negative "
                                         r"axes need SoftMax-8\)"):
        act.SoftmaxV1(origin=node_origin, inputs=(parameter((2, 3)),), axis=-1)


def test_softmax_v1_axis_past_rank():
    with pytest.raises(ShapeError, match=r"axis 3 is out of range for rank 3; SoftMax-1 "
                                         r"expects 0\.\.2$"):
        build(act.SoftmaxV1, parameter((2, 3, 4)), axis=3)


@pytest.mark.parametrize("cls, axis", [(act.SoftmaxV8, 3), (act.SoftmaxV8, -4),
                                       (act.LogSoftmax, 5)])
def test_softmax_axis_out_of_range(cls, axis):
    with pytest.raises(ShapeError, match=rf"axis {axis} is out of range for rank 3; "
                                         r"expected -3\.\.2"):
        build(cls, parameter((2, 3, 4)), axis=axis)


def test_prelu_slope_that_does_not_fit_is_rejected():
    with pytest.raises(ShapeError, match=r"slope shape \(3,\) does not fit the data shape "
                                         r"\(3, 4\); expected a 1-D slope as long as the "
                                         r"channel dim"):
        build(act.PRelu, parameter((3, 4)), constant(np.ones(3, np.float32)))


def test_prelu_slope_type_must_match():
    with pytest.raises(ShapeError, match=r"slope has element type f16; expected the data's "
                                         r"type f32"):
        build(act.PRelu, parameter((2, 3)), constant(np.ones(3, np.float16)))


def test_swish_beta_must_be_scalar():
    with pytest.raises(ShapeError, match=r"beta has shape \(1,\); expected a scalar \(rank 0\)"):
        build(act.Swish, parameter((2, 3)), constant(np.ones(1, np.float32)))


def test_float_only_activation_rejects_integers():
    with pytest.raises(ShapeError, match=r"input 0 has element type i32; expected a float type"):
        build(act.Sigmoid, parameter((2,), dtypes.i32))


def test_relu_accepts_integers():
    node = build(act.Relu, parameter((3,), dtypes.i8))
    assert node.output_types[0].dtype == dtypes.i8
    x = np.array([-3, 0, 5], np.int8)
    np.testing.assert_array_equal(evaluate(node, x), [0, 0, 5])


def test_clamp_min_above_max_is_a_bad_attribute():
    with pytest.raises(BadAttributeError, match=r"min=2 is greater than max=1; expected "
                                                r"min <= max"):
        build(act.Clamp, parameter((2,)), min=2.0, max=1.0)


def test_wrong_input_count():
    with pytest.raises(GraphError, match=r"has 2 inputs; expected 1"):
        build(act.Tanh, parameter((2,)), parameter((2,)))


# --- attributes and dispatch -----------------------------------------------------------------


@pytest.mark.parametrize("cls, ir_type, values", [
    (act.Clamp, "Clamp", {"min": "-3.3333333333000001", "max": "1e+20"}),
    (act.Clamp, "Clamp", {"min": "0", "max": "6"}),
    (act.GeluV7, "Gelu", {"approximation_mode": "TANH"}),
    (act.GeluV7, "Gelu", {"approximation_mode": "ERF"}),
    (act.SoftmaxV8, "SoftMax", {"axis": "-1"}),
    (act.SoftmaxV1, "SoftMax", {"axis": "1"}),
    (act.LogSoftmax, "LogSoftmax", {"axis": "0"}),
])
def test_to_ir_inverts_from_ir(cls, ir_type, values):
    """Attribute strings as OpenVINO writes them survive from_ir -> to_ir unchanged."""
    fields = cls.from_ir(Attributes(values, origin(ir_type)))
    node = cls(origin=origin(ir_type), inputs=(parameter((2, 3)),), **fields)
    assert node.to_ir() == values


def test_gelu_mode_is_case_insensitive_and_validated():
    assert act.GeluV7.from_ir(Attributes({"approximation_mode": "tanh"}, origin("Gelu"))) == {
        "approximation_mode": "tanh"}
    with pytest.raises(BadAttributeError, match=r"Gelu 'act' \(layer 7\): attribute "
                                                r"approximation_mode=\"sigmoid\" is invalid; "
                                                r"expected one of erf, tanh"):
        act.GeluV7.from_ir(Attributes({"approximation_mode": "sigmoid"}, origin("Gelu")))


@pytest.mark.parametrize("ir_type, version, cls", [
    ("SoftMax", "opset1", act.SoftmaxV1), ("SoftMax", "opset7", act.SoftmaxV1),
    ("SoftMax", "opset8", act.SoftmaxV8), ("Softmax", "opset13", act.SoftmaxV8),
    ("Gelu", "opset2", act.GeluV2), ("Gelu", "opset6", act.GeluV2),
    ("Gelu", "opset7", act.GeluV7), ("ReLU", "opset1", act.Relu), ("Relu", "opset1", act.Relu),
    ("PReLU", "opset1", act.PRelu), ("HSigmoid", "opset5", act.HSigmoid),
    ("Swish", "opset4", act.Swish), ("LogSoftmax", "opset5", act.LogSoftmax),
])
def test_dispatch_on_type_and_version(ir_type, version, cls):
    assert lookup(Origin("1", "n", ir_type, version)) is cls


def test_ops_newer_than_the_opset_are_unsupported():
    with pytest.raises(UnsupportedOpError, match=r"HSwish is not defined in opset3; lpjit "
                                                 r"implements it from opset4"):
        lookup(Origin("1", "n", "HSwish", "opset3"))
