"""Shape ops (Reshape, Squeeze, Unsqueeze, ShapeOf, Broadcast, Tile): inference, reference
results against numpy, errors that name the layer, and attribute round trips."""

from __future__ import annotations

import numpy as np
import pytest

from lpjit import dtypes
from lpjit.attributes import Attributes
from lpjit.errors import BadAttributeError, ShapeError
from lpjit.graph import Constant, Node, Origin, Parameter, TensorType, Value
from lpjit.ops import shape as ops
from lpjit.ops.registry import IR_NAMES, lookup
from lpjit.reference import evaluate_node

RNG = np.random.default_rng(7)


def origin(ir_type: str, version: str = "opset1") -> Origin:
    return Origin("5", "op", ir_type, version)


def parameter(shape: tuple[int, ...], dtype: dtypes.DType = dtypes.f32) -> Value:
    return Parameter(origin=origin("Parameter"), inputs=(), element_type=dtype,
                     shape=shape).output


def constant(values: object, dtype: type = np.int64) -> Value:
    return Constant.of(np.array(values, dtype), origin("Const")).output


def build(cls: type[Node], *inputs: Value, **fields: object) -> Node:
    """A ``cls`` node named 'op' (layer 5) whose origin carries its IR type name."""
    return cls(origin=origin(IR_NAMES[cls][0]), inputs=inputs, **fields)


def run(node: Node, x: np.ndarray) -> np.ndarray:
    """Evaluate ``node`` with ``x`` for input 0 and its constant inputs' data for the rest."""
    arrays = [x] + [v.node.data for v in node.inputs[1:]]
    (out,) = evaluate_node(node, arrays)
    return out


def data(shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    return RNG.uniform(-4, 4, shape).astype(dtype)


# --- Reshape ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, pattern, special_zero, expected", [
    ((2, 3, 4), [4, 6], False, (4, 6)),
    ((2, 3, 4), [-1, 4], False, (6, 4)),
    ((2, 3, 4), [0, -1], True, (2, 12)),
    ((2, 3, 4), [0, 0, 2, 2], True, (2, 3, 2, 2)),
    ((2, 3, 4), [-1], False, (24,)),
    ((2, 3, 4), [1, 0, -1], True, (1, 3, 8)),
    ((6,), [2, 1, 3], False, (2, 1, 3)),
    ((0, 3), [0, -1], True, (0, 3)),       # copied dims leave the -1 product (OpenVINO)
    ((0, 3), [0, -1], False, (0, 1)),
    ((1,), [], False, ()),
])
def test_reshape_shapes(shape, pattern, special_zero, expected):
    """0 copies with special_zero (else it is a 0 dim); one -1 keeps the element count."""
    node = build(ops.Reshape, parameter(shape), constant(pattern), special_zero=special_zero)
    assert node.output_types[0].shape == expected
    x = data(shape)
    np.testing.assert_array_equal(run(node, x), x.reshape(expected))


def test_reshape_scalar_pattern_gives_a_scalar():
    node = build(ops.Reshape, parameter((1, 1)), constant(1), special_zero=False)
    assert node.output_types[0].shape == ()


@pytest.mark.parametrize("shape, pattern, special_zero, message", [
    ((2, 3, 4), [5, 5], False,
     (r"Reshape 'op' \(layer 5\): target shape \(5, 5\) resolves to \(5, 5\) with 25 "
     r"elements; the input \(2, 3, 4\) has 24 elements")),
    ((2, 3, 4), [0, -1], False,
     (r"cannot infer the -1 in target shape \(0, -1\): the other dimensions hold zero "
     r"elements but the input \(2, 3, 4\) does not")),
    ((2, 3, 4), [5, -1], False,
     r"cannot infer the -1 in target shape \(5, -1\): 24 input elements are not divisible by 5"),
    ((2, 3, 4), [-1, -1], False, r"at most one -1"),
    ((2, 3, 4), [-2, 12], False, r"target shape \(-2, 12\) is invalid"),
    ((2, 3), [0, 0, 0], True,
     (r"target shape \(0, 0, 0\) copies input dimension 2 \(special_zero\), but the input "
     r"\(2, 3\) has rank 2")),
])
def test_reshape_errors(shape, pattern, special_zero, message):
    with pytest.raises(ShapeError, match=message):
        build(ops.Reshape, parameter(shape), constant(pattern), special_zero=special_zero)


def test_reshape_needs_a_constant_target_shape():
    with pytest.raises(ShapeError, match=r"Reshape 'op' \(layer 5\): input 1 \(target shape\) "
                                         r"must be a constant; pass shapes= to resolve dynamic"):
        build(ops.Reshape, parameter((2, 3)), parameter((2,), dtypes.i64), special_zero=False)


