"""ScaledDotProductAttention-13 lowered to loops, on numba and LLVM, against the reference.

rtol 1e-4 / atol 1e-5: float32 dot products (at most 24 terms here) and float32 softmax against
the reference's float64.  Cases: broadcast batch dims, causal (square, and rectangular where
it overrides a mask), boolean and float masks with an explicit scale, rank-3 inputs, and
sequence and feature lengths past one vector so that the vector bodies and tails both run.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import oracle
import pytest
from lowered import check_lowered
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
        arguments.append(opset1.constant(np.float32(scale)))
    node = opset13.scaled_dot_product_attention(*arguments, causal=causal)
    return ov.Model([node], parameters)


def test_broadcast_batch_dims(tmp_path):
    check_lowered(attention_model((2, 3, 4, 8), (1, 3, 6, 8), (2, 1, 6, 5)), tmp_path)


def test_causal_long_rows(tmp_path):
    """20 keys, 24 features, 17 value features: vector bodies plus scalar tails (LLVM only:
    the causal meaning runs on numba in ``test_causal_ignores_the_mask``)."""
    model = attention_model((1, 2, 20, 24), (1, 2, 20, 24), (1, 2, 20, 17), causal=True)
    check_lowered(model, tmp_path, numba=False)


def test_boolean_mask_with_scale(tmp_path):
    model = attention_model((2, 3, 4, 8), (2, 3, 6, 8), (2, 3, 6, 5), (4, 6), np.bool_, 0.3)
    inputs = oracle.random_inputs(model, seed=1)
    inputs[3][..., 0] = True                   # keep one key per query: no 0/0 rows
    check_lowered(model, tmp_path, inputs=inputs)


def test_float_mask_rank3(tmp_path):
    model = attention_model((2, 4, 16), (2, 7, 16), (2, 7, 3), (2, 1, 7), np.float32, 0.25)
    check_lowered(model, tmp_path, threads=1)


def test_causal_ignores_the_mask(tmp_path):
    """More queries than keys: the causal bias is aligned top-left; the mask is unused."""
    model = attention_model((2, 3, 6, 8), (2, 3, 4, 8), (2, 3, 4, 5), (2, 1, 6, 4), scale=0.5,
                            causal=True)
    check_lowered(model, tmp_path)
