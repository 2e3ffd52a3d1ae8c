"""Property: a mutated small IR that reads also compiles (and runs) or raises LpjitError.

The compile stage of the fuzz harness, kept to the seeds that compile in well under a second
and to the mutations that usually keep an IR readable (attribute values, constant values,
shapes, element types, rewired edges).  Cases that read and run on the reference are compiled
with ``lpjit.compile(graph, threads=1)`` when their tensors hold at most
``runner.MAX_COMPILE_ELEMENTS`` elements, under a 30 s watchdog and the address-space guard.
Crashes fail this test, and so do compiler failures: a compiled result that disagrees with
the reference (``compile: mismatch``; f32 weight decompression, a documented difference, is
compared with the folded graph's reference) and a ``VerificationError``.  The long run is
``python tools/fuzz_ir.py --compile-every 2``.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzz import mutations
from fuzz.driver import check, fuzz_settings

pytestmark = pytest.mark.oracle

SMALL_SEEDS = ("packed_constants", "fake_quantize", "logic", "nncf_int4_mlp", "cnn")
FAMILIES = ("attribute", "values", "values", "shape", "element_type", "edge")


@pytest.fixture(scope="module")
def small_corpus(corpus) -> tuple[list[mutations.Seed], mutations.Pools]:
    seeds, pools = corpus
    chosen = [s for s in seeds if s.name in SMALL_SEEDS]
    assert len(chosen) == len(SMALL_SEEDS)
    return chosen, pools


@fuzz_settings(100)
@given(data=st.data())
def test_compile_small_mutated_models(small_corpus, data):
    check(*small_corpus, data, FAMILIES, max_steps=2, compile_model=True)
