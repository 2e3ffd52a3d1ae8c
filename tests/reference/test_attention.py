"""ScaledDotProductAttention-13: output shapes with broadcast batch dims, input checks naming the
layer, and the reference against a per-query loop (causal, boolean and float masks, scale)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lpjit import dtypes
from lpjit.attributes import Attributes
from lpjit.errors import GraphError, ShapeError
from lpjit.graph import Constant, Origin, Parameter, Value
from lpjit.ops.attention import ScaledDotProductAttention
from lpjit.reference import evaluate_node

RNG = np.random.default_rng(24)


def origin(ir_type: str) -> Origin:
    return Origin("8", "attn", ir_type, "opset13")


def parameter(shape: tuple[int, ...], dtype: dtypes.DType = dtypes.f32) -> Value:
    return Parameter(origin=origin("Parameter"), inputs=(), element_type=dtype,
                     shape=shape).output


def sdpa(*inputs: Value, causal: bool = False) -> ScaledDotProductAttention:
    return ScaledDotProductAttention(origin=origin("ScaledDotProductAttention"), inputs=inputs,
                                     causal=causal)


def per_query_attention(q, k, v, keep, bias, scale):
    """For every batch index and query row: softmax over the kept keys of q.k*scale + bias."""
    batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    q, k, v = (np.broadcast_to(a, (*batch, *a.shape[-2:])).astype(np.float64) for a in (q, k, v))
    out = np.zeros((*batch, q.shape[-2], v.shape[-1]))
    for index in itertools.product(*(range(n) for n in batch)):
        for i in range(q.shape[-2]):
            kept = [j for j in range(k.shape[-2]) if keep(index, i, j)]
            logits = np.array([q[index][i] @ k[index][j] * scale + bias(index, i, j)
                               for j in kept])
            weights = np.exp(logits - logits.max())
            out[index][i] = (weights / weights.sum()) @ v[index][kept]
    return out


def random(shape: tuple[int, ...]) -> np.ndarray:
    return RNG.uniform(-2, 2, shape).astype(np.float32)


# --- shapes and checks -----------------------------------------------------------------------


@pytest.mark.parametrize("q, k, v, mask, out", [
    ((1, 2, 5, 8), (1, 2, 5, 8), (1, 2, 5, 8), None, (1, 2, 5, 8)),
    ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), None, (2, 3, 4, 5)),
    ((2, 1, 4, 8), (1, 3, 6, 8), (2, 3, 6, 5), (4, 6), (2, 3, 4, 5)),
    ((3, 4, 8), (3, 6, 8), (3, 6, 2), (3, 1, 6), (3, 4, 2)),
    ((1, 4, 8), (1, 6, 8), (1, 6, 2), (5, 1, 1, 1), (5, 1, 4, 2)),   # mask batch dims broadcast
])
def test_output_shape(q, k, v, mask, out):
    inputs = [parameter(q), parameter(k), parameter(v)]
    if mask is not None:
        inputs.append(parameter(mask))
    assert sdpa(*inputs).output_types[0].shape == out


@pytest.mark.parametrize("shapes, dtypes_, message", [
    (((4, 8), (4, 8), (4, 8)), None, r"query has shape \(4, 8\); expected rank >= 3"),
    (((1, 4, 8), (1, 6, 7), (1, 6, 2)), None,
     r"query \(1, 4, 8\) and key \(1, 6, 7\) differ in the feature dim \(8 vs 7\)"),
    (((1, 4, 8), (1, 6, 8), (1, 5, 2)), None,
     r"key \(1, 6, 8\) and value \(1, 5, 2\) differ in the sequence dim \(6 vs 5\)"),
    (((2, 4, 8), (3, 6, 8), (3, 6, 2)), None, r"input shapes .* do not broadcast"),
    (((1, 4, 8), (1, 6, 8), (1, 6, 2), (4, 5)), None,
     r"attention_mask has shape \(4, 5\); expected a scalar or \[\.\.\., 4 or 1, 6 or 1\]"),
    (((1, 4, 8), (1, 6, 8), (1, 6, 2), (6,)), None, r"attention_mask has shape \(6,\)"),
    (((1, 4, 8), (1, 6, 8), (1, 6, 2), (4, 6)), (dtypes.f32,) * 3 + (dtypes.i32,),
     r"attention_mask has element type i32; expected boolean or f32"),
    (((1, 4, 8), (1, 6, 8), (1, 6, 2), (), (2,)), None,
     r"scale has shape \(2,\); expected a scalar or one element"),
    (((1, 4, 8), (1, 6, 8), (1, 6, 2)), (dtypes.f32, dtypes.f16, dtypes.f32),
     r"query, key, value have element types f32, f16, f32; expected one float type"),
])
def test_bad_inputs_are_rejected_naming_the_layer(shapes, dtypes_, message):
    types = dtypes_ or (dtypes.f32,) * len(shapes)
    inputs = [parameter(s, t) for s, t in zip(shapes, types)]
    with pytest.raises(ShapeError, match=r"^ScaledDotProductAttention 'attn' \(layer 8\): "
                                         + message):
        sdpa(*inputs)


def test_causal_ignores_the_mask_and_arity_is_checked():
    q, k, v = parameter((1, 4, 8)), parameter((1, 6, 8)), parameter((1, 6, 2))
    assert sdpa(q, k, v, parameter((7, 7)), causal=True).output_types[0].shape == (1, 4, 2)
    with pytest.raises(GraphError, match=r"has 2 inputs; expected 3..5"):
        sdpa(q, k)


def test_attributes_round_trip():
    fields = ScaledDotProductAttention.from_ir(Attributes({"causal": "true"}, origin("SDPA")))
    assert fields == {"causal": True}
    node = sdpa(parameter((1, 4, 8)), parameter((1, 6, 8)), parameter((1, 6, 2)), **fields)
    assert node.to_ir() == {"causal": "true"}


# --- reference -------------------------------------------------------------------------------


def run(node: ScaledDotProductAttention, *arrays: np.ndarray) -> np.ndarray:
    (y,) = evaluate_node(node, list(arrays))
    return y


def test_default_scale_is_one_over_sqrt_of_the_head_size():
    q, k, v = random((2, 3, 4, 8)), random((2, 3, 6, 8)), random((2, 3, 6, 5))
    y = run(sdpa(parameter(q.shape), parameter(k.shape), parameter(v.shape)), q, k, v)
    expected = per_query_attention(q, k, v, lambda *_: True, lambda *_: 0.0, 1 / np.sqrt(8))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("length, source_length", [(4, 6), (6, 4), (5, 5)])
def test_causal_lets_query_i_see_keys_up_to_i(length, source_length):
    q, k, v = random((2, length, 8)), random((2, source_length, 8)), random((2, source_length, 3))
    node = sdpa(parameter(q.shape), parameter(k.shape), parameter(v.shape), causal=True)
    expected = per_query_attention(q, k, v, lambda b, i, j: j <= i, lambda *_: 0.0,
                                   1 / np.sqrt(8))
    np.testing.assert_allclose(run(node, q, k, v), expected, rtol=1e-5, atol=1e-6)


def test_boolean_mask_keeps_true_and_float_mask_is_added_with_an_explicit_scale():
    q, k, v = random((2, 4, 8)), random((2, 6, 8)), random((2, 6, 3))
    keep = RNG.random((2, 4, 6)) < 0.6
    keep[..., 0] = True                                   # every query keeps one key
    scale = Constant.of(np.float32(0.3), origin("Const")).output
    inputs = [parameter(q.shape), parameter(k.shape), parameter(v.shape)]
    masked = sdpa(*inputs, parameter(keep.shape, dtypes.boolean), scale)
    expected = per_query_attention(q, k, v, lambda b, i, j: keep[b][i, j], lambda *_: 0.0, 0.3)
    np.testing.assert_allclose(run(masked, q, k, v, keep, np.float32(0.3)), expected, rtol=1e-5,
                               atol=1e-6)
    bias = random((1, 4, 6))
    added = sdpa(*inputs, parameter(bias.shape), scale)
    expected = per_query_attention(q, k, v, lambda *_: True, lambda b, i, j: bias[0, i, j], 0.3)
    np.testing.assert_allclose(run(added, q, k, v, bias, np.float32(0.3)), expected, rtol=1e-5,
                               atol=1e-6)
