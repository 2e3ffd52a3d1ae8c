"""Activations and SoftMax against the OpenVINO CPU plugin, one-op models per op and version.

Each test saves a one-op ``ov.Model``, reads it back with lpjit, checks that the layer was
dispatched to the expected class and that ``to_ir`` reproduces the XML's ``<data>``, and
compares lpjit's reference with OpenVINO (rtol 1e-4, atol 1e-5 unless stated).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino as ov
import oracle
import pytest
from openvino import opset1, opset2, opset4, opset5, opset7, opset8

import lpjit
from lpjit.graph import Node
from lpjit.ops import activations as act

pytestmark = pytest.mark.oracle


def layer_data(xml: Path, layer_id: str) -> dict[str, str]:
    """The ``<data>`` attributes of layer ``layer_id`` in the saved IR."""
    layer = ET.parse(xml).getroot().find(f"./layers/layer[@id='{layer_id}']")
    assert layer is not None
    data = layer.find("data")
    return dict(data.attrib) if data is not None else {}


def check(model: ov.Model, tmp_path: Path, cls: type[Node], **compare: object) -> None:
    """OpenVINO and lpjit agree; the op became one ``cls`` node whose to_ir matches the XML."""
    oracle.compare_with_openvino(model, tmp_path, **compare)
    xml = tmp_path / "model.xml"
    nodes = [n for n in lpjit.read_ir(xml).nodes if type(n) is cls]
    assert len(nodes) == 1, f"expected one {cls.__name__}"
    assert nodes[0].to_ir() == layer_data(xml, nodes[0].origin.layer_id)


def one_op(shape: tuple[int, ...], build: Callable[[ov.Output], ov.Node]) -> ov.Model:
    x = opset1.parameter(list(shape), np.float32, name="x")
    return ov.Model([opset1.result(build(x.output(0)))], [x], "one_op")


def uniform(shape: tuple[int, ...], low: float, high: float, seed: int = 0) -> list[np.ndarray]:
    return [np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)]


UNARY = [
    (opset1.relu, act.Relu), (opset1.sigmoid, act.Sigmoid), (opset1.tanh, act.Tanh),
    (opset1.exp, act.Exp), (opset1.log, act.Log), (opset1.erf, act.Erf),
    (opset1.sqrt, act.Sqrt), (opset1.abs, act.Abs), (opset1.negative, act.Negative),
    (opset1.floor, act.Floor), (opset1.ceiling, act.Ceiling), (opset4.hswish, act.HSwish),
    (opset5.hsigmoid, act.HSigmoid), (opset4.mish, act.Mish), (opset4.softplus, act.SoftPlus),
    (opset2.gelu, act.GeluV2),
]


@pytest.mark.parametrize("make, cls", UNARY, ids=[c.__name__ for _, c in UNARY])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (7,), (3, 16)])
def test_unary(tmp_path, make, cls, shape):
    positive = cls in (act.Log, act.Sqrt)
    inputs = uniform(shape, 0.05 if positive else -5.0, 5.0, seed=len(shape))
    check(one_op(shape, make), tmp_path, cls, inputs=inputs)


@pytest.mark.parametrize("mode", ["erf", "tanh"])
@pytest.mark.parametrize("version", [11, 10])
def test_gelu_v7(tmp_path, mode, version):
    model = one_op((2, 3, 8), lambda x: opset7.gelu(x, mode))
    check(model, tmp_path, act.GeluV7, inputs=uniform((2, 3, 8), -5, 5), version=version)


@pytest.mark.parametrize("low, high", [(-1.0, 2.5), (0.0, 6.0), (-0.3, -0.1), (0.1, 0.1)])
def test_clamp(tmp_path, low, high):
    check(one_op((2, 3, 4), lambda x: opset1.clamp(x, low, high)), tmp_path, act.Clamp)


@pytest.mark.parametrize("x_shape, slope_shape", [
    ((2, 3, 4, 5), (3,)),        # per channel (axis 1)
    ((2, 3, 3), (3,)),           # per channel although the last dim has the same length
    ((4, 3), (3,)),
    ((6,), (6,)),                # rank 1: the slope runs along axis 0
    ((2, 3, 4, 5), (5,)),        # not the channel length: numpy broadcast on the last axis
    ((2, 3, 4, 5), ()),
    ((2, 3, 4, 5), (1, 3, 1, 1)),
    ((2, 3, 4, 5), (4, 5)),
])
def test_prelu(tmp_path, x_shape, slope_shape):
    slope = np.random.default_rng(1).uniform(0.05, 0.6, slope_shape).astype(np.float32)
    model = one_op(x_shape, lambda x: opset1.prelu(x, opset1.constant(slope)))
    check(model, tmp_path, act.PRelu)


@pytest.mark.parametrize("beta", [None, 0.6, 2.0])
def test_swish(tmp_path, beta):
    def make(x: ov.Output) -> ov.Node:
        if beta is None:
            return opset4.swish(x)
        return opset4.swish(x, opset1.constant(np.float32(beta)))
    check(one_op((2, 5, 3), make), tmp_path, act.Swish, inputs=uniform((2, 5, 3), -6, 6))


@pytest.mark.parametrize("axis", [0, 1, 2, 3])
@pytest.mark.parametrize("version", [11, 10])
def test_softmax_v1(tmp_path, axis, version):
    model = one_op((2, 3, 4, 5), lambda x: opset1.softmax(x, axis))
    check(model, tmp_path, act.SoftmaxV1, inputs=uniform((2, 3, 4, 5), -6, 6), version=version)


@pytest.mark.parametrize("shape, axis", [((2, 3, 4, 5), -1), ((2, 3, 4, 5), -3),
                                         ((2, 3, 4, 5), 1), ((4, 7), -2), ((9,), 0)])
def test_softmax_v8(tmp_path, shape, axis):
    model = one_op(shape, lambda x: opset8.softmax(x, axis))
    check(model, tmp_path, act.SoftmaxV8, inputs=uniform(shape, -6, 6))


@pytest.mark.parametrize("shape, axis", [((2, 3, 4, 5), -1), ((2, 3, 4, 5), 1),
                                         ((2, 3, 4, 5), -4), ((4, 7), 0)])
def test_log_softmax(tmp_path, shape, axis):
    model = one_op(shape, lambda x: opset5.log_softmax(x, axis))
    check(model, tmp_path, act.LogSoftmax, inputs=uniform(shape, -6, 6))
