"""MVN-2/-6, NormalizeL2, BatchNormInference-1/-5: reference vs float64 formulas, errors."""

from __future__ import annotations

import numpy as np
import pytest

from lpjit import dtypes
from lpjit.attributes import Attributes
from lpjit.errors import BadAttributeError, ShapeError
from lpjit.graph import Constant, Node, Origin, Parameter, Value
from lpjit.ops import normalization as norm
from lpjit.ops.registry import IR_NAMES, lookup
from lpjit.reference import evaluate_node


def origin(cls: type[Node]) -> Origin:
    return Origin("7", "norm", IR_NAMES[cls][0], "opset6")


def parameter(shape: tuple[int, ...], dtype: dtypes.DType = dtypes.f32) -> Value:
    return Parameter(origin=Origin("0", "x", "Parameter", "opset1"), inputs=(),
                     element_type=dtype, shape=shape).output


def constant(array: np.ndarray) -> Value:
    return Constant.of(array, Origin("1", "c", "Const", "opset1")).output


def evaluate(node: Node, *arrays: np.ndarray) -> np.ndarray:
    (out,) = evaluate_node(node, arrays)
    return out


def random(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 2, shape).astype(np.float32)


def mvn64(x: np.ndarray, axes: tuple[int, ...], eps: float, inside: bool) -> np.ndarray:
    x = x.astype(np.float64)
    d = x - x.mean(axis=axes, keepdims=True)
    var = (d * d).mean(axis=axes, keepdims=True)
    return d / (np.sqrt(var + eps) if inside else np.sqrt(var) + eps)


@pytest.mark.parametrize("axes, normalized", [
    ([2, 3], (2, 3)), ([-1], (3,)), ([1, -1, -2], (1, 2, 3)), ([0], (0,)),
])
@pytest.mark.parametrize("eps_mode", ["inside_sqrt", "outside_sqrt"])
def test_mvn6_matches_formula(axes, normalized, eps_mode):
    """A large eps (0.3) makes inside and outside sqrt clearly different."""
    x = random((2, 3, 4, 5), 1)
    node = norm.MVNV6(origin=origin(norm.MVNV6), inputs=(parameter(x.shape),
                      constant(np.array(axes, np.int64))), eps=0.3, normalize_variance=True,
                      eps_mode=eps_mode)
    assert node.axes == normalized
    y = evaluate(node, x, np.array(axes))
    expected = mvn64(x, normalized, 0.3, eps_mode == "inside_sqrt")
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    other = mvn64(x, normalized, 0.3, eps_mode != "inside_sqrt")
    assert np.max(np.abs(y - other)) > 1e-2


def test_mvn6_without_variance_only_centres():
    x = random((3, 8), 2)
    node = norm.MVNV6(origin=origin(norm.MVNV6), inputs=(parameter(x.shape),
                      constant(np.array([1], np.int32))), eps=1e-9, normalize_variance=False,
                      eps_mode="inside_sqrt")
    y = evaluate(node, x, np.array([1]))
    np.testing.assert_allclose(y, x - x.astype(np.float64).mean(1, keepdims=True), atol=1e-6)


@pytest.mark.parametrize("across, reduction_axes, expected_axes", [
    (True, (), (1, 2, 3)), (False, (), (2, 3)),
    (False, (1, 2, 3), (1, 2, 3)),   # as written by OpenVINO for across_channels=true
    (True, (2, 3), (2, 3)),          # reduction_axes decides
    (False, (3,), (2, 3)),           # ... but only across-or-not (OpenVINO CPU behaviour)
])
def test_mvn2_axes(across, reduction_axes, expected_axes):
    x = random((2, 3, 4, 5), 3)
    node = norm.MVNV2(origin=origin(norm.MVNV2), inputs=(parameter(x.shape),), eps=0.5,
                      across_channels=across, normalize_variance=True,
                      reduction_axes=reduction_axes)
    assert node.axes == expected_axes
    np.testing.assert_allclose(evaluate(node, x), mvn64(x, expected_axes, 0.5, True),
                               rtol=1e-5, atol=1e-6)


def test_mvn2_rank2_per_channel_has_nothing_to_reduce():
    """Axes 2.. of a rank-2 tensor are empty: every element is its own mean, so y = 0."""
    x = random((2, 3), 4)
    node = norm.MVNV2(origin=origin(norm.MVNV2), inputs=(parameter(x.shape),), eps=1e-9)
    assert node.axes == ()
    np.testing.assert_array_equal(evaluate(node, x), np.zeros_like(x))


