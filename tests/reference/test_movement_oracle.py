"""Data-movement ops against the OpenVINO CPU plugin: one-op IRs saved by OpenVINO, outputs
compared exactly, and every node's ``to_ir`` compared with the ``<data>`` OpenVINO wrote.

Covers Transpose-1, Concat-1, Split-1, VariadicSplit-1, Gather-1/7/8, Pad-1/12,
DepthToSpace-1 and ShuffleChannels-1 (opset3 in the Python API).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import openvino as ov
import oracle
import pytest
from openvino import opset1, opset3, opset7, opset8, opset12

import lpjit
from lpjit.ops import movement as ops

pytestmark = pytest.mark.oracle

CLASSES = (ops.Transpose, ops.Concat, ops.Split, ops.VariadicSplit, ops.Gather, ops.GatherV7,
           ops.GatherV8, ops.Pad, ops.PadV12, ops.DepthToSpace, ops.ShuffleChannels)


def ints(values: object, dtype: type = np.int64) -> ov.Node:
    array = np.array(values, dtype)
    if array.size == 0:
        return ov.op.Constant(ov.Type.i64, ov.Shape(list(array.shape)), [])
    return opset1.constant(array)


def model_of(build: Callable[..., ov.Node], shapes: Sequence[tuple[int, ...]],
             dtype: type = np.float32) -> ov.Model:
    """Parameters of ``shapes`` -> ``build`` -> a Result per output."""
    xs = [opset1.parameter(list(s), dtype, name=f"x{i}") for i, s in enumerate(shapes)]
    node = build(*xs)
    return ov.Model([opset1.result(out) for out in node.outputs()], xs, "one_op")


def assert_to_ir_matches(xml: Path) -> None:
    """Every movement op lpjit reads writes back exactly the ``<data>`` OpenVINO wrote."""
    layers = {layer.get("id"): layer for layer in ElementTree.parse(xml).iter("layer")}
    for node in lpjit.read_ir(xml).nodes:
        if type(node) in CLASSES:
            data = layers[node.origin.layer_id].find("data")
            written = dict(data.attrib) if data is not None else {}
            assert node.to_ir() == written, node.origin.describe()


def check(model: ov.Model, tmp_path: Path, **options: object) -> None:
    oracle.compare_with_openvino(model, tmp_path, rtol=0, atol=0, **options)
    assert_to_ir_matches(tmp_path / "model.xml")


@pytest.mark.parametrize("permutation", [[2, 0, 1], [0, 2, 1], [], [0, 1, 2]])
def test_transpose(tmp_path, permutation):
    check(model_of(lambda x: opset1.transpose(x, ints(permutation)), [(2, 3, 4)]), tmp_path)


@pytest.mark.parametrize("axis, shapes", [
    (0, [(2, 3), (1, 3), (3, 3)]),
    (-1, [(2, 3), (2, 1)]),
    (1, [(2, 2, 2), (2, 3, 2), (2, 1, 2)]),
    (-3, [(1, 2, 2), (2, 2, 2)]),
])
def test_concat(tmp_path, axis, shapes):
    check(model_of(lambda *xs: opset1.concat(list(xs), axis), shapes), tmp_path)


@pytest.mark.parametrize("axis, num_splits", [(1, 3), (-1, 2), (0, 1), (2, 4)])
def test_split(tmp_path, axis, num_splits):
    check(model_of(lambda x: opset1.split(x, ints(axis), num_splits), [(2, 6, 4)]), tmp_path)


@pytest.mark.parametrize("axis, lengths", [
    (1, [1, -1, 2]), (-1, [4, 0]), (0, [-1]), ([1], [3, 3]), (2, [1, 1, 1, 1]),
])
def test_variadic_split(tmp_path, axis, lengths):
    def build(x: ov.Node) -> ov.Node:
        return opset1.variadic_split(x, ints(axis), ints(lengths))
    check(model_of(build, [(2, 6, 4)]), tmp_path)


GATHER_CASES = {
    "v1-axis1": lambda x: opset1.gather(x, ints([[0, 2], [1, 1]]), ints(1)),
    "v1-negative-axis": lambda x: opset1.gather(x, ints([3, 0]), ints(-1)),
    "v1-scalar-index": lambda x: opset1.gather(x, ints(1), ints(0)),
    "v1-out-of-range": lambda x: opset1.gather(x, ints([0, -1, 3, 2]), ints(1)),
    "v7-batch": lambda x: opset7.gather(x, ints([[0, 3], [2, 1]]), ints(2), 1),
    "v7-batch-negative": lambda x: opset7.gather(x, ints([[0, 2, 1], [1, 1, 0]]), ints(1), -1),
    "v7-out-of-range": lambda x: opset7.gather(x, ints([-1, 0, 5]), ints(2)),
    "v8-negative-indices": lambda x: opset8.gather(x, ints([-1, -3, 2]), ints(1)),
    "v8-batch": lambda x: opset8.gather(x, ints([[[1], [0], [3]], [[2], [2], [0]]]), ints(2), 2),
    "v8-out-of-range": lambda x: opset8.gather(x, ints([[-5, 3], [4, -4]]), ints(-1), 1),
    "v8-i32-indices": lambda x: opset8.gather(x, ints([2, -1], np.int32), ints(0, np.int32)),
}


@pytest.mark.parametrize("case", GATHER_CASES)
def test_gather(tmp_path, case):
    check(model_of(GATHER_CASES[case], [(2, 3, 4)]), tmp_path)


PAD_CASES = [
    ([1, 2], [2, 1]), ([0, 3], [3, 0]), ([-1, 2], [2, -1]), ([-2, 0], [0, -2]), ([0, 0], [0, 0]),
]


@pytest.mark.parametrize("pad", [opset1.pad, opset12.pad], ids=["v1", "v12"])
@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric"])
@pytest.mark.parametrize("begin, end", PAD_CASES)
def test_pad(tmp_path, pad, mode, begin, end):
    """Every mode, with negative pads (crops) in both versions (OpenVINO accepts them in
    Pad-1 too)."""
    check(model_of(lambda x: pad(x, ints(begin), ints(end), mode), [(4, 5)]), tmp_path)


@pytest.mark.parametrize("pad", [opset1.pad, opset12.pad], ids=["v1", "v12"])
def test_pad_constant_value(tmp_path, pad):
    value = opset1.constant(np.float32(-1.5))
    model = model_of(lambda x: pad(x, ints([0, 1, -1]), ints([1, -1, 2]), "constant", value),
                     [(2, 3, 4)])
    check(model, tmp_path)


@pytest.mark.parametrize("mode", ["blocks_first", "depth_first"])
@pytest.mark.parametrize("shape, block_size", [
    ((1, 8, 2, 3), 2), ((2, 9, 1, 2), 3), ((1, 16, 1, 2, 2), 2), ((1, 4, 3), 2), ((1, 2, 2), 1),
])
def test_depth_to_space(tmp_path, mode, shape, block_size):
    check(model_of(lambda x: opset1.depth_to_space(x, mode, block_size), [shape]), tmp_path)


@pytest.mark.parametrize("axis, group, shape", [
    (1, 3, (2, 6, 2, 2)), (-1, 2, (2, 3, 4)), (0, 2, (4, 3)), (1, 1, (1, 4, 2)),
])
def test_shuffle_channels(tmp_path, axis, group, shape):
    check(model_of(lambda x: opset3.shuffle_channels(x, axis, group), [shape]), tmp_path)


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.int64, np.uint8, np.int8, np.bool_])
def test_movement_ops_on_every_element_type(tmp_path, dtype):
    """Every movement op on one non-f32 tensor, each feeding its own Result."""
    def build(x: ov.Node, y: ov.Node) -> ov.Node:
        outs = [
            opset1.transpose(x, ints([1, 0, 2])),
            opset1.concat([x, y], 0),
            opset1.split(x, ints(2), 2).output(1),
            opset1.variadic_split(x, ints(1), ints([1, -1])).output(1),
            opset8.gather(x, ints([-1, 0]), ints(1)),
            opset12.pad(x, ints([1, 0, -1]), ints([0, 2, 0]), "reflect"),
            opset1.depth_to_space(opset1.reshape(x, ints([1, 4, 1, 3]), False),
                                  "depth_first", 2),
            opset3.shuffle_channels(x, 2, 2),
        ]
        return opset1.concat([opset1.reshape(o, ints([-1]), False) for o in outs], 0)
    check(model_of(build, [(2, 3, 2), (1, 3, 2)], dtype), tmp_path)
