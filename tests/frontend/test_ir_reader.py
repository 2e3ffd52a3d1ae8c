"""read_ir on IR files written by OpenVINO: structure, names, types, constants, oracle outputs."""

from __future__ import annotations

import mmap

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import oracle
import pytest

import lpjit
from lpjit import dtypes, reference
from lpjit.graph import Constant, Parameter, Result
from lpjit.ops.core import Convert
from lpjit.ops.elementwise import Add, Multiply

pytestmark = pytest.mark.oracle


def _elementwise_model(seed: int = 0) -> ov.Model:
    """x*w + b with f32 constants, plus a second output x + y; an unused input z."""
    rng = np.random.default_rng(seed)
    x = ops.parameter([2, 3, 4], np.float32, name="x")
    y = ops.parameter([2, 3, 4], np.float32, name="y")
    z = ops.parameter([1], np.float32, name="z_unused")
    w = ops.constant(rng.standard_normal((1, 3, 1)).astype(np.float32), name="w")
    b = ops.constant(rng.standard_normal((4,)).astype(np.float32), name="b")
    scaled = ops.add(ops.multiply(x, w, name="mul"), b, name="scaled")
    scaled.output(0).set_names({"scaled_out"})
    total = ops.add(x, y, name="total")
    return ov.Model([ops.result(scaled, name="r0"), ops.result(total, name="r1")], [x, y, z],
                    "elementwise")


@pytest.mark.parametrize("version, compress", [(11, False), (11, True), (10, False)])
def test_elementwise_model_matches_openvino(tmp_path, version, compress):
    """Inputs in XML order (unused ones too), outputs in Result order, values as OpenVINO's."""
    model = _elementwise_model()
    actual = oracle.compare_with_openvino(model, tmp_path, version=version,
                                          compress_to_fp16=compress)
    graph = lpjit.read_ir(tmp_path / "model.xml")
    assert [p.origin.name for p in graph.parameters] == ["x", "y", "z_unused"]
    assert [p.output.names for p in graph.parameters] == [("x",), ("y",), ("z_unused",)]
    assert [r.origin.name for r in graph.results] == ["r0", "r1"]
    assert graph.results[0].names == ("scaled_out",)
    assert [a.shape for a in actual] == [(2, 3, 4), (2, 3, 4)]
    kinds = [n.kind for n in graph.nodes]
    expected = ["Parameter"] * 3 + ["Constant", "Multiply", "Constant", "Add", "Result",
                                    "Add", "Result"]
    if compress:
        expected[3:6] = ["Constant", "Convert", "Multiply", "Constant", "Convert"]
    assert sorted(kinds) == sorted(expected)
    assert len(graph.nodes) == len(expected)


def test_compressed_weights_read_as_f16_constant_and_convert(tmp_path):
    """compress_to_fp16 gives Const(f16) -> Convert(f32); the graph keeps that chain."""
    xml = oracle.save(_elementwise_model(), tmp_path, compress_to_fp16=True)
    graph = lpjit.read_ir(xml)
    mul = next(n for n in graph.nodes if isinstance(n, Multiply))
    convert = mul.inputs[1].node
    assert isinstance(convert, Convert) and convert.destination_type == dtypes.f32
    const = convert.inputs[0].node
    assert isinstance(const, Constant) and const.element_type == dtypes.f16
    assert const.data.dtype == np.float16 and const.origin.name == "w_compressed"


def _weight_chain_model(values: np.ndarray) -> ov.Model:
    """x * (Convert(Const(i8)) * scale): the weight-decompression pattern."""
    x = ops.parameter(list(values.shape), np.float32, name="x")
    q = ops.constant(values, name="q")
    scale = ops.constant(np.float32(0.05), name="scale")
    weight = ops.multiply(ops.convert(q, "f32", name="deq"), scale, name="weight")
    out = ops.multiply(x, weight, name="out")
    return ov.Model([ops.result(out, name="result")], [x], "weights")


def test_i8_constant_is_readonly_view_of_mapped_bin(tmp_path):
    """Byte-sized constants are zero-copy, read-only views of the memory-mapped .bin."""
    rng = np.random.default_rng(1)
    values = rng.integers(-128, 128, (3, 5)).astype(np.int8)
    xml = oracle.save(_weight_chain_model(values), tmp_path)
    graph = lpjit.read_ir(xml)
    q = next(n for n in graph.nodes if n.origin.name == "q")
    assert isinstance(q, Constant) and q.element_type == dtypes.i8
    np.testing.assert_array_equal(q.data, values)
    assert not q.data.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        q.data[0, 0] = 1
    base = q.data
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    assert isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)
    inputs = oracle.random_inputs(_weight_chain_model(values), seed=2)
    np.testing.assert_allclose(reference.run(graph, inputs)[0], oracle.ov_run(xml, inputs)[0],
                               rtol=1e-6, atol=1e-6)


