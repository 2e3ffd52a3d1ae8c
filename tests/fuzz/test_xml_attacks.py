"""Hostile XML is rejected quickly with an IRReadError (issue 8, Deliver 2).

Entity tricks need a DTD, which the reader refuses outright (defusedxml, ``forbid_dtd``); very
deep nesting and huge tags are refused by the reader's own limits (64 levels, 16 MiB between
two ``<``).  Each attack must fail in well under a second, without reading any other file.
"""

from __future__ import annotations

import time

import pytest

import lpjit
from lpjit.errors import IRReadError

DTD_MESSAGE = (r"^the XML contains a DTD \(<!DOCTYPE ...>\); IR files have none and DTDs are "
               r"rejected for safety$")

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

# One 100 kB entity referenced 10,000 times: 1 GB of text from a 140 kB file.
QUADRATIC_BLOWUP = ('<?xml version="1.0"?>\n<!DOCTYPE net [<!ENTITY a "' + "x" * 100_000
                    + '">]>\n<net name="' + "&a;" * 10_000 + '" version="11"><layers/></net>')

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE net [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<net name="&secret;" version="11"><layers/></net>
"""

EXTERNAL_DTD = """<?xml version="1.0"?>
<!DOCTYPE net SYSTEM "file:///etc/passwd">
<net version="11"><layers/></net>
"""

PARAMETER_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE net [
 <!ENTITY % remote SYSTEM "http://127.0.0.1:9/evil.dtd">
 <!ENTITY % file SYSTEM "file:///etc/passwd">
 %remote;
]>
<net version="11"><layers/></net>
"""

# A valid one-Parameter, one-Result IR with ``inner`` inside the Parameter's <data>.
MINIMAL = ('<net name="m" version="11"><layers>'
           '<layer id="0" name="x" type="Parameter" version="opset1">'
           '<data shape="2" element_type="f32">{inner}</data>'
           '<output><port id="0" precision="FP32"><dim>2</dim></port></output></layer>'
           '<layer id="1" name="y" type="Result" version="opset1">'
           '<input><port id="0" precision="FP32"><dim>2</dim></port></input></layer>'
           '</layers><edges><edge from-layer="0" from-port="0" to-layer="1" to-port="0"/>'
           '</edges></net>')


def rejected_quickly(text: str | bytes, match: str) -> None:
    start = time.perf_counter()
    with pytest.raises(IRReadError, match=match):
        lpjit.read_ir(text)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("text", [BILLION_LAUGHS, QUADRATIC_BLOWUP, EXTERNAL_ENTITY,
                                  EXTERNAL_DTD, PARAMETER_ENTITY],
                         ids=["billion-laughs", "quadratic-blowup", "external-entity",
                              "external-dtd", "parameter-entity"])
def test_dtd_attacks_are_rejected(text):
    rejected_quickly(text, DTD_MESSAGE)


def test_dtd_attack_in_a_file_is_rejected(tmp_path):
    xml = tmp_path / "model.xml"
    xml.write_text(EXTERNAL_ENTITY)
    rejected_quickly(str(xml), DTD_MESSAGE)


def test_minimal_ir_reads():
    """The carrier of the nesting attacks is itself a valid IR."""
    assert len(lpjit.read_ir(MINIMAL.format(inner="")).nodes) == 2


def test_deep_nesting_is_rejected():
    depth = 100_000
    text = ('<net version="11"><layers>' + "<a>" * depth + "</a>" * depth
            + "</layers></net>").encode()
    rejected_quickly(text, r"^the XML nests elements more than 64 levels deep \(<a> at level "
                           r"65\); IR files nest about 7$")


def test_deep_nesting_inside_a_valid_ir_is_rejected():
    """Nesting below an element the reader never looks at is rejected all the same."""
    depth = 100_000
    rejected_quickly(MINIMAL.format(inner="<b>" * depth + "</b>" * depth),
                     r"^the XML nests elements more than 64 levels deep \(<b> at level 65\)")


def test_nesting_within_the_limit_is_accepted():
    inner = "<b>" * 60 + "</b>" * 60           # data at level 4 + 60 = level 64
    assert len(lpjit.read_ir(MINIMAL.format(inner=inner)).nodes) == 2


def test_huge_attribute_is_rejected():
    text = b'<net version="11" name="' + b"x" * 100_000_000 + b'"><layers/></net>'
    rejected_quickly(text, r"^the XML has a 100000026-byte tag or text at byte 0; IR files "
                           r"have none longer than 16777216 bytes$")


def test_huge_shape_attribute_is_rejected():
    """A 100 MB Const shape would otherwise become 50 million Python ints."""
    shape = b"1," * 50_000_000
    text = MINIMAL.format(inner="").encode().replace(b'shape="2"', b'shape="' + shape + b'"')
    rejected_quickly(text, r"^the XML has a 100000\d\d\d-byte tag or text at byte \d+; ")


def test_huge_text_is_rejected():
    text = b'<net version="11"><layers>' + b"x" * 100_000_000 + b"</layers></net>"
    rejected_quickly(text, r"^the XML has a 100000008-byte tag or text at byte 18; ")


def test_xinclude_is_not_expanded():
    """An XInclude of a local file stays an unknown element: nothing is read from the file."""
    inner = ('<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="/etc/passwd" '
             'parse="text"/>')
    graph = lpjit.read_ir(MINIMAL.format(inner=inner))
    assert "root:" not in repr(graph) and len(graph.nodes) == 2
