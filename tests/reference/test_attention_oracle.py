"""ScaledDotProductAttention-13 against OpenVINO's CPU plugin: default and explicit scale,
causal (square and rectangular), boolean and float masks, broadcast batch dims."""

from __future__ import annotations

import numpy as np
import openvino as ov
import oracle
import pytest
from openvino import opset1, opset13

pytestmark = pytest.mark.oracle


def attention_model(q: tuple, k: tuple, v: tuple, mask: tuple | None = None,
                    mask_type: type = np.float32, scale: float | None = None,
                    causal: bool = False) -> ov.Model:
    parameters = [opset1.parameter(shape, np.float32, name=name)
                  for name, shape in (("q", q), ("k", k), ("v", v))]
    arguments = list(parameters)
    if mask is not None:
        parameters.append(opset1.parameter(mask, mask_type, name="mask"))
        arguments.append(parameters[-1])
    if scale is not None:
        if mask is None:
            arguments.append(opset1.constant(np.float32(0)))   # a zero float mask: no bias
        arguments.append(opset1.constant(np.float32(scale)))
    node = opset13.scaled_dot_product_attention(*arguments, causal=causal)
    return ov.Model([node], parameters)


@pytest.mark.parametrize("q, k, v", [
    ((1, 2, 5, 8), (1, 2, 5, 8), (1, 2, 5, 8)),
    ((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5)),
    ((2, 4, 16), (2, 7, 16), (2, 7, 3)),
    ((2, 3, 4, 8), (1, 3, 6, 8), (2, 1, 6, 5)),     # batch dims broadcast
])
@pytest.mark.parametrize("causal", [False, True])
def test_default_scale(tmp_path, q, k, v, causal):
    oracle.compare_with_openvino(attention_model(q, k, v, causal=causal), tmp_path)


@pytest.mark.parametrize("mask, mask_type", [
    ((2, 1, 4, 6), np.float32),
    ((4, 6), np.float32),
    ((1, 6), np.float32),
    ((2, 3, 4, 6), np.bool_),
    ((4, 6), np.bool_),
])
@pytest.mark.parametrize("scale", [None, 0.3])
def test_masks(tmp_path, mask, mask_type, scale):
    m = attention_model((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), mask, mask_type, scale)
    inputs = oracle.random_inputs(m, seed=1)
    if mask_type is np.bool_:
        inputs[3][..., 0] = True                   # keep one key per query: no 0/0 rows
    oracle.compare_with_openvino(m, tmp_path, inputs=inputs)


def test_causal_ignores_the_mask(tmp_path):
    m = attention_model((2, 3, 6, 8), (2, 3, 4, 8), (2, 3, 4, 5), (2, 1, 6, 4), scale=0.5,
                        causal=True)
    oracle.compare_with_openvino(m, tmp_path)