def test_reshape_target_shape_must_be_integer():
    with pytest.raises(ShapeError, match=r"input 1 \(target shape\) has element type f32; "
                                         r"expected an integer type"):
        build(ops.Reshape, parameter((2, 3)), constant([6.0], np.float32), special_zero=False)


# --- Squeeze / Unsqueeze ---------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ops.Squeeze, ops.SqueezeV15])
@pytest.mark.parametrize("axes, expected", [
    (None, (3, 4)),
    ([], (3, 4)),
    ([0], (3, 1, 4)),
    ([-2], (1, 3, 4)),
    (2, (1, 3, 4)),                        # a scalar axes input
    ([0, 2, -2], (3, 4)),                  # repeats allowed
    ([1, 2], (1, 3, 4)),                   # axis 1 (size 3) is kept, as OpenVINO does
])
def test_squeeze_shapes(cls, axes, expected):
    """Named size-1 axes go; without axes every 1 goes; a named non-1 axis stays."""
    x = data((1, 3, 1, 4))
    inputs = (parameter(x.shape),) if axes is None else (parameter(x.shape), constant(axes))
    node = build(cls, *inputs)
    assert node.output_types[0].shape == expected
    np.testing.assert_array_equal(run(node, x), x.reshape(expected))


def test_squeeze_axis_out_of_range():
    with pytest.raises(ShapeError, match=r"Squeeze 'op' \(layer 5\): axis 4 is out of range "
                                         r"for rank 4; expected -4..3"):
        build(ops.Squeeze, parameter((1, 3, 1, 4)), constant([4]))


@pytest.mark.parametrize("shape, axes, expected", [
    ((2, 3), [0], (1, 2, 3)),
    ((2, 3), [-1], (2, 3, 1)),
    ((2, 3), [-1, 0], (1, 2, 3, 1)),
    ((2, 3), [1, 3], (2, 1, 3, 1)),
    ((2, 3), [0, 0], (1, 2, 3)),           # a repeated axis inserts once (OpenVINO)
    ((), [0, -1], (1, 1)),
])
def test_unsqueeze_shapes(shape, axes, expected):
    """Axes are positions in the output (rank = input rank + distinct axes)."""
    node = build(ops.Unsqueeze, parameter(shape), constant(axes))
    assert node.output_types[0].shape == expected
    x = data(shape)
    np.testing.assert_array_equal(run(node, x), x.reshape(expected))


def test_unsqueeze_errors():
    with pytest.raises(ShapeError, match=r"Unsqueeze 'op' \(layer 5\): axes are empty"):
        build(ops.Unsqueeze, parameter((2, 3)), constant(np.zeros(0, np.int64)))
    with pytest.raises(ShapeError, match=r"axis 3 is out of range for rank 3"):
        build(ops.Unsqueeze, parameter((2, 3)), constant([3]))


# --- ShapeOf ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [dtypes.f32, dtypes.u8, dtypes.boolean, dtypes.i64])
def test_shape_of_any_input_type(dtype):
    node = build(ops.ShapeOf, parameter((2, 0, 5), dtype))
    assert node.output_types[0] == TensorType(dtypes.i64, (3,))
    out = run(node, np.zeros((2, 0, 5), dtype.numpy))
    assert out.dtype == np.int64 and out.tolist() == [2, 0, 5]


def test_shape_of_v3_output_type_and_scalar_input():
    node = build(ops.ShapeOfV3, parameter(()), output_type=dtypes.i32)
    assert node.output_types[0] == TensorType(dtypes.i32, (0,))
    node = build(ops.ShapeOfV3, parameter((4, 1)), output_type=dtypes.i32)
    assert run(node, data((4, 1))).dtype == np.int32
    with pytest.raises(BadAttributeError, match=r"ShapeOf 'op' \(layer 5\): attribute "
                                                r"output_type=\"f32\" is invalid"):
        ops.ShapeOfV3.from_ir(Attributes({"output_type": "f32"}, origin("ShapeOf", "opset3")))


# --- Broadcast -------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [ops.Broadcast, ops.BroadcastV3])
@pytest.mark.parametrize("shape, target, expected", [
    ((3, 1), [2, 3, 4], (2, 3, 4)),
    ((), [2, 2], (2, 2)),
    ((4,), [4], (4,)),
    ((1, 4), [3, 0, 4], (3, 0, 4)),
])
def test_broadcast_numpy(cls, shape, target, expected):
    node = build(cls, parameter(shape), constant(target), mode="numpy")
    assert node.output_types[0].shape == expected
    x = data(shape)
    np.testing.assert_array_equal(run(node, x), np.broadcast_to(x, expected))