@pytest.mark.parametrize("eps_mode, eps", [("add", 1e-6), ("max", 1e-6), ("add", 4.0),
                                           ("max", 40.0)])
@pytest.mark.parametrize("axes", [[1], [1, 2, 3], [-1, 0]])
def test_normalize_l2_matches_formula(eps_mode, eps, axes):
    x = random((2, 3, 4, 2), 5)
    node = norm.NormalizeL2(origin=origin(norm.NormalizeL2), inputs=(
        parameter(x.shape), constant(np.array(axes))), eps=eps, eps_mode=eps_mode)
    y = evaluate(node, x, np.array(axes))
    x64 = x.astype(np.float64)
    total = np.sum(x64 * x64, axis=tuple(a % 4 for a in axes), keepdims=True)
    guarded = total + eps if eps_mode == "add" else np.maximum(total, eps)
    np.testing.assert_allclose(y, x64 / np.sqrt(guarded), rtol=1e-5, atol=1e-7)


def test_normalize_l2_empty_axes_divides_each_element_by_itself():
    x = np.array([[0.0, -2.0, 3.5], [1e-30, 0.0, -0.0]], np.float32)
    node = norm.NormalizeL2(origin=origin(norm.NormalizeL2), inputs=(
        parameter(x.shape), constant(np.array([], np.int64))), eps=1e-6, eps_mode="add")
    np.testing.assert_array_equal(evaluate(node, x, np.array([])), [[0, 1, 1], [1, 0, 0]])


def _bn_inputs(channels: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"gamma": rng.uniform(0.5, 2, channels).astype(np.float32),
            "beta": rng.uniform(-1, 1, channels).astype(np.float32),
            "mean": rng.uniform(-1, 1, channels).astype(np.float32),
            "variance": rng.uniform(0.1, 2, channels).astype(np.float32)}


@pytest.mark.parametrize("cls", [norm.BatchNormInferenceV1, norm.BatchNormInferenceV5])
@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 5), (1, 3, 2, 2)])
def test_batch_norm_ports_and_formula(cls, shape):
    """v1 takes (gamma, beta, data, mean, variance); v5 (data, gamma, beta, mean, variance)."""
    x = random(shape, 6)
    params = _bn_inputs(3, 7)
    order = (["gamma", "beta", "data", "mean", "variance"] if cls is norm.BatchNormInferenceV1
             else ["data", "gamma", "beta", "mean", "variance"])
    arrays = {**params, "data": x}
    values = {name: constant(a) for name, a in params.items()}
    values["data"] = parameter(shape)
    node = cls(origin=origin(cls), inputs=[values[n] for n in order], epsilon=0.01)
    assert node.output_types[0].shape == shape
    y = evaluate(node, *(arrays[n] for n in order))
    channel = (1, 3) + (1,) * (len(shape) - 2)
    p = {k: v.astype(np.float64).reshape(channel) for k, v in params.items()}
    expected = (x - p["mean"]) / np.sqrt(p["variance"] + 0.01) * p["gamma"] + p["beta"]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


# --- errors, attributes, dispatch --------------------------------------------------------------


def test_batch_norm_v1_data_is_port_2():
    """Feeding v1 in v5 order puts the 4-D data where gamma belongs: the shapes do not fit."""
    params = _bn_inputs(3, 8)
    inputs = [parameter((1, 3, 2, 2))] + [constant(params[n]) for n in ("gamma", "beta", "mean",
                                                                         "variance")]
    with pytest.raises(ShapeError, match=r"^BatchNormInference 'norm' \(layer 7\): data "
                                         r"\(input 2\) has shape \(3,\); expected rank >= 2 "
                                         r"with channels on axis 1$"):
        norm.BatchNormInferenceV1(origin=origin(norm.BatchNormInferenceV1), inputs=inputs,
                                  epsilon=1e-5)


def test_batch_norm_parameter_length_must_be_channels():
    params = _bn_inputs(3, 9)
    params["variance"] = np.ones(4, np.float32)
    inputs = [parameter((2, 3, 4))] + [constant(params[n]) for n in ("gamma", "beta", "mean",
                                                                     "variance")]
    with pytest.raises(ShapeError, match=r"variance \(input 4\) has shape \(4,\); expected "
                                         r"\(3,\), one value per channel"):
        norm.BatchNormInferenceV5(origin=origin(norm.BatchNormInferenceV5), inputs=inputs,
                                  epsilon=1e-5)


