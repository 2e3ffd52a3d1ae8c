"""Shape ops against the OpenVINO CPU plugin: one-op IRs saved by OpenVINO, outputs compared
exactly, and every node's ``to_ir`` compared with the ``<data>`` OpenVINO wrote.

Covers Reshape-1, Squeeze-1/15, Unsqueeze-1, ShapeOf-1/3, Broadcast-1/3, Tile-1 and the
ShapeOf -> Gather -> Concat -> Reshape subgraph of dynamic-shape exports.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import openvino as ov
import oracle
import pytest
from openvino import opset1, opset3, opset8, opset15
from openvino.utils.node_factory import NodeFactory

import lpjit
from lpjit.ops import shape as ops

pytestmark = pytest.mark.oracle

CLASSES = (ops.Reshape, ops.Squeeze, ops.SqueezeV15, ops.Unsqueeze, ops.ShapeOf, ops.ShapeOfV3,
           ops.Broadcast, ops.BroadcastV3, ops.Tile)


def ints(values: object) -> ov.Node:
    array = np.array(values, np.int64)
    if array.size == 0:
        return ov.op.Constant(ov.Type.i64, ov.Shape(list(array.shape)), [])
    return opset1.constant(array)


def one_op(build: Callable[..., ov.Node], shape: tuple[int, ...],
           dtype: type = np.float32) -> ov.Model:
    """A model: one Parameter of ``shape`` -> ``build`` -> a Result per output."""
    x = opset1.parameter(list(shape), dtype, name="x")
    node = build(x)
    return ov.Model([opset1.result(out) for out in node.outputs()], [x], "one_op")


def assert_to_ir_matches(xml: Path) -> None:
    """Every shape op lpjit reads writes back exactly the ``<data>`` OpenVINO wrote."""
    layers = {layer.get("id"): layer for layer in ElementTree.parse(xml).iter("layer")}
    for node in lpjit.read_ir(xml).nodes:
        if type(node) in CLASSES:
            data = layers[node.origin.layer_id].find("data")
            written = dict(data.attrib) if data is not None else {}
            assert node.to_ir() == written, node.origin.describe()


def check(model: ov.Model, tmp_path: Path, **options: object) -> None:
    oracle.compare_with_openvino(model, tmp_path, rtol=0, atol=0, **options)
    assert_to_ir_matches(tmp_path / "model.xml")


@pytest.mark.parametrize("pattern, special_zero", [
    ([0, -1], True), ([4, -1], False), ([0, 0, 2, 2], True), ([24], False),
    ([1, 0, 2, -1], True), ([2, 3, 4, 1], False),
])
def test_reshape(tmp_path, pattern, special_zero):
    check(one_op(lambda x: opset1.reshape(x, ints(pattern), special_zero), (2, 3, 4)), tmp_path)


def _squeeze_v1_without_axes(x: ov.Node) -> ov.Node:
    return NodeFactory("opset1").create("Squeeze", [x.output(0)])


@pytest.mark.parametrize("build", [
    lambda x: opset1.squeeze(x, ints([0])),
    lambda x: opset1.squeeze(x, ints([-2, 0])),
    lambda x: opset1.squeeze(x, ints(2)),
    lambda x: opset1.squeeze(x, ints([1, 2])),             # axis 1 (size 3) is kept
    lambda x: opset1.squeeze(x, ints([])),
    _squeeze_v1_without_axes,
    lambda x: opset15.squeeze(x, ints([0, 2]), False),
    lambda x: opset15.squeeze(x, ints([1, 2]), True),
    lambda x: opset15.squeeze(x),
], ids=["axis", "negative", "scalar-axes", "non-1-axis", "empty-axes", "no-axes", "v15",
        "v15-skip", "v15-no-axes"])
def test_squeeze(tmp_path, build):
    check(one_op(build, (1, 3, 1, 4)), tmp_path)


@pytest.mark.parametrize("axes", [[0], [-1], [-1, 0], [1, 3], [0, 0]])
def test_unsqueeze(tmp_path, axes):
    check(one_op(lambda x: opset1.unsqueeze(x, ints(axes)), (2, 3)), tmp_path)


@pytest.mark.parametrize("build", [
    lambda x: opset1.shape_of(x),
    lambda x: opset3.shape_of(x, "i64"),
    lambda x: opset3.shape_of(x, "i32"),
], ids=["v1", "v3-i64", "v3-i32"])
@pytest.mark.parametrize("dtype", [np.float32, np.uint8, np.bool_])
def test_shape_of(tmp_path, build, dtype):
    """ShapeOf folds to a Constant on reading; its value and type match OpenVINO."""
    check(one_op(build, (2, 1, 5), dtype), tmp_path)


@pytest.mark.parametrize("build, shape", [
    (lambda x: opset1.broadcast(x, ints([2, 3, 4])), (3, 1)),
    (lambda x: opset1.broadcast(x, ints([2, 2])), ()),
    (lambda x: opset1.broadcast(x, ints([2, 3, 5]), ints([0, 1]), "explicit"), (2, 3)),
    (lambda x: opset1.broadcast(x, ints([4, 3, 2]), ints([1]), "explicit"), (3,)),
    (lambda x: opset3.broadcast(x, ints([2, 3, 4])), (3, 1)),
    (lambda x: opset3.broadcast(x, ints([2, 3, 5]), ints([1, 2]), "explicit"), (3, 1)),
    (lambda x: opset3.broadcast(x, ints([3, 1]), broadcast_spec="bidirectional"), (2, 1, 4)),
    (lambda x: opset3.broadcast(x, ints([1, 1, 1, 1]), broadcast_spec="bidirectional"), (2, 3)),
], ids=["v1-numpy", "v1-scalar", "v1-explicit", "v1-explicit-middle", "v3-numpy",
        "v3-explicit", "v3-bidirectional", "v3-bidirectional-rank"])
def test_broadcast(tmp_path, build, shape):
    check(one_op(build, shape), tmp_path)


@pytest.mark.parametrize("repeats, shape", [
    ([2, 1, 3], (2, 3, 1)), ([3], (2, 3)), ([2, 1, 2], (2, 3)), ([1, 2], ()),
])
def test_tile(tmp_path, repeats, shape):
    check(one_op(lambda x: opset1.tile(x, ints(repeats)), shape), tmp_path)


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.int64, np.uint8, np.int8, np.bool_])
def test_shape_ops_on_every_element_type(tmp_path, dtype):
    """Reshape, Squeeze, Unsqueeze, Broadcast and Tile chained on one non-f32 tensor."""
    def build(x: ov.Node) -> ov.Node:
        y = opset1.reshape(x, ints([3, 1, -1]), False)
        y = opset1.squeeze(y, ints([1]))
        y = opset1.unsqueeze(y, ints([0]))
        y = opset3.broadcast(y, ints([2, 3, 2]))
        return opset1.tile(y, ints([1, 2]))
    check(one_op(build, (2, 3), dtype), tmp_path)


@pytest.mark.parametrize("version", [10, 11])
@pytest.mark.parametrize("shape_type", ["i64", "i32"])
def test_dynamic_reshape_subgraph(tmp_path, version, shape_type):
    """ShapeOf -> Gather -> Concat -> Reshape (a dynamic export's flatten) folds to a constant
    target shape that gives OpenVINO's result."""
    x = opset1.parameter([2, 3, 4, 5], np.float32, name="x")
    index_type = np.int64 if shape_type == "i64" else np.int32
    shape = opset3.shape_of(x, shape_type)
    batch = opset8.gather(shape, opset1.constant(np.array([0], index_type)),
                          opset1.constant(np.array(0, index_type)))
    channels = opset8.gather(shape, opset1.constant(np.array([-3], index_type)),
                             opset1.constant(np.array(0, index_type)))
    target = opset1.concat([batch, channels, opset1.constant(np.array([-1], index_type))], 0)
    y = opset1.reshape(x, target, False)
    model = ov.Model([opset1.result(y)], [x], "flatten")
    check(model, tmp_path, version=version)
    graph = lpjit.read_ir(tmp_path / "model.xml")
    (reshape,) = [n for n in graph.nodes if isinstance(n, ops.Reshape)]
    assert reshape.output_types[0].shape == (2, 3, 20)
