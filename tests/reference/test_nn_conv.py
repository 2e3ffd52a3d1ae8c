"""Convolution-1 and GroupConvolution-1: auto_pad resolution, output shapes, errors naming the
layer, attribute round trips, and the im2col reference against a direct loop definition."""

from __future__ import annotations

import itertools

import attrs
import numpy as np
import pytest

from lpjit import dtypes
from lpjit.attributes import Attributes
from lpjit.errors import BadAttributeError, GraphError, ShapeError
from lpjit.graph import Constant, Node, Origin, Parameter, Value
from lpjit.ops import nn
from lpjit.ops.registry import IR_NAMES
from lpjit.reference import evaluate_node

RNG = np.random.default_rng(20)


def origin(ir_type: str) -> Origin:
    return Origin("3", "conv", ir_type, "opset1")


def parameter(shape: tuple[int, ...], dtype: dtypes.DType = dtypes.f32) -> Value:
    return Parameter(origin=origin("Parameter"), inputs=(), element_type=dtype,
                     shape=shape).output


def weights(shape: tuple[int, ...]) -> Value:
    return Constant.of(RNG.standard_normal(shape).astype(np.float32), origin("Const")).output


def build(cls: type[Node], x: Value, w: Value, **fields: object) -> Node:
    return cls(origin=origin(IR_NAMES[cls][0]), inputs=(x, w), **fields)


def direct_convolution(x: np.ndarray, w: np.ndarray, groups: int, strides, dilations,
                       pads_begin, pads_end) -> np.ndarray:
    """The definition, one output position at a time, in float64 (w is [G, OCg, ICg, k...])."""
    xp = np.pad(x.astype(np.float64), [(0, 0), (0, 0), *zip(pads_begin, pads_end)])
    kernel = w.shape[3:]
    out = [(p - d * (k - 1) - 1) // s + 1
           for p, k, s, d in zip(xp.shape[2:], kernel, strides, dilations)]
    in_per_group, out_per_group = w.shape[2], w.shape[1]
    y = np.zeros((x.shape[0], groups * out_per_group, *out))
    for g, o in itertools.product(range(groups), range(out_per_group)):
        channels = slice(g * in_per_group, (g + 1) * in_per_group)
        for position in itertools.product(*(range(n) for n in out)):
            window = tuple(slice(p * s, p * s + d * (k - 1) + 1, d)
                           for p, s, d, k in zip(position, strides, dilations, kernel))
            patch = xp[(slice(None), channels, *window)]
            y[(slice(None), g * out_per_group + o, *position)] = np.tensordot(
                patch, w[g, o].astype(np.float64), axes=patch.ndim - 1)
    return y


# --- auto_pad and output shapes --------------------------------------------------------------


@pytest.mark.parametrize("size, kernel, stride, dilation, auto_pad, pads, out", [
    (9, 3, 2, 1, "same_upper", (1, 1), 5),
    (8, 3, 2, 1, "same_upper", (0, 1), 4),     # odd total: the extra pad goes to the end
    (8, 3, 2, 1, "same_lower", (1, 0), 4),     # ... or to the beginning
    (11, 4, 3, 2, "same_upper", (2, 3), 4),    # dilated kernel 7
    (11, 4, 3, 2, "same_lower", (3, 2), 4),
    (7, 7, 1, 1, "same_upper", (3, 3), 7),     # 7x7 stem-like kernel
    (6, 1, 2, 1, "same_upper", (0, 0), 3),     # 1x1 kernel, stride 2
    (9, 3, 2, 1, "valid", (0, 0), 4),          # the XML pads (1, 2) are ignored
    (9, 3, 2, 1, "explicit", (1, 2), 5),
    (5, 3, 1, 2, "explicit", (1, 2), 4),
])
def test_auto_pad_resolves_pads_and_output_size(size, kernel, stride, dilation, auto_pad, pads,
                                                out):
    """Effective pads are stored in pads_begin/pads_end; the output is
    floor((I + pb + pe - d*(k-1) - 1)/s) + 1."""
    conv = build(nn.Convolution, parameter((2, 5, size, size + 2)), weights((7, 5, kernel, 1)),
                 strides=(stride, 1), dilations=(dilation, 1), pads_begin=(1, 0),
                 pads_end=(2, 0), auto_pad=auto_pad)
    assert (conv.pads_begin[0], conv.pads_end[0]) == pads
    assert conv.output_types[0].shape == (2, 7, out, size + 2)
    assert conv.output_types[0].dtype == dtypes.f32


def test_empty_strides_dilations_and_pads_mean_ones_and_zeros():
    conv = build(nn.Convolution, parameter((1, 3, 9)), weights((4, 3, 3)))
    assert (conv.strides, conv.dilations, conv.pads_begin, conv.pads_end) == ((1,), (1,), (0,),
                                                                              (0,))
    assert conv.output_types[0].shape == (1, 4, 7)


