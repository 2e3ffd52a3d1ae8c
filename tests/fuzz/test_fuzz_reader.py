"""Property: any mutation of a valid IR reads (and runs on the reference) or raises LpjitError.

Hypothesis drives the mutators of ``fuzz.mutations`` through ``DrawChooser``, so a failing
case shrinks to its simplest seed and mutations.  Every case runs under a 2 s watchdog and an
address-space guard (1 GiB beyond what the process maps), so a hang or a multi-GB allocation
fails the test instead of stalling or swapping the machine.  The seeds are built with
OpenVINO and NNCF once per session (``conftest.corpus``).

2,000+ cases in all; the longer run is ``python tools/fuzz_ir.py --cases 20000 --seed N``.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz import mutations
from fuzz.driver import check, fuzz_settings

pytestmark = pytest.mark.oracle

@fuzz_settings(300)
@given(data=st.data())
def test_attributes(corpus, data):
    """Attribute values negative, huge, NaN, empty, garbage, of wrong length, or missing."""
    check(*corpus, data, ["attribute"])


@fuzz_settings(400)
@given(data=st.data())
def test_shapes_types_and_constants(corpus, data):
    """Huge, negative and dynamic dims; element types; Const offsets, sizes, values; .bin."""
    check(*corpus, data, ["shape", "element_type", "constant", "values", "values", "weights"])


@fuzz_settings(400)
@given(data=st.data())
def test_graph_structure(corpus, data):
    """Edges, port ids, layers (deleted, duplicated, re-typed, re-versioned), sections."""
    check(*corpus, data, ["edge", "port", "layer", "net"])


@fuzz_settings(200)
@given(data=st.data())
def test_xml_text_damage(corpus, data):
    """Truncated XML, stray markup and entities, bad bytes and encodings."""
    check(*corpus, data, [mutations.TEXT_FAMILY], max_steps=2)


@fuzz_settings(700)
@given(data=st.data())
def test_mixed_mutations(corpus, data):
    """Up to four mutations of any family (the fuzz command's default mix)."""
    check(*corpus, data, mutations.DEFAULT_MIX, max_steps=4)
