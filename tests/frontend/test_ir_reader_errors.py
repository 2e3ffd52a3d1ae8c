"""read_ir rejects bad IR with the right exception and a message naming what and where.

Each case edits the text of a small IR saved by OpenVINO (x*c + x, c a 2x3 f32 Const).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import oracle
import pytest

import lpjit
from lpjit.errors import (
    BadAttributeError,
    GraphError,
    InputError,
    IRReadError,
    ShapeError,
    UnsupportedError,
    UnsupportedOpError,
    UnsupportedTypeError,
)

pytestmark = pytest.mark.oracle


@pytest.fixture
def base(tmp_path: Path) -> tuple[Path, str, bytes]:
    """The saved IR: (xml path, xml text, weights)."""
    rng = np.random.default_rng(11)
    x = ops.parameter([2, 3], np.float32, name="x")
    c = ops.constant(rng.standard_normal((2, 3)).astype(np.float32), name="c")
    add = ops.add(ops.multiply(x, c, name="mul"), x, name="add")
    xml = oracle.save(ov.Model([ops.result(add, name="out")], [x], "base"), tmp_path)
    return xml, xml.read_text(), xml.with_suffix(".bin").read_bytes()


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


def read(base: tuple[Path, str, bytes], old: str, new: str, **kwargs) -> lpjit.Graph:
    _, text, weights = base
    return lpjit.read_ir(edit(text, old, new), weights, **kwargs)


def test_base_model_reads(base):
    assert len(lpjit.read_ir(base[0]).nodes) == 5


# --- XML and file level -------------------------------------------------------------------

def test_malformed_xml(base):
    with pytest.raises(IRReadError, match="malformed XML at line 3, column 15: not well-formed "
                                          r"\(invalid token\)$"):
        read(base, "<layers>", "<layers attr=>")


@pytest.mark.parametrize("version", ["7", "12"])
def test_unsupported_ir_version(base, version):
    with pytest.raises(IRReadError, match=f"IR version '{version}' is not supported; only IR "
                                          "v10 and v11 are supported"):
        read(base, 'version="11"', f'version="{version}"')


def test_root_is_not_net(base):
    with pytest.raises(IRReadError, match="root element is <model>; expected <net>"):
        lpjit.read_ir(edit(edit(base[1], "<net ", "<model "), "</net>", "</model>"), base[2])


def test_missing_xml_file(tmp_path):
    with pytest.raises(IRReadError, match=r"IR file '.*nothing.xml' does not exist"):
        lpjit.read_ir(tmp_path / "nothing.xml")


def test_missing_bin(base):
    xml = base[0]
    xml.with_suffix(".bin").unlink()
    with pytest.raises(IRReadError, match=r"Const 'c' \(layer 1\): weights file "
                                          r"'.*model.bin' does not exist"):
        lpjit.read_ir(xml)


def test_text_without_weights(base):
    with pytest.raises(IRReadError, match="model has constants but no weights were given"):
        lpjit.read_ir(base[1])


def test_short_bin(base):
    xml = base[0]
    xml.with_suffix(".bin").write_bytes(base[2][:20])
    with pytest.raises(IRReadError, match=r"Const 'c' \(layer 1\): constant at offset 0 with "
                                          r"size 24 ends at byte 24, past the end of the "
                                          r"weights file '.*model.bin' \(20 bytes\)"):
        lpjit.read_ir(xml)


def test_constant_out_of_bounds(base):
    with pytest.raises(IRReadError, match=r"constant at offset 8 with size 24 ends at byte 32, "
                                          r"past the end of the weights buffer \(24 bytes\)"):
        read(base, 'offset="0" size="24"', 'offset="8" size="24"')


def test_size_disagrees_with_shape_and_type(base):
    with pytest.raises(IRReadError, match=r"Const 'c' \(layer 1\): size=12 bytes is too small "
                                          r"for f32 shape \[2, 3\]: 24 bytes are needed"):
        read(base, 'offset="0" size="24"', 'offset="0" size="12"')


def test_huge_dims_are_rejected_before_allocating(base):
    with pytest.raises(IRReadError, match=r"too small for f32 shape \[100000000000, "
                                          r"100000000000\]: 40000000000000000000000 bytes"):
        read(base, 'shape="2, 3"', 'shape="100000000000, 100000000000"')


def test_negative_offset(base):
    with pytest.raises(BadAttributeError, match=r"Const 'c' \(layer 1\): attribute "
                                                r"offset=\"-4\" is negative"):
        read(base, 'offset="0"', 'offset="-4"')


def test_pre_process_block(base):
    block = '<pre-process reference-layer-name="x"><channel id="0"><mean value="1"/></channel>' \
            '</pre-process>\n\t<layers>'
    with pytest.raises(UnsupportedError, match="<pre-process> block"):
        read(base, "<layers>", block)


# --- layers and types -----------------------------------------------------------------------

def test_unknown_op_type(base):
    with pytest.raises(UnsupportedOpError, match=r"Frobnicate 'add' \(layer 3\): op type "
                                                 "'Frobnicate' is not supported"):
        read(base, 'type="Add"', 'type="Frobnicate"')


def test_unknown_opset(base):
    with pytest.raises(UnsupportedOpError, match=r"Add 'add' \(layer 3\): op version 'opset99' "
                                                 "is unknown; OpenVINO opsets are opset1"):
        read(base, 'type="Add" version="opset1"', 'type="Add" version="opset99"')


def test_op_version_before_its_first_registered_version(base):
    with pytest.raises(UnsupportedOpError, match="Add is not defined in opset0; lpjit "
                                                 "implements it from opset1"):
        read(base, 'type="Add" version="opset1"', 'type="Add" version="opset0"')


def test_extension_op_version(base):
    with pytest.raises(UnsupportedOpError, match="op version 'extension' is not supported"):
        read(base, 'type="Add" version="opset1"', 'type="Add" version="extension"')


def test_bad_attribute_value(base):
    with pytest.raises(BadAttributeError, match=r"Multiply 'mul' \(layer 2\): attribute "
                                                r"auto_broadcast=\"diagonal\" is invalid"):
        read(base, '<data auto_broadcast="numpy" />', '<data auto_broadcast="diagonal" />')


def test_bad_const_shape_attribute(base):
    with pytest.raises(BadAttributeError, match=r"Const 'c' \(layer 1\): attribute "
                                                r"shape=\"2, x\" is invalid; expected a "
                                                "comma-separated list of integers"):
        read(base, 'shape="2, 3"', 'shape="2, x"')


@pytest.mark.parametrize("element_type", ["nf4", "f8e4m3"])
def test_unsupported_element_type(base, element_type):
    with pytest.raises(UnsupportedTypeError, match=rf"Const 'c' \(layer 1\): attribute "
                                                   rf"element_type: element type "
                                                   rf"'{element_type}' is not supported"):
        read(base, 'element_type="f32" shape="2, 3"', f'element_type="{element_type}" '
                                                      'shape="2, 3"')


def test_duplicate_layer_id(base):
    with pytest.raises(IRReadError, match=r"duplicate layer id 2: Multiply 'mul' \(layer 2\) "
                                          r"and Add 'add' \(layer 2\)"):
        read(base, '<layer id="3" name="add"', '<layer id="2" name="add"')


def test_extra_output_port(base):
    with pytest.raises(GraphError, match=r"Add 'add' \(layer 3\): the layer declares 2 output "
                                         "ports; the op produces 1"):
        read(base, '<port id="2" precision="FP32" names="out">',
             '<port id="9" precision="FP32" /><port id="2" precision="FP32" names="out">')


def test_shape_inference_error_names_the_layer(base):
    with pytest.raises(ShapeError, match=r"Multiply 'mul' \(layer 2\): input shapes \(4, 3\) "
                                         r"and \(2, 3\) do not broadcast"):
        read(base, '<data shape="2,3" element_type="f32" />',
             '<data shape="4,3" element_type="f32" />')


# --- edges and topology ---------------------------------------------------------------------

def test_cycle(base):
    with pytest.raises(GraphError, match=r"Add 'add' \(layer 3\): is part of a cycle"):
        read(base, '<edge from-layer="0" from-port="0" to-layer="2" to-port="0" />',
             '<edge from-layer="3" from-port="2" to-layer="2" to-port="0" />')


def test_dangling_edge_bad_layer_id(base):
    with pytest.raises(GraphError, match=r"<edge from-layer=\"99\" from-port=\"0\" "
                                         r"to-layer=\"2\" to-port=\"1\" /> refers to layer 99, "
                                         "which does not exist"):
        read(base, '<edge from-layer="1" from-port="0" to-layer="2" to-port="1" />',
             '<edge from-layer="99" from-port="0" to-layer="2" to-port="1" />')


def test_dangling_edge_bad_port_id(base):
    with pytest.raises(GraphError, match=r"Const 'c' \(layer 1\): <edge .* refers to output port "
                                         r"7, which this layer does not have \(output ports: 0\)"):
        read(base, '<edge from-layer="1" from-port="0" to-layer="2" to-port="1" />',
             '<edge from-layer="1" from-port="7" to-layer="2" to-port="1" />')


def test_dangling_edge_bad_input_port_id(base):
    with pytest.raises(GraphError, match=r"Multiply 'mul' \(layer 2\): <edge .* refers to input "
                                         r"port 5, which this layer does not have \(input "
                                         r"ports: 0, 1\)"):
        read(base, '<edge from-layer="1" from-port="0" to-layer="2" to-port="1" />',
             '<edge from-layer="1" from-port="0" to-layer="2" to-port="5" />')


def test_missing_input_edge(base):
    with pytest.raises(GraphError, match=r"Multiply 'mul' \(layer 2\): input port 1 has no "
                                         "incoming edge"):
        read(base, '<edge from-layer="1" from-port="0" to-layer="2" to-port="1" />', "")


def test_two_edges_into_one_port(base):
    with pytest.raises(GraphError, match=r"Multiply 'mul' \(layer 2\): input port 1 has two "
                                         "incoming edges"):
        read(base, '<edge from-layer="1" from-port="0" to-layer="2" to-port="1" />',
             '<edge from-layer="1" from-port="0" to-layer="2" to-port="1" />'
             '<edge from-layer="0" from-port="0" to-layer="2" to-port="1" />')


def test_no_results(base):
    _, text, weights = base
    start = text.index('<layer id="4"')
    end = text.index("</layer>", start) + len("</layer>")
    text = edit(text[:start] + text[end:],
                '<edge from-layer="3" from-port="2" to-layer="4" to-port="0" />', "")
    with pytest.raises(GraphError, match="the model has no Result layers"):
        lpjit.read_ir(text, weights)


# --- hostile XML ----------------------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE net [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<net name="&lol9;" version="11"><layers/></net>
"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE net [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<net name="&secret;" version="11"><layers/></net>
"""