def test_rebuilding_on_a_new_input_shape_re_resolves_auto_pads():
    """Passes rebuild nodes with attrs.evolve: same_upper pads follow the new input size."""
    w = weights((4, 3, 3, 3))
    conv = build(nn.Convolution, parameter((1, 3, 8, 8)), w, strides=(2, 2),
                 auto_pad="same_upper")
    assert (conv.pads_begin, conv.pads_end) == ((0, 0), (1, 1))
    rebuilt = attrs.evolve(conv, inputs=(parameter((1, 3, 9, 9)), w))
    assert (rebuilt.pads_begin, rebuilt.pads_end) == ((1, 1), (1, 1))
    assert rebuilt.output_types[0].shape == (1, 4, 5, 5)


def test_group_convolution_shapes_depthwise_and_3d():
    depthwise = build(nn.GroupConvolution, parameter((2, 7, 9, 9)), weights((7, 1, 1, 3, 3)),
                      strides=(2, 2), auto_pad="same_lower")
    assert depthwise.groups == 7
    assert depthwise.output_types[0].shape == (2, 7, 5, 5)
    grouped = build(nn.GroupConvolution, parameter((1, 6, 5, 6, 7)), weights((3, 4, 2, 2, 1, 3)),
                    strides=(1, 2, 1), dilations=(2, 1, 1), pads_begin=(1, 0, 1),
                    pads_end=(0, 1, 1))
    assert grouped.output_types[0].shape == (1, 12, 4, 4, 7)


# --- errors ----------------------------------------------------------------------------------


def test_mismatched_channels_name_the_layer_and_both_counts():
    with pytest.raises(ShapeError, match=r"^Convolution 'conv' \(layer 3\): input has 5 channels "
                                         r"but the weights \(7, 4, 3, 3\) expect 4 input"):
        build(nn.Convolution, parameter((1, 5, 8, 8)), weights((7, 4, 3, 3)))
    with pytest.raises(ShapeError, match=r"GroupConvolution 'conv' \(layer 3\): input has 6 "
                                         r"channels but the weights \(3, 2, 1, 3\) expect 3 "
                                         r"\(3 groups x 1\)"):
        build(nn.GroupConvolution, parameter((1, 6, 9)), weights((3, 2, 1, 3)))


@pytest.mark.parametrize("x, w, fields, message", [
    ((4, 9), (4, 4, 3), {}, r"data input has shape \(4, 9\) \(rank 2\); expected rank 3, 4 or 5"),
    ((1, 3, 9, 9), (4, 3, 3), {}, r"weights have shape \(4, 3, 3\) \(rank 3\); expected rank 4"),
    ((1, 3, 9, 9), (4, 3, 3, 3), {"strides": (1, 1, 1)},
     r"strides=\(1, 1, 1\) has 3 entries; expected 2"),
    ((1, 3, 9, 9), (4, 3, 3, 3), {"dilations": (0, 1)}, r"dilations=\(0, 1\) must be positive"),
    ((1, 3, 4, 9), (4, 3, 5, 3), {},
     r"spatial axis 0: the dilated kernel \(5\) is larger than the padded input \(4 \+ 0 \+ 0\)"),
    ((1, 3, 9, 9), (4, 3, 3, 3), {"pads_begin": (-1, 0), "pads_end": (0, 0)},
     r"pads_begin=\(-1, 0\), pads_end=\(0, 0\) must not be negative"),
])
def test_bad_shapes_and_windows_are_rejected(x, w, fields, message):
    with pytest.raises(ShapeError, match=r"Convolution 'conv' \(layer 3\): " + message):
        build(nn.Convolution, parameter(x), weights(w), **fields)


def test_element_types_must_match_and_arity_is_checked():
    with pytest.raises(ShapeError, match=r"inputs have element types f16, f32"):
        build(nn.Convolution, parameter((1, 3, 9), dtypes.f16), weights((4, 3, 3)))
    with pytest.raises(GraphError, match=r"has 1 inputs; expected 2"):
        nn.Convolution(origin=origin("Convolution"), inputs=(parameter((1, 3, 9)),))


