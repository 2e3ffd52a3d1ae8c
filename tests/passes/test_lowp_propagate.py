"""propagate_dequantize: op(Dequantize(q)) -> Dequantize(op(q)) for ops that commute with
dequantization (LPT's precision-preserved ops), with the outputs unchanged bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest
from lowp_graphs import const, graph, kinds, max_pool, origin, parameter, relu, reshape

from lpjit import reference
from lpjit.graph import Graph, Value
from lpjit.ops import interpolate, movement
from lpjit.ops.lowp import Dequantize, Quantize
from lpjit.passes.propagate_dequantize import (
    LevelRange,
    dequantize_levels,
    propagate_dequantize,
    propagation_problem,
)


def qdq(x: Value, low, high, levels: int = 256, name: str = "fq") -> Value:
    """``Dequantize(Quantize(x))`` with the same input and output ranges."""
    low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
    q = Quantize(origin=origin(f"{name}/quantize", "FakeQuantize"),
                 inputs=(x, const(low), const(high)), levels=levels)
    return Dequantize(origin=origin(f"{name}/dequantize", "FakeQuantize"),
                      inputs=(q.output, const(low), const(high)), levels=levels).output


def assert_same_outputs(before: Graph, after: Graph, low: float = -3, high: float = 7) -> None:
    rng = np.random.default_rng(0)
    data = [rng.uniform(low, high, p.output.shape).astype(np.float32) for p in before.parameters]
    for a, b in zip(reference.run(before, data), reference.run(after, data), strict=True):
        np.testing.assert_array_equal(a.view(np.int32), b.view(np.int32))


def problem(g: Graph) -> str | None:
    """The propagation problem of the first node after the graph's Dequantize."""
    dq = next(n for n in g.nodes if isinstance(n, Dequantize))
    consumer, port = g.consumers[dq.output][0]
    return propagation_problem(consumer, port, dequantize_levels(dq.output), dequantize_levels)


def test_max_pool_runs_on_levels():
    """Before: Dequantize -> MaxPool-8.  After: MaxPool-8 on u8 -> Dequantize (indices
    output unchanged); the same with per-channel ranges, which MaxPool keeps in place."""
    x = parameter((1, 3, 6, 6))
    pool = max_pool(qdq(x.output, 0, 6))
    before = graph([x], pool.outputs[0], pool.outputs[1])
    after = propagate_dequantize(before)
    assert kinds(after) == ["Parameter", "Quantize", "MaxPoolV8", "Dequantize", "Result",
                            "Result"]
    moved = next(n for n in after.nodes if n.kind == "MaxPoolV8")
    assert moved.output_types[0].dtype.name == "u8" and moved.origin is pool.origin
    assert_same_outputs(before, after)
    high = np.array([1, 2, 4], np.float32).reshape(1, 3, 1, 1)
    before = graph([x], max_pool(qdq(x.output, np.zeros_like(high), high)).outputs[0])
    after = propagate_dequantize(before)
    assert kinds(after)[2:4] == ["MaxPoolV8", "Dequantize"]
    assert_same_outputs(before, after)


def test_max_pool_window_inside_the_padding_stops_propagation():
    """A window with no input element gives the lowest float in f32 but 0 in u8."""
    x = parameter((1, 1, 4, 4))
    before = graph([x], max_pool(qdq(x.output, 0, 6), kernel=(2, 2), strides=(1, 1),
                                 pads=(2, 2)).outputs[0])
    assert problem(before).startswith("a MaxPool window lies entirely in the padding")
    assert propagate_dequantize(before) is before


def test_data_movement_chain_runs_on_levels():
    """Dequantize -> Reshape -> Transpose: both move to u8, one Dequantize at the end."""
    x = parameter((1, 4, 6))
    shaped = reshape(qdq(x.output, -1, 1), (1, 4, 2, 3))
    order = const(np.array([0, 2, 1, 3], np.int64))
    moved = movement.Transpose(origin=origin("t", "Transpose"), inputs=(shaped, order)).output
    before = graph([x], moved)
    after = propagate_dequantize(before)
    assert kinds(after) == ["Parameter", "Quantize", "Reshape", "Transpose", "Dequantize",
                            "Result"]
    assert_same_outputs(before, after)


def test_per_channel_ranges_do_not_pass_layout_changes():
    x = parameter((1, 2, 3, 4))
    high = np.array([1, 2], np.float32).reshape(1, 2, 1, 1)
    before = graph([x], reshape(qdq(x.output, np.zeros_like(high), high), (1, 24)))
    assert problem(before).startswith("per-channel range (axis 1) cannot pass Reshape")
    assert propagate_dequantize(before) is before


def test_relu_is_dropped_only_on_non_negative_levels():
    x = parameter((1, 3, 4, 4))
    before = graph([x], relu(qdq(x.output, 0, 6)))
    after = propagate_dequantize(before)
    assert kinds(after) == ["Parameter", "Quantize", "Dequantize", "Result"]
    assert_same_outputs(before, after)
    before = graph([x], relu(qdq(x.output, -1, 6)))
    assert problem(before).startswith("ReLU after a range with negative levels")
    assert propagate_dequantize(before) is before


def concat(*values: Value) -> Value:
    return movement.Concat(origin=origin("concat", "Concat"), inputs=values, axis=1).output


