"""write_ir: IR v11 that OpenVINO reads back and runs with the original model's outputs."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar
from xml.etree import ElementTree

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import oracle
import pytest

import lpjit
from lpjit import dtypes, reference
from lpjit.errors import UnsupportedOpError
from lpjit.graph import Constant, Graph, Node, Origin, Parameter, Result, opclass

pytestmark = pytest.mark.oracle


def _model(seed: int) -> ov.Model:
    """Two inputs, a broadcast constant, a comparison + select and two outputs."""
    rng = np.random.default_rng(seed)
    x = ops.parameter([2, 3, 4], np.float32, name="x")
    y = ops.parameter([4], np.float32, name="y")
    w = ops.constant(rng.standard_normal((3, 1)).astype(np.float32), name="w")
    mul = ops.multiply(x, w, name="mul")
    mul.output(0).set_names({"mul_out", "alias,with comma"})
    greater = ops.greater(mul, y, name="greater")
    picked = ops.select(greater, mul, ops.subtract(x, y, name="sub"), name="pick")
    return ov.Model([ops.result(picked, name="r_pick"), ops.result(mul, name="r_mul")], [x, y],
                    "writer")


def _round_trip(xml: Path, tmp_path: Path, model: ov.Model, seed: int) -> Path:
    """Read ``xml`` with lpjit, write it back, and check OpenVINO agrees on both files."""
    copy = lpjit.write_ir(lpjit.read_ir(xml), tmp_path / "copy" / "model.xml")
    assert copy.with_suffix(".bin").is_file()
    inputs = oracle.random_inputs(model, seed=seed)
    for original, rewritten in zip(oracle.ov_run(xml, inputs), oracle.ov_run(copy, inputs)):
        np.testing.assert_array_equal(rewritten, original)
    return copy


@pytest.mark.parametrize("version, compress", [(11, False), (11, True), (10, False)])
def test_round_trip_runs_in_openvino(tmp_path, version, compress):
    """OpenVINO runs the rewritten IR with the same outputs, names and input order."""
    model = _model(seed=1)
    xml = oracle.save(model, tmp_path, version=version, compress_to_fp16=compress)
    copy = _round_trip(xml, tmp_path, model, seed=2)
    reread = ov.Core().read_model(copy)
    assert [p.get_friendly_name() for p in reread.get_parameters()] == ["x", "y"]
    assert reread.outputs[1].names == {"mul_out", "alias,with comma"}
    assert 'version="11"' in copy.read_text()
    first, second = lpjit.read_ir(xml), lpjit.read_ir(copy)
    assert [n.kind for n in first.nodes] == [n.kind for n in second.nodes]
    assert [n.origin.name for n in first.nodes] == [n.origin.name for n in second.nodes]


def _packed_model() -> ov.Model:
    x = ops.parameter([6], np.float32, name="x")
    total = x
    for ov_type, values in ((ov.Type.u4, [1, 2, 3, 15, 0, 9]), (ov.Type.i4, [1, -2, 3, -8, 7, -1]),
                            (ov.Type.u1, [1, 0, 1, 1, 0, 1]),
                            (ov.Type.bf16, [1.0, 2.5, -3.0, 0.125, 7.0, -0.75]),
                            (ov.Type.f16, [0.5, -1.5, 2.0, 3.0, 65504.0, 1e-2])):
        const = ov.op.Constant(ov_type, ov.Shape([6]), values)
        const.set_friendly_name(f"c_{ov_type.get_type_name()}")
        total = ops.add(total, ops.convert(const, "f32"))
    return ov.Model([ops.result(total, name="sum")], [x], "packed")


def test_packed_constants_reencoded_byte_for_byte(tmp_path):
    """Packed and 16-bit constants are written with OpenVINO's own byte layout."""
    model = _packed_model()
    xml = oracle.save(model, tmp_path)
    copy = _round_trip(xml, tmp_path, model, seed=3)
    original, rewritten = (_constant_bytes(path) for path in (xml, copy))
    assert original == rewritten
    assert original["c_u4"] == bytes.fromhex("21f390")
    assert original["c_u1"] == bytes.fromhex("b4")


def _constant_bytes(xml: Path) -> dict[str, bytes]:
    """Each Const layer's bytes in the .bin, by layer name."""
    blob = xml.with_suffix(".bin").read_bytes()
    out = {}
    for layer in ElementTree.parse(xml).getroot().iter("layer"):
        if layer.get("type") == "Const":
            data = layer.find("data")
            offset, size = int(data.get("offset")), int(data.get("size"))
            out[layer.get("name")] = blob[offset:offset + size]
    return out


def _graph_with_repeated_constants(seed: int) -> Graph:
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((2, 2)).astype(np.float32)
    x = Parameter(origin=Origin("0", "x", "Parameter"), inputs=(), tensor_names=(("x",),),
                  element_type=dtypes.f32, shape=(2, 2))
    from lpjit.ops.elementwise import Add
    c1 = Constant.of(values, Origin("1", "same", "Const"))
    c2 = Constant.of(values.copy(), Origin("2", "same", "Const"))
    a = Add(origin=Origin("3", "add", "Add"), inputs=(x.output, c1.output))
    b = Add(origin=Origin("4", "add", "Add"), inputs=(a.output, c2.output))
    return Graph("repeated", [x], [Result(origin=Origin("5", "out", "Result"), inputs=(b.output,))])


def test_identical_constants_are_stored_once_and_names_made_unique(tmp_path):
    """Equal constant bytes share one offset; repeated layer names get a suffix."""
    graph = _graph_with_repeated_constants(seed=5)
    xml = lpjit.write_ir(graph, tmp_path / "rep.xml")
    assert xml.with_suffix(".bin").stat().st_size == 16
    text = xml.read_text()
    assert text.count('offset="0" size="16"') == 2
    assert 'name="same"' in text and 'name="same_1"' in text and 'name="add_1"' in text
    x = np.random.default_rng(6).standard_normal((2, 2)).astype(np.float32)
    (expected,) = reference.run(graph, [x])
    np.testing.assert_allclose(oracle.ov_run(xml, [x])[0], expected, rtol=1e-6)


def test_rewriting_the_files_a_graph_was_read_from(tmp_path):
    """The graph's constants are views of the mapped .bin; overwriting it in place is safe."""
    model = _model(seed=7)
    xml = oracle.save(model, tmp_path)
    graph = lpjit.read_ir(xml)
    inputs = oracle.random_inputs(model, seed=8)
    before = reference.run(graph, inputs)
    lpjit.write_ir(graph, xml)
    for a, b in zip(reference.run(graph, inputs), before):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(oracle.ov_run(xml, inputs), before):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@opclass
class _Internal(Node):
    """A node class with no IR type (as a lowering pass might create)."""

    arity: ClassVar = (1, 1)

    def infer(self):
        return [self.input_type(0)]


def test_node_without_ir_type_is_rejected(tmp_path):
    x = Parameter(origin=Origin("0", "x", "Parameter"), inputs=(), element_type=dtypes.f32,
                  shape=(2,))
    internal = _Internal(origin=Origin("1", "fused", "Internal"), inputs=(x.output,))
    graph = Graph("g", [x], [Result(origin=Origin("2", "r", "Result"), inputs=(internal.output,))])
    with pytest.raises(UnsupportedOpError, match=r"Internal 'fused' \(layer 1\): _Internal has "
                                                 "no OpenVINO IR type"):
        lpjit.write_ir(graph, tmp_path / "bad.xml")