def test_identical_constants_share_one_offset_and_memory(tmp_path):
    """OpenVINO deduplicates identical constant bytes; both Consts view the same memory."""
    rng = np.random.default_rng(4)
    values = rng.standard_normal((2, 3)).astype(np.float32)
    x = ops.parameter([2, 3], np.float32, name="x")
    a = ops.add(x, ops.constant(values, name="c1"), name="a")
    b = ops.multiply(a, ops.constant(values.copy(), name="c2"), name="b")
    xml = oracle.save(ov.Model([ops.result(b)], [x], "dedup"), tmp_path)
    text = xml.read_text()
    assert text.count('offset="0"') == 2
    graph = lpjit.read_ir(xml)
    c1, c2 = (n for n in graph.nodes if isinstance(n, Constant))
    assert c1 is not c2 and np.shares_memory(c1.data, c2.data)
    np.testing.assert_array_equal(c1.data, values)


def _packed_model() -> ov.Model:
    """Packed and 16-bit constants converted to f32 and added to the input."""
    x = ops.parameter([5], np.float32, name="x")
    consts = [
        ov.op.Constant(ov.Type.u4, ov.Shape([5]), [1, 2, 3, 15, 0]),
        ov.op.Constant(ov.Type.i4, ov.Shape([5]), [1, -2, 3, -8, 7]),
        ov.op.Constant(ov.Type.bf16, ov.Shape([5]), [1.0, 2.5, -3.0, 0.125, 7.0]),
        ov.op.Constant(ov.Type.f16, ov.Shape([5]), [1.0, -0.5, 3.25, 4.0, 1e-3]),
    ]
    total = x
    for i, c in enumerate(consts):
        c.set_friendly_name(f"c_{c.get_element_type().get_type_name()}")
        total = ops.add(total, ops.convert(c, "f32"), name=f"add{i}")
    bits = ov.op.Constant(ov.Type.u1, ov.Shape([9]), [1, 0, 1, 1, 0, 0, 0, 1, 1])
    bits.set_friendly_name("c_u1")
    flags = ops.convert(bits, "f32", name="flags")
    return ov.Model([ops.result(total, name="sum"), ops.result(flags, name="flags_out")], [x],
                    "packed")