@pytest.mark.parametrize("text", [BILLION_LAUGHS, EXTERNAL_ENTITY],
                         ids=["billion-laughs", "external-entity"])
def test_hostile_xml_is_rejected_quickly(text):
    start = time.perf_counter()
    with pytest.raises(IRReadError, match=r"the XML contains a DTD \(<!DOCTYPE ...>\); IR files "
                                          "have none and DTDs are rejected for safety"):
        lpjit.read_ir(text)
    assert time.perf_counter() - start < 1.0


# --- dynamic shapes -------------------------------------------------------------------------

def test_dynamic_shape_without_shapes(base):
    with pytest.raises(ShapeError, match=re.escape(
            "Parameter 'x' (layer 0): input 'x' has a dynamic shape [?,3]; pass "
            "shapes={'x': (1, 3)} to lpjit.read_ir / lpjit.compile")):
        read(base, '<data shape="2,3"', '<data shape="?,3"')


def test_dynamic_rank_without_shapes(base):
    with pytest.raises(ShapeError, match="input 'x' has a dynamic rank; pass shapes="):
        read(base, '<data shape="2,3"', '<data shape="..."')


def test_shapes_key_matching_no_input(base):
    with pytest.raises(InputError, match="shapes has an entry for 'y', which is not an input of "
                                         "the model; inputs are: 'x'"):
        read(base, '<data shape="2,3"', '<data shape="?,3"', shapes={"y": (2, 3)})


@pytest.mark.parametrize("declared, given", [("?,3", (2, 4)), ("?,3", (2, 3, 1)),
                                             ("1..2,3", (5, 3)), ("2,3", (4, 3))])
def test_shapes_incompatible_with_declared_shape(base, declared, given):
    with pytest.raises(ShapeError, match=re.escape(f"shapes['x'] = {given} does not match the "
                                                   f"declared shape [{declared}]")):
        read(base, '<data shape="2,3"', f'<data shape="{declared}"', shapes={"x": given})
