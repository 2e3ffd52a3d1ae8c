"""read_ir with dynamic inputs (shapes=), folded shape subgraphs, and port-position mapping."""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import oracle
import pytest

import lpjit
from lpjit import dtypes, reference
from lpjit.graph import Constant
from lpjit.ops.elementwise import Subtract

pytestmark = pytest.mark.oracle


def _dynamic_reshape_model(dims: list) -> ov.Model:
    """x (dynamic batch) -> Reshape(x, Concat(Gather(ShapeOf(x), [0]), [-1])) * 2."""
    x = ops.parameter(ov.PartialShape(dims), np.float32, name="x_layer")
    x.output(0).set_names({"x"})
    shape = ops.shape_of(x, name="shape")
    batch = ops.gather(shape, ops.constant(np.array([0], np.int64)), ops.constant(np.int64(0)),
                       name="batch")
    target = ops.concat([batch, ops.constant(np.array([-1], np.int64))], 0, name="target")
    flat = ops.reshape(x, target, special_zero=False, name="flat")
    out = ops.multiply(flat, ops.constant(np.float32(2.0)), name="out")
    return ov.Model([ops.result(out, name="result")], [x], "dynamic")


@pytest.mark.parametrize("version", [11, 10])
@pytest.mark.parametrize("key", ["x", "x_layer"])
def test_dynamic_input_with_shapes_folds_the_shape_subgraph(tmp_path, version, key):
    """shapes= (by tensor or layer name) fixes the batch; ShapeOf->Gather->Concat folds to one
    Constant feeding Reshape; outputs equal OpenVINO's for that shape."""
    xml = oracle.save(_dynamic_reshape_model([-1, 3, 4, 2]), tmp_path, version=version)
    graph = lpjit.read_ir(xml, shapes={key: (2, 3, 4, 2)})
    assert graph.parameters[0].output.type.shape == (2, 3, 4, 2)
    kinds = [n.kind for n in graph.nodes]
    assert "ShapeOf" not in kinds and "Gather" not in kinds and "Concat" not in kinds
    reshape = next(n for n in graph.nodes if n.kind == "Reshape")
    target = reshape.inputs[1].node
    assert isinstance(target, Constant) and target.origin.name == "target"
    np.testing.assert_array_equal(target.data, [2, -1])
    assert graph.results[0].inputs[0].type.shape == (2, 24)
    x = np.random.default_rng(9).standard_normal((2, 3, 4, 2)).astype(np.float32)
    np.testing.assert_allclose(reference.run(graph, [x])[0], oracle.ov_run(xml, [x])[0],
                               rtol=1e-6)


def test_bounded_dims_accept_shapes_within_bounds(tmp_path):
    xml = oracle.save(_dynamic_reshape_model([ov.Dimension(1, 4), 3, -1, 2]), tmp_path)
    assert 'shape="1..4,3,?,2"' in xml.read_text()
    graph = lpjit.read_ir(xml, shapes={"x": (4, 3, 5, 2)})
    assert graph.results[0].inputs[0].type.shape == (4, 30)
    with pytest.raises(lpjit.errors.ShapeError, match=r"\(5, 3, 5, 2\) does not match"):
        lpjit.read_ir(xml, shapes={"x": (5, 3, 5, 2)})


def test_static_input_accepts_its_own_shape(tmp_path):
    xml = oracle.save(_dynamic_reshape_model([3, 3, 4, 2]), tmp_path)
    assert len(lpjit.read_ir(xml, shapes={"x": (3, 3, 4, 2)}).nodes) == \
        len(lpjit.read_ir(xml).nodes)


def test_ports_map_by_position_not_id(tmp_path):
    """Renumbered port ids (labels) still map to argument positions: x - y stays x - y."""
    x = ops.parameter([3], np.float32, name="x")
    y = ops.parameter([3], np.float32, name="y")
    sub = ops.subtract(x, y, name="sub")
    xml = oracle.save(ov.Model([ops.result(sub, name="out")], [x, y], "ports"), tmp_path)
    text = xml.read_text()
    layer = text.index('name="sub"')
    head, body = text[:layer], text[layer:]
    body = body.replace('<port id="0"', '<port id="7"', 1).replace('<port id="1"',
                                                                   '<port id="4"', 1)
    body = body.replace('<port id="2"', '<port id="9"', 1)
    text = head + body
    for old, new in (('from-layer="0" from-port="0" to-layer="2" to-port="0"',
                      'from-layer="0" from-port="0" to-layer="2" to-port="7"'),
                     ('from-layer="1" from-port="0" to-layer="2" to-port="1"',
                      'from-layer="1" from-port="0" to-layer="2" to-port="4"'),
                     ('from-layer="2" from-port="2" to-layer="3"',
                      'from-layer="2" from-port="9" to-layer="3"')):
        assert old in text
        text = text.replace(old, new)
    graph = lpjit.read_ir(text)
    sub_node = next(n for n in graph.nodes if isinstance(n, Subtract))
    assert [v.node.origin.name for v in sub_node.inputs] == ["x", "y"]
    rng = np.random.default_rng(10)
    a, b = rng.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(reference.run(graph, [a, b])[0], a - b)


def test_tensor_names_with_escaped_commas(tmp_path):
    x = ops.parameter([2], np.int32, name="x")
    x.output(0).set_names({"in,put", "plain"})
    neg = ops.multiply(x, ops.constant(np.array([-1, 3], np.int32)), name="neg")
    neg.output(0).set_names({"a,b,c"})
    xml = oracle.save(ov.Model([ops.result(neg, name="out")], [x], "names"), tmp_path)
    assert 'names="in\\,put,plain"' in xml.read_text()
    graph = lpjit.read_ir(xml)
    assert graph.parameters[0].output.names == ("in,put", "plain")
    assert graph.parameter("in,put") is graph.parameters[0]
    assert graph.results[0].names == ("a,b,c",)
    assert graph.parameters[0].element_type == dtypes.i32