def test_packed_and_half_constants_decode_like_openvino(tmp_path):
    """u4/i4 (low nibble first), u1 (MSB first), bf16 and f16 decode to OpenVINO's values."""
    xml = oracle.save(_packed_model(), tmp_path)
    graph = lpjit.read_ir(xml)
    consts = {n.origin.name: n for n in graph.nodes if isinstance(n, Constant)}
    np.testing.assert_array_equal(consts["c_u4"].data, [1, 2, 3, 15, 0])
    np.testing.assert_array_equal(consts["c_i4"].data, [1, -2, 3, -8, 7])
    np.testing.assert_array_equal(consts["c_u1"].data, [1, 0, 1, 1, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(consts["c_bf16"].data, [1.0, 2.5, -3.0, 0.125, 7.0])
    assert consts["c_i4"].data.dtype == np.int8 and consts["c_u4"].data.dtype == np.uint8
    assert consts["c_bf16"].data.dtype == np.float32
    assert {n.element_type.name for n in consts.values()} == {"u4", "i4", "u1", "bf16", "f16"}
    assert all(not c.data.flags.writeable for c in consts.values())
    inputs = oracle.random_inputs(_packed_model(), seed=5)
    for actual, expected in zip(reference.run(graph, inputs), oracle.ov_run(xml, inputs)):
        np.testing.assert_allclose(actual, expected, rtol=1e-6)


def test_xml_text_and_bytes_with_weight_bytes(tmp_path):
    """XML may be given as str or bytes; weights as bytes (copied nowhere: zero-copy view)."""
    xml = oracle.save(_elementwise_model(seed=3), tmp_path)
    weights = xml.with_suffix(".bin").read_bytes()
    from_path = lpjit.read_ir(xml)
    inputs = oracle.random_inputs(_elementwise_model(seed=3), seed=6)
    expected = reference.run(from_path, inputs)
    for text in (xml.read_text(), xml.read_bytes()):
        graph = lpjit.read_ir(text, weights)
        for a, e in zip(reference.run(graph, inputs), expected):
            np.testing.assert_array_equal(a, e)
    graph = lpjit.read_ir(str(xml), weights=str(xml.with_suffix(".bin")))
    assert len(graph.nodes) == len(from_path.nodes)
    buffer_graph = lpjit.read_ir(xml.read_text(), weights)
    const = next(n for n in buffer_graph.nodes if isinstance(n, Constant))
    assert np.shares_memory(const.data, np.frombuffer(weights, np.uint8))


def test_model_without_constants_needs_no_weights(tmp_path):
    x = ops.parameter([3], np.float32, name="x")
    y = ops.parameter([3], np.float32, name="y")
    xml = oracle.save(ov.Model([ops.result(ops.add(x, y))], [x, y], "noconst"), tmp_path)
    xml.with_suffix(".bin").unlink()
    graph = lpjit.read_ir(xml.read_text())
    assert isinstance(graph.nodes[2], Add)
    assert isinstance(lpjit.read_ir(xml).results[0], Result)


def test_unreachable_layers_are_dropped(tmp_path):
    """A layer no Result reaches (here an Add whose Result was removed) is not built."""
    x = ops.parameter([3], np.float32, name="x")
    kept = ops.multiply(x, x, name="kept")
    dropped = ops.add(x, x, name="dropped")
    xml = oracle.save(ov.Model([ops.result(kept, name="r_kept"),
                                ops.result(dropped, name="r_dropped")], [x], "m"), tmp_path)
    text = xml.read_text()
    start = text.index('<layer id="', text.index('name="r_dropped"') - 60)
    end = text.index("</layer>", start) + len("</layer>")
    rid = text[start:].split('"')[1]
    text = text[:start] + text[end:]
    text = "\n".join(line for line in text.splitlines() if f'to-layer="{rid}"' not in line)
    graph = lpjit.read_ir(text)
    assert [n.origin.name for n in graph.nodes] == ["x", "kept", "r_kept"]
    assert isinstance(graph.parameters[0], Parameter)


def test_legacy_sections_and_rt_info_are_ignored(tmp_path):
    """<meta_data>, <quantization_parameters> and rt_info (model, layer, port) are skipped."""
    xml = oracle.save(_elementwise_model(seed=8), tmp_path)
    text = xml.read_text()
    text = text.replace("<layers>", "<meta_data><MO_version value='x'/><cli_parameters>"
                        "<input value='x'/></cli_parameters></meta_data>\n"
                        "<quantization_parameters><config>{}</config>"
                        "</quantization_parameters>\n<layers>", 1)
    text = text.replace('<port id="0" precision="FP32" names="x">',
                        '<port id="0" precision="FP32" names="x"><rt_info>'
                        '<attribute name="layout" version="0" layout="[N,C,H]"/></rt_info>', 1)
    text = text.replace('<data auto_broadcast="numpy" />', '<data auto_broadcast="numpy" />'
                        '<rt_info><attribute name="fused_names" version="0" value="a"/>'
                        '</rt_info>', 1)
    graph = lpjit.read_ir(text, xml.with_suffix(".bin").read_bytes())
    assert len(graph.nodes) == len(lpjit.read_ir(xml).nodes)
    assert graph.parameters[0].output.names == ("x",)


def test_result_output_names_take_precedence(tmp_path):
    """A v11 Result's output_names name the model output, even if the producer's differ."""
    xml = oracle.save(_elementwise_model(seed=9), tmp_path)
    text = xml.read_text()
    assert 'output_names="scaled_out"' in text
    graph = lpjit.read_ir(text.replace('output_names="scaled_out"', 'output_names="renamed"'),
                          xml.with_suffix(".bin").read_bytes())
    assert graph.results[0].names == ("renamed",)
    assert graph.results[0].inputs[0].names == ("scaled_out",)
    without = lpjit.read_ir(text.replace('output_names="scaled_out"', ""),
                            xml.with_suffix(".bin").read_bytes())
    assert without.results[0].names == ("scaled_out",)


def _chain_xml(length: int) -> str:
    """x -> Add(x, x) -> Add(prev, x) ... (``length`` Adds), layers listed in reverse order."""
    port = '<port id="{}" precision="FP32"><dim>2</dim></port>'
    layers = ['<layer id="0" name="x" type="Parameter" version="opset1">'
              '<data shape="2" element_type="f32"/><output>' + port.format(0) + "</output>"
              "</layer>"]
    edges = []
    for i in range(1, length + 1):
        layers.append(f'<layer id="{i}" name="add{i}" type="Add" version="opset1"><input>'
                      + port.format(0) + port.format(1) + "</input><output>" + port.format(2)
                      + "</output></layer>")
        edges.append(f'<edge from-layer="{i - 1}" from-port="{0 if i == 1 else 2}" '
                     f'to-layer="{i}" to-port="0"/>')
        edges.append(f'<edge from-layer="0" from-port="0" to-layer="{i}" to-port="1"/>')
    result = length + 1
    layers.append(f'<layer id="{result}" name="out" type="Result" version="opset1"><input>'
                  + port.format(0) + "</input></layer>")
    edges.append(f'<edge from-layer="{length}" from-port="2" to-layer="{result}" to-port="0"/>')
    return (f'<?xml version="1.0"?><net name="chain" version="10"><layers>'
            f'{"".join(reversed(layers))}</layers><edges>{"".join(edges)}</edges></net>')


def test_deep_chain_needs_no_recursion():
    """A 5000-layer chain (deeper than Python's recursion limit) in reverse document order."""
    graph = lpjit.read_ir(_chain_xml(5000))
    assert len(graph.nodes) == 5002
    assert [n.origin.name for n in graph.nodes[:3]] == ["x", "add1", "add2"]
    x = np.random.default_rng(12).standard_normal(2).astype(np.float32)
    np.testing.assert_allclose(reference.run(graph, [x])[0], x * 5001, rtol=1e-4)