# --- attributes ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, raw", [
    (nn.Convolution, {"strides": "2, 2", "dilations": "1, 1", "pads_begin": "1, 0",
                      "pads_end": "0, 1", "auto_pad": "explicit"}),
    (nn.Convolution, {"strides": "2, 2", "dilations": "1, 1", "pads_begin": "0, 0",
                      "pads_end": "0, 0", "auto_pad": "same_upper"}),
    (nn.GroupConvolution, {"strides": "1, 1", "pads_begin": "0, 0", "pads_end": "0, 0",
                           "dilations": "1, 2", "auto_pad": "same_lower"}),
    (nn.GroupConvolution, {"strides": "1, 1", "pads_begin": "0, 0", "pads_end": "0, 0",
                           "dilations": "1, 1", "auto_pad": "valid"}),
])
def test_to_ir_writes_back_what_openvino_wrote(cls, raw):
    """Auto pads are resolved in the node but written as zeros, as OpenVINO's serializer does."""
    w = (6, 3, 3, 3) if cls is nn.Convolution else (3, 2, 1, 3, 3)
    node = build(cls, parameter((1, 3, 9, 8)), weights(w),
                 **cls.from_ir(Attributes(raw, origin(IR_NAMES[cls][0]))))
    assert node.to_ir() == raw
    assert list(node.to_ir()) == list(raw)         # OpenVINO's attribute order


def test_auto_pad_is_case_insensitive_and_notset_means_explicit():
    parse = nn.Convolution.from_ir
    assert parse(Attributes({"auto_pad": "SAME_UPPER"}, origin("Convolution")))["auto_pad"] == \
        "same_upper"
    assert parse(Attributes({"auto_pad": "notset"}, origin("Convolution")))["auto_pad"] == \
        "explicit"
    with pytest.raises(BadAttributeError, match=r"attribute auto_pad=\"same\" is invalid"):
        parse(Attributes({"auto_pad": "same"}, origin("Convolution")))


# --- reference -------------------------------------------------------------------------------

CONV_CASES = [
    # data shape, weights shape, groups, strides, dilations, pads_begin, pads_end
    ((2, 5, 9, 8), (7, 5, 3, 3), 1, (1, 1), (1, 1), (1, 1), (1, 1)),
    ((1, 3, 11, 10), (5, 3, 7, 7), 1, (2, 2), (1, 1), (3, 2), (3, 3)),
    ((2, 7, 6, 5), (11, 7, 1, 1), 1, (2, 1), (1, 1), (0, 0), (0, 0)),
    ((1, 4, 10, 9), (3, 4, 3, 2), 1, (1, 2), (2, 3), (2, 0), (1, 1)),
    ((2, 3, 13), (4, 3, 4), 1, (3,), (2,), (1,), (2,)),
    ((1, 2, 5, 6, 4), (3, 2, 2, 3, 2), 1, (1, 2, 1), (2, 1, 1), (1, 0, 1), (0, 1, 0)),
    ((2, 6, 7, 7), (3, 4, 2, 3, 3), 3, (1, 2), (1, 1), (1, 1), (1, 0)),
    ((1, 5, 8, 7), (5, 1, 1, 3, 3), 5, (2, 2), (1, 2), (1, 2), (1, 2)),
]


@pytest.mark.parametrize("shape, w_shape, groups, strides, dilations, pb, pe", CONV_CASES)
def test_reference_matches_the_direct_definition(shape, w_shape, groups, strides, dilations,
                                                 pb, pe):
    cls = nn.GroupConvolution if len(w_shape) == len(shape) + 1 else nn.Convolution
    w = weights(w_shape)
    conv = build(cls, parameter(shape), w, strides=strides, dilations=dilations, pads_begin=pb,
                 pads_end=pe)
    x = RNG.uniform(-2, 2, shape).astype(np.float32)
    (y,) = evaluate_node(conv, [x, w.node.data])
    grouped = w.node.data.reshape(groups, -1, *w.node.data.shape[-(len(shape) - 1):])
    expected = direct_convolution(x, grouped, groups, strides, dilations, pb, pe)
    assert y.dtype == np.float32 and y.shape == conv.output_types[0].shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)


def test_same_upper_reference_pads_the_odd_pixel_at_the_end():
    """An all-ones 3-tap kernel with stride 2 on 1, 2, ..., 8 needs one pad pixel: same_upper
    puts it at the end (sums 1+2+3, ..., 7+8+0) and same_lower at the beginning (0+1+2, ...)."""
    x = np.arange(1, 9, dtype=np.float32).reshape(1, 1, 8)
    ones = Constant.of(np.ones((1, 1, 3), np.float32), origin("Const")).output
    upper = build(nn.Convolution, parameter((1, 1, 8)), ones, strides=(2,), auto_pad="same_upper")
    lower = build(nn.Convolution, parameter((1, 1, 8)), ones, strides=(2,), auto_pad="same_lower")
    assert (upper.pads_begin, upper.pads_end) == ((0,), (1,))
    assert (lower.pads_begin, lower.pads_end) == ((1,), (0,))
    np.testing.assert_array_equal(evaluate_node(upper, [x, ones.node.data])[0], [[[6, 12, 18, 15]]])
    np.testing.assert_array_equal(evaluate_node(lower, [x, ones.node.data])[0], [[[3, 9, 15, 21]]])
