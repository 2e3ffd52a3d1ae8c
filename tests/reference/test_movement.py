"""Data-movement ops (Transpose, Concat, Split, VariadicSplit, Gather, Pad, DepthToSpace,
ShuffleChannels): inference, reference results against independent numpy, errors."""

from __future__ import annotations

import numpy as np
import pytest

from lpjit import dtypes
from lpjit.attributes import Attributes
from lpjit.errors import BadAttributeError, GraphError, ShapeError
from lpjit.graph import Constant, Node, Origin, Parameter, Value
from lpjit.ops import movement as ops
from lpjit.ops.registry import IR_NAMES, lookup
from lpjit.reference import evaluate_node

RNG = np.random.default_rng(11)


def origin(ir_type: str, version: str = "opset1") -> Origin:
    return Origin("9", "mv", ir_type, version)


def parameter(shape: tuple[int, ...], dtype: dtypes.DType = dtypes.f32) -> Value:
    return Parameter(origin=origin("Parameter"), inputs=(), element_type=dtype,
                     shape=shape).output


def constant(values: object, dtype: type = np.int64) -> Value:
    return Constant.of(np.array(values, dtype), origin("Const")).output


def build(cls: type[Node], *inputs: Value, **fields: object) -> Node:
    """A ``cls`` node named 'mv' (layer 9) whose origin carries its IR type name."""
    return cls(origin=origin(IR_NAMES[cls][0]), inputs=inputs, **fields)


def run(node: Node, *xs: np.ndarray) -> tuple[np.ndarray, ...]:
    """Evaluate ``node``: ``xs`` for its leading inputs, constant data for the others."""
    arrays = list(xs) + [v.node.data for v in node.inputs[len(xs):]]
    return evaluate_node(node, arrays)