@pytest.mark.parametrize("shape, target", [((3,), [3, 1]), ((2, 3), [3])])
def test_broadcast_numpy_is_one_directional(shape, target):
    with pytest.raises(ShapeError, match=r"Broadcast 'op' \(layer 5\): data shape .* does "
                                         r"not broadcast to target shape"):
        build(ops.Broadcast, parameter(shape), constant(target), mode="numpy")


@pytest.mark.parametrize("cls", [ops.Broadcast, ops.BroadcastV3])
def test_broadcast_explicit_places_data_axes(cls):
    """Data axis i becomes target axis mapping[i]; the others replicate."""
    x = data((3, 1))
    node = build(cls, parameter(x.shape), constant([2, 3, 5]), constant([1, 2]),
                 mode="explicit")
    assert node.output_types[0].shape == (2, 3, 5)
    np.testing.assert_array_equal(run(node, x), np.broadcast_to(x[None], (2, 3, 5)))
    scalar = build(cls, parameter(()), constant([2, 3]), constant([1]), mode="explicit")
    np.testing.assert_array_equal(run(scalar, np.float32(2.5)), np.full((2, 3), 2.5))


@pytest.mark.parametrize("mapping, message", [
    ([1], r"axes mapping \(1,\) is invalid for data shape \(3, 1\)"),
    ([2, 1], r"axes mapping \(2, 1\) is invalid"),
    ([1, 3], r"axes mapping \(1, 3\): axis 3 is out of range for target shape \(2, 3, 5\)"),
    ([0, 2], r"data dimension 0 \(size 3\) cannot broadcast to target dimension 0 \(size 2\)"),
])
def test_broadcast_explicit_errors(mapping, message):
    with pytest.raises(ShapeError, match=message):
        build(ops.Broadcast, parameter((3, 1)), constant([2, 3, 5]), constant(mapping),
              mode="explicit")


def test_broadcast_explicit_needs_axes_mapping():
    with pytest.raises(ShapeError, match=r"explicit mode needs input 2 \(axes mapping\)"):
        build(ops.Broadcast, parameter((3,)), constant([2, 3]), mode="explicit")


def test_broadcast_bidirectional_broadcasts_both_ways():
    x = data((2, 1, 4))
    node = build(ops.BroadcastV3, parameter(x.shape), constant([3, 1]), mode="bidirectional")
    assert node.output_types[0].shape == (2, 3, 4)
    np.testing.assert_array_equal(run(node, x), x * np.ones((3, 1), np.float32))
    with pytest.raises(ShapeError, match=r"do not broadcast"):
        build(ops.BroadcastV3, parameter((2, 4)), constant([3]), mode="bidirectional")
    with pytest.raises(ShapeError, match=r"mode bidirectional is invalid"):
        build(ops.Broadcast, parameter((2, 4)), constant([3]), mode="bidirectional")


def test_broadcast_needs_constant_target_shape():
    with pytest.raises(ShapeError, match=r"input 1 \(target shape\) must be a constant"):
        build(ops.Broadcast, parameter((3,)), parameter((2,), dtypes.i32), mode="numpy")


@pytest.mark.parametrize("cls, raw, mode, written", [
    (ops.Broadcast, "numpy", "numpy", "numpy"),
    (ops.Broadcast, "none", "explicit", "none"),
    (ops.Broadcast, "EXPLICIT", "explicit", "none"),
    (ops.BroadcastV3, "explicit", "explicit", "explicit"),
    (ops.BroadcastV3, "bidirectional", "bidirectional", "bidirectional"),
])
def test_broadcast_mode_attribute(cls, raw, mode, written):
    """Broadcast-1 writes explicit as ``none`` (as OpenVINO's serializer does)."""
    fields = cls.from_ir(Attributes({"mode": raw}, origin("Broadcast")))
    assert fields == {"mode": mode}
    node = build(cls, parameter((3,)), constant([2, 3]), constant([1]), mode=mode) \
        if mode == "explicit" else build(cls, parameter((3,)), constant([2, 3]), mode=mode)
    assert node.to_ir() == {"mode": written}


def test_broadcast_rejects_pdpd_and_v1_bidirectional():
    with pytest.raises(BadAttributeError, match=r"mode=\"pdpd\" is invalid; expected numpy or "
                                                r"explicit \(pdpd is not supported\)"):
        ops.Broadcast.from_ir(Attributes({"mode": "pdpd"}, origin("Broadcast")))
    with pytest.raises(BadAttributeError, match=r"mode=\"bidirectional\" is invalid"):
        ops.Broadcast.from_ir(Attributes({"mode": "bidirectional"}, origin("Broadcast")))