def test_batch_norm_negative_epsilon():
    params = _bn_inputs(3, 10)
    inputs = [parameter((2, 3))] + [constant(params[n]) for n in ("gamma", "beta", "mean",
                                                                  "variance")]
    with pytest.raises(BadAttributeError, match=r"epsilon=-0.001 is invalid; expected "
                                                r"epsilon >= 0"):
        norm.BatchNormInferenceV5(origin=origin(norm.BatchNormInferenceV5), inputs=inputs,
                                  epsilon=-1e-3)


def test_mvn6_axes_must_be_constant():
    with pytest.raises(ShapeError, match=r"MVN 'norm' \(layer 7\): axes \(input 1\) must be a "
                                         r"constant"):
        norm.MVNV6(origin=origin(norm.MVNV6), inputs=(parameter((2, 3)),
                   parameter((1,), dtypes.i64)), eps=1e-5, eps_mode="inside_sqrt")


def test_mvn6_axis_out_of_range():
    with pytest.raises(ShapeError, match=r"axis -3 is out of range for rank 2; expected -2\.\.1"):
        norm.MVNV6(origin=origin(norm.MVNV6), inputs=(parameter((2, 3)),
                   constant(np.array([-3]))), eps=1e-5, eps_mode="inside_sqrt")


def test_mvn2_reduction_axis_out_of_range():
    with pytest.raises(ShapeError, match=r"reduction_axes 4 is out of range for rank 4"):
        norm.MVNV2(origin=origin(norm.MVNV2), inputs=(parameter((1, 2, 3, 4)),), eps=1e-5,
                   reduction_axes=(2, 4))


def test_bad_eps_mode_attribute():
    with pytest.raises(BadAttributeError, match=r"NormalizeL2 'norm' \(layer 7\): attribute "
                                                r"eps_mode=\"sum\" is invalid; expected one of "
                                                r"add, max"):
        norm.NormalizeL2.from_ir(Attributes({"eps": "1e-6", "eps_mode": "sum"},
                                            origin(norm.NormalizeL2)))


@pytest.mark.parametrize("cls, values, inputs", [
    (norm.MVNV2, {"eps": "0.001", "across_channels": "true", "normalize_variance": "true",
                  "reduction_axes": "1, 2, 3"}, 1),
    (norm.MVNV2, {"eps": "1.0000000000000001e-09", "across_channels": "false",
                  "normalize_variance": "false"}, 1),
    (norm.MVNV6, {"eps": "0.0010000000474974513", "normalize_variance": "true",
                  "eps_mode": "INSIDE_SQRT"}, 2),
    (norm.MVNV6, {"eps": "0.10000000149011612", "normalize_variance": "false",
                  "eps_mode": "OUTSIDE_SQRT"}, 2),
    (norm.NormalizeL2, {"eps": "9.9999999747524271e-07", "eps_mode": "add"}, 2),
    (norm.NormalizeL2, {"eps": "1e-10", "eps_mode": "max"}, 2),
])
def test_to_ir_inverts_from_ir(cls, values, inputs):
    """The attribute strings OpenVINO writes come back unchanged."""
    fields = cls.from_ir(Attributes(values, origin(cls)))
    args = [parameter((2, 3, 4, 5)), constant(np.array([1]))][:inputs]
    node = cls(origin=origin(cls), inputs=args, **fields)
    assert node.to_ir() == values


def test_batch_norm_epsilon_round_trip():
    values = {"epsilon": "0.001"}
    fields = norm.BatchNormInferenceV5.from_ir(Attributes(values, origin(norm.BatchNormInferenceV5)))
    params = _bn_inputs(3, 11)
    inputs = [parameter((2, 3))] + [constant(params[n]) for n in ("gamma", "beta", "mean",
                                                                  "variance")]
    node = norm.BatchNormInferenceV5(origin=origin(norm.BatchNormInferenceV5), inputs=inputs,
                                     **fields)
    assert node.to_ir() == values


@pytest.mark.parametrize("ir_type, version, cls", [
    ("MVN", "opset1", norm.MVNV2), ("MVN", "opset2", norm.MVNV2), ("MVN", "opset5", norm.MVNV2),
    ("MVN", "opset6", norm.MVNV6), ("BatchNormInference", "opset1", norm.BatchNormInferenceV1),
    ("BatchNormInference", "opset4", norm.BatchNormInferenceV1),
    ("BatchNormInference", "opset5", norm.BatchNormInferenceV5),
    ("NormalizeL2", "opset1", norm.NormalizeL2),
])
def test_dispatch_on_type_and_version(ir_type, version, cls):
    assert lookup(Origin("1", "n", ir_type, version)) is cls
