"""SoftMax, LogSoftmax, MVN, NormalizeL2 and BatchNormInference lowered to loops.

Both executors are compared with the reference at rtol 1e-4 / atol 1e-5: ``exp``, ``log`` and
``sqrt`` are float32 library calls on every path (within an ulp or two), and the sums are
float32 where the reference accumulates in float64 over at most 185 terms here.
"""

from __future__ import annotations

import numpy as np
import openvino as ov
import pytest
from lowered import AVX2, check_lowered
from openvino import opset1, opset2, opset5, opset6, opset8

pytestmark = pytest.mark.oracle

SHAPE = (2, 3, 5, 37)
RNG = np.random.default_rng(40)


def parameter(shape=SHAPE) -> ov.Node:
    return opset1.parameter(list(shape), np.float32, name="x")


def axes(*values: int) -> ov.Node:
    if not values:
        return ov.op.Constant(ov.Type.i64, ov.Shape([0]), [])
    return opset1.constant(np.array(values, np.int64))


def uniform(shape, low: float, high: float) -> list[np.ndarray]:
    return [RNG.uniform(low, high, shape).astype(np.float32)]


@pytest.mark.parametrize("target", [None, AVX2], ids=["host", "avx2"])
def test_softmax_innermost_fused_with_multiply(tmp_path, target):
    """Innermost axis: vector max and sum (16 or, for AVX2, 8 lanes); the exponentials are
    kept in the output buffer between passes, and the Multiply after SoftMax is fused into
    the same kernel (numba runs the host's program; the AVX2 one differs only in its lanes)."""
    x = parameter()
    scaled = opset1.multiply(opset1.softmax(x, 3), opset1.constant(np.float32(3.0)))
    inputs = uniform(SHAPE, -6, 6)
    program = check_lowered(ov.Model([scaled], [x]), tmp_path, inputs=inputs,
                            target=target, numba=target is None).program
    assert len(program.steps) == 1


def test_softmax_v8_and_log_softmax_outer_axes(tmp_path):
    """Axes that are not innermost: each lane of the vectorized last axis owns a group."""
    x = parameter()
    model = ov.Model([opset8.softmax(x, -3), opset5.log_softmax(x, 0),
                      opset5.log_softmax(x, -1)], [x])
    check_lowered(model, tmp_path, inputs=uniform(SHAPE, -6, 6))


def test_mvn2_across_channels_and_per_channel(tmp_path):
    x = parameter()
    model = ov.Model([opset2.mvn(x, True, True, 0.1), opset2.mvn(x, False, False, 0.1)], [x])
    check_lowered(model, tmp_path)


def test_mvn6_eps_modes(tmp_path):
    """Innermost axis only (LayerNorm), and two middle axes with eps outside the root."""
    x = parameter()
    model = ov.Model([opset6.mvn(x, axes(-1), True, 1e-5, "inside_sqrt"),
                      opset6.mvn(x, axes(1, 2), True, 0.3, "outside_sqrt")], [x])
    check_lowered(model, tmp_path)


@pytest.mark.parametrize("target", [None, AVX2], ids=["host", "avx2"])
def test_long_rows_layer_norm_and_softmax(tmp_path, target):
    """BERT-like rows: LayerNorm over 775 values (48 or 96 whole vectors, then a tail of 7)
    and SoftMax over 139 (8 or 17 vectors and a tail); the MVN divides by a reciprocal
    multiply."""
    shape = (2, 3, 775)
    x = opset1.parameter(list(shape), np.float32, name="x")
    y = opset1.parameter([2, 3, 139], np.float32, name="y")
    model = ov.Model([opset6.mvn(x, axes(-1), True, 1e-5, "inside_sqrt"),
                      opset8.softmax(y, -1)], [x, y])
    inputs = uniform(shape, -3, 5) + uniform((2, 3, 139), -8, 8)
    check_lowered(model, tmp_path, inputs=inputs, target=target, numba=target is None)


def test_normalize_l2(tmp_path):
    """``max`` eps over the channels, ``add`` over the spatial axes, and no axes at all
    (``x == 0 ? 0 : 1``)."""
    x = parameter()
    model = ov.Model([opset1.normalize_l2(x, axes(1), 1e-3, "max"),
                      opset1.normalize_l2(x, axes(2, 3), 1e-6, "add"),
                      opset1.normalize_l2(x, axes(), 1e-6, "add")], [x])
    inputs = uniform(SHAPE, -2, 2)
    inputs[0][0, 1, 2, :5] = 0.0
    check_lowered(model, tmp_path, inputs=inputs)


def _bn_inputs(channels: int) -> list[np.ndarray]:
    gamma, beta, mean = (RNG.uniform(-1, 1, channels).astype(np.float32) for _ in range(3))
    return [gamma, beta, mean, RNG.uniform(0.05, 2, channels).astype(np.float32)]


def test_batch_norm_inference_v1_and_v5(tmp_path):
    """Constant statistics: the square root is folded at compile time (v1 takes data on port
    2, v5 on port 0)."""
    x = parameter()
    constants = [opset1.constant(v) for v in _bn_inputs(3)]
    model = ov.Model([opset1.batch_norm_inference(x, *constants, 0.05),
                      opset5.batch_norm_inference(x, *constants, 1e-3)], [x])
    check_lowered(model, tmp_path)


def test_batch_norm_inference_with_variance_input(tmp_path):
    """A variance that is a model input: the kernel computes ``sqrt(variance + eps)``."""
    x = parameter((2, 7, 19))
    variance = opset1.parameter([7], np.float32, name="variance")
    gamma, beta, mean, var_values = _bn_inputs(7)
    bn = opset5.batch_norm_inference(x, opset1.constant(gamma), opset1.constant(beta),
                                     opset1.constant(mean), variance, 0.01)
    data = RNG.uniform(-2, 2, (2, 7, 19)).astype(np.float32)
    check_lowered(ov.Model([bn], [x, variance]), tmp_path, inputs=[data, var_values])