# --- Tile ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, repeats, expected", [
    ((2, 3), [2, 1], (4, 3)),
    ((2, 3), [3], (2, 9)),                 # short repeats: leading 1s
    ((2, 3), [2, 1, 2], (2, 2, 6)),        # long repeats: data gets leading 1s
    ((), [2, 3], (2, 3)),
    ((2, 3), [0, 1], (0, 3)),
])
def test_tile_shapes(shape, repeats, expected):
    node = build(ops.Tile, parameter(shape), constant(repeats))
    assert node.output_types[0].shape == expected
    x = data(shape)
    np.testing.assert_array_equal(run(node, x), np.tile(x, repeats))


def test_tile_negative_repeats():
    with pytest.raises(ShapeError, match=r"Tile 'op' \(layer 5\): repeats \(-1, 3\) has a "
                                         r"negative value"):
        build(ops.Tile, parameter((2,)), constant([-1, 3]))


# --- all dtypes, attributes, dispatch --------------------------------------------------------


@pytest.mark.parametrize("dtype", [dtypes.f16, dtypes.i32, dtypes.i64, dtypes.u8, dtypes.i8,
                                   dtypes.boolean])
def test_shape_ops_keep_every_element_type(dtype):
    """The ops move elements without touching them, for every element type."""
    x = RNG.integers(0, 2 if dtype == dtypes.boolean else 100, (2, 1, 3)).astype(dtype.numpy)
    nodes = [
        build(ops.Reshape, parameter(x.shape, dtype), constant([3, -1]), special_zero=False),
        build(ops.Squeeze, parameter(x.shape, dtype), constant([1])),
        build(ops.Unsqueeze, parameter(x.shape, dtype), constant([0])),
        build(ops.BroadcastV3, parameter(x.shape, dtype), constant([2, 2, 3]), mode="numpy"),
        build(ops.Tile, parameter(x.shape, dtype), constant([1, 2, 1])),
    ]
    expected = [x.reshape(3, 2), x[:, 0], x[None], np.broadcast_to(x, (2, 2, 3)),
                np.tile(x, (1, 2, 1))]
    for node, want in zip(nodes, expected):
        out = run(node, x)
        assert node.output_types[0].dtype == dtype and out.dtype == dtype.numpy
        np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("cls, raw, fields", [
    (ops.Reshape, {"special_zero": "true"}, {"special_zero": True}),
    (ops.Reshape, {"special_zero": "false"}, {"special_zero": False}),
    (ops.SqueezeV15, {"allow_axis_skip": "true"}, {"allow_axis_skip": True}),
    (ops.ShapeOfV3, {"output_type": "i32"}, {"output_type": dtypes.i32}),
    (ops.BroadcastV3, {"mode": "numpy"}, {"mode": "numpy"}),
])
def test_from_ir_and_to_ir_are_inverse(cls, raw, fields):
    assert cls.from_ir(Attributes(raw, origin(IR_NAMES[cls][0]))) == fields
    inputs = {ops.Reshape: (parameter((2, 3)), constant([3, 2])),
              ops.SqueezeV15: (parameter((2, 1)),),
              ops.ShapeOfV3: (parameter((2, 1)),),
              ops.BroadcastV3: (parameter((3,)), constant([2, 3]))}[cls]
    assert build(cls, *inputs, **fields).to_ir() == raw


def test_reshape_special_zero_is_required():
    with pytest.raises(BadAttributeError, match=r"missing attribute 'special_zero'"):
        ops.Reshape.from_ir(Attributes({}, origin("Reshape")))


@pytest.mark.parametrize("ir_type, version, cls", [
    ("Reshape", "opset13", ops.Reshape), ("Squeeze", "opset1", ops.Squeeze),
    ("Squeeze", "opset14", ops.Squeeze), ("Squeeze", "opset15", ops.SqueezeV15),
    ("Unsqueeze", "opset8", ops.Unsqueeze), ("ShapeOf", "opset1", ops.ShapeOf),
    ("ShapeOf", "opset3", ops.ShapeOfV3), ("Broadcast", "opset2", ops.Broadcast),
    ("Broadcast", "opset3", ops.BroadcastV3), ("Tile", "opset1", ops.Tile),
])
def test_dispatch_on_type_and_version(ir_type, version, cls):
    assert lookup(Origin("1", "n", ir_type, version)) is cls