def data(shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    return RNG.uniform(-4, 4, shape).astype(dtype)


# --- Transpose -------------------------------------------------------------------------------


@pytest.mark.parametrize("permutation, expected", [
    ([2, 0, 1], (4, 2, 3)),
    ([0, 1, 2], (2, 3, 4)),
    (np.zeros(0, np.int64), (4, 3, 2)),    # empty: reverse
])
def test_transpose(permutation, expected):
    x = data((2, 3, 4))
    node = build(ops.Transpose, parameter(x.shape), constant(permutation))
    assert node.output_types[0].shape == expected
    order = list(permutation) or None
    np.testing.assert_array_equal(run(node, x)[0], np.transpose(x, order))


@pytest.mark.parametrize("permutation", [[0, 1], [0, 1, 1], [-1, 0, 1], [0, 1, 3]])
def test_transpose_rejects_non_permutations(permutation):
    with pytest.raises(ShapeError, match=r"Transpose 'mv' \(layer 9\): permutation .* is not "
                                         r"a permutation of the 3 input axes 0..2"):
        build(ops.Transpose, parameter((2, 3, 4)), constant(permutation))


def test_transpose_needs_a_constant_permutation():
    with pytest.raises(ShapeError, match=r"input 1 \(permutation\) must be a constant; pass "
                                         r"shapes= to resolve dynamic inputs"):
        build(ops.Transpose, parameter((2, 3)), parameter((2,), dtypes.i64))


# --- Concat ----------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, -1, -2])
def test_concat_axes(axis):
    shapes = [(2, 3), (2, 3), (2, 3)]
    xs = [data(s) for s in shapes]
    node = build(ops.Concat, *(parameter(s) for s in shapes), axis=axis)
    expected = np.concatenate(xs, axis=axis)
    assert node.output_types[0].shape == expected.shape
    np.testing.assert_array_equal(run(node, *xs)[0], expected)


def test_concat_of_different_lengths_and_integer_types():
    xs = [RNG.integers(-9, 9, s).astype(np.int64) for s in [(1, 2), (3, 2), (0, 2)]]
    node = build(ops.Concat, *(parameter(x.shape, dtypes.i64) for x in xs), axis=-2)
    assert node.output_types[0].shape == (4, 2)
    np.testing.assert_array_equal(run(node, *xs)[0], np.concatenate(xs))


def test_concat_errors():
    with pytest.raises(ShapeError, match=r"Concat 'mv' \(layer 9\): input 1 has shape \(2, 4\) "
                                         r"and input 0 has shape \(3, 5\); all dimensions but "
                                         r"axis 0 must match"):
        build(ops.Concat, parameter((3, 5)), parameter((2, 4)), axis=0)
    with pytest.raises(ShapeError, match=r"input 1 has shape \(3,\) and input 0 has shape "
                                         r"\(3, 5\)"):
        build(ops.Concat, parameter((3, 5)), parameter((3,)), axis=0)
    with pytest.raises(ShapeError, match=r"axis 2 is out of range for rank 2"):
        build(ops.Concat, parameter((3, 5)), parameter((3, 5)), axis=2)
    with pytest.raises(ShapeError, match=r"inputs have element types f32, i32; expected one"):
        build(ops.Concat, parameter((3, 5)), parameter((3, 5), dtypes.i32), axis=0)
    with pytest.raises(ShapeError, match=r"input 0 is a scalar"):
        build(ops.Concat, parameter(()), parameter(()), axis=0)
    with pytest.raises(GraphError, match=r"has 0 inputs; expected 1.."):
        build(ops.Concat, axis=0)


# --- Split / VariadicSplit -------------------------------------------------------------------


@pytest.mark.parametrize("axis", [1, -1])
def test_split(axis):
    x = data((2, 6))
    node = build(ops.Split, parameter(x.shape), constant(axis), num_splits=3)
    assert [t.shape for t in node.output_types] == [(2, 2)] * 3
    for got, want in zip(run(node, x), np.split(x, 3, axis=1), strict=True):
        np.testing.assert_array_equal(got, want)


def test_split_errors():
    with pytest.raises(ShapeError, match=r"Split 'mv' \(layer 9\): dimension 4 of axis 1 "
                                         r"\(shape \(2, 4\)\) is not divisible by num_splits=3"):
        build(ops.Split, parameter((2, 4)), constant(1), num_splits=3)
    with pytest.raises(ShapeError, match=r"input 1 \(axis\) has shape \(1,\); expected rank 0"):
        build(ops.Split, parameter((2, 4)), constant([1]), num_splits=2)
    with pytest.raises(ShapeError, match=r"num_splits=0 is invalid"):
        build(ops.Split, parameter((2, 4)), constant(1), num_splits=0)


@pytest.mark.parametrize("axis, lengths, expected", [
    (1, [1, -1, 2], [1, 3, 2]),
    (-1, [0, 6], [0, 6]),
    ([1], [2, 4], [2, 4]),                 # a 1-element axis input is accepted
    (0, [-1], [3]),
])
def test_variadic_split(axis, lengths, expected):
    x = data((3, 6))
    node = build(ops.VariadicSplit, parameter(x.shape), constant(axis), constant(lengths))
    dim = 0 if axis == 0 else 1
    assert [t.shape[dim] for t in node.output_types] == expected
    want = np.split(x, np.cumsum(expected)[:-1], axis=dim)
    for got, part in zip(run(node, x), want, strict=True):
        np.testing.assert_array_equal(got, part)


@pytest.mark.parametrize("lengths, message", [
    ([2, 2], r"split lengths \(2, 2\) do not add up to dimension 6 of axis 1"),
    ([4, 4, -1], r"split lengths \(4, 4, -1\) do not add up to dimension 6"),
    ([-1, -1], r"split lengths \(-1, -1\) are invalid; expected values >= 0 and at most one"),
    ([-2, 8], r"split lengths \(-2, 8\) are invalid"),
])
def test_variadic_split_errors(lengths, message):
    with pytest.raises(ShapeError, match=r"VariadicSplit 'mv' \(layer 9\): " + message):
        build(ops.VariadicSplit, parameter((3, 6)), constant(1), constant(lengths))


# --- Gather ----------------------------------------------------------------------------------


def _gather_oracle(x: np.ndarray, indices: np.ndarray, axis: int, batch_dims: int,
                   negative: bool) -> np.ndarray:
    """Gather by explicit loops over the batch: np.take per batch, zeros for bad indices."""
    dim = x.shape[axis]
    idx = np.where(indices < 0, indices + dim, indices) if negative else indices
    bad = (idx < 0) | (idx >= dim)
    batch = x.shape[:batch_dims]
    out = np.empty(x.shape[:axis] + indices.shape[batch_dims:] + x.shape[axis + 1:], x.dtype)
    for b in np.ndindex(*batch):
        taken = np.take(x[b], np.where(bad[b], 0, idx[b]), axis=axis - batch_dims)
        mask = bad[b].reshape((1,) * (axis - batch_dims) + bad[b].shape
                              + (1,) * (x.ndim - axis - 1))
        out[b] = np.where(mask, 0, taken)
    return out


@pytest.mark.parametrize("cls, axis, batch_dims, indices", [
    (ops.Gather, 1, 0, [[0, 2], [1, 1]]),
    (ops.Gather, -1, 0, [3, 0]),
    (ops.Gather, 0, 0, 1),                  # scalar index drops the axis
    (ops.GatherV7, 2, 1, [[0, 3], [2, 1]]),
    (ops.GatherV7, 1, -1, [[0, 2, 1], [1, 1, 0]]),
    (ops.GatherV8, 2, 2, [[[1], [0], [3]], [[2], [2], [0]]]),
    (ops.GatherV8, 1, 0, [-1, -3, 2]),
    (ops.GatherV8, -1, 1, [[-4, 3], [-1, 0]]),
])
def test_gather(cls, axis, batch_dims, indices):
    x = data((2, 3, 4))
    idx = np.array(indices, np.int64)
    fields = {} if cls is ops.Gather else {"batch_dims": batch_dims}
    node = build(cls, parameter(x.shape), constant(idx), constant(axis), **fields)
    norm_axis = axis % 3
    norm_bd = batch_dims % idx.ndim if batch_dims < 0 else batch_dims
    want = _gather_oracle(x, idx, norm_axis, norm_bd, cls is ops.GatherV8)
    assert node.output_types[0].shape == want.shape
    np.testing.assert_array_equal(run(node, x)[0], want)


@pytest.mark.parametrize("cls, indices, zero_rows", [
    (ops.Gather, [0, -1, 3, 2], [1, 2]),     # v1: negative and >= dim give zeros
    (ops.GatherV7, [0, -1, 3, 2], [1, 2]),
    (ops.GatherV8, [0, -1, 3, -4], [2, 3]),  # v8: [-dim, 0) wraps; the rest give zeros
])
def test_gather_out_of_range_indices_give_zeros(cls, indices, zero_rows):
    """OpenVINO's CPU plugin writes zeros for out-of-range indices (the spec leaves them
    undefined)."""
    x = data((3, 2)) + np.float32(10)
    node = build(cls, parameter(x.shape), constant(indices, np.int32), constant(0))
    out = run(node, x)[0]
    for row, index in enumerate(indices):
        want = np.zeros(2) if row in zero_rows else x[index]
        np.testing.assert_array_equal(out[row], want)


def test_gather_errors():
    with pytest.raises(ShapeError, match=r"Gather 'mv' \(layer 9\): batch_dims=2 is invalid "
                                         r"for axis 1 and indices of rank 2"):
        build(ops.GatherV7, parameter((2, 3, 4)), constant([[0], [1]]), constant(1),
              batch_dims=2)
    with pytest.raises(ShapeError, match=r"the first 1 dimensions \(batch_dims\) of data "
                                         r"\(2, 3, 4\) and indices \(3, 1\) differ"):
        build(ops.GatherV8, parameter((2, 3, 4)), constant([[0], [1], [0]]), constant(1),
              batch_dims=1)
    with pytest.raises(ShapeError, match=r"axis 3 is out of range for rank 3"):
        build(ops.Gather, parameter((2, 3, 4)), constant([0]), constant(3))
    with pytest.raises(ShapeError, match=r"input 2 \(axis\) has 2 values; expected one"):
        build(ops.Gather, parameter((2, 3, 4)), constant([0]), constant([0, 1]))
    with pytest.raises(ShapeError, match=r"indices have element type f32; expected an integer"):
        build(ops.Gather, parameter((2, 3)), constant([0.0], np.float32), constant(0))


def test_gather_on_integer_shape_tensors():
    """The shape-subgraph case: Gather picks dims out of an i64 ShapeOf result."""
    shape = np.array([1, 3, 224, 224], np.int64)
    node = build(ops.GatherV8, parameter((4,), dtypes.i64), constant([0, 1]), constant(0))
    out = run(node, shape)[0]
    assert out.dtype == np.int64 and out.tolist() == [1, 3]


# --- Pad -------------------------------------------------------------------------------------


def _pad_oracle(x: np.ndarray, begin: list[int], end: list[int], mode: str,
                value: float = 0.0) -> np.ndarray:
    """numpy.pad by the positive pads, then crop the negative ones: mirroring sees the
    uncropped input."""
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
    kwargs = {"constant_values": value} if mode == "constant" else {}
    padded = np.pad(x, widths, mode=mode, **kwargs)
    crop = tuple(slice(max(-b, 0), padded.shape[i] - max(-e, 0))
                 for i, (b, e) in enumerate(zip(begin, end)))
    return padded[crop]


@pytest.mark.parametrize("cls", [ops.Pad, ops.PadV12])
@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric"])
@pytest.mark.parametrize("begin, end", [
    ([1, 2], [2, 1]),
    ([0, 3], [3, 0]),
    ([-1, 2], [0, -1]),                    # crop one axis, pad the other
    ([0, 0], [0, 0]),
])
def test_pad_modes(cls, mode, begin, end):
    x = data((4, 5))
    node = build(cls, parameter(x.shape), constant(begin), constant(end), pad_mode=mode)
    want = _pad_oracle(x, begin, end, mode)
    assert node.output_types[0].shape == want.shape
    np.testing.assert_array_equal(run(node, x)[0], want)


def test_pad_mirrors_the_uncropped_input():
    """Cropping one side and mirroring the other reflects around the original border."""
    x = np.arange(6, dtype=np.float32)
    node = build(ops.PadV12, parameter((6,)), constant([-2]), constant([2]), pad_mode="reflect")
    np.testing.assert_array_equal(run(node, x)[0], [2, 3, 4, 5, 4, 3])
    node = build(ops.PadV12, parameter((6,)), constant([2]), constant([-5]),
                 pad_mode="symmetric")
    np.testing.assert_array_equal(run(node, x)[0], [1, 0, 0])


@pytest.mark.parametrize("dtype", [dtypes.f32, dtypes.i32, dtypes.u8, dtypes.boolean])
def test_pad_constant_value(dtype):
    x = RNG.integers(0, 2, (2, 3)).astype(dtype.numpy)
    fill = np.array(1 if dtype == dtypes.boolean else 7, dtype.numpy)
    node = build(ops.Pad, parameter(x.shape, dtype), constant([1, 0]), constant([0, 2]),
                 Constant.of(fill, origin("Const")).output, pad_mode="constant")
    want = np.pad(x, [(1, 0), (0, 2)], constant_values=fill)
    out = run(node, x)[0]
    assert out.dtype == dtype.numpy
    np.testing.assert_array_equal(out, want)


def test_pad_of_an_empty_axis_in_constant_mode():
    node = build(ops.Pad, parameter((0, 2)), constant([1, 0]), constant([1, 1]),
                 constant(3.0, np.float32), pad_mode="constant")
    np.testing.assert_array_equal(run(node, np.zeros((0, 2), np.float32))[0],
                                  np.full((2, 3), 3.0))


@pytest.mark.parametrize("mode, begin, end, message", [
    ("reflect", [4, 0], [0, 0], (r"reflect padding of axis 0 \(size 4\) by \(4, 0\) is invalid; "
                                r"expected pads <= 3")),
    ("symmetric", [0, 0], [5, 0], (r"symmetric padding of axis 0 \(size 4\) by \(0, 5\) is "
                                  r"invalid; expected pads <= 4")),
    ("constant", [-3, 0], [-2, 0], r"pads -3 and -2 crop axis 0 of size 4 below zero"),
    ("constant", [1], [1], r"pads begin has 1 values; expected one per input dimension \(2\)"),
])
def test_pad_errors(mode, begin, end, message):
    with pytest.raises(ShapeError, match=r"Pad 'mv' \(layer 9\): " + message):
        build(ops.PadV12, parameter((4, 5)), constant(begin), constant(end), pad_mode=mode)


def test_pad_value_must_be_a_scalar_of_the_data_type():
    with pytest.raises(ShapeError, match=r"pad value is i32\[\]; expected a f32 scalar"):
        build(ops.Pad, parameter((4, 5)), constant([0, 0]), constant([0, 0]),
              constant(1, np.int32), pad_mode="constant")


def test_pad_edge_of_an_empty_axis():
    with pytest.raises(ShapeError, match=r"edge padding of axis 0 \(size 0\) by \(1, 0\) is "
                                         r"invalid; expected a non-empty axis"):
        build(ops.Pad, parameter((0, 5)), constant([1, 0]), constant([0, 0]), pad_mode="edge")


# --- DepthToSpace / ShuffleChannels ----------------------------------------------------------


def test_depth_to_space_blocks_first_matches_the_spec_formula():
    """blocks_first: reshape [N, bs, bs, C', H, W], transpose (0, 3, 4, 1, 5, 2)."""
    x = data((2, 8, 2, 3))
    node = build(ops.DepthToSpace, parameter(x.shape), block_size=2, mode="blocks_first")
    assert node.output_types[0].shape == (2, 2, 4, 6)
    want = x.reshape(2, 2, 2, 2, 2, 3).transpose(0, 3, 4, 1, 5, 2).reshape(2, 2, 4, 6)
    np.testing.assert_array_equal(run(node, x)[0], want)


def test_depth_to_space_depth_first_matches_the_spec_formula():
    """depth_first: reshape [N, C', bs, bs, H, W], transpose (0, 1, 4, 2, 5, 3)."""
    x = data((1, 12, 2, 2))
    node = build(ops.DepthToSpace, parameter(x.shape), block_size=2, mode="depth_first")
    want = x.reshape(1, 3, 2, 2, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(1, 3, 4, 4)
    np.testing.assert_array_equal(run(node, x)[0], want)


def test_depth_to_space_1d_and_3d_spatial():
    x = data((1, 4, 3))
    node = build(ops.DepthToSpace, parameter(x.shape), block_size=2, mode="depth_first")
    want = x.reshape(1, 2, 2, 3).transpose(0, 1, 3, 2).reshape(1, 2, 6)
    np.testing.assert_array_equal(run(node, x)[0], want)
    x = data((1, 16, 1, 2, 1))
    node = build(ops.DepthToSpace, parameter(x.shape), block_size=2, mode="blocks_first")
    assert node.output_types[0].shape == (1, 2, 2, 4, 2)


def test_depth_to_space_errors():
    with pytest.raises(ShapeError, match=r"DepthToSpace 'mv' \(layer 9\): 6 channels are not "
                                         r"divisible by block_size\^2 = 4"):
        build(ops.DepthToSpace, parameter((1, 6, 2, 2)), block_size=2, mode="blocks_first")
    with pytest.raises(ShapeError, match=r"input shape \(4, 4\) has rank 2; expected >= 3"):
        build(ops.DepthToSpace, parameter((4, 4)), block_size=2, mode="blocks_first")


@pytest.mark.parametrize("axis", [1, -2])
def test_shuffle_channels(axis):
    x = data((2, 6, 3))
    node = build(ops.ShuffleChannels, parameter(x.shape), axis=axis, group=3)
    want = x.reshape(2, 3, 2, 3).transpose(0, 2, 1, 3).reshape(x.shape)
    np.testing.assert_array_equal(run(node, x)[0], want)


def test_shuffle_channels_errors():
    with pytest.raises(ShapeError, match=r"ShuffleChannels 'mv' \(layer 9\): group=4 is "
                                         r"invalid for dimension 6 of axis 1"):
        build(ops.ShuffleChannels, parameter((2, 6)), axis=1, group=4)


# --- all dtypes, attributes, dispatch --------------------------------------------------------


@pytest.mark.parametrize("dtype", [dtypes.f16, dtypes.i32, dtypes.i64, dtypes.u8, dtypes.i8,
                                   dtypes.boolean])
def test_movement_ops_keep_every_element_type(dtype):
    x = RNG.integers(0, 2 if dtype == dtypes.boolean else 100, (2, 4, 2)).astype(dtype.numpy)
    p = parameter(x.shape, dtype)
    cases = [
        (build(ops.Transpose, p, constant([2, 0, 1])), x.transpose(2, 0, 1)),
        (build(ops.Split, p, constant(1), num_splits=2), x[:, :2]),
        (build(ops.VariadicSplit, p, constant(1), constant([3, 1])), x[:, :3]),
        (build(ops.GatherV8, p, constant([-1]), constant(1)), x[:, 3:]),
        (build(ops.PadV12, p, constant([0, 1, 0]), constant([0, 0, 0]), pad_mode="edge"),
         np.pad(x, [(0, 0), (1, 0), (0, 0)], mode="edge")),
        (build(ops.ShuffleChannels, p, axis=1, group=2),
         x.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(x.shape)),
    ]
    for node, want in cases:
        out = run(node, x)[0]
        assert node.output_types[0].dtype == dtype and out.dtype == dtype.numpy
        np.testing.assert_array_equal(out, want)
    concat = build(ops.Concat, p, p, axis=0)
    np.testing.assert_array_equal(run(concat, x, x)[0], np.concatenate([x, x]))


@pytest.mark.parametrize("cls, raw, fields", [
    (ops.Concat, {"axis": "-1"}, {"axis": -1}),
    (ops.Split, {"num_splits": "2"}, {"num_splits": 2}),
    (ops.GatherV7, {"batch_dims": "1"}, {"batch_dims": 1}),
    (ops.GatherV8, {"batch_dims": "-1"}, {"batch_dims": -1}),
    (ops.PadV12, {"pad_mode": "symmetric"}, {"pad_mode": "symmetric"}),
    (ops.DepthToSpace, {"block_size": "2", "mode": "depth_first"},
     {"block_size": 2, "mode": "depth_first"}),
    (ops.ShuffleChannels, {"axis": "-1", "group": "2"}, {"axis": -1, "group": 2}),
])
def test_from_ir_and_to_ir_are_inverse(cls, raw, fields):
    assert cls.from_ir(Attributes(raw, origin(IR_NAMES[cls][0]))) == fields
    x = parameter((2, 4, 2))
    inputs = {ops.Concat: (x,), ops.Split: (x, constant(1)),
              ops.GatherV7: (x, constant([[0]] * 2), constant(1)),
              ops.GatherV8: (x, constant([[0]] * 2), constant(1)),
              ops.PadV12: (x, constant([0, 1, 0]), constant([0, 1, 0])),
              ops.DepthToSpace: (x,), ops.ShuffleChannels: (x,)}[cls]
    assert build(cls, *inputs, **fields).to_ir() == raw


def test_bad_attributes_name_the_layer():
    with pytest.raises(BadAttributeError, match=r"Pad 'mv' \(layer 9\): attribute "
                                                r"pad_mode=\"wrap\" is invalid; expected one of "
                                                r"constant, edge, reflect, symmetric"):
        ops.Pad.from_ir(Attributes({"pad_mode": "wrap"}, origin("Pad")))
    with pytest.raises(BadAttributeError, match=r"missing attribute 'axis'"):
        ops.Concat.from_ir(Attributes({}, origin("Concat")))


@pytest.mark.parametrize("ir_type, version, cls", [
    ("Transpose", "opset1", ops.Transpose), ("Concat", "opset13", ops.Concat),
    ("Split", "opset1", ops.Split), ("VariadicSplit", "opset1", ops.VariadicSplit),
    ("Gather", "opset1", ops.Gather), ("Gather", "opset6", ops.Gather),
    ("Gather", "opset7", ops.GatherV7), ("Gather", "opset8", ops.GatherV8),
    ("Gather", "opset13", ops.GatherV8), ("Pad", "opset1", ops.Pad),
    ("Pad", "opset11", ops.Pad), ("Pad", "opset12", ops.PadV12),
    ("DepthToSpace", "opset1", ops.DepthToSpace),
    ("ShuffleChannels", "opset3", ops.ShuffleChannels),
])
def test_dispatch_on_type_and_version(ir_type, version, cls):
    assert lookup(Origin("1", "n", ir_type, version)) is cls
