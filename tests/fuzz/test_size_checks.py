"""The reader checks sizes before it allocates: huge dims in a small file cost no memory.

Each case edits a small IR saved by OpenVINO so that some size becomes enormous (a Const shape,
offset or size, a Parameter shape, a Broadcast target or Tile repeats held in the .bin) and
reads it under ``tracemalloc``: the read either fails with the pinned LpjitError or succeeds,
and in both cases allocates less than a few MiB.  The fuzz tests rely on this property; their
address-space guard only catches what slips through.
"""

from __future__ import annotations

import re
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import openvino as ov
import oracle
import pytest
from openvino import opset1, opset3

import lpjit
from fuzz import runner
from lpjit.errors import IRReadError, LpjitError, ShapeError

pytestmark = pytest.mark.oracle

PEAK_LIMIT = 4 << 20            # bytes a read may allocate, whatever sizes the IR claims


def peak_of(read: Callable[[], object]) -> tuple[object, int]:
    """``read()``'s result (or the LpjitError it raised) and its peak traced allocation."""
    tracemalloc.start()
    try:
        try:
            result = read()
        except LpjitError as e:          # returned for the caller to check
            result = e
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def saved(model: ov.Model, tmp_path: Path) -> tuple[str, bytes]:
    xml = oracle.save(model, tmp_path)
    return xml.read_text(), xml.with_suffix(".bin").read_bytes()


@pytest.fixture
def with_const(tmp_path: Path) -> tuple[str, bytes]:
    """x[2, 3] * c with c a 2x3 f32 Const (offset 0, size 24)."""
    x = opset1.parameter([2, 3], np.float32, name="x")
    c = opset1.constant(np.random.default_rng(2).standard_normal((2, 3)).astype(np.float32),
                        name="c")
    return saved(ov.Model([opset1.multiply(x, c, name="mul")], [x], "m"), tmp_path)


@pytest.mark.parametrize("old, new, message", [
    ('shape="2, 3"', 'shape="4294967296, 4294967296"',
     (r"size=24 bytes is too small for f32 shape \[4294967296, 4294967296\]: "
      r"73786976294838206464 bytes are needed")),
    ('offset="0"', 'offset="18446744073709551616"',
     (r"constant at offset 18446744073709551616 with size 24 ends at byte "
      r"18446744073709551640, past the end of the weights buffer \(24 bytes\)")),
    ('size="24"', 'size="9223372036854775807"',
     (r"constant at offset 0 with size 9223372036854775807 ends at byte 9223372036854775807, "
      r"past the end of the weights buffer \(24 bytes\)")),
])
def test_huge_constant_is_rejected_before_allocating(with_const, old, new, message):
    text, weights = with_const
    assert old in text
    error, peak = peak_of(lambda: lpjit.read_ir(text.replace(old, new), weights))
    assert isinstance(error, IRReadError) and re.search(message, str(error)), error
    assert peak < PEAK_LIMIT


def test_huge_parameter_reads_without_allocating(with_const):
    """2^48 f32 elements (1 PiB) is a legal shape: reading it allocates nothing for it."""
    text, weights = with_const
    text = text.replace('shape="2,3"', 'shape="65536,65536,65536"').replace(
        'shape="2, 3"', 'shape="1"').replace('size="24"', 'size="4"')
    graph, peak = peak_of(lambda: lpjit.read_ir(text, weights))
    assert isinstance(graph, lpjit.Graph), graph
    assert graph.results[0].inputs[0].shape == (65536, 65536, 65536)
    assert runner.total_elements(graph) > runner.MAX_REFERENCE_ELEMENTS
    assert peak < PEAK_LIMIT


def test_parameter_past_int64_bytes_is_rejected(with_const):
    text, weights = with_const
    error, peak = peak_of(lambda: lpjit.read_ir(
        text.replace('shape="2,3"', 'shape="4294967296,4294967296,4"'), weights))
    assert isinstance(error, ShapeError) and "would take 295147905179352825856 bytes" in str(
        error), error
    assert peak < PEAK_LIMIT


def int64(values: list[int]) -> bytes:
    return np.array(values, np.int64).tobytes()


@pytest.mark.parametrize("make, shape", [("broadcast", (2 ** 31, 2 ** 20)),
                                         ("tile", (2 ** 31, 3 * 2 ** 20))])
def test_huge_shape_from_constant_values_reads_without_allocating(tmp_path, make, shape):
    """A Broadcast target / Tile repeats in the .bin made huge (2^51 elements and more): the
    integer result is far past the folding limit, so nothing is computed while reading."""
    if make == "broadcast":
        node = opset3.broadcast(opset1.constant(np.int32([[7]])),
                                opset1.constant(np.int64([2, 3])), name="op")
        old, new = int64([2, 3]), int64(list(shape))
    else:
        data = opset1.constant(np.arange(6, dtype=np.int32).reshape(2, 3), name="data")
        node = opset1.tile(data, opset1.constant(np.int64([1, 1])), name="op")
        old, new = int64([1, 1]), int64([2 ** 30, 2 ** 20])
    x = opset1.parameter([1], np.float32, name="x")
    text, weights = saved(ov.Model([node.output(0), opset1.relu(x).output(0)], [x], "m"),
                          tmp_path)
    assert weights.count(old) == 1
    graph, peak = peak_of(lambda: lpjit.read_ir(text, weights.replace(old, new)))
    assert isinstance(graph, lpjit.Graph), graph
    assert graph.results[0].inputs[0].shape == shape
    assert peak < PEAK_LIMIT
