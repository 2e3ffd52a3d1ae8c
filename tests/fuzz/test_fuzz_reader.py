"""Property: any mutation of a valid IR reads (and runs on the reference) or raises LpjitError.

Hypothesis drives the mutators of ``fuzz.mutations`` through ``DrawChooser``, so a failing
case shrinks to its simplest seed and mutations.  Every case runs under a 2 s watchdog and an
address-space guard (1 GiB beyond what the process maps), so a hang or a multi-GB allocation
fails the test instead of stalling or swapping the machine.  The seeds are built with
OpenVINO and NNCF once per session (``conftest.corpus``).

2,000+ cases in all; the longer run is ``python tools/fuzz_ir.py --cases 20000 --seed N``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from fuzz import conftest, mutations, runner

pytestmark = pytest.mark.oracle

T = TypeVar("T")
TIME_BUDGET = 2.0                   # seconds per case
MEMORY_HEADROOM = 1 << 30           # bytes of address space a case may add


class DrawChooser:
    """A ``mutations.Chooser`` over hypothesis draws (shrinks toward low integers and the
    first option)."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def choice(self, options: Sequence[T]) -> T:
        return options[self.data.draw(st.integers(0, len(options) - 1))]


def fuzz_settings(examples: int) -> settings:
    """Deterministic (derandomized) runs of ``examples`` cases, no deadline per example."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example],
                    print_blob=True)


def check(corpus, data: st.DataObject, families: Sequence[str], max_steps: int = 3) -> None:
    """Make a case from ``families`` and require success or an LpjitError, in budget."""
    seeds, pools = corpus
    case = mutations.make_case(seeds, pools, DrawChooser(data), families, max_steps)
    note(case.describe())
    try:
        with runner.time_limit(TIME_BUDGET), runner.address_space_limit(MEMORY_HEADROOM):
            outcome = runner.run_case(case)
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            raise
        conftest.TALLY["crash"] += 1
        raise AssertionError(f"{case.describe()}: {type(e).__name__}: {e}") from e
    conftest.TALLY[str(outcome)] += 1


@fuzz_settings(300)
@given(data=st.data())
def test_attributes(corpus, data):
    """Attribute values negative, huge, NaN, empty, garbage, of wrong length, or missing."""
    check(corpus, data, ["attribute"])


@fuzz_settings(400)
@given(data=st.data())
def test_shapes_types_and_constants(corpus, data):
    """Huge, negative and dynamic dims; element types; Const offsets, sizes, values; .bin."""
    check(corpus, data, ["shape", "element_type", "constant", "values", "values", "weights"])


@fuzz_settings(400)
@given(data=st.data())
def test_graph_structure(corpus, data):
    """Edges, port ids, layers (deleted, duplicated, re-typed, re-versioned), sections."""
    check(corpus, data, ["edge", "port", "layer", "net"])


@fuzz_settings(200)
@given(data=st.data())
def test_xml_text_damage(corpus, data):
    """Truncated XML, stray markup and entities, bad bytes and encodings."""
    check(corpus, data, [mutations.TEXT_FAMILY], max_steps=2)


@fuzz_settings(700)
@given(data=st.data())
def test_mixed_mutations(corpus, data):
    """Up to four mutations of any family (the fuzz command's default mix)."""
    check(corpus, data, mutations.DEFAULT_MIX, max_steps=4)
