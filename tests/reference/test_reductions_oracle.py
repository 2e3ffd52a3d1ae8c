"""Reduce* ops against the OpenVINO CPU plugin: axes (negative, scalar, i32/i64, empty) and
keep_dims, one-op models (rtol 1e-4, atol 1e-5)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import openvino as ov
import oracle
import pytest
from openvino import opset1, opset4

import lpjit
from lpjit.ops import reductions as red

pytestmark = pytest.mark.oracle


def layer_data(xml: Path, layer_id: str) -> dict[str, str]:
    """The ``<data>`` attributes of layer ``layer_id`` in the saved IR."""
    layer = ET.parse(xml).getroot().find(f"./layers/layer[@id='{layer_id}']")
    assert layer is not None
    data = layer.find("data")
    return dict(data.attrib) if data is not None else {}


OPS = [
    (opset1.reduce_mean, red.ReduceMean), (opset1.reduce_sum, red.ReduceSum),
    (opset1.reduce_max, red.ReduceMax), (opset1.reduce_min, red.ReduceMin),
    (opset1.reduce_prod, red.ReduceProd), (opset4.reduce_l2, red.ReduceL2),
]

AXES = [
    np.array([1], np.int64), np.array([-1], np.int64), np.array([0, -1], np.int32),
    np.array([1, 2, 3], np.int64), np.array([-3, -2], np.int32), np.array(2, np.int64),
    np.array([0, 1, 2, 3], np.int64),
]


def signed_inputs(shape: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """|x| in [0.5, 1.5] with random signs: products of up to 120 of them stay finite."""
    rng = np.random.default_rng(seed)
    sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    return [(rng.uniform(0.5, 1.5, shape) * sign).astype(np.float32)]


def check_reduce(tmp_path: Path, make, cls: type[red.Reduce], axes: np.ndarray,
                 keep_dims: bool, shape: tuple[int, ...] = (2, 3, 4, 5)) -> None:
    x = opset1.parameter(list(shape), np.float32, name="x")
    model = ov.Model([opset1.result(make(x, opset1.constant(axes), keep_dims))], [x], "reduce")
    actual = oracle.compare_with_openvino(model, tmp_path, inputs=signed_inputs(shape, 3))
    xml = tmp_path / "model.xml"
    (node,) = [n for n in lpjit.read_ir(xml).nodes if type(n) is cls]
    assert node.to_ir() == layer_data(xml, node.origin.layer_id)
    assert actual[0].shape == node.output_types[0].shape


@pytest.mark.parametrize("make, cls", OPS, ids=[c.__name__ for _, c in OPS])
@pytest.mark.parametrize("axes", AXES, ids=lambda a: str(a.tolist()).replace(" ", ""))
@pytest.mark.parametrize("keep_dims", [False, True], ids=["drop", "keep"])
def test_reduce(tmp_path, make, cls, axes, keep_dims):
    check_reduce(tmp_path, make, cls, axes, keep_dims)


@pytest.mark.parametrize("make, cls", OPS, ids=[c.__name__ for _, c in OPS])
@pytest.mark.parametrize("keep_dims", [False, True], ids=["drop", "keep"])
def test_reduce_over_no_axes(tmp_path, make, cls, keep_dims):
    """The CPU plugin refuses empty axes, so OpenVINO's constant folding (its core reference)
    is the oracle: ``x + reduce(c, [])`` folds to ``x + c`` (``x + |c|`` for ReduceL2)."""
    shape = (3, 4)
    c = opset1.constant(signed_inputs(shape, 5)[0])
    empty = ov.op.Constant(ov.Type.i64, ov.Shape([0]), [])
    x = opset1.parameter(list(shape), np.float32, name="x")
    model = ov.Model([opset1.result(opset1.add(x, make(c, empty, keep_dims)))], [x], "fold")
    oracle.compare_with_openvino(model, tmp_path)
    xml = tmp_path / "model.xml"
    (node,) = [n for n in lpjit.read_ir(xml).nodes if type(n) is cls]
    assert node.axes == () and node.output_types[0].shape == shape


@pytest.mark.parametrize("keep_dims", [False, True])
def test_reduce_rank1_to_scalar(tmp_path, keep_dims):
    check_reduce(tmp_path, opset1.reduce_sum, red.ReduceSum, np.array([0], np.int64), keep_dims,
                 shape=(11,))
