"""StridedSlice-1 and Slice-8 against the OpenVINO CPU plugin: one-op IRs saved by OpenVINO,
outputs compared exactly, and ``to_ir`` compared with the ``<data>`` OpenVINO wrote."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import openvino as ov
import oracle
import pytest
from openvino import opset1, opset8

import lpjit
from lpjit.ops import slicing as ops

pytestmark = pytest.mark.oracle

SHAPE = (4, 5, 6)


def ints(values: object, dtype: type = np.int64) -> ov.Node:
    return opset1.constant(np.array(values, dtype))


def one_op(build: Callable[[ov.Node], ov.Node], dtype: type = np.float32) -> ov.Model:
    x = opset1.parameter(list(SHAPE), dtype, name="x")
    return ov.Model([opset1.result(build(x))], [x], "one_op")


def assert_to_ir_matches(xml: Path) -> None:
    """Every slicing op lpjit reads writes back exactly the ``<data>`` OpenVINO wrote."""
    layers = {layer.get("id"): layer for layer in ElementTree.parse(xml).iter("layer")}
    for node in lpjit.read_ir(xml).nodes:
        if type(node) in (ops.StridedSlice, ops.Slice):
            data = layers[node.origin.layer_id].find("data")
            written = dict(data.attrib) if data is not None else {}
            assert node.to_ir() == written, node.origin.describe()


def check(model: ov.Model, tmp_path: Path) -> None:
    oracle.compare_with_openvino(model, tmp_path, rtol=0, atol=0)
    assert_to_ir_matches(tmp_path / "model.xml")


# (begin, end, strides, begin_mask, end_mask, new_axis_mask, shrink_axis_mask, ellipsis_mask)
STRIDED_SLICE_CASES = {
    "plain": ([1, 0], [3, 5], [1, 2], [0, 0], [0, 0], [], [], []),
    "negative-indices": ([-3, -1], [-1, -5], [1, -1], [0, 0], [0, 0], [], [], []),
    "negative-strides": ([0, 4, 5], [4, 0, 0], [1, -2, -3], [0, 0, 0], [0, 0, 0], [], [], []),
    "clamped": ([10, -10], [20, 10], [1, 1], [0, 0], [0, 0], [], [], []),
    "begin-end-masks": ([1, 2], [3, 4], [1, 1], [1, 0], [0, 1], [], [], []),
    "reverse-masks": ([0, 0, 0], [0, 0, 0], [-1, -2, 1], [1, 1, 0], [1, 1, 0], [], [], []),
    "short-masks": ([1, 2, 3], [3, 4, 5], [1, 1, 1], [1], [], [], [], []),
    "new-axis": ([0, 1], [0, 3], [1, 1], [0, 0], [0, 0], [1, 0], [], []),
    "shrink": ([2, 1], [3, 5], [1, 2], [0, 0], [0, 0], [], [1, 0], []),
    "shrink-negative": ([0, -1], [0, 0], [1, 1], [1, 0], [1, 0], [], [0, 1], []),
    "shrink-begin-mask": ([3], [4], [-1], [1], [0], [], [1], []),
    "ellipsis-first": ([0, 1], [0, 3], [1, 1], [0, 0], [0, 0], [], [], [1, 0]),
    "ellipsis-last": ([1, 0], [3, 0], [1, 1], [0, 0], [0, 0], [], [], [0, 1]),
    "ellipsis-new-axis": ([0, 0, 1], [0, 0, 3], [1, 1, 1], [0] * 3, [0] * 3, [0, 1, 0], [],
                          [1, 0, 0]),
    "ellipsis-shrink": ([0, 0, 2], [0, 0, 3], [1, 1, 1], [0] * 3, [0] * 3, [1, 0, 0],
                        [0, 0, 1], [0, 1, 0]),
    "reverse-start-below-dim": ([-10], [-20], [-1], [0], [0], [], [], []),
    "reverse-start-above-dim": ([10, 7], [0, -8], [-1, -2], [0, 0], [0, 0], [], [], []),
    "int64-limits": ([1, -1], [2**63 - 1, -2**63], [1, -1], [0, 0], [0, 0], [], [], []),
}


@pytest.mark.parametrize("case", STRIDED_SLICE_CASES)
def test_strided_slice(tmp_path, case):
    begin, end, strides, *masks = STRIDED_SLICE_CASES[case]
    check(one_op(lambda x: opset1.strided_slice(x, ints(begin), ints(end), ints(strides),
                                                *masks)), tmp_path)


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.int64, np.uint8, np.bool_])
def test_strided_slice_element_types_and_i32_bounds(tmp_path, dtype):
    def build(x: ov.Node) -> ov.Node:
        return opset1.strided_slice(x, ints([1, -1], np.int32), ints([3, 0], np.int32),
                                    ints([1, -2], np.int32), [0, 0], [0, 0])
    check(one_op(build, dtype), tmp_path)


SLICE_CASES = {
    "first-axes": ([1], [3], [1], None),
    "two-axes": ([0, 4], [4, 0], [2, -1], None),
    "negative-axes": ([5, -1], [0, -10], [-2, -1], [-1, 1]),
    "clamped": ([-100], [100], [3], [1]),
    "last-axis-only": ([1], [100], [1], [2]),
    "reverse-start-below-dim": ([-10], [-20], [-1], [0]),
    "empty": ([3], [1], [1], [2]),
    "int64-limits": ([2**63 - 1, 0], [-2**63, 2**63 - 1], [-1, 2], [1, 0]),
}


@pytest.mark.parametrize("case", SLICE_CASES)
def test_slice(tmp_path, case):
    start, stop, step, axes = SLICE_CASES[case]
    extra = [] if axes is None else [ints(axes)]
    check(one_op(lambda x: opset8.slice(x, ints(start), ints(stop), ints(step), *extra)),
          tmp_path)


def test_slice_on_a_shape_subgraph(tmp_path):
    """ShapeOf -> Slice -> Concat -> Reshape: the spatial dims of a shape, merged."""
    x = opset1.parameter([2, 3, 4, 5], np.float32, name="x")
    shape = opset1.shape_of(x)
    head = opset8.slice(shape, ints([0]), ints([2]), ints([1]))
    target = opset1.concat([head, ints([-1])], 0)
    model = ov.Model([opset1.result(opset1.reshape(x, target, False))], [x], "merge")
    check(model, tmp_path)