def test_concat_of_identical_levels_runs_on_levels():
    """Both inputs with the same levels: Concat on u8; different levels: stays float."""
    a, b = parameter((1, 2, 3), "a"), parameter((1, 4, 3), "b")
    before = graph([a, b], concat(qdq(a.output, -1, 2, name="fa"), qdq(b.output, -1, 2,
                                                                      name="fb")))
    after = propagate_dequantize(before)
    assert kinds(after).count("Dequantize") == 1
    assert kinds(after).index("Concat") < kinds(after).index("Dequantize")
    assert_same_outputs(before, after)
    before = graph([a, b], concat(qdq(a.output, -1, 2), qdq(b.output, -1, 3)))
    assert problem(before).startswith("the inputs of Concat 'concat'")
    assert propagate_dequantize(before) is before


def pad(x: Value, value: float | None, mode: str = "constant") -> Value:
    pads = [const(np.array([0, 0, 1, 1], np.int64)), const(np.array([0, 0, 2, 0], np.int64))]
    extra = [] if value is None else [const(np.float32(value))]
    return movement.Pad(origin=origin("pad", "Pad"), inputs=(x, *pads, *extra),
                        pad_mode=mode).output


@pytest.mark.parametrize("value, mode", [(None, "constant"), (3.0, "constant"),
                                          (None, "edge")])
def test_pad_runs_on_levels_when_the_pad_value_is_a_level(value, mode):
    """Pad value 0.0 is level 0 of [0, 6]; 3.0 is level 3 of [0, 6] with 7 levels (the pad
    becomes that level index); edge padding copies values whatever they are."""
    levels = 7 if value == 3.0 else 256
    x = parameter((1, 2, 3, 3))
    before = graph([x], pad(qdq(x.output, 0, 6, levels), value, mode))
    after = propagate_dequantize(before)
    assert kinds(after)[2:4] == ["Pad", "Dequantize"]
    moved = next(n for n in after.nodes if n.kind == "Pad")
    if value is not None:
        assert moved.inputs[3].node.data.dtype == np.uint8 and moved.inputs[3].node.data == 3
    assert_same_outputs(before, after)


def test_pad_value_that_is_not_a_level_stops_propagation():
    x = parameter((1, 2, 3, 3))
    before = graph([x], pad(qdq(x.output, -1, 1), None))       # 0.0 lies between two levels
    assert problem(before).startswith("the pad value is not one of the levels")


def resize(x: Value, mode: str) -> Value:
    scales = const(np.array([2.0, 2.0], np.float32))
    axes = const(np.array([2, 3], np.int64))
    return interpolate.InterpolateV11(origin=origin("resize", "Interpolate"),
                                      inputs=(x, scales, axes), mode=mode,
                                      shape_calculation_mode="scales").output


def test_only_nearest_interpolate_runs_on_levels():
    x = parameter((1, 2, 3, 3))
    before = graph([x], resize(qdq(x.output, -1, 1), "nearest"))
    after = propagate_dequantize(before)
    assert kinds(after)[2:4] == ["InterpolateV11", "Dequantize"]
    assert_same_outputs(before, after)
    before = graph([x], resize(qdq(x.output, -1, 1), "linear"))
    assert problem(before).startswith("Interpolate mode 'linear' computes new values")


def test_identity_round_trip_is_folded():
    """Quantize(Dequantize(q)) with the same ranges maps every level to itself -> q; with a
    different range it is a real requantization and stays."""
    x = parameter((1, 8))
    before = graph([x], reshape(qdq(x.output, -1.3, 2.1, name="a"), (2, 4)))
    same = Quantize(origin=origin("q2", "FakeQuantize"),
                    inputs=(before.results[0].inputs[0], const(np.float32(-1.3)),
                            const(np.float32(2.1))), levels=256)
    before = graph([x], same.output)
    after = propagate_dequantize(before)
    assert kinds(after) == ["Parameter", "Quantize", "Reshape", "Result"]
    assert_same_outputs(before, after)
    other = Quantize(origin=origin("q3", "FakeQuantize"),
                     inputs=(qdq(x.output, -1.3, 2.1), const(np.float32(-1.0)),
                             const(np.float32(2.0))), levels=256)
    assert kinds(propagate_dequantize(graph([x], other.output))).count("Quantize") == 2


def test_level_range_granularity():
    """Per tensor, per channel along one axis, or along several (-1)."""
    assert LevelRange(256, np.float32(0), np.float32(1)).channel_axis(4) is None
    per_channel = LevelRange(256, np.zeros((1, 3, 1, 1), np.float32),
                             np.arange(1, 4, dtype=np.float32).reshape(1, 3, 1, 1))
    assert per_channel.channel_axis(4) == 1
    constant_low = LevelRange(256, np.zeros((1, 3, 1, 1), np.float32),
                              np.arange(1, 5, dtype=np.float32).reshape(1, 1, 1, 4))
    assert constant_low.channel_axis(4) == 3            # low does not vary along axis 1
    both = LevelRange(256, -np.arange(3, dtype=np.float32).reshape(1, 3, 1, 1),
                      np.arange(1, 5, dtype=np.float32).reshape(1, 1, 1, 4))
    assert both.channel_axis(4) == -1
